package workerpool

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// funcTask adapts a function to Task for tests (the engine uses its request
// type instead, which allocates nothing).
type funcTask func()

func (f funcTask) RunCompletion() { f() }

// gateTask blocks its worker until release is closed; started is closed
// when it begins.
type gateTask struct {
	started, release chan struct{}
}

func newGate() *gateTask {
	return &gateTask{started: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateTask) RunCompletion() {
	close(g.started)
	<-g.release
}

// eventually yields until cond holds, failing the test if it does not
// within a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		runtime.Gosched()
	}
}

// TestPoolBound fills a one-worker pool's queue behind a gated task and
// checks that the bound holds: TrySubmit refuses, Submit blocks until a slot
// frees, and nothing is dropped.
func TestPoolBound(t *testing.T) {
	const queueLen = 3
	p := NewPool(1, queueLen)
	defer p.Close()
	if p.Cap() != queueLen {
		t.Fatalf("Cap() = %d, want %d", p.Cap(), queueLen)
	}

	gate := newGate()
	if err := p.Submit(gate); err != nil {
		t.Fatal(err)
	}
	<-gate.started
	if p.Running() != 1 || p.QueueDepth() != 0 {
		t.Fatalf("gated: Running %d QueueDepth %d, want 1 and 0", p.Running(), p.QueueDepth())
	}

	var ran atomic.Int32
	task := funcTask(func() { ran.Add(1) })
	for i := 1; i <= queueLen; i++ {
		if err := p.Submit(task); err != nil {
			t.Fatal(err)
		}
		if d := p.QueueDepth(); d != i {
			t.Fatalf("after %d submits behind the gate, QueueDepth() = %d", i, d)
		}
	}
	if p.TrySubmit(task) {
		t.Fatal("TrySubmit succeeded on a full queue")
	}
	// A context that expires can only end SubmitContext if it found no room.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err := p.SubmitContext(ctx, task)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SubmitContext on a full queue = %v, want DeadlineExceeded", err)
	}

	submitted := make(chan error)
	go func() { submitted <- p.Submit(task) }()
	// Nothing says that a Submit is waiting for room: give a wrong early
	// return a moment to show. (A correct Submit passes whatever the
	// moment's length.)
	select {
	case err := <-submitted:
		t.Fatalf("Submit on a full queue returned %v without waiting", err)
	case <-time.After(50 * time.Millisecond):
	}
	if d := p.QueueDepth(); d != queueLen {
		t.Fatalf("QueueDepth() = %d while full, want %d", d, queueLen)
	}
	if ran.Load() != 0 {
		t.Fatal("a task ran while the only worker was gated")
	}

	close(gate.release)
	if err := <-submitted; err != nil {
		t.Fatalf("blocked Submit: %v", err)
	}
	eventually(t, "every task ran", func() bool { return p.Completed() == queueLen+2 })
	if n := ran.Load(); n != queueLen+1 {
		t.Fatalf("%d tasks ran, want %d", n, queueLen+1)
	}
	if p.Running() != 0 || p.QueueDepth() != 0 {
		t.Fatalf("idle: Running %d QueueDepth %d", p.Running(), p.QueueDepth())
	}
}

// TestPoolDefaults checks NewPool(0, 0): GOMAXPROCS workers and the default
// queue length.
func TestPoolDefaults(t *testing.T) {
	p := NewPool(0, 0)
	defer p.Close()
	if p.Cap() != DefaultQueueLen {
		t.Fatalf("Cap() = %d, want %d", p.Cap(), DefaultQueueLen)
	}
	procs := runtime.GOMAXPROCS(0)
	gates := make([]*gateTask, procs+1)
	for i := range gates {
		gates[i] = newGate()
		if err := p.Submit(gates[i]); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every worker is busy", func() bool { return p.Running() == procs })
	if d := p.QueueDepth(); d != 1 {
		t.Fatalf("with %d workers busy and %d gates, QueueDepth() = %d, want 1", procs, len(gates), d)
	}
	for _, g := range gates {
		close(g.release)
	}
}

// countTask counts its runs; tasks[i] is task i.
type countTask struct{ runs atomic.Int32 }

func (c *countTask) RunCompletion() { c.runs.Add(1) }

// TestPoolRunsEachTaskOnce submits from many goroutines into a small queue
// (so Submit blocks often) and checks every task ran exactly once.
func TestPoolRunsEachTaskOnce(t *testing.T) {
	submitters, perSubmitter := 8, 2000
	if testing.Short() {
		perSubmitter = 200
	}
	tasks := make([]countTask, submitters*perSubmitter)
	p := NewPool(4, 8)
	var wg sync.WaitGroup
	for s := range submitters {
		wg.Go(func() {
			for i := s * perSubmitter; i < (s+1)*perSubmitter; i++ {
				var err error
				if i%3 == 0 {
					for !p.TrySubmit(&tasks[i]) {
						runtime.Gosched()
					}
				} else {
					err = p.Submit(&tasks[i])
				}
				if err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	p.Close()
	for i := range tasks {
		if n := tasks[i].runs.Load(); n != 1 {
			t.Errorf("task %d ran %d times", i, n)
		}
	}
	if c := p.Completed(); c != uint64(len(tasks)) {
		t.Errorf("Completed() = %d, want %d", c, len(tasks))
	}
}

// TestPoolCloseDrainsThenRefuses closes a pool with work queued behind a
// gate: Close waits for all of it, later submits are refused, and Close is
// idempotent.
func TestPoolCloseDrainsThenRefuses(t *testing.T) {
	p := NewPool(1, 16)
	gate := newGate()
	if err := p.Submit(gate); err != nil {
		t.Fatal(err)
	}
	<-gate.started
	tasks := make([]countTask, 10)
	for i := range tasks {
		if err := p.Submit(&tasks[i]); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()

	// Probe with a deadline: before Close takes effect a probe may be queued
	// (it has room for 6) or, were the queue full, wait; it must never hang.
	eventually(t, "Close refuses new work", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		return p.SubmitContext(ctx, new(countTask)) == ErrPoolClosed
	})
	if p.TrySubmit(new(countTask)) {
		t.Fatal("TrySubmit accepted work after Close")
	}
	// A moment for a wrong early return of Close to show (no event says
	// Close is waiting; a correct Close passes whatever the moment's length).
	select {
	case <-closed:
		t.Fatal("Close returned while queued work had not run")
	case <-time.After(20 * time.Millisecond):
	}
	close(gate.release)
	<-closed
	for i := range tasks {
		if n := tasks[i].runs.Load(); n != 1 {
			t.Errorf("queued task %d ran %d times", i, n)
		}
	}
	p.Close() // idempotent
	if err := p.Submit(new(countTask)); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Submit after Close = %v", err)
	}
}

// TestPoolCloseKeepsBlockedSubmit closes a pool while a Submit waits for
// room: that Submit either got its task queued (and it runs) or was refused;
// a task is never accepted and then dropped.
func TestPoolCloseKeepsBlockedSubmit(t *testing.T) {
	for range 20 {
		p := NewPool(1, 1)
		gate := newGate()
		if err := p.Submit(gate); err != nil {
			t.Fatal(err)
		}
		<-gate.started
		var filler, blocked countTask
		if err := p.Submit(&filler); err != nil {
			t.Fatal(err)
		}
		res := make(chan error)
		go func() { res <- p.Submit(&blocked) }()
		// Only spreads when the release lands against Close; the test
		// waits for no event here.
		go func() { time.Sleep(time.Millisecond); close(gate.release) }()
		p.Close()
		err := <-res
		switch {
		case err == nil && blocked.runs.Load() != 1:
			t.Fatalf("accepted task ran %d times", blocked.runs.Load())
		case errors.Is(err, ErrPoolClosed) && blocked.runs.Load() != 0:
			t.Fatal("refused task ran")
		case err != nil && !errors.Is(err, ErrPoolClosed):
			t.Fatal(err)
		}
		if filler.runs.Load() != 1 {
			t.Fatal("queued task did not run before Close returned")
		}
	}
}

// TestPoolCloseRacesSubmit closes a pool while many goroutines submit:
// every accepted task runs exactly once, no refused task runs, and nothing
// panics on a closed channel.
func TestPoolCloseRacesSubmit(t *testing.T) {
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	for range rounds {
		const submitters, each = 4, 50
		tasks := make([]countTask, submitters*each)
		accepted := make([]bool, len(tasks))
		p := NewPool(2, 2)
		var wg sync.WaitGroup
		for s := range submitters {
			wg.Go(func() {
				for i := s * each; i < (s+1)*each; i++ {
					if s%2 == 0 {
						accepted[i] = p.TrySubmit(&tasks[i])
						continue
					}
					err := p.Submit(&tasks[i])
					if err != nil && !errors.Is(err, ErrPoolClosed) {
						t.Error(err)
					}
					accepted[i] = err == nil
				}
			})
		}
		runtime.Gosched()
		p.Close()
		wg.Wait()
		for i := range tasks {
			want := int32(0)
			if accepted[i] {
				want = 1
			}
			if n := tasks[i].runs.Load(); n != want {
				t.Fatalf("task %d (accepted %v) ran %d times", i, accepted[i], n)
			}
		}
	}
}

// TestPoolCloseConcurrent calls Close from several goroutines; each must
// return only after the workers are done.
func TestPoolCloseConcurrent(t *testing.T) {
	p := NewPool(2, 4)
	var task countTask
	for range 4 {
		if err := p.Submit(&task); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			p.Close()
			if n := task.runs.Load(); n != 4 {
				t.Errorf("Close returned after %d of 4 tasks", n)
			}
		})
	}
	wg.Wait()
}

// TestPoolNoGoroutineLeak checks that Close leaves no worker behind.
func TestPoolNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 5 {
		p := NewPool(8, 4)
		var task countTask
		for range 100 {
			if err := p.Submit(&task); err != nil {
				t.Fatal(err)
			}
		}
		p.Close()
	}
	eventually(t, "the workers exited", func() bool { return runtime.NumGoroutine() <= before })
}

// wgTask marks a WaitGroup done when it runs.
type wgTask struct{ wg sync.WaitGroup }

func (w *wgTask) RunCompletion() { w.wg.Done() }

func TestPoolSubmitDoesNotAllocate(t *testing.T) {
	p := NewPool(1, 16)
	defer p.Close()
	task := new(wgTask)
	allocs := testing.AllocsPerRun(1000, func() {
		task.wg.Add(1)
		if err := p.Submit(task); err != nil {
			panic(err)
		}
		task.wg.Wait()
	})
	if allocs != 0 {
		t.Fatalf("Submit and run: %v allocs per run, want 0", allocs)
	}
}

func BenchmarkPoolSubmit(b *testing.B) {
	p := NewPool(0, 0)
	defer p.Close()
	task := new(wgTask)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			task.wg.Add(1)
			if err := p.Submit(task); err != nil {
				b.Fatal(err)
			}
		}
	})
	task.wg.Wait()
}
