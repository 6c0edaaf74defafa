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
	if c.UserData == wakeTag {
		e.woken()
		return
	}
	idx, gen := uint32(c.UserData), uint32(c.UserData>>32)
	if int(idx) >= len(e.slots) || !e.slots[idx].busy || e.slots[idx].gen != gen {
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
		if retry && !r.cancelled.Load() {
			if s.retries < 255 {
				s.retries++
			}
			e.resubmit(idx)
			return
		}
		r.setErr(e.ring.Err(res), s.dataOff())
	case uint32(res) < s.n:
		done := int64(res)
		if !s.write && r.readEnded(s.fileOff+done, res == 0) {
			r.eof(s.fileOff + done) // short at end of file: not an error
			break
		}
		if res == 0 {
			// A write that made no progress and no error.
			r.setErr(io.ErrShortWrite, s.dataOff())
			break
		}
		if r.cancelled.Load() {
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
		e.resubmit(idx)
		return
	}
	e.freeSlot(idx)
	e.put(r, true)
}

// readEnded reports whether a read that came back short, its data ending
// at off, ran into the end of the file. On a kernel file the kernel says
// so: nothing read, or data that stops short of an aligned boundary (the
// kernel ends direct reads at its unaligned end of file); a short read
// that stops on a boundary is resubmitted for the rest and so learns
// which. On a mapped file the mapper's size says so.
func (r *Request) readEnded(off int64, zero bool) bool {
	if zero {
		return true
	}
	if r.sizeAt < 0 || r.owned {
		return off%r.file.align.Offset != 0
	}
	return off >= r.sizeAt
}

// dataOff is the file offset of the slot's data, for error accounting (a
// zeroing piece has none: it counts as the start of the request).
func (s *slot) dataOff() int64 {
	if s.fileOff < 0 {
		return s.req.Off
	}
	return s.fileOff
}

// resubmit queues the slot's SQE again.
func (e *Engine) resubmit(idx uint32) {
	s := &e.slots[idx]
	s.gen++ // a late CQE of the first attempt must not match
	if sqe := e.ring.GetSQE(); sqe != nil {
		e.prep(sqe, s, idx)
		return
	}
	s.seq = noSeq // not in the SQ: no audit may count it lost
	e.resub = append(e.resub, idx)
}

// put drops one reference on r; the last one ends its I/O. reaper says
// that the caller is the owner processing a CQE (or a pread worker that
// did the I/O): only there does an Inline completion run at once.
// Anywhere else (the submitter, whose request needed no I/O or completed
// before Submit returned; the owner dropping backlogged pieces; a gate
// admitting a waiting write) it would run nested in a call that may itself
// be a callback, so it is handed to the owner (the engine's ready list),
// which runs it iteratively.
//
// The request's state moves to stateIODone before anyone is woken, so a
// waiter that wakes early simply goes back to waiting.
func (e *Engine) put(r *Request, reaper bool) {
	if r.refs.Add(-1) != 0 {
		return
	}
	// The result fields were written by whoever dropped the other
	// references (the owner, a pread worker, the submitter): the atomic
	// decrement above orders their writes before these reads.
	if e.broken.Load() && r.errno == nil {
		r.errno = ErrRingBroken
	}
	r.finishResult()
	// Everything put needs from r is read before the I/O is published as
	// done: from then on a waiter may run the completion and reuse r.
	policy, wake, q := r.policy, r.wake, r.Queue
	if policy == completion.Caller || (policy == completion.Wait && !r.facts.Sync) {
		// Deferred to the caller, who may never come: only completions
		// that do no I/O are deferred (start makes sure), so the File's
		// in-flight count drops here and Close does not wait for them.
		r.file.release()
		r.fileDec = true
	}
	if r.gateHeld {
		// A request through the volume's gate converts its extents and
		// lets the next one in here, when its I/O is done: never behind
		// completion work (a Pool callback may itself wait at the gate).
		f := r.file
		if r.Op == Write && f.vol != nil {
			if !r.facts.PureOverwrite {
				r.convErr, r.converted = f.convert(r), true
			}
			if end := r.Off + r.n; r.n > 0 && !r.owned {
				f.vol.extendSize(end) // the next write sees the size this one made
			}
		}
		f.gateRelease(r)
	}
	// I/O is done before any completion work: a reaper waiting for this
	// request stops reaping here, whoever runs the completion.
	r.state.Store(stateIODone)
	switch policy {
	case completion.Inline:
		switch {
		case reaper:
			r.runCompletion()
		case r.file.pread:
			e.workers.push(r, jobComplete)
		default:
			e.pushReady(r)
		}
	case completion.Pool:
		// The waiter waits for stateComplete, which only a worker sets.
		e.workers.push(r, jobComplete)
	case completion.Caller:
		// With a Queue the completion runs only from the Queue, so r cannot
		// be reused (and pushed again) before this push.
		if q != nil {
			q.Push(reqTask{r})
		}
		signal(wake)
	default: // Wait, Polled: the waiter runs the completion
		signal(wake)
	}
}

// pushReady queues an Inline completion for the reaper (see put).
func (e *Engine) pushReady(r *Request) {
	e.readyMu.Lock()
	e.ready = append(e.ready, r)
	e.readyN.Add(1)
	e.readyMu.Unlock()
	e.wakeOwner(false)
}

// runReady runs the Inline completions handed to the reaper, including
// those their callbacks hand it meanwhile. The owner calls it.
func (e *Engine) runReady() {
	for e.readyN.Load() > 0 {
		e.readyMu.Lock()
		batch := e.ready
		e.ready, e.spare = e.spare[:0], nil
		e.readyN.Store(0)
		e.readyMu.Unlock()
		for i, r := range batch {
			batch[i] = nil
			r.runCompletion()
		}
		e.readyMu.Lock()
		if e.spare == nil {
			e.spare = batch[:0]
		}
		e.readyMu.Unlock()
	}
}

// await waits for r to complete and runs its completion on this goroutine
// if the policy leaves it to the waiter. If done ends first, r's I/O is
// cancelled and await still waits for it: a buffer is never given back
// while the kernel may use it.
func (e *Engine) await(r *Request, done <-chan struct{}) {
	if r.state.Load() < stateIODone {
		e.waitReq(r, done)
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
		r.runCompletion() // ours to run
	}
	for r.state.Load() != stateComplete {
		<-r.wake // Inline or Pool completion running elsewhere
	}
}

// waitReq waits until r's I/O is done; if done ends first it cancels the
// I/O (a request still waiting at the gate leaves it having done nothing)
// and goes on waiting for what the kernel holds.
func (e *Engine) waitReq(r *Request, done <-chan struct{}) {
	for r.state.Load() < stateIODone {
		select {
		case <-r.wake:
		case <-done:
			done = nil
			e.cancel(r)
		}
	}
}

// cancel cancels r's I/O: a request waiting at the gate leaves it; the
// pread backend's pieces not yet run end with ECANCELED; a ring request's
// SQEs are cancelled by the owner.
func (e *Engine) cancel(r *Request) {
	f := r.file
	switch {
	case f != nil && f.cancelQueued(r):
	case f != nil && f.pread:
		r.cancelled.Store(true)
	default:
		e.requestCancel(r)
	}
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
