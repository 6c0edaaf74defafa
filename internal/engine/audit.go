//go:build linux

package engine

import (
	"time"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// Lost completions. A CQE the kernel posts and the engine never sees (a
// wrapper's or the engine's own bug), or one the kernel drops (a CQ
// overflow it could not keep; it counts those), would leave its request in
// flight for ever: cancelling finds nothing, the kernel is done with it.
// Waiting cannot tell a lost completion from a slow one, but the kernel
// can order them: a NOP with IOSQE_IO_DRAIN starts only after every SQE
// before it has completed, and the CQ is ordered, so when the NOP's CQE is
// processed every earlier SQE's CQE has been, unless it was lost. The
// audit never accuses a slow request, but while it waits the kernel holds
// back every later SQE. So audits run by themselves only when the kernel
// reports dropped CQEs (the ring is broken then anyway), and otherwise
// only with audits on (Config.LostAfter): from the owner, when no
// completion came for that long while SQEs were in flight.

// checkDropped declares the engine broken when the kernel reports CQEs it
// dropped, and audits the ring to find whose they were.
func (e *Engine) checkDropped() {
	a := &e.own.audit
	if v := e.ring.Overflow(); v != a.lastOvf {
		e.C.DroppedCQEs.Add(uint64(v - a.lastOvf))
		a.lastOvf = v
		e.broken.Store(true)
		a.owed = true
	}
	// Owed until one is queued after the drop was seen (an audit already
	// in flight may predate the dropped CQE's SQE).
	if a.owed && e.audit() {
		a.owed = false
	}
}

// audit queues an audit NOP and reports whether it did: not if one is in
// flight, nor if the SQ has no room.
func (e *Engine) audit() bool {
	a := &e.own.audit
	if a.inFlight {
		return false
	}
	sqe := e.sqe()
	if sqe == nil {
		return false
	}
	sqe.PrepNop()
	sqe.SetFlags(ring.SQEIODrain)
	sqe.UserData = auditTag
	a.inFlight, a.seq = true, e.own.sqSeq
	e.own.sqSeq++
	if e.o.armed {
		// The NOP waits for every earlier SQE, the owner's wake-up poll
		// too, which completes only when the eventfd is written: write it.
		unix.Write(e.o.efd, eventfdOne[:])
	}
	return true
}

// auditDone processes an audit's CQE: every SQE submitted before it has
// completed in the kernel, so a slot from before it still busy lost its
// CQE. Its request fails with ErrLostCompletion, and the engine is broken.
func (e *Engine) auditDone(res int32) {
	e.own.audit.inFlight = false
	if res != 0 {
		return // the NOP failed: it may not have waited for anything
	}
	e.C.Audits.Add(1)
	for i := range e.own.slots {
		s := &e.own.slots[i]
		if !s.busy || s.seq == noSeq || s.seq >= e.own.audit.seq {
			continue
		}
		e.C.LostCQEs.Add(1)
		e.broken.Store(true)
		r := s.req
		r.SetErr(ErrLostCompletion, s.p.dataOff(r, 0))
		e.freeSlot(uint32(i))
		e.put(r, true)
	}
}

// watch is the owner's check for completions that stopped coming (with
// audits on).
func (e *Engine) watch() {
	a := &e.own.audit
	c := e.C.Completed.Load()
	now := time.Now()
	if !a.cancelAt.IsZero() && !now.Before(a.cancelAt) {
		a.cancelAt = time.Time{}
		if e.inflight.Load() > 0 {
			e.audit()
		}
	}
	if c != a.completed || e.inflight.Load() == 0 {
		a.completed, a.since = c, now
		return
	}
	if now.Sub(a.since) >= e.own.lostAfter {
		e.audit()
		a.since = now
	}
}
