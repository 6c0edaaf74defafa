//go:build linux

package engine

import (
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/ring"
)

// maxRetries bounds the resubmissions of an SQE that keeps completing with
// EAGAIN (without NoWait); EINTR is resubmitted without a bound.
const maxRetries = 64

// Launch starts r, whose pieces its owner has filled: on the pread
// backend (r.Pread), in the calling goroutine when a synchronous request
// finds the ring idle (r.Direct), or through the owner. r is the engine's
// until Hooks.Complete has returned; a request with no pieces completes
// at once (never on this stack, where Inline is asked for).
func (e *Engine) Launch(r *Req, sync bool) {
	r.refs.Store(int32(len(r.Pieces)) + 1)
	r.State.Store(Inflight)
	switch {
	case len(r.Pieces) == 0:
	case r.Pread:
		if sync {
			e.pr.run(e, r)
		} else {
			e.workers.push(r, jobPread)
		}
	case sync && r.Direct && e.direct():
		e.pr.run(e, r)
		<-e.directSem
	default:
		e.enqueue(r)
	}
	e.put(r, false) // the launcher's reference
}

// Finish completes a request that never reached Launch (its owner failed
// or cancelled it before) with the Err and StopAt it set, through its
// policy.
func (e *Engine) Finish(r *Req) {
	r.refs.Store(1)
	r.State.Store(Inflight)
	e.put(r, false)
}

// complete processes one CQE: it finds the slot by user_data, checks the
// result, resubmits the rest of a short transfer, records the first
// error, and drops the SQE's reference on its request.
func (e *Engine) complete(c *ring.CQE) {
	switch c.UserData {
	case cancelTag:
		return // our own cancel; the cancelled SQE reports its result
	case auditTag:
		e.auditDone(c.Res)
		return
	case wakeTag:
		e.woken()
		return
	}
	idx, gen := uint32(c.UserData), uint32(c.UserData>>32)
	slots := e.own.slots
	if int(idx) >= len(slots) || !slots[idx].busy || slots[idx].gen != gen {
		// A completion for nothing in flight: duplicated or late. Whose it
		// was cannot be known, so no result from this ring can be trusted:
		// the engine refuses new I/O, and every request in flight reports
		// ErrRingBroken once its own CQEs are in (never earlier: the kernel
		// may still use their buffers).
		e.C.StrayCQEs.Add(1)
		e.broken.Store(true)
		return
	}
	e.C.Completed.Add(1)
	if s := &slots[idx]; e.settle(s, idx, c.Res) {
		r := s.req
		e.freeSlot(idx)
		e.put(r, true)
	}
}

// settle applies a CQE's result to its slot and reports whether the slot
// is done (false: resubmitted).
func (e *Engine) settle(s *slot, idx uint32, res int32) bool {
	r, p := s.req, &s.p
	switch {
	case res < 0:
		errno := syscall.Errno(-res)
		// EINTR never reaches a caller; EAGAIN without NoWait is retried a
		// bounded number of times, then reported.
		retry := errno == syscall.EINTR || (errno == syscall.EAGAIN && !r.NoWait && s.retries < maxRetries)
		if retry && !r.cancelled.Load() {
			s.retries = min(s.retries+1, 255)
			e.resubmit(idx)
			return false
		}
		r.SetErr(e.ring.Err(res), p.dataOff(r, 0))
	case uint32(res) < p.N:
		done := int64(res)
		switch {
		case !p.Write && r.Hooks.ReadEnded(p.LogOff+done, res == 0):
			r.Ended(p.LogOff + done) // short at the end of the data: not an error
		case res == 0:
			r.SetErr(io.ErrShortWrite, p.dataOff(r, 0)) // no progress, no error
		case r.cancelled.Load():
			r.SetErr(syscall.ECANCELED, p.dataOff(r, done))
		default:
			// Short before the end: resubmit the rest, never report a
			// silent short transfer.
			p.Addr = unsafe.Add(p.Addr, done)
			p.Off += done
			if p.LogOff >= 0 {
				p.LogOff += done
			}
			p.N -= uint32(res)
			e.C.Resubmits.Add(1)
			e.resubmit(idx)
			return false
		}
	}
	return true
}

// resubmit queues the slot's SQE again.
func (e *Engine) resubmit(idx uint32) {
	s := &e.own.slots[idx]
	s.gen++ // a late CQE of the first attempt must not match
	if sqe := e.ring.GetSQE(); sqe != nil {
		e.prep(sqe, s, idx)
		return
	}
	s.seq = noSeq // not in the SQ: no audit may count it lost
	e.own.resub = append(e.own.resub, idx)
}

// reap processes every CQE that is ready.
func (e *Engine) reap() {
	cqes := e.own.cqes
	for {
		n, err := e.ring.Peek(cqes)
		if err != nil || n == 0 {
			break
		}
		for i := range cqes[:n] {
			e.complete(&cqes[i])
		}
		if n < len(cqes) {
			break
		}
	}
	e.checkDropped()
	e.runReady()
}

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

// readyList holds Inline completions handed to the owner (put).
type readyList struct {
	mu    sync.Mutex
	list  []*Req
	spare []*Req
	n     atomic.Int32
}

func (e *Engine) pushReady(r *Req) {
	l := &e.ready
	l.mu.Lock()
	l.list = append(l.list, r)
	l.n.Add(1)
	l.mu.Unlock()
	e.wakeOwner()
}

// runReady runs the Inline completions handed to the owner, including
// those their callbacks hand it meanwhile. The owner calls it.
func (e *Engine) runReady() {
	l := &e.ready
	for l.n.Load() > 0 {
		l.mu.Lock()
		batch := l.list
		l.list, l.spare = l.spare[:0], nil
		l.n.Store(0)
		l.mu.Unlock()
		for i, r := range batch {
			batch[i] = nil
			r.runCompletion()
		}
		l.mu.Lock()
		if l.spare == nil {
			l.spare = batch[:0]
		}
		l.mu.Unlock()
	}
}

// Await waits for r to complete, running its completion on this goroutine
// if the policy leaves it to the waiter (Wait, Polled, Caller without a
// Queue; with a Queue it runs what is ready there until r's has run). If
// done ends first, r's I/O is cancelled and Await still waits for it: a
// buffer is never given back while the kernel may use it.
func (e *Engine) Await(r *Req, done <-chan struct{}) {
	gen := r.Gen()
	for r.State.Load() < IODone {
		select {
		case <-r.Wake:
		case <-done:
			done = nil
			e.Cancel(r, gen)
		}
	}
	switch {
	case r.Policy == completion.Caller && r.Queue != nil:
		for r.State.Load() != Complete {
			if r.Queue.Poll() == 0 && r.State.Load() != Complete {
				<-r.Wake
			}
		}
	case r.Policy == completion.Wait || r.Policy == completion.Polled || r.Policy == completion.Caller:
		r.runCompletion()
	}
	for r.State.Load() != Complete {
		<-r.Wake // Inline or Pool: the completion runs elsewhere
	}
}

// Cancel cancels the use gen of r: a request still in its owner's queue
// leaves it (Hooks.Dequeue); the pread backend's pieces not yet run end
// with ECANCELED; a ring request's SQEs are cancelled by the owner. A
// cancel of an earlier use of a recycled request reaches nothing.
func (e *Engine) Cancel(r *Req, gen uint32) {
	switch {
	case r.Gen() != gen:
	case r.Hooks.Dequeue():
	case r.Pread:
		r.cancelled.Store(true)
	default:
		e.requestCancel(r, gen)
	}
}
