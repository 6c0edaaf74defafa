//go:build linux

package dio

import (
	"io"
	"syscall"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/ring"
)

// maxRetries bounds the resubmissions of an SQE that keeps completing with
// EAGAIN (without NoWait); EINTR is resubmitted without a bound.
const maxRetries = 64

// complete processes one CQE: it finds the slot by user_data, checks the
// result, resubmits the remainder of a short transfer, records the first
// error, and drops the SQE's reference on its request.
func (e *Engine) complete(c *ring.CQE) {
	if c.UserData == cancelTag {
		return // our own cancel SQE; the cancelled op reports its result
	}
	if c.UserData == auditTag {
		e.auditDone(c.Res)
		return
	}
	idx, gen := uint32(c.UserData), uint32(c.UserData>>32)
	e.mu.Lock()
	if int(idx) >= len(e.slots) || !e.slots[idx].busy || e.slots[idx].gen != gen {
		e.mu.Unlock()
		e.stats.StrayCQEs.Add(1)
		// A completion for nothing in flight: duplicated or late (or a
		// lost one's neighbour). Which request it belonged to cannot be
		// known, so no result from this ring can be trusted any more: the
		// engine refuses new I/O, and every request still in flight
		// reports ErrRingBroken when its own CQEs are in. Nothing is
		// completed early: the kernel may still be using its buffers.
		e.broken.Store(true)
		return
	}
	e.stats.Completed.Add(1)
	s := &e.slots[idx]
	r := s.req
	res := c.Res
	switch {
	case res < 0:
		errno := syscall.Errno(-res)
		// EINTR never reaches a caller; EAGAIN without NoWait is retried a
		// bounded number of times, then reported (it is retryable).
		retry := errno == syscall.EINTR || (errno == syscall.EAGAIN && r.Flags&NoWait == 0 && s.retries < maxRetries)
		if retry && !r.cancelled {
			if s.retries < 255 {
				s.retries++
			}
			e.resubmitLocked(idx)
			e.mu.Unlock()
			return
		}
		r.setErr(e.ring.Err(res), s.dataOff())
	case uint32(res) < s.n:
		done := int64(res)
		if !s.write && (res == 0 || s.fileOff+done >= r.sizeAt) {
			r.eof(s.fileOff + done) // short at end of file: not an error
			break
		}
		if res == 0 {
			// A write that made no progress and no error.
			r.setErr(io.ErrShortWrite, s.dataOff())
			break
		}
		if r.cancelled {
			r.setErr(syscall.ECANCELED, s.dataOff()+done)
			break
		}
		// Short transfer before EOF: resubmit the rest, never report a
		// silent short I/O.
		s.addr += uintptr(done)
		s.off += done
		if s.fileOff >= 0 {
			s.fileOff += done
		}
		s.n -= uint32(res)
		e.stats.Resubmits.Add(1)
		e.resubmitLocked(idx)
		e.mu.Unlock()
		return
	}
	e.freeSlotLocked(idx)
	e.mu.Unlock()
	e.put(r)
}

// dataOff is the file offset of the slot's data, for error accounting (a
// zeroing piece has none: it counts as the start of the request).
func (s *slot) dataOff() int64 {
	if s.fileOff < 0 {
		return s.req.Off
	}
	return s.fileOff
}

// resubmitLocked queues the slot's SQE again (for the flush after the
// batch).
func (e *Engine) resubmitLocked(idx uint32) {
	s := &e.slots[idx]
	s.gen++ // a late CQE of the first attempt must not match
	if sqe := e.ring.GetSQE(); sqe != nil {
		e.prepLocked(sqe, s, idx)
		return
	}
	s.seq = noSeq // not in the SQ: no audit may count it lost
	e.resub = append(e.resub, idx)
}

// put drops one reference on r; the last one ends its I/O.
//
// The last reference can be dropped by the reaper (the common case), by
// the submitter (when every piece completed before Submit returned, or the
// request needed no I/O at all), or by a canceller dropping backlogged
// pieces. Whoever drops it hands the request to its completion policy; the
// request's state moves to stateIODone before anyone is woken, so a waiter
// that wakes early simply goes back to waiting.
func (e *Engine) put(r *Request) {
	if r.refs.Add(-1) != 0 {
		return
	}
	if r.async {
		e.asyncInflight.Add(-1)
	}
	e.mu.Lock() // orders the result with cancel's and the reaper's writes
	if e.broken.Load() && r.errno == nil {
		r.errno = ErrRingBroken
	}
	r.finishResult()
	e.mu.Unlock()
	// Everything put needs from r is read before the I/O is published as
	// done: from then on a waiter may run the completion and reuse r.
	policy, wake, q := r.policy, r.wake, r.Queue
	if policy == completion.Caller || (policy == completion.Wait && !r.facts.Sync) {
		// Deferred to the caller, who may never come: only completions
		// that do no I/O are deferred (start makes sure), so the File's
		// in-flight count drops here and Close does not wait for them.
		r.file.inflight.Add(-1)
		r.fileDec = true
	}
	if r.gateHeld {
		// A write through the file's gate converts its extents and lets
		// the next write in here, when its I/O is done: never behind
		// completion work (a Pool callback may itself wait at the gate).
		if !r.facts.PureOverwrite {
			r.convErr, r.converted = r.file.convert(r), true
		}
		if end := r.Off + r.n; r.n > 0 && end > r.file.size.Load() {
			r.file.extendSize(end) // the next write sees the size this one made
		}
		r.file.gateRelease(r)
	}
	// I/O is done before any completion work: a reaper waiting for this
	// request stops reaping here, whoever runs the completion.
	r.state.Store(stateIODone)
	switch policy {
	case completion.Inline:
		r.RunCompletion()
	case completion.Pool:
		// The waiter waits for stateComplete, which only the pool sets.
		if e.spill.n.Load() > 0 || !e.pool.TrySubmit(r) {
			// The queue is full. Waiting for room here would hold the reap
			// token while a Pool callback may itself be waiting for I/O of
			// this engine, which needs a reaper: spill it (spill.go).
			e.spillPush(r)
		}
	case completion.Caller:
		// With a Queue the completion runs only from the Queue, so r cannot
		// be reused (and pushed again) before this push.
		if q != nil {
			q.Push(r)
		}
		signal(wake)
	default: // Wait, Polled: the waiter runs the completion
		signal(wake)
	}
}

// await waits for r to complete, reaping meanwhile, and runs its
// completion on this goroutine if the policy leaves it to the waiter.
func (e *Engine) await(r *Request, done <-chan struct{}) { e.awaitHeld(r, done, false) }

// awaitHeld is await for a caller that may already hold the reap token
// (a synchronous call that took it before submitting, so that its submit
// and its wait are one system call).
func (e *Engine) awaitHeld(r *Request, done <-chan struct{}, held bool) {
	if r.state.Load() < stateIODone {
		e.waitReq(r, done, held)
	} else if held {
		e.tok <- struct{}{}
	}
	switch {
	case r.policy == completion.Caller && r.Queue != nil:
		// The completion runs from the caller's Queue: run what is ready
		// there (this request's, and others'), until ours has run.
		for r.state.Load() != stateComplete {
			if r.Queue.Poll() == 0 && r.state.Load() != stateComplete {
				<-r.wake
			}
		}
	case r.policy == completion.Wait || r.policy == completion.Polled || r.policy == completion.Caller:
		r.RunCompletion() // ours to run
	}
	for r.state.Load() != stateComplete {
		<-r.wake // Inline or Pool completion running elsewhere
	}
}

// getReq returns a recycled request for a synchronous call.
func (e *Engine) getReq() *Request {
	e.mu.Lock()
	if n := len(e.reqFree); n > 0 {
		r := e.reqFree[n-1]
		e.reqFree = e.reqFree[:n-1]
		e.mu.Unlock()
		select { // a stale wake-up from the previous use
		case <-r.wake:
		default:
		}
		return r
	}
	e.mu.Unlock()
	return NewRequest()
}

func (e *Engine) putReq(r *Request) {
	r.Buf, r.Bufs, r.Callback, r.Queue, r.file = nil, nil, nil, nil, nil
	r.DoneBefore, r.Flags, r.Policy = 0, 0, completion.Default
	r.errno, r.err = nil, nil
	r.state.Store(stateIdle)
	e.mu.Lock()
	if len(e.reqFree) < 1024 {
		e.reqFree = append(e.reqFree, r)
	}
	e.mu.Unlock()
}

// checkPolled explains why an IOPOLL engine cannot serve fd.
func checkPolled(fd int) error {
	ok, err := ring.PolledIOSupported(fd)
	if ok {
		return nil
	}
	if err == nil {
		err = ring.ErrNoPolledIO
	}
	return err
}
