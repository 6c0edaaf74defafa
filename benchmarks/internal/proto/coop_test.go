//go:build linux

package proto

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

func zramPath() string {
	if p := os.Getenv("PROTO_ZRAM"); p != "" {
		return p
	}
	return "/dev/zram0"
}

// TestCompletesWhileTheSubmittingThreadSpins pins that a read completes
// while the thread that submitted it runs other goroutines without
// entering the kernel, with and without COOP_TASKRUN. The completion of a
// read that io-wq ran (zram) is task work queued on the submitting thread.
// Without COOP_TASKRUN the kernel kicks that thread with an IPI
// (TWA_SIGNAL). With it (TWA_SIGNAL_NO_IPI) it only sets
// TIF_NOTIFY_SIGNAL and wakes the thread if it sleeps interruptibly (as a
// parked Go thread does, in futex or epoll_wait); a thread running user
// code runs the work at its next return from the kernel, the scheduler
// tick's interrupt included. So the completion waits at most about a tick
// (4 ms at HZ=250), not until the Go runtime happens to make a system call
// on that thread. GOMAXPROCS is 1 and another goroutine spins with
// runtime.Gosched (no system call, no preemption signal), so the thread
// that submitted is the one spinning.
func TestCompletesWhileTheSubmittingThreadSpins(t *testing.T) {
	if testing.Short() {
		t.Skip("spins for seconds")
	}
	// On a block device with rq_affinity the completion interrupt is sent
	// to the CPU that submitted, and the return from that interrupt runs
	// the task work if the submitting thread is still there: use a device
	// that completes in io-wq, on another thread (zram, as the benchmarks).
	f, err := os.OpenFile(zramPath(), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Skip("needs a zram device (PROTO_ZRAM, default /dev/zram0):", err)
	}
	defer f.Close()
	const spin = 2 * time.Second
	coop := ring.SetupCoopTaskrun | ring.SetupTaskrunFlag
	for _, tc := range []struct {
		name string
		new  func() (Engine, error)
	}{
		{"evfd-plain", func() (Engine, error) { return NewEvfd(Config{}) }},
		{"evfd-coop", func() (Engine, error) { return NewEvfd(Config{Flags: coop}) }},
		{"lf-coop", func() (Engine, error) { return NewLF(Config{Flags: coop}) }},
		{"owner-coop", func() (Engine, error) { return NewOwner(Config{Flags: coop}) }},
		{"sqpoll", func() (Engine, error) { return NewEvfd(Config{Flags: ring.SetupSQPoll}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := tc.new()
			if err != nil {
				t.Skip(err)
			}
			defer e.Close()
			buf, _ := ring.Alloc(4096)
			defer ring.Free(buf)
			e.ReadAt(int32(f.Fd()), buf, 0) // warm: the reaper is parked in the netpoller

			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			var stop atomic.Bool
			spinning := make(chan struct{})
			go func() {
				close(spinning)
				for !stop.Load() {
					runtime.Gosched()
				}
			}()
			<-spinning
			timer := time.AfterFunc(spin, func() { stop.Store(true) })
			defer timer.Stop()
			// Let the runtime settle (the GOMAXPROCS change and the timer
			// make it wake threads, and any system call on the submitting
			// thread runs its task work).
			time.Sleep(100 * time.Millisecond)
			t0 := time.Now()
			if _, err := e.ReadAt(int32(f.Fd()), buf, 4096); err != nil {
				t.Fatal(err)
			}
			took := time.Since(t0)
			stop.Store(true)
			t.Logf("read took %v while another goroutine spun on the submitting thread", took)
			if took > spin/2 {
				t.Errorf("read took %v: the completion waited for the spinning thread", took)
			}
		})
	}
}

// TestSingleIssuerBindsTheCreatingThread pins why Owner creates its ring
// on its own locked thread: with SINGLE_ISSUER the kernel records the task
// that created the ring (unless R_DISABLED) and refuses io_uring_enter from
// any other thread with EEXIST, which for a goroutine that is not locked
// to its thread means "sometimes".
func TestSingleIssuerBindsTheCreatingThread(t *testing.T) {
	created := make(chan *ring.Ring)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		r, err := ring.New(ring.Params{Entries: 8, Flags: ring.SetupSingleIssuer | ring.SetupDeferTaskrun})
		if err != nil {
			close(created)
			return
		}
		created <- r
		<-release
	}()
	r, ok := <-created
	if !ok {
		t.Skip("kernel lacks SINGLE_ISSUER|DEFER_TASKRUN")
	}
	defer r.Close()
	defer close(release)
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // a thread other than the creator's, which is locked elsewhere
		defer runtime.UnlockOSThread()
		r.GetSQE().PrepNop()
		r.Flush()
		_, err := r.Enter(1, 0, false)
		errc <- err
	}()
	if err := <-errc; !errors.Is(err, unix.EEXIST) {
		t.Fatalf("enter from another thread: %v, want EEXIST", err)
	}
}

// TestCoopTaskWorkRunsWhileTheSubmitterSpinsInUserSpace pins where a
// COOP_TASKRUN completion's task work runs when the submitting thread
// never enters the kernel: a goroutine locked to its thread submits a zram
// read (which io-wq runs on another thread) and spins on the CQ tail
// without a system call. The CQE still appears: the thread runs its task
// work on the way back to user space from any interrupt, the scheduler
// tick included (run with GODEBUG=asyncpreemptoff=1 to rule out the Go
// runtime's preemption signal). Without COOP_TASKRUN the kernel sends an
// IPI and the CQE appears at once.
func TestCoopTaskWorkRunsWhileTheSubmitterSpinsInUserSpace(t *testing.T) {
	f, err := os.OpenFile(zramPath(), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Skip("needs a zram device (PROTO_ZRAM, default /dev/zram0):", err)
	}
	defer f.Close()
	for _, tc := range []struct {
		name  string
		flags ring.SetupFlags
	}{
		{"plain", 0},
		{"coop", ring.SetupCoopTaskrun | ring.SetupTaskrunFlag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				took time.Duration
				err  error
			}
			done := make(chan result)
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				r, err := ring.New(ring.Params{Entries: 8, Flags: tc.flags})
				if err != nil {
					done <- result{err: err}
					return
				}
				defer r.Close()
				buf, _ := ring.Alloc(4096)
				defer ring.Free(buf)
				var worst time.Duration
				for i := 0; i < 20; i++ {
					r.GetSQE().PrepRead(int32(f.Fd()), buf, uint64(i)*4096)
					r.Flush()
					t0 := time.Now()
					if _, err := r.Enter(1, 0, false); err != nil {
						done <- result{err: err}
						return
					}
					for r.Ready() == 0 { // no system call: time.Now is the vDSO
						if time.Since(t0) > 2*time.Second {
							done <- result{took: time.Since(t0)}
							return
						}
					}
					worst = max(worst, time.Since(t0))
					var c [1]ring.CQE
					r.Peek(c[:])
				}
				done <- result{took: worst}
			}()
			res := <-done
			if res.err != nil {
				t.Skip(res.err)
			}
			t.Logf("slowest of 20 CQEs appeared after %v of spinning", res.took)
			if res.took > time.Second {
				t.Errorf("CQE did not appear while the submitter spun for %v", res.took)
			}
		})
	}
}
