//go:build linux

package dio

import (
	"runtime"
	"sync"
)

// workers run what must run neither on the owner nor on a submitter's
// stack: completions under the Pool policy (work that may block), Inline
// completions of the pread backend's requests, and the pread backend's
// asynchronous requests themselves. Their queue has no bound: the owner
// hands work over without ever waiting (a Pool callback may itself wait
// for I/O of this engine, which only the owner can complete), and what it
// holds is bounded by the requests in flight. The goroutines start with
// the first work, up to max.
type workers struct {
	mu      sync.Mutex
	cond    sync.Cond
	head    *Request // FIFO through backlog
	tail    *Request
	started int
	idle    int
	max     int
	stopped bool
	wg      sync.WaitGroup
	e       *Engine
}

// Jobs a worker does with a request.
const (
	jobComplete = iota + 1 // run its completion
	jobPread               // carry out its pieces with the pread backend
)

// defaultWorkers is how many workers an engine has without EngineOptions.Workers:
// enough that pread requests to a slow device overlap.
func defaultWorkers() int { return 4 * runtime.GOMAXPROCS(0) }

func newWorkers(e *Engine, max int) *workers {
	if max <= 0 {
		max = defaultWorkers()
	}
	w := &workers{max: max, e: e}
	w.cond.L = &w.mu
	return w
}

// push queues job for r.
func (w *workers) push(r *Request, job uint8) {
	w.mu.Lock()
	r.job = job
	r.backlog = nil
	if w.tail == nil {
		w.head = r
	} else {
		w.tail.backlog = r
	}
	w.tail = r
	if w.stopped {
		// After Close: run it here rather than lose it.
		w.head, w.tail = nil, nil
		w.mu.Unlock()
		w.do(r)
		return
	}
	if w.idle > 0 {
		w.cond.Signal()
	} else if w.started < w.max {
		w.started++
		w.wg.Add(1)
		go w.loop()
	}
	w.mu.Unlock()
}

func (w *workers) loop() {
	defer w.wg.Done()
	w.mu.Lock()
	for {
		for w.head == nil && !w.stopped {
			w.idle++
			w.cond.Wait()
			w.idle--
		}
		r := w.head
		if r == nil {
			w.mu.Unlock()
			return
		}
		w.head = r.backlog
		if w.head == nil {
			w.tail = nil
		}
		r.backlog = nil
		w.mu.Unlock()
		w.do(r)
		w.mu.Lock()
	}
}

func (w *workers) do(r *Request) {
	switch r.job {
	case jobPread:
		w.e.pr.run(w.e, r)
	default:
		r.runCompletion()
	}
}

// close runs what is queued and stops the workers.
func (w *workers) close() {
	w.mu.Lock()
	w.stopped = true
	w.cond.Broadcast()
	w.mu.Unlock()
	w.wg.Wait()
}
