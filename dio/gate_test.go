//go:build linux

package dio_test

// The write gate: on a file whose mapper allocates in blocks larger than
// the I/O alignment (an ExtentMap), writes that are not block-aligned run
// alone, so that the sub-block zeroing the engine adds for new and
// unwritten blocks never lands over another write's data.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

// openVolume opens a scratch device file of blocks*bs bytes behind an
// ExtentMap with block size bs.
func openVolume(t *testing.T, bs, blocks int64, o dio.Options) *dio.File {
	t.Helper()
	dev := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(dev, make([]byte, blocks*bs), 0o600); err != nil {
		t.Fatal(err)
	}
	em, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: bs, Devices: []int64{blocks * bs}})
	if err != nil {
		t.Fatal(err)
	}
	o.Mapper, o.Size = em, blocks*bs
	f, err := dio.Open(dev, os.O_RDWR, 0, &o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// holdGate opens a volume of blocks blocks of bs bytes whose write gate is
// held: a sub-block write (first) is stopped in a submit hook as it is
// queued, until release. The hook holds the engine's lock meanwhile, so
// the test may only do what does not need it (queue at the gate).
func holdGate(t *testing.T, bs, blocks int64) (f *dio.File, first *dio.Request, release func()) {
	t.Helper()
	hold := make(chan struct{})
	entered := make(chan struct{}, 1)
	var once sync.Once
	var o dio.Options
	dio.SetSubmitHook(&o, func(r *dio.Request, sqe *ring.SQE) {
		if r == first {
			once.Do(func() {
				entered <- struct{}{}
				<-hold
			})
		}
	})
	f = openVolume(t, bs, blocks, o)
	sec := dio.AlignForTest(f).Offset
	first = &dio.Request{Op: dio.Write, Off: 0, Buf: relBuf(t, int(sec)), Policy: completion.Pool}
	go f.Submit(first)
	<-entered
	return f, first, func() { close(hold) }
}

// Goroutines write interleaved sectors of the same new blocks (every write
// is sub-block, so each zeroes the rest of its block if it is still new)
// and whole blocks of their own (aligned, run together), synchronously and
// asynchronously under every policy. Each sector has one writer, so the
// final image is known exactly.
func TestGateInterleavedSubBlockWrites(t *testing.T) {
	const bs = 16 << 10
	const shared, owned = 32, 32 // blocks written sector by sector; blocks owned whole
	f := openVolume(t, bs, shared+owned, dio.Options{})
	defer closeWithin(t, f, 10*time.Second)
	sec := dio.AlignForTest(f).Offset
	spb := bs / sec
	g := min(int64(8), spb)
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	want := make([]byte, (shared+owned)*bs)
	pols := []completion.Policy{completion.Wait, completion.Inline, completion.Pool, completion.Caller}
	bufs := make([][]byte, g)
	for w := range bufs {
		bufs[w] = relBuf(t, bs)
	}
	// One block at a time, all writers at once: each block is new when
	// the writers' first sectors land on it together.
	var i [8]int
	step := func(blk int64, round int) error {
		var wg sync.WaitGroup
		errs := make(chan error, g)
		for w := int64(0); w < g; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := bufs[w]
				pol := func() completion.Policy { i[w]++; return pols[i[w]%len(pols)] }
				if blk < shared {
					// My sectors of this block, one write each, all in
					// flight together (the last one synchronous).
					var reqs []*dio.Request
					for k, s := 0, blk*spb+w; s < (blk+1)*spb; k, s = k+1, s+g {
						b := buf[int64(k)*sec : int64(k+1)*sec]
						for j := range b {
							b[j] = byte(round*16 + int(w) + 1)
						}
						off := s * sec
						copy(want[off:off+sec], b)
						if s+g >= (blk+1)*spb {
							if _, err := f.WriteAt(b, off); err != nil {
								errs <- fmt.Errorf("writer %d sector %d: %w", w, s, err)
								return
							}
							break
						}
						r := &dio.Request{Op: dio.Write, Off: off, Buf: b, Policy: pol()}
						if err := f.Submit(r); err != nil {
							errs <- fmt.Errorf("writer %d sector %d: %w", w, s, err)
							return
						}
						reqs = append(reqs, r)
					}
					for _, r := range reqs {
						if n, err := r.Wait(context.Background()); n != int(sec) || err != nil {
							errs <- fmt.Errorf("writer %d offset %d: %d, %w", w, r.Off, n, err)
							return
						}
					}
					return
				}
				// The whole block, aligned, if it is mine.
				if blk%g != w {
					return
				}
				for j := range buf {
					buf[j] = byte(0x80 + round*16 + int(w))
				}
				if err := writeWith(f, pol(), buf, blk*bs); err != nil {
					errs <- fmt.Errorf("writer %d block %d: %w", w, blk, err)
					return
				}
				copy(want[blk*bs:(blk+1)*bs], buf)
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	for round := 0; round < rounds; round++ {
		for blk := int64(0); blk < shared+owned; blk++ {
			// Owned blocks go in pairs beside a shared one, so aligned and
			// unaligned writes meet at the gate.
			if err := step(blk, round); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := relBuf(t, len(want))
	if n, err := f.ReadAt(got, 0); n != len(want) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	for blk := 0; blk < shared+owned; blk++ {
		a, b := got[blk*bs:(blk+1)*bs], want[blk*bs:(blk+1)*bs]
		if !bytes.Equal(a, b) {
			for s := int64(0); s < spb; s++ {
				if !bytes.Equal(a[s*sec:(s+1)*sec], b[s*sec:(s+1)*sec]) {
					t.Fatalf("block %d sector %d reads %#x, want %#x (lost to another write's zeroing)",
						blk, s, a[s*sec], b[s*sec])
				}
			}
		}
	}
	t.Logf("%d writes waited at the gate (sector %d)", dio.GateWaitedForTest(f), sec)
	if dio.GateWaitedForTest(f) == 0 && g > 1 {
		t.Error("no write ever waited at the gate: the test did not exercise it")
	}
}

// writeWith writes b at off under policy pol and waits for the result.
func writeWith(f *dio.File, pol completion.Policy, b []byte, off int64) error {
	if pol == completion.Wait {
		n, err := f.WriteAt(b, off)
		if err == nil && n != len(b) {
			err = fmt.Errorf("short write %d", n)
		}
		return err
	}
	r := &dio.Request{Op: dio.Write, Off: off, Buf: b, Policy: pol}
	if err := f.Submit(r); err != nil {
		return err
	}
	n, err := r.Wait(context.Background())
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write %d", n)
	}
	return err
}

// Callbacks that run on the reaper and submit the next sub-block write
// (two chains racing for the gate, and a synchronous writer beside them)
// must not deadlock: a write that has to wait is queued, not blocked on,
// and starts when the write ahead of it releases the gate.
func TestGateCallbackChains(t *testing.T) {
	const bs = 16 << 10
	const blocks = 16
	f := openVolume(t, bs, blocks, dio.Options{})
	defer closeWithin(t, f, 10*time.Second)
	sec := dio.AlignForTest(f).Offset
	spb := int64(bs) / sec
	// Overwrites first, so the chains' writes are pure overwrites and keep
	// the Inline policy (their callbacks run on the reaper).
	whole := relBuf(t, blocks*bs)
	if _, err := f.WriteAt(whole, 0); err != nil {
		t.Fatal(err)
	}
	const perChain = 200
	type chain struct {
		r    *dio.Request
		buf  []byte
		k    int64
		done chan error
	}
	var chains [2]*chain
	for c := range chains {
		ch := &chain{buf: relBuf(t, int(sec)), done: make(chan error, 1)}
		for i := range ch.buf {
			ch.buf[i] = byte(0x40 + c)
		}
		ch.r = &dio.Request{Op: dio.Write, Buf: ch.buf, Policy: completion.Inline}
		ch.r.Callback = func(r *dio.Request) {
			if n, err := r.Result(); err != nil || n != len(ch.buf) {
				ch.done <- fmt.Errorf("chain %d write %d: %d, %v", c, ch.k, n, err)
				return
			}
			if p, why := r.EffectivePolicy(); p != completion.Inline {
				ch.done <- fmt.Errorf("chain %d ran under %v (%v), not Inline", c, p, why)
				return
			}
			ch.k++
			if ch.k == perChain {
				ch.done <- nil
				return
			}
			r.Off = (ch.k*2 + int64(c)) % (blocks * spb) * sec
			if err := f.Submit(r); err != nil {
				ch.done <- err
			}
		}
		ch.r.Off = int64(c) * sec
		chains[c] = ch
	}
	for _, ch := range chains {
		if err := f.Submit(ch.r); err != nil {
			t.Fatal(err)
		}
	}
	sb := relBuf(t, int(sec))
	for i := int64(0); i < perChain; i++ {
		if _, err := f.WriteAt(sb, ((i*7)%(blocks*spb))*sec); err != nil {
			t.Fatal(err)
		}
	}
	for c, ch := range chains {
		select {
		case err := <-ch.done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("chain %d stopped after %d writes: deadlocked at the write gate", c, ch.k)
		}
	}
}

// An asynchronous write that waited at the gate and then fails to map (no
// space left on the ExtentMap) has already been accepted by Submit: it
// completes through its policy with the error, its callback runs once,
// and the gate moves on.
func TestGateAdmittedWriteFails(t *testing.T) {
	const bs = 16 << 10
	f, first, release := holdGate(t, bs, 1)
	defer closeWithin(t, f, 10*time.Second)
	sec := dio.AlignForTest(f).Offset
	calls := 0
	cb := make(chan struct{}, 2)
	second := &dio.Request{Op: dio.Write, Off: bs, Buf: relBuf(t, bs), Policy: completion.Pool,
		Callback: func(*dio.Request) { calls++; cb <- struct{}{} }}
	if err := f.Submit(second); err != nil {
		t.Fatalf("Submit of a write that must wait at the gate: %v", err)
	}
	if dio.GateWaitedForTest(f) != 1 {
		t.Fatalf("gate waits = %d, want 1 (the second write waits)", dio.GateWaitedForTest(f))
	}
	release()
	if n, err := first.Wait(context.Background()); n != int(sec) || err != nil {
		t.Fatalf("first write = %d, %v", n, err)
	}
	n, err := second.Wait(context.Background())
	if n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second write = %d, %v; want 0, ENOSPC (beyond the single block's volume)", n, err)
	}
	<-cb
	if calls != 1 {
		t.Fatalf("callback ran %d times", calls)
	}
	if msg := checkOpError(err, "write", f.Name(), bs, bs); msg != "" {
		t.Fatal(msg)
	}
}

// A NoWait write that would have to wait at the gate fails at once with
// EAGAIN (retryable), like IOCB_NOWAIT on a contended inode lock, and the
// request can be submitted again.
func TestGateNoWaitEAGAIN(t *testing.T) {
	const bs = 16 << 10
	f, first, release := holdGate(t, bs, 4)
	defer closeWithin(t, f, 10*time.Second)
	r := &dio.Request{Op: dio.Write, Off: 2 * bs, Buf: relBuf(t, bs), Policy: completion.Pool, Flags: dio.NoWait}
	err := f.Submit(r)
	if !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("NoWait write behind an unaligned write = %v, want EAGAIN", err)
	}
	if msg := checkOpError(err, "write", f.Name(), 2*bs, bs); msg != "" {
		t.Fatal(msg)
	}
	release()
	if _, err := first.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Flags = 0
	if err := f.Submit(r); err != nil {
		t.Fatalf("resubmitting the refused request: %v", err)
	}
	if n, err := r.Wait(context.Background()); n != bs || err != nil {
		t.Fatalf("write = %d, %v", n, err)
	}
}

// A gated write whose Submit failed after the gate admitted it (a NoWait
// write that needs allocation) stayed marked in flight: resubmitting it
// failed with "resubmitted while in flight", and Wait on it never returned.
func TestGateRefusedSubmitLeavesRequestReusable(t *testing.T) {
	f := openVolume(t, 16<<10, 4, dio.Options{})
	defer closeWithin(t, f, 5*time.Second)
	sec := dio.AlignForTest(f).Offset
	r := &dio.Request{Op: dio.Write, Off: sec, Buf: relBuf(t, int(sec)), Policy: completion.Pool, Flags: dio.NoWait}
	if err := f.Submit(r); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("NoWait sub-block write into a new block = %v, want EAGAIN", err)
	}
	r.Flags = 0
	if err := f.Submit(r); err != nil {
		t.Fatalf("resubmitting a request whose Submit failed: %v", err)
	}
	if _, err := r.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A Pool callback (which may block) making a synchronous sub-block write
// waited at the gate for a write whose extent conversion was queued on the
// pool behind that same callback: with one worker, for ever. The gate is
// now released where the I/O completes, conversion included.
func TestGatePoolCallbackWriteCompletes(t *testing.T) {
	const bs = 16 << 10
	f := openVolume(t, bs, 8, dio.Options{EngineOptions: &dio.EngineOptions{Workers: 1}})
	sec := dio.AlignForTest(f).Offset
	done := make(chan error, 1)
	b := &dio.Request{Op: dio.Write, Off: bs + sec, Buf: relBuf(t, int(sec)), Policy: completion.Pool}
	wb := relBuf(t, int(sec))
	a := &dio.Request{Op: dio.Write, Off: 0, Buf: relBuf(t, bs), Policy: completion.Pool,
		Callback: func(*dio.Request) {
			if err := f.Submit(b); err != nil { // holds the gate until converted
				done <- err
				return
			}
			_, err := f.WriteAt(wb, 2*bs+sec) // waits for b's release
			done <- err
		}}
	if err := f.Submit(a); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		closeWithin(t, f, 5*time.Second)
	case <-time.After(5 * time.Second):
		t.Fatal("a Pool callback's WriteAt waits at the gate for ever") // leaks f on purpose
	}
}

// Wait with a context on a write still queued at the gate: its cancel
// found no SQEs, so nothing ended the wait, and the write ran in full
// after the deadline. Now it leaves the queue and completes with
// ECANCELED, having written nothing; a synchronous WriteAtContext waiting
// for admission does the same.
func TestGateQueuedWriteHonoursContext(t *testing.T) {
	const bs = 16 << 10
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	for { // fill the pipe: a write to it stays in flight until it is read
		if _, err := syscall.Write(p[1], make([]byte, 4096)); err != nil {
			break
		}
	}
	// The gate's holder: a sub-block write that a hook sends to the full
	// pipe, in flight until the test drains it. (Not a hook that blocks:
	// hooks run under the engine's lock.)
	var o dio.Options
	dio.SetSubmitHook(&o, func(r *dio.Request, sqe *ring.SQE) {
		if r.Tag == 1 && sqe.Len < bs {
			sqe.Fd, sqe.Off = int32(p[1]), 0
		}
	})
	f := openVolume(t, bs, 4, o)
	defer closeWithin(t, f, 10*time.Second)
	sec := dio.AlignForTest(f).Offset
	first := &dio.Request{Op: dio.Write, Off: sec, Buf: relBuf(t, int(sec)), Policy: completion.Pool, Tag: 1}
	if err := f.Submit(first); err != nil {
		t.Fatal(err)
	}
	calls := 0
	q := &dio.Request{Op: dio.Write, Off: 2 * bs, Buf: relBuf(t, bs), Policy: completion.Pool,
		Callback: func(*dio.Request) { calls++ }}
	if err := f.Submit(q); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	n, err := q.Wait(ctx)
	if el := time.Since(t0); n != 0 || !errors.Is(err, syscall.ECANCELED) || el > time.Second {
		t.Fatalf("Wait(50ms) on a write queued at the gate = %d, %v after %v; want 0, ECANCELED", n, err, el)
	}
	if calls != 1 {
		t.Fatalf("callback ran %d times", calls)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if n, err := f.WriteAtContext(ctx2, relBuf(t, bs), 3*bs, 0); n != 0 || !errors.Is(err, syscall.ECANCELED) {
		t.Fatalf("WriteAtContext(50ms) waiting at the gate = %d, %v; want 0, ECANCELED", n, err)
	}
	drain := make([]byte, 1<<20)
	for {
		if _, err := syscall.Read(p[0], drain); err != nil {
			break
		}
	}
	if _, err := first.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Nothing of the cancelled writes reached the volume.
	got := relBuf(t, 2*bs)
	if _, err := f.ReadAt(got, 2*bs); err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		if c != 0 {
			t.Fatalf("byte %d of the cancelled writes' range is %#x", 2*bs+i, c)
		}
	}
	if a := f.Engine().Stats().Audits; a != 0 {
		t.Fatalf("%d audits", a)
	}
}
