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
				if eng, err = dio.NewEngine(&dio.EngineOptions{QueueDepth: 64}); err != nil {
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
			var st closeState
			hang := watchHang(t, st.String)
			for round := 0; round < rounds; round++ {
				closeRound(t, dir, round, eng, bufs, hang, &st)
			}
		})
	}
}

// closeState is what a round of TestCloseRacingInflight has done, for the
// hang watchdog's report.
type closeState struct {
	round, submitted, completed, refused atomic.Int64
	closing                              atomic.Bool
}

func (s *closeState) String() string {
	return fmt.Sprintf("round %d: %d writes submitted, %d completed, %d refused; Close called: %v",
		s.round.Load(), s.submitted.Load(), s.completed.Load(), s.refused.Load(), s.closing.Load())
}

// closeRound opens a file, keeps up to len(bufs) writes in flight from
// several goroutines, closes it at a random moment, and reuses its
// descriptor at once.
func closeRound(t *testing.T, dir string, round int, eng *dio.Engine, bufs [][]byte, hang *hangWatch, st *closeState) {
	path := filepath.Join(dir, fmt.Sprintf("a%d", round))
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	fd := dio.FdForTest(f)
	st.round.Store(int64(round))
	st.submitted.Store(0)
	st.completed.Store(0)
	st.refused.Store(0)
	st.closing.Store(false)
	var (
		bad     atomic.Pointer[string]
		workers sync.WaitGroup
		writes  sync.WaitGroup // every write Submit took, until its callback returned
		stop    = make(chan struct{})
		going   = make(chan struct{}) // closed once half of bufs' writes are submitted
		goingMu sync.Once
		refused = make(chan struct{}, 1) // a Submit was refused
	)
	report := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		bad.CompareAndSwap(nil, &s)
	}
	const nworkers = 4
	per := len(bufs) / nworkers
	for w := 0; w < nworkers; w++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			// idle holds the worker's requests whose callbacks have
			// returned: a request is resubmitted only then.
			idle := make(chan int, per)
			reqs := make([]*dio.Request, per)
			for i := range reqs {
				reqs[i] = new(dio.Request)
				idle <- i
			}
			for {
				var i int
				select {
				case i = <-idle:
				case <-stop:
					return
				}
				r := reqs[i]
				slot := w*per + i
				r.Op, r.Off, r.Buf, r.Policy = dio.Write, int64(slot)*4096, bufs[slot], completion.Inline
				r.Callback = func(r *dio.Request) {
					defer writes.Done()
					st.completed.Add(1)
					hang.Progress()
					if n, err := r.Result(); err != nil && !errors.Is(err, dio.ErrClosed) {
						report("write %d: %d, %v", r.Off, n, err)
					}
					idle <- i
				}
				writes.Add(1)
				if err := f.Submit(r); err != nil {
					writes.Done()
					if !errors.Is(err, dio.ErrClosed) {
						report("Submit: %v", err)
					}
					st.refused.Add(1)
					select {
					case refused <- struct{}{}:
					default:
					}
					idle <- i
					continue
				}
				if st.submitted.Add(1) >= int64(len(bufs)/2) {
					goingMu.Do(func() { close(going) })
				}
			}
		}()
	}
	// Close once the writers are going, at a random moment.
	<-going
	// The sleep only spreads where Close lands among the writes in
	// flight; the test waits for no event here.
	time.Sleep(time.Duration(round%7) * 50 * time.Microsecond)
	st.closing.Store(true)
	if err := f.Close(); err != nil {
		t.Fatalf("round %d: Close: %v", round, err)
	}
	hang.Progress()
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
	// A submitter tries again after the descriptor was reused: drain the
	// refusals from before, and wait for a new one.
	select {
	case <-refused:
	default:
	}
	<-refused
	close(stop)
	workers.Wait()
	writes.Wait() // every write Submit took has completed, callback and all
	if p := bad.Load(); p != nil {
		t.Fatalf("round %d: %s", round, *p)
	}
	if c, s := st.completed.Load(), st.submitted.Load(); c != s {
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
func TestCloseRacingStartNeverWritesToReusedFd(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared-engine=%v", shared), func(t *testing.T) {
			dir := t.TempDir()
			var o dio.Options
			if shared {
				eng, err := dio.NewEngine(nil)
				if err != nil {
					t.Fatal(err)
				}
				defer eng.Close()
				o.Engine = eng
			}
			g := &gateMapper{WholeFile: iomap.NewWholeFile(0), entered: make(chan struct{}), release: make(chan struct{})}
			o.Mapper = g
			f, err := dio.Open(filepath.Join(dir, "a"), os.O_RDWR|os.O_CREATE, 0o600, &o)
			if err != nil {
				t.Fatal(err)
			}
			fd := dio.FdForTest(f)
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
			// The fix: the write holds its reference on the descriptor
			// from before its closed check, so a Close from now on waits
			// for it.
			if n := dio.InflightForTest(f); n == 0 {
				t.Fatal("a write past its closed check holds no reference on the descriptor: Close would close it under the write")
			}
			closed := make(chan error, 1)
			go func() { closed <- f.Close() }()
			// Whether or not Close has started, the descriptor cannot be
			// free until the write lets go of it: a file opened now gets
			// another one, unless Close closed it under the write.
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
			select {
			case cerr := <-closed:
				if cerr != nil {
					t.Fatalf("Close: %v", cerr)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close does not return after the racing write did")
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
