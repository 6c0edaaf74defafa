//go:build linux

package engine

import (
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// sqe returns a free SQE, submitting to make room if the SQ is full, or
// nil if the kernel will not take more now.
func (e *Engine) sqe() *ring.SQE {
	if s := e.ring.GetSQE(); s != nil {
		return s
	}
	if e.submit() != nil {
		return nil
	}
	return e.ring.GetSQE()
}

// submitPieces prepares SQEs for r's pieces from r.next on and reports
// whether all are in the SQ.
func (e *Engine) submitPieces(r *Req) bool {
	s := &e.own
	for r.next < len(r.Pieces) {
		if len(s.freeSlots) == 0 {
			return false
		}
		sqe := e.sqe()
		if sqe == nil {
			return false
		}
		idx := s.freeSlots[len(s.freeSlots)-1]
		s.freeSlots = s.freeSlots[:len(s.freeSlots)-1]
		e.inflight.Add(1)
		sl := &s.slots[idx]
		*sl = slot{req: r, p: r.Pieces[r.next], gen: sl.gen, busy: true}
		e.prep(sqe, sl, idx)
		r.next++
	}
	return true
}

// prep encodes a slot into an SQE: the one place pieces become SQEs.
func (e *Engine) prep(sqe *ring.SQE, s *slot, idx uint32) {
	p := &s.p
	switch {
	case p.Ctl == Fsync:
		sqe.PrepFsync(p.Fd, 0)
	case p.Ctl == Fdatasync:
		sqe.PrepFsync(p.Fd, ring.FsyncDatasync)
	case p.Ctl == Fallocate:
		sqe.PrepFallocate(p.Fd, unix.FALLOC_FL_KEEP_SIZE, uint64(p.Off), uint64(p.CtlLen))
	case p.Write:
		sqe.PrepWriteAddr(p.Fd, uintptr(p.Addr), p.N, uint64(p.Off))
	default:
		sqe.PrepReadAddr(p.Fd, uintptr(p.Addr), p.N, uint64(p.Off))
	}
	if p.Fixed {
		sqe.Opcode = ring.OpReadFixed
		if p.Write {
			sqe.Opcode = ring.OpWriteFixed
		}
		sqe.BufIndex = 0 // the engine registers one arena
	}
	if p.RegFile {
		sqe.SetFixedFile()
	}
	sqe.OpFlags = p.RWFlags
	sqe.UserData = uint64(s.gen)<<32 | uint64(idx)
	s.seq = e.own.sqSeq
	e.own.sqSeq++
	if h := s.req.SQEHook; h != nil {
		h(s.req, sqe)
		sqe.UserData = uint64(s.gen)<<32 | uint64(idx)
	}
}

func (e *Engine) freeSlot(i uint32) {
	s := &e.own.slots[i]
	s.busy, s.req = false, nil
	s.gen++
	e.own.freeSlots = append(e.own.freeSlots, i)
	e.inflight.Add(-1)
}

// submit hands the prepared SQEs to the kernel.
func (e *Engine) submit() error {
	if e.ring.Pending() == 0 {
		return nil
	}
	n, err := e.ring.Submit()
	e.C.Submitted.Add(uint64(n))
	return err
}
