package completion

import (
	"context"
	"sync"
)

// Task is completion work that a Queue holds until its owner runs it. The
// engine pushes its requests as Tasks of one pointer, which allocates
// nothing per I/O; a caller may push its own.
type Task interface{ RunCompletion() }

// minQueueCap is the ring size a Queue starts with on its first Push.
const minQueueCap = 16

// Queue is a caller's own completion queue for the Caller policy
// (caller-deferred completion): reapers Push finished requests, and the
// goroutines that own the queue run them with Poll or Wait, so completion
// work always runs on a goroutine that asked for it and never on a reaper.
//
// A Queue is safe for concurrent use by any number of producers and
// consumers; each pushed task runs exactly once, on the goroutine of the
// Poll or Wait call that took it, in FIFO order of taking.
//
// The zero value is an empty, usable Queue; NewQueue sizes one in advance.
// The queue is unbounded: when its ring is full, Push grows it (doubling),
// so Push never drops a task and never waits for a consumer. The ring keeps
// its largest size; in steady state Push and Poll do not allocate.
// A Queue must not be copied after first use.
type Queue struct {
	mu    sync.Mutex
	buf   []Task // ring; len(buf) is 0 or a power of two
	head  int    // index of the oldest task
	count int    // tasks in buf

	// wake holds at most one token saying "the queue may have work". Every
	// Push sends one (dropped if one is already there), and so does every
	// take that leaves work behind, so a sleeping Wait is woken whenever
	// there is work that no running consumer is certain to take. Tokens can
	// be stale; Wait rechecks under mu. Created on first use, under mu.
	wake chan struct{}
}

// NewQueue returns an empty Queue whose ring holds capacity tasks before it
// first grows (rounded up to a power of two; capacity <= 0 means the
// minimum).
func NewQueue(capacity int) *Queue {
	q := new(Queue)
	q.buf = make([]Task, ceilPow2(max(capacity, minQueueCap)))
	q.wake = make(chan struct{}, 1)
	return q
}

func ceilPow2(n int) int {
	c := 1
	for c < n {
		c <<= 1
	}
	return c
}

// Push appends t for a consumer to run. It never blocks beyond a short
// critical section and never drops t; it allocates only when the ring must
// grow. t must not be nil.
func (q *Queue) Push(t Task) {
	if t == nil {
		panic("completion: Push of a nil Task")
	}
	q.mu.Lock()
	if q.count == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.count)&(len(q.buf)-1)] = t
	q.count++
	wake := q.wakeLocked()
	q.mu.Unlock()
	signal(wake)
}

// grow doubles the ring (or creates it), keeping the tasks in order.
// q.mu is held.
func (q *Queue) grow() {
	buf := make([]Task, max(2*len(q.buf), minQueueCap))
	n := copy(buf, q.buf[q.head:])
	copy(buf[n:], q.buf[:q.head])
	q.buf = buf
	q.head = 0
}

// wakeLocked returns the wake channel, creating it for a zero Queue.
// q.mu is held.
func (q *Queue) wakeLocked() chan struct{} {
	if q.wake == nil {
		q.wake = make(chan struct{}, 1)
	}
	return q.wake
}

// signal leaves a wake token unless one is already waiting.
func signal(wake chan struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// take removes the oldest task and returns it with the number of tasks left,
// or returns nil if there is none. If work is left behind it leaves a wake
// token, so another sleeping consumer can take it while this one runs t (and
// even if t panics).
func (q *Queue) take() (t Task, left int) {
	q.mu.Lock()
	if q.count == 0 {
		q.mu.Unlock()
		return nil, 0
	}
	t = q.buf[q.head]
	q.buf[q.head] = nil // do not keep a finished request reachable
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.count--
	left = q.count
	wake := q.wake
	q.mu.Unlock()
	if left > 0 {
		signal(wake)
	}
	return t, left
}

// Poll runs, on the calling goroutine, the tasks that are ready when it is
// called, and returns how many it ran. It runs at most as many as were
// queued when it began (tasks pushed meanwhile, even by the tasks it runs,
// wait for the next call), fewer if other consumers take some. It never
// blocks waiting for work.
//
// A task that panics stops Poll and propagates the panic; the tasks not yet
// taken stay queued.
func (q *Queue) Poll() int {
	t, left := q.take()
	if t == nil {
		return 0
	}
	budget := left + 1 // what was queued when Poll began
	ran := 0
	for {
		t.RunCompletion()
		ran++
		if ran == budget {
			return ran
		}
		if t, _ = q.take(); t == nil {
			return ran
		}
	}
}

// Wait runs tasks on the calling goroutine, sleeping while there are none,
// until at least n have run or ctx is done, and returns how many it ran. It
// returns as soon as the n-th task has run, leaving the rest queued. Tasks
// that are ready run before ctx is looked at, so a done ctx still lets Wait
// run up to n ready tasks; it then returns ctx.Err() if fewer than n ran.
// With n <= 0 it runs the ready tasks like Poll and returns nil.
//
// A task that panics stops Wait and propagates the panic; the tasks not yet
// taken stay queued and another waiter is woken for them.
func (q *Queue) Wait(ctx context.Context, n int) (int, error) {
	if n <= 0 {
		return q.Poll(), nil
	}
	done := ctx.Done()
	ran := 0
	for {
		for ran < n {
			t, _ := q.take()
			if t == nil {
				break
			}
			t.RunCompletion()
			ran++
		}
		if ran >= n {
			return ran, nil
		}
		// The queue was empty when take looked. Any Push after that sends a
		// token, so sleeping on wake cannot miss it.
		q.mu.Lock()
		wake := q.wakeLocked()
		q.mu.Unlock()
		if testHookBeforeSleep != nil {
			testHookBeforeSleep()
		}
		select {
		case <-wake:
		case <-done:
			return ran, ctx.Err()
		}
	}
}

// testHookBeforeSleep, when set by a test, runs in Wait after it found the
// queue empty and before it sleeps: the window in which wake tokens from
// several pushes can coalesce into one.
var testHookBeforeSleep func()

// Len returns how many tasks are queued and not yet taken.
func (q *Queue) Len() int {
	q.mu.Lock()
	n := q.count
	q.mu.Unlock()
	return n
}
