//go:build linux

package dio

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/uringdio/uringdio/ring"
)

// Lost completions. A CQE the kernel posts and the engine never sees (a
// wrapper's or the engine's own bug), or one the kernel drops (a CQ
// overflow it could not keep; it counts those), would leave its request in
// flight for ever: cancelling it finds nothing, since the kernel is done
// with it. The engine cannot tell a lost completion from a slow one by
// waiting, but the kernel can order them: a NOP with IOSQE_IO_DRAIN starts
// only after every SQE submitted before it has completed, and the CQ is
// ordered, so when the NOP's CQE is processed, every earlier SQE's CQE has
// been processed too, unless it was lost. The audit never accuses a slow
// request (the NOP waits for it), but while it waits the kernel holds back
// every later SQE. So audits run by themselves only when the kernel
// reports dropped CQEs (the ring is broken then anyway), and otherwise
// only with lost-completion audits on: from the owner when no completion came
// for its interval while SQEs were in flight.

// checkDropped declares the engine broken when the kernel reports CQEs it
// dropped (its CQ ring's overflow counter moved: a CQ overflow it could
// not keep), and audits the ring to find whose they were. The owner calls
// it.
func (e *Engine) checkDropped() {
	if v := e.ovf.Overflow(); v != e.lastOvf {
		e.stats.DroppedCQEs.Add(uint64(v - e.lastOvf))
		e.lastOvf = v
		e.broken.Store(true)
		e.owed = true
	}
	// The ring is broken already: the audit's stall costs nothing. It is
	// owed until one is queued after the drop was seen (an audit already
	// in flight may predate the dropped CQE's SQE).
	if e.owed && e.audit() {
		e.owed = false
	}
}

// audit queues an audit NOP and reports whether it did: not if one is in
// flight already, nor if the SQ has no room (a later call tries again).
// The owner calls it; the NOP goes to the kernel with the owner's next
// enter.
func (e *Engine) audit() bool {
	if e.auditing {
		return false
	}
	sqe := e.sqe()
	if sqe == nil {
		return false
	}
	sqe.PrepNop()
	sqe.SetFlags(ring.SQEIODrain)
	sqe.UserData = auditTag
	e.auditing, e.auditSeq = true, e.sqSeq
	e.sqSeq++
	if e.o.armed {
		// The NOP waits for every earlier SQE, the owner's own wake-up poll
		// too, which completes only when the eventfd is written: write it.
		unix.Write(e.o.efd, eventfdOne[:])
	}
	return true
}

// auditDone processes an audit's CQE: every SQE submitted before the audit
// has completed in the kernel, so a slot from before it that is still busy
// lost its CQE. Its request fails with errLostCompletion (the kernel is
// done with its buffer), and the engine is broken: requests still in
// flight report ErrRingBroken when their own CQEs are in.
func (e *Engine) auditDone(res int32) {
	e.auditing = false
	if res != 0 {
		// The NOP failed (refused at submission, on a ring that does not
		// take it): it may not have waited for anything. No verdict.
		return
	}
	e.stats.Audits.Add(1)
	for i := range e.slots {
		s := &e.slots[i]
		if !s.busy || s.seq == noSeq || s.seq >= e.auditSeq {
			continue
		}
		e.stats.LostCQEs.Add(1)
		e.broken.Store(true)
		r := s.req
		r.setErr(errLostCompletion, s.dataOff())
		e.freeSlot(uint32(i))
		e.put(r, true)
	}
}

// cancelAudit is how long a cancelled request may stay in flight before the
// owner audits the ring (with lost-completion audits on).
const cancelAudit = 100 * time.Millisecond

// watch is the owner's check for completions that stopped coming (with
// audits on): SQEs in flight and no completion for the
// check's interval start an audit.
func (e *Engine) watch() {
	c := e.stats.Completed.Load()
	now := time.Now()
	if !e.cancelAuditAt.IsZero() && !now.Before(e.cancelAuditAt) {
		e.cancelAuditAt = time.Time{}
		if e.inflight.Load() > 0 {
			e.audit()
		}
	}
	if c != e.watchCompleted || e.inflight.Load() == 0 {
		e.watchCompleted, e.watchSince = c, now
		return
	}
	if now.Sub(e.watchSince) >= e.lostAfter {
		e.audit()
		e.watchSince = now
	}
}
