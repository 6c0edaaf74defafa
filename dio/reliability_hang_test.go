//go:build linux

package dio_test

// The hang watchdog of the long runs (the model checkers, the differential
// run, the stress tests): a run that stops making progress fails the test
// binary within seconds, with what it takes to find out why, instead of
// sitting out go test's timeout.

import (
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// hangLimit is how long a watched run may go without progress:
// UIRINGDIO_HANG_LIMIT (a duration), 30s by default, far above what one
// operation takes on a loaded machine and far below go test's timeout.
func hangLimit() time.Duration {
	if v := os.Getenv("UIRINGDIO_HANG_LIMIT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return 30 * time.Second
}

// hangWatch is the watchdog of one run. The run calls Progress whenever an
// operation completes (or, for a synchronous call, returns). If none does
// for the limit, the watchdog prints the run's own report (its seed, the
// command that replays it, its last operations), the stack of every
// goroutine and where each of the process's threads is in the kernel, and
// exits the test binary with status 1. It cannot fail the test the usual
// way: t.Fatal must be called from the test's goroutine, and that is the
// one that is stuck.
type hangWatch struct {
	name     string
	limit    time.Duration
	report   func() string
	progress atomic.Uint64
	onHang   func(idle time.Duration) // fail, unless a test of the watchdog replaces it
	stop     chan struct{}
	done     chan struct{}
}

// watchHang starts the watchdog of t's run; t's cleanup stops it. report,
// if not nil, runs on the watchdog's goroutine while the run is stuck: it
// may read only what is safe to read concurrently (an fsx.Log is), and if
// it does not return within a few seconds the watchdog goes on without it.
func watchHang(t testing.TB, report func() string) *hangWatch {
	w := newHangWatch(t.Name(), hangLimit(), report)
	w.start()
	t.Cleanup(w.Stop)
	return w
}

func newHangWatch(name string, limit time.Duration, report func() string) *hangWatch {
	w := &hangWatch{name: name, limit: limit, report: report, stop: make(chan struct{}), done: make(chan struct{})}
	w.onHang = w.fail
	return w
}

func (w *hangWatch) start() { go w.run() }

// Progress says that the run moved on. Safe for concurrent use.
func (w *hangWatch) Progress() { w.progress.Add(1) }

// Stop stops the watchdog and waits for it.
func (w *hangWatch) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *hangWatch) run() {
	defer close(w.done)
	// Checking eight times per limit: a hang is reported between limit and
	// 9/8 of it after the last progress.
	tick := time.NewTicker(w.limit / 8)
	defer tick.Stop()
	last, since := w.progress.Load(), time.Now()
	for {
		select {
		case <-w.stop:
			return
		case now := <-tick.C:
			if p := w.progress.Load(); p != last {
				last, since = p, now
				continue
			}
			if idle := now.Sub(since); idle >= w.limit {
				w.onHang(idle)
				return
			}
		}
	}
}

// fail prints everything known about the hang and exits the test binary.
func (w *hangWatch) fail(idle time.Duration) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nHANG in %s: no progress for %v (limit %v; UIRINGDIO_HANG_LIMIT sets it)\n", w.name, idle.Round(time.Millisecond), w.limit)
	if w.report != nil {
		b.WriteString(w.callReport(5 * time.Second))
		b.WriteByte('\n')
	}
	b.WriteString("\ngoroutines:\n")
	b.Write(allGoroutines())
	b.WriteString("\nthreads in the kernel:\n")
	b.WriteString(kernelStacks())
	fmt.Fprintf(&b, "\nHANG in %s: the test binary exits\n", w.name)
	os.Stderr.WriteString(b.String())
	runHangCleanups()
	os.Exit(1)
}

// callReport calls the run's report, giving up after d: the report may
// need a lock that the stuck goroutine holds.
func (w *hangWatch) callReport(d time.Duration) string {
	c := make(chan string, 1)
	go func() { c <- w.report() }()
	select {
	case s := <-c:
		return s
	case <-time.After(d):
		return fmt.Sprintf("(the run's report did not return in %v)", d)
	}
}

// allGoroutines returns the stacks of every goroutine.
func allGoroutines() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// hangCleanups undo, when the watchdog exits the binary, what no test
// cleanup will (loop devices and mounts, which outlive the process).
var hangCleanups struct {
	sync.Mutex
	next int
	fns  map[int]func()
}

// onHang registers fn to run if the watchdog exits the binary while t
// runs.
func onHang(t testing.TB, fn func()) {
	hangCleanups.Lock()
	if hangCleanups.fns == nil {
		hangCleanups.fns = map[int]func(){}
	}
	id := hangCleanups.next
	hangCleanups.next++
	hangCleanups.fns[id] = fn
	hangCleanups.Unlock()
	t.Cleanup(func() {
		hangCleanups.Lock()
		delete(hangCleanups.fns, id)
		hangCleanups.Unlock()
	})
}

// runHangCleanups runs the registered cleanups, newest first, giving
// them a few seconds in all.
func runHangCleanups() {
	hangCleanups.Lock()
	ids := slices.Sorted(maps.Keys(hangCleanups.fns))
	fns := maps.Clone(hangCleanups.fns)
	hangCleanups.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, id := range slices.Backward(ids) {
			fns[id]()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		os.Stderr.WriteString("hang cleanups did not finish in 10s\n")
	}
}

// The watchdog stays quiet while the run makes progress, however long it
// runs, and fires once the run has made none for the limit (fake time:
// the synctest bubble's clock).
func TestHangWatchdogFiresOnlyWithoutProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 30 * time.Second
		w := newHangWatch("run", limit, nil)
		var fired atomic.Int64
		var at time.Time
		var idle time.Duration
		w.onHang = func(d time.Duration) { fired.Add(1); at, idle = time.Now(), d }
		w.start()
		// 100 operations of 10s each, on the bubble's clock (the sleep is
		// the operation, not a wait for one).
		for range 100 {
			time.Sleep(10 * time.Second)
			w.Progress()
		}
		synctest.Wait()
		if fired.Load() != 0 {
			t.Fatal("the watchdog fired while the run made progress")
		}
		stuck := time.Now()
		<-w.done // the watchdog returns once it has fired
		if fired.Load() != 1 {
			t.Fatalf("the watchdog returned having fired %d times", fired.Load())
		}
		if d := at.Sub(stuck); d < limit || d > limit+limit/4 || idle < limit {
			t.Fatalf("fired %v after the last progress (saying %v), want between %v and %v", d, idle, limit, limit+limit/4)
		}
	})
}

// A stuck run fails the test binary within its limit, and the output has
// what the run reported (seed, replay command, last operations), every
// goroutine's stack (the stuck one's too) and the threads' kernel stacks.
// The stuck run is a child process: a test binary that exits cannot
// report on itself.
func TestHangWatchdogFailsStuckRun(t *testing.T) {
	if os.Getenv("UIRINGDIO_CHILD") == "hang" {
		stuckRun(t)
		return
	}
	start := time.Now()
	out, err := runChild(t, "^TestHangWatchdogFailsStuckRun$", "UIRINGDIO_CHILD=hang", "UIRINGDIO_HANG_LIMIT=200ms")
	ee, ok := err.(interface{ ExitCode() int })
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("child: %v, want exit status 1 from the watchdog\n%s", err, out)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the stuck child took %v to fail", d)
	}
	for _, want := range []string{
		"HANG in TestHangWatchdogFailsStuckRun: no progress for",
		"seed 4242",
		"replay: UIRINGDIO_FSX_SEED=4242",
		"op 2 read off=4096",
		"goroutines:",
		"dio_test.stuckRun(", // the stuck test goroutine's stack
		"threads in the kernel:",
		"the test binary exits",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("watchdog output lacks %q", want)
		}
	}
	if _, err := os.ReadFile("/proc/self/stack"); err == nil && !strings.Contains(string(out), "pipe_read") {
		t.Errorf("the kernel stacks do not show the thread blocked in pipe_read")
	}
	if t.Failed() {
		t.Logf("child output:\n%s", out)
	}
}

// stuckRun is the child's run: two operations, then a read of an empty
// pipe that never returns (a system call that hangs, as a stuck WriteAt
// does).
func stuckRun(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	ops := []string{"op 1 write off=0 len=4096", "op 2 read off=4096 len=512"}
	w := watchHang(t, func() string {
		return "seed 4242\nreplay: UIRINGDIO_FSX_SEED=4242 go test -run X ./dio/\nlast operations:\n" + strings.Join(ops, "\n")
	})
	w.Progress()
	w.Progress()
	syscall.Read(p[0], make([]byte, 1))
	t.Fatal("the read of an empty pipe returned")
}
