package completion

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// goid returns the calling goroutine's id, parsed from its stack header
// ("goroutine 42 [running]:"). Tests use it as the identity of the goroutine
// a task ran on.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	b = b[:bytes.IndexByte(b, ' ')]
	id, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		panic("goid: " + err.Error())
	}
	return id
}

// seqTask appends its id to a shared log when it runs.
type seqTask struct {
	id  int
	log *[]int
}

func (s *seqTask) RunCompletion() { *s.log = append(*s.log, s.id) }

func TestQueueZeroValueFIFOAndGrowth(t *testing.T) {
	var q Queue
	var log []int
	const n = 100 // several doublings from minQueueCap
	tasks := make([]seqTask, n)
	// Interleave pushes and partial polls so the ring wraps before it grows.
	next := 0
	for next < n {
		for range 7 {
			if next < n {
				tasks[next] = seqTask{next, &log}
				q.Push(&tasks[next])
				next++
			}
		}
		if q.Len() > 3 {
			if got, err := q.Wait(context.Background(), 3); got != 3 || err != nil {
				t.Fatalf("Wait(3) = %d, %v", got, err)
			}
		}
	}
	q.Poll()
	if len(log) != n {
		t.Fatalf("%d tasks ran, want %d", len(log), n)
	}
	for i, id := range log {
		if id != i {
			t.Fatalf("task %d ran in position %d: not FIFO (%v)", id, i, log)
		}
	}
	if q.Len() != 0 {
		t.Fatalf("Len() = %d after draining", q.Len())
	}
}

func TestNewQueueCapacity(t *testing.T) {
	for _, tt := range []struct{ capacity, want int }{{-1, minQueueCap}, {0, minQueueCap}, {5, minQueueCap}, {17, 32}, {64, 64}} {
		if got := len(NewQueue(tt.capacity).buf); got != tt.want {
			t.Errorf("NewQueue(%d) ring = %d, want %d", tt.capacity, got, tt.want)
		}
	}
}

// pushBackTask pushes another task onto q when it runs.
type pushBackTask struct {
	q    *Queue
	then Task
}

func (p *pushBackTask) RunCompletion() { p.q.Push(p.then) }

// TestQueuePollRunsOnlyWhatIsReady checks that Poll does not chase work
// pushed while it runs (a task re-queueing itself cannot trap the caller).
func TestQueuePollRunsOnlyWhatIsReady(t *testing.T) {
	var q Queue
	var later countTask
	q.Push(&pushBackTask{&q, &later})
	if n := q.Poll(); n != 1 {
		t.Fatalf("Poll() = %d, want 1", n)
	}
	if q.Len() != 1 || later.runs.Load() != 0 {
		t.Fatalf("task pushed during Poll: Len %d, ran %d", q.Len(), later.runs.Load())
	}
	if n := q.Poll(); n != 1 || later.runs.Load() != 1 {
		t.Fatalf("second Poll() = %d, ran %d", n, later.runs.Load())
	}
	if n := q.Poll(); n != 0 {
		t.Fatalf("Poll() of an empty queue = %d", n)
	}
}

func TestQueueWaitReturnsAtN(t *testing.T) {
	q := NewQueue(0)
	tasks := make([]countTask, 5)
	for i := range tasks {
		q.Push(&tasks[i])
	}
	n, err := q.Wait(context.Background(), 2)
	if n != 2 || err != nil {
		t.Fatalf("Wait(2) with 5 ready = %d, %v", n, err)
	}
	if q.Len() != 3 || tasks[1].runs.Load() != 1 || tasks[2].runs.Load() != 0 {
		t.Fatalf("Wait ran more than asked: Len %d", q.Len())
	}
	if n, err := q.Wait(context.Background(), 0); n != 3 || err != nil {
		t.Fatalf("Wait(0) = %d, %v; want it to run the 3 ready", n, err)
	}
}

// TestQueueWaitSleepsUntilPush checks that Wait blocks while the queue is
// empty and returns once pushes from other goroutines reach n.
func TestQueueWaitSleepsUntilPush(t *testing.T) {
	var q Queue
	var task countTask
	sleeping := make(chan struct{}, 16) // Wait found the queue empty and sleeps
	testHookBeforeSleep = func() {
		select {
		case sleeping <- struct{}{}:
		default:
		}
	}
	defer func() { testHookBeforeSleep = nil }()
	done := make(chan int)
	go func() {
		n, err := q.Wait(context.Background(), 3)
		if err != nil {
			t.Error(err)
		}
		done <- n
	}()
	for i := range 3 {
		select {
		case n := <-done:
			t.Fatalf("Wait(3) returned %d after %d pushes", n, i)
		case <-sleeping:
		}
		go q.Push(&task)
	}
	if n := <-done; n != 3 || task.runs.Load() != 3 {
		t.Fatalf("Wait(3) = %d, ran %d", n, task.runs.Load())
	}
}

func TestQueueWaitContext(t *testing.T) {
	var q Queue
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		// Cancelled once Wait has found the queue empty and goes to sleep:
		// the cancel must wake it.
		testHookBeforeSleep = cancel
		defer func() { testHookBeforeSleep = nil }()
		n, err := q.Wait(ctx, 1)
		if n != 0 || !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %d, %v; want 0, Canceled", n, err)
		}
	})
	t.Run("deadline after some ran", func(t *testing.T) {
		var task countTask
		q.Push(&task)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		n, err := q.Wait(ctx, 2)
		if n != 1 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %d, %v; want 1, DeadlineExceeded", n, err)
		}
	})
	t.Run("done ctx still runs ready tasks", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var task countTask
		q.Push(&task)
		q.Push(&task)
		if n, err := q.Wait(ctx, 1); n != 1 || err != nil {
			t.Fatalf("Wait(1) with a done ctx and 2 ready = %d, %v; want 1, nil", n, err)
		}
		if n, err := q.Wait(ctx, 2); n != 1 || !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait(2) with a done ctx and 1 ready = %d, %v; want 1, Canceled", n, err)
		}
	})
	if q.Len() != 0 {
		t.Fatalf("Len() = %d", q.Len())
	}
}

// TestQueueNoLostWakeup has several waiters each waiting for one task
// while tasks arrive, round after round: in some rounds one producer pushes
// them all in a burst after the waiters have gone to sleep (so wake tokens
// coalesce and one woken waiter must pass the rest on), in others each task
// has its own producer racing the waiters. A wakeup lost between "queue
// empty" and "sleep", or a token consumed by a waiter that then leaves work
// behind, strands a waiter and fails on the deadline.
func TestQueueNoLostWakeup(t *testing.T) {
	rounds := 400
	if testing.Short() {
		rounds = 60
	}
	const k = 4
	var q Queue
	var task countTask
	var asleep atomic.Int32 // waiters that found the queue empty and sleep
	testHookBeforeSleep = func() { asleep.Add(1) }
	defer func() { testHookBeforeSleep = nil }()
	for round := range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		asleep.Store(0)
		var wg sync.WaitGroup
		for range k {
			wg.Go(func() {
				if n, err := q.Wait(ctx, 1); n != 1 || err != nil {
					t.Errorf("round %d: Wait(1) = %d, %v", round, n, err)
				}
			})
		}
		if round%2 == 0 {
			for asleep.Load() < k { // every waiter is at its select
				runtime.Gosched()
			}
			for range k {
				q.Push(&task)
			}
		} else {
			for range k {
				wg.Go(func() { q.Push(&task) })
			}
		}
		wg.Wait()
		cancel()
		if t.Failed() {
			return
		}
	}
	if n := task.runs.Load(); n != int32(rounds*k) {
		t.Fatalf("%d tasks ran, want %d", n, rounds*k)
	}
}

// TestQueueCoalescedWakeups pins the case where two waiters have both found
// the queue empty and are about to sleep when two tasks arrive: the second
// push finds the first one's token still there, so only one token exists.
// The waiter that takes it must pass a token on for the task it leaves, or
// the other waiter sleeps forever next to a queued task.
func TestQueueCoalescedWakeups(t *testing.T) {
	var q Queue
	var task countTask
	var atHook sync.WaitGroup
	atHook.Add(2)
	release := make(chan struct{})
	testHookBeforeSleep = func() {
		atHook.Done()
		<-release
	}
	defer func() { testHookBeforeSleep = nil }()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	results := make(chan error, 2)
	for range 2 {
		go func() {
			n, err := q.Wait(ctx, 1)
			if err == nil && n != 1 {
				err = errors.New("ran " + strconv.Itoa(n))
			}
			results <- err
		}()
	}
	atHook.Wait() // both found the queue empty
	testHookBeforeSleep = func() {}
	q.Push(&task)
	q.Push(&task)
	if len(q.wake) != 1 {
		t.Fatalf("%d wake tokens after two pushes, want 1 (coalesced)", len(q.wake))
	}
	close(release)
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("a waiter was stranded: %v (Len %d)", err, q.Len())
		}
	}
	if task.runs.Load() != 2 {
		t.Fatalf("%d tasks ran, want 2", task.runs.Load())
	}
}

// panicTask panics when it runs.
type panicTask struct{}

func (panicTask) RunCompletion() { panic("task failed") }

// TestQueuePanicKeepsRest checks that a panicking task loses no other task
// and leaves a wake token for another waiter.
func TestQueuePanicKeepsRest(t *testing.T) {
	var q Queue
	var rest countTask
	q.Push(panicTask{})
	q.Push(&rest)
	q.Push(&rest)
	<-q.wake // the pushes' token: pretend a waiter took it and is running

	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic did not reach Poll's caller")
			}
		}()
		q.Poll()
	}()
	if q.Len() != 2 || rest.runs.Load() != 0 {
		t.Fatalf("after the panic: Len %d, ran %d", q.Len(), rest.runs.Load())
	}
	if len(q.wake) != 1 {
		t.Fatal("a take that left work behind left no wake token")
	}
	if n, err := q.Wait(context.Background(), 2); n != 2 || err != nil {
		t.Fatalf("Wait(2) = %d, %v", n, err)
	}
}

// callerTask is one request in the stress test: a reaper finishes it, or a
// canceller does, and whichever claims it first pushes it to the owner's
// queue. When it runs it records where.
type callerTask struct {
	once  atomic.Bool // claimed by the path that finishes it
	runs  atomic.Int32
	ranOn atomic.Uint64 // goroutine id
	bad   atomic.Bool   // ran on a goroutine that was not inside Poll/Wait
	run   func(*callerTask)
}

func (ct *callerTask) RunCompletion() { ct.run(ct) }

// consumer is a goroutine that owns a queue's completions; inCall is set
// only while it is inside Poll or Wait.
type consumer struct {
	gid    uint64
	inCall atomic.Bool
}

// TestQueueCallerDeferredStress is the hardest test of caller-deferred
// completion. Reapers and cancellers race to finish each request (exactly
// one claims it and pushes it); consumers mixing Poll and Wait with
// varied n and short deadlines run them. Every request must run exactly
// once, on a consumer goroutine, while that consumer is inside Poll or
// Wait; none may be left queued.
func TestQueueCallerDeferredStress(t *testing.T) {
	reapers, consumers, perReaper := 4, 3, 20000
	if testing.Short() {
		reapers, consumers, perReaper = 2, 2, 2000
	}
	total := reapers * perReaper
	tasks := make([]callerTask, total)
	var q Queue

	// Consumers register their identity before any task exists.
	cons := make([]*consumer, consumers)
	byGID := make(map[uint64]*consumer)
	var registered, stop sync.WaitGroup
	var mu sync.Mutex
	var ran atomic.Int64
	allDone := make(chan struct{})
	registered.Add(consumers)
	stop.Add(consumers)
	for c := range consumers {
		go func() {
			defer stop.Done()
			me := &consumer{gid: goid()}
			mu.Lock()
			cons[c], byGID[me.gid] = me, me
			mu.Unlock()
			registered.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for {
				select {
				case <-allDone:
					return
				default:
				}
				me.inCall.Store(true)
				var n int
				switch rng.IntN(3) {
				case 0:
					n = q.Poll()
				default:
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(2000))*time.Microsecond)
					n, _ = q.Wait(ctx, 1+rng.IntN(64))
					cancel()
				}
				me.inCall.Store(false)
				if n > 0 && ran.Add(int64(n)) == int64(total) {
					close(allDone)
				}
			}
		}()
	}
	registered.Wait()

	// The task body: byGID is read-only from here on.
	run := func(ct *callerTask) {
		id := goid()
		ct.runs.Add(1)
		ct.ranOn.Store(id)
		if c := byGID[id]; c == nil || !c.inCall.Load() {
			ct.bad.Store(true)
		}
	}
	for i := range tasks {
		tasks[i].run = run
	}
	finish := func(i int) {
		if tasks[i].once.CompareAndSwap(false, true) {
			q.Push(&tasks[i])
		}
	}

	var producers sync.WaitGroup
	for r := range reapers {
		// The reaper and its canceller walk the same requests in opposite
		// directions, so they race on every claim in the middle.
		lo, hi := r*perReaper, (r+1)*perReaper
		producers.Go(func() {
			for i := lo; i < hi; i++ {
				finish(i)
			}
		})
		producers.Go(func() {
			for i := hi - 1; i >= lo; i-- {
				finish(i)
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	producers.Wait()

	select {
	case <-allDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("only %d of %d tasks ran; %d still queued", ran.Load(), total, q.Len())
	}
	stop.Wait()

	for i := range tasks {
		ct := &tasks[i]
		if n := ct.runs.Load(); n != 1 {
			t.Fatalf("task %d ran %d times", i, n)
		}
		if ct.bad.Load() {
			t.Fatalf("task %d ran on goroutine %d, which was not a consumer inside Poll/Wait", i, ct.ranOn.Load())
		}
	}
	if q.Len() != 0 {
		t.Fatalf("Len() = %d after every task ran", q.Len())
	}
}

func TestQueueDoesNotAllocate(t *testing.T) {
	q := NewQueue(4)
	task := new(countTask)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		for range 4 {
			q.Push(task)
		}
		q.Poll()
		q.Push(task)
		if n, err := q.Wait(ctx, 1); n != 1 || err != nil {
			panic("Wait")
		}
	})
	if allocs != 0 {
		t.Fatalf("Push, Poll and Wait: %v allocs per run, want 0", allocs)
	}
	// The zero value too, once its ring exists.
	var z Queue
	z.Push(task)
	z.Poll()
	allocs = testing.AllocsPerRun(1000, func() {
		z.Push(task)
		z.Poll()
	})
	if allocs != 0 {
		t.Fatalf("zero Queue Push and Poll: %v allocs per run, want 0", allocs)
	}
}

func BenchmarkQueuePushPoll(b *testing.B) {
	q := NewQueue(64)
	task := new(countTask)
	b.ReportAllocs()
	for b.Loop() {
		q.Push(task)
		q.Poll()
	}
}

// BenchmarkQueueReapersToOwner has parallel goroutines pushing (reapers)
// and one goroutine waiting (the owner), the Caller policy's shape.
func BenchmarkQueueReapersToOwner(b *testing.B) {
	var q Queue
	task := new(countTask)
	owner := make(chan int)
	go func() {
		ran := 0
		for ran < b.N {
			n, _ := q.Wait(context.Background(), b.N-ran)
			ran += n
		}
		owner <- ran
	}()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			q.Push(task)
		}
	})
	<-owner
}

// countTask counts its runs; tasks[i] is task i.
type countTask struct{ runs atomic.Int32 }

func (c *countTask) RunCompletion() { c.runs.Add(1) }
