//go:build linux

package dio

import (
	"time"

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
// only with WithLostCompletionCheck: from the background reaper when no
// completion came for its interval, and from a waiter whose cancelled
// request stays in flight.

// cancelAudit is how long a cancelled request may stay in flight before
// its waiter audits the ring (with WithLostCompletionCheck).
const cancelAudit = 100 * time.Millisecond

// checkDropped declares the engine broken when the kernel reports CQEs it
// dropped (its CQ ring's overflow counter moved: a CQ overflow it could
// not keep), and audits the ring to find whose they were. The token
// holder calls it.
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
func (e *Engine) audit() bool {
	e.mu.Lock()
	if e.auditing {
		e.mu.Unlock()
		return false
	}
	sqe := e.sqeLocked()
	if sqe == nil {
		e.mu.Unlock()
		return false
	}
	sqe.PrepNop()
	sqe.SetFlags(ring.SQEIODrain)
	sqe.UserData = auditTag
	e.auditing, e.auditSeq = true, e.sqSeq
	e.sqSeq++
	// Submitted now, not with the next batch: a waiter may be about to
	// block for it.
	if n, err := e.ring.Submit(); err == nil {
		e.stats.Submitted.Add(uint64(n))
	}
	e.unlockAndDrop()
	return true
}

// auditDone processes an audit's CQE: every SQE submitted before the audit
// has completed in the kernel, so a slot from before it that is still busy
// lost its CQE. Its request fails with ErrLostCompletion (the kernel is
// done with its buffer), and the engine is broken: requests still in
// flight report ErrRingBroken when their own CQEs are in.
func (e *Engine) auditDone(res int32) {
	var lost []*Request
	e.mu.Lock()
	e.auditing = false
	if res != 0 {
		// The NOP failed (refused at submission, on a ring that does not
		// take it): it may not have waited for anything. No verdict.
		e.mu.Unlock()
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
		s.req.setErr(ErrLostCompletion, s.dataOff())
		lost = append(lost, s.req)
		e.freeSlotLocked(uint32(i))
	}
	e.mu.Unlock()
	for _, r := range lost {
		e.put(r, true)
	}
}

// watchdog is the background reaper's check for completions that stopped
// coming: SQEs in flight and no completion since the last tick.
type watchdog struct {
	completed uint64
}

func (w *watchdog) check(e *Engine) {
	c := e.stats.Completed.Load()
	if c == w.completed && e.inflightSQEs() > 0 {
		e.audit()
	}
	w.completed = c
}
