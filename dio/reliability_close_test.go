//go:build linux

package dio_test

// Close racing I/O in flight: every request completes exactly once or is
// refused with ErrClosed, Close returns only after the file's I/O is done,
// no write lands after Close returns, and a file that reuses the closed
// file's descriptor never receives its writes.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/iomap"
)

const closeMark = 0xA5

func TestCloseRacingInflight(t *testing.T) {
	rounds := int(envInt("UIRINGDIO_CLOSE_ROUNDS", 20))
	if longMode() {
		rounds = 2000
	}
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared-engine=%v", shared), func(t *testing.T) {
			var eng *dio.Engine
			if shared {
				var err error
				if eng, err = dio.NewEngine(dio.WithQueueDepth(64)); err != nil {
					t.Fatal(err)
				}
				defer eng.Close()
			}
			dir := t.TempDir()
			const slots = 160
			bufs := make([][]byte, slots)
			for i := range bufs {
				bufs[i] = relBuf(t, 4096)
				for j := range bufs[i] {
					bufs[i][j] = closeMark
				}
			}
			for round := 0; round < rounds; round++ {
				closeRound(t, dir, round, eng, bufs)
			}
		})
	}
}

// closeRound opens a file, keeps up to len(bufs) writes in flight from
// several goroutines, closes it at a random moment, and reuses its
// descriptor at once.
func closeRound(t *testing.T, dir string, round int, eng *dio.Engine, bufs [][]byte) {
	path := filepath.Join(dir, fmt.Sprintf("a%d", round))
	var opts []dio.Option
	if eng != nil {
		opts = append(opts, dio.WithEngine(eng))
	}
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, opts...)
	if err != nil {
		t.Fatal(err)
	}
	fd := f.Fd()
	var (
		inflight  atomic.Int32
		submitted atomic.Int64
		completed atomic.Int64
		refused   atomic.Int64
		stop      atomic.Bool
		bad       atomic.Pointer[string]
		wg        sync.WaitGroup
	)
	report := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		bad.CompareAndSwap(nil, &s)
	}
	const workers = 4
	per := len(bufs) / workers
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs := make([]*dio.Request, per)
			busy := make([]atomic.Bool, per)
			for i := range reqs {
				reqs[i] = dio.NewRequest()
			}
			for i := 0; !stop.Load(); i = (i + 1) % per {
				r := reqs[i]
				if busy[i].Load() { // until its callback has returned
					time.Sleep(10 * time.Microsecond)
					continue
				}
				slot := w*per + i
				b := &busy[i]
				r.Op, r.Off, r.Buf, r.Policy = dio.Write, int64(slot)*4096, bufs[slot], completion.Inline
				r.Callback = func(r *dio.Request) {
					inflight.Add(-1)
					completed.Add(1)
					if n, err := r.Result(); err != nil && !errors.Is(err, dio.ErrClosed) {
						report("write %d: %d, %v", r.Off, n, err)
					}
					b.Store(false)
				}
				inflight.Add(1)
				b.Store(true)
				submitted.Add(1)
				if err := f.Submit(r); err != nil {
					b.Store(false)
					submitted.Add(-1)
					inflight.Add(-1)
					if !errors.Is(err, dio.ErrClosed) {
						report("Submit: %v", err)
					}
					refused.Add(1)
					continue
				}
			}
		}()
	}
	// Close at a random moment once writes are in flight.
	deadline := time.Now().Add(2 * time.Second)
	for inflight.Load() < int32(len(bufs)/2) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Microsecond)
	}
	time.Sleep(time.Duration(round%7) * 50 * time.Microsecond)
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	var err2 error
	select {
	case err2 = <-closed:
	case <-time.After(20 * time.Second):
		stop.Store(true)
		t.Fatalf("round %d: Close did not return in 20s (%d submitted, %d completed, %d in flight)",
			round, submitted.Load(), completed.Load(), inflight.Load())
	}
	if err2 != nil {
		t.Fatalf("round %d: Close: %v", round, err2)
	}
	// The descriptor is free now: take it, as another part of the program
	// would, while the submitters keep trying.
	other := filepath.Join(dir, fmt.Sprintf("b%d", round))
	of, err := os.OpenFile(other, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, len(bufs)*4096)
	of.WriteAt(zero, 0)
	reused := of.Fd() == fd
	after := preadAll(t, path, 0, int64(len(bufs))*4096)
	time.Sleep(2 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	time.Sleep(2 * time.Millisecond)
	if p := bad.Load(); p != nil {
		t.Fatalf("round %d: %s", round, *p)
	}
	// Every write that Submit took completed exactly once (by now).
	for i := 0; i < 200 && completed.Load() != submitted.Load(); i++ {
		time.Sleep(time.Millisecond)
	}
	if c, s := completed.Load(), submitted.Load(); c != s {
		t.Fatalf("round %d: %d writes submitted, %d completed", round, s, c)
	}
	if later := preadAll(t, path, 0, int64(len(bufs))*4096); string(later) != string(after) {
		t.Fatalf("round %d: a write landed in the file after Close returned", round)
	}
	got := make([]byte, len(zero))
	of.ReadAt(got, 0)
	of.Close()
	for i := 0; i < len(got); i += 512 {
		if got[i] == closeMark {
			t.Fatalf("round %d: a write to the closed file landed in the file that reused its descriptor %d (reused=%v) at %d",
				round, fd, reused, i)
		}
	}
}

// gateMapper is WholeFile whose Begin blocks while hold is set: it widens
// the window between start's check that the File is open and the moment
// it takes its in-flight reference.
type gateMapper struct {
	*iomap.WholeFile
	hold    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gateMapper) Begin(pos, length int64, op iomap.OpFlags) (iomap.Mapping, error) {
	if g.hold.Load() {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.WholeFile.Begin(pos, length, op)
}

// start checked that the File was open, mapped the request, and only then
// took the File's in-flight reference: a Close in between saw no I/O in
// flight, closed the descriptor, and the write went out afterwards on the
// stale descriptor number, to whatever file had reused it (on a shared
// engine), or hung in the backlog of a closed ring (on its own engine).
func TestCloseRacingStartWritesToReusedFd(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared-engine=%v", shared), func(t *testing.T) {
			dir := t.TempDir()
			var opts []dio.Option
			if shared {
				eng, err := dio.NewEngine()
				if err != nil {
					t.Fatal(err)
				}
				defer eng.Close()
				opts = append(opts, dio.WithEngine(eng))
			}
			g := &gateMapper{WholeFile: iomap.NewWholeFile(0), entered: make(chan struct{}), release: make(chan struct{})}
			opts = append(opts, dio.WithMapper(g))
			f, err := dio.Open(filepath.Join(dir, "a"), os.O_RDWR|os.O_CREATE, 0o600, opts...)
			if err != nil {
				t.Fatal(err)
			}
			fd := f.Fd()
			b := relBuf(t, 4096)
			for i := range b {
				b[i] = closeMark
			}
			g.hold.Store(true)
			res := make(chan error, 1)
			go func() {
				_, err := f.WriteAt(b, 0)
				res <- err
			}()
			select {
			case <-g.entered: // the write passed the closed check and is mapping
			case err := <-res:
				t.Fatalf("WriteAt returned %v without mapping", err)
			}
			g.hold.Store(false)
			closed := make(chan error, 1)
			go func() { closed <- f.Close() }()
			var cerr error
			closedEarly := false
			select {
			case cerr = <-closed:
				closedEarly = true
			case <-time.After(200 * time.Millisecond):
				// Close waits for the write: the reference is taken before
				// the check (the fixed behaviour). Let the write go on.
			}
			other := filepath.Join(dir, "b")
			of, err := os.OpenFile(other, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer of.Close()
			of.WriteAt(make([]byte, 4096), 0)
			close(g.release)
			var werr error
			select {
			case werr = <-res:
			case <-time.After(5 * time.Second):
				t.Fatalf("a write that raced Close hangs (reused fd %v): does start take the in-flight reference after its closed check?", of.Fd() == fd)
			}
			if !closedEarly {
				cerr = <-closed
			}
			if cerr != nil {
				t.Fatalf("Close: %v", cerr)
			}
			got := make([]byte, 4096)
			of.ReadAt(got, 0)
			if got[0] == closeMark {
				t.Fatalf("a write that raced Close landed in the file that reused descriptor %d (write returned %v)", fd, werr)
			}
			if werr != nil && !errors.Is(werr, dio.ErrClosed) {
				t.Fatalf("racing write: %v, want success or ErrClosed", werr)
			}
		})
	}
}
