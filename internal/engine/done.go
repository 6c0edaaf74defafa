//go:build linux

package engine

import "github.com/uringdio/uringdio/completion"

// put drops one reference on r; the last ends its I/O. reaper says that
// the caller is the owner processing a CQE (or a pread goroutine that did
// the I/O): only there does an Inline completion run at once. Anywhere
// else (a launcher whose request needed no I/O, the owner dropping
// backlogged pieces, a lock admitting a waiting request) it would run
// nested in a call that may itself be a callback, so it is handed to the
// owner's ready list, which runs it iteratively.
//
// The request moves to IODone before anyone is woken, so a waiter that
// wakes early goes back to waiting.
func (e *Engine) put(r *Req, reaper bool) {
	if r.refs.Add(-1) != 0 {
		return
	}
	// The result fields were written by whoever dropped the other
	// references: the atomic decrement orders their writes before these
	// reads.
	if e.broken.Load() && r.Err == nil {
		r.Err = ErrRingBroken
	}
	r.Hooks.IODone()
	// Everything put needs from r is read before the I/O is published as
	// done: from then on a waiter may run the completion and reuse r.
	policy, wake, q := r.Policy, r.Wake, r.Queue
	r.State.Store(IODone)
	switch policy {
	case completion.Inline:
		switch {
		case reaper:
			r.runCompletion()
		case r.Pread || e.ring == nil:
			e.workers.push(r, jobComplete)
		default:
			e.pushReady(r)
		}
	case completion.Pool:
		e.workers.push(r, jobComplete) // the waiter waits for Complete, which a worker sets
	case completion.Caller:
		// With a Queue the completion runs only from the Queue, so r
		// cannot be reused (and pushed again) before this push.
		if q != nil {
			q.Push(task{r})
		}
		signal(wake)
	default: // Wait, Polled: the waiter runs the completion
		signal(wake)
	}
}

// pushReady hands an Inline completion to the owner (put).
func (e *Engine) pushReady(r *Req) {
	push(&e.o.ready, r, &r.link)
	e.wakeOwner()
}

// runReady runs the Inline completions handed to the owner, in the order
// they came, including those their callbacks hand it meanwhile. The owner
// calls it.
func (e *Engine) runReady() {
	for list := e.o.ready.Swap(nil); list != nil; list = e.o.ready.Swap(nil) {
		var rev *Req
		for list != nil { // newest first: reverse
			next := list.link
			list.link, rev, list = rev, list, next
		}
		for rev != nil {
			r := rev
			rev, r.link = r.link, nil
			r.runCompletion()
		}
	}
}
