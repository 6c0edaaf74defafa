//go:build linux

package engine

import (
	"io"
	"syscall"
	"unsafe"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

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

// woken handles the eventfd poll's completion.
func (e *Engine) woken() {
	e.o.armed = false
	unix.Read(e.o.efd, e.o.evbuf[:])
}
