//go:build linux

package engine

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// newWorkers makes the workers; pread carries out a request's pieces with
// the pread backend (handed down).
func newWorkers(max int, pread func(*Req)) *workers {
	if max <= 0 {
		max = 4 * runtime.GOMAXPROCS(0) // enough that pread requests to a slow device overlap
	}
	w := &workers{max: max, pread: pread}
	w.cond.L = &w.mu
	return w
}

func (w *workers) push(r *Req, job uint8) {
	w.mu.Lock()
	r.job, r.link = job, nil
	if w.stopped {
		w.mu.Unlock()
		w.do(r) // after Close: run it here rather than lose it
		return
	}
	if w.tail == nil {
		w.head = r
	} else {
		w.tail.link = r
	}
	w.tail = r
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
	// Locked to its thread, so that the thread says a caller is a worker
	// (Engine.OnEngineThread); the thread ends with the worker.
	runtime.LockOSThread()
	tid := int32(unix.Gettid())
	w.mu.Lock()
	tids := append(w.tids[:len(w.tids):len(w.tids)], tid) // a new array and header: readers hold the old ones
	w.tids = tids
	w.tidsView.Store(&tids)
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
		w.head = r.link
		if w.head == nil {
			w.tail = nil
		}
		r.link = nil
		w.mu.Unlock()
		w.do(r)
		w.mu.Lock()
	}
}

func (w *workers) do(r *Req) {
	if r.job == jobPread {
		w.pread(r)
		return
	}
	r.runCompletion()
}

// close runs what is queued and stops the workers.
func (w *workers) close() {
	w.mu.Lock()
	w.stopped = true
	w.cond.Broadcast()
	w.mu.Unlock()
	w.wg.Wait()
}
