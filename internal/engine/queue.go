//go:build linux

package engine

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// OnOwnerThread reports whether the caller is the owner goroutine (an
// Inline callback): the owner is locked to its thread and nothing else
// runs there, so the thread says who it is.
func (e *Engine) OnOwnerThread() bool {
	return e.ring != nil && e.o.tid.Load() == int32(unix.Gettid())
}

// OnEngineThread reports whether the caller is one of the engine's own
// goroutines, the owner or a worker (an Inline or Pool callback, or a
// pread backend's Inline one): I/O of the engine may need it to progress.
func (e *Engine) OnEngineThread() bool {
	tid := int32(unix.Gettid())
	return e.ring != nil && e.o.tid.Load() == tid || e.workers.onWorker(tid)
}

// onOwner runs fn on the owner's thread and waits for it; on the owner it
// runs fn at once.
func (e *Engine) onOwner(fn func()) {
	if e.OnOwnerThread() {
		fn()
		return
	}
	c := &ownerCmd{fn: fn, done: make(chan struct{})}
	push(&e.o.cmds, c, &c.next)
	e.wakeOwner()
	<-c.done
}

// enqueue hands r to the owner.
func (e *Engine) enqueue(r *Req) {
	push(&e.o.head, r, &r.link)
	e.wakeOwner()
}

// push links n at the head of a lock-free stack through its link field.
func push[T any](head *atomic.Pointer[T], n *T, link **T) {
	for {
		old := head.Load()
		*link = old
		if head.CompareAndSwap(old, n) {
			return
		}
	}
}

// requestCancel asks the owner to cancel the use gen of r: its SQEs in
// flight and its pieces not yet submitted. A cancel of an earlier use
// finds a later gen and does nothing.
func (e *Engine) requestCancel(r *Req, gen uint32) {
	r.cancel.gen.Store(gen)
	if !r.cancel.queued.CompareAndSwap(false, true) {
		return // queued already; the owner reads cancel.gen when it takes it
	}
	push(&e.o.cancels, r, &r.cancel.next)
	e.wakeOwner()
}

// wakeOwner wakes the owner if it sleeps. Go's atomics are sequentially
// consistent: the push before this load and the owner's sleep store
// before its last look at the queues cannot both miss each other.
func (e *Engine) wakeOwner() {
	s := e.o.sleep.Load()
	if s == 0 || !e.o.sleep.CompareAndSwap(s, 0) {
		return
	}
	e.C.Wakes.Add(1)
	if s == sleepChan {
		signal(e.o.wakeCh)
		return
	}
	unix.Write(e.o.efd, eventfdOne[:])
}

var eventfdOne = [8]byte{1}

// pending reports whether launchers left the owner work.
func (e *Engine) pending() bool {
	return e.o.ready.Load() != nil || e.o.head.Load() != nil || e.o.cancels.Load() != nil || e.o.cmds.Load() != nil
}

// onWorker reports whether tid is one of the workers' threads.
func (w *workers) onWorker(tid int32) bool {
	if p := w.tidsView.Load(); p != nil {
		for _, t := range *p {
			if t == tid {
				return true
			}
		}
	}
	return false
}
