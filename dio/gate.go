//go:build linux

package dio

import (
	"errors"
	"sync"
	"syscall"

	"github.com/uringdio/uringdio/internal/choose"
)

// writeGate serializes the writes of a File whose mapper allocates in
// blocks larger than the I/O alignment, where the engine itself zeroes the
// parts of a new or unwritten block that a write does not cover. Two such
// writes into the same block, in flight together, would each zero the
// other's data. The kernel has the same problem for unaligned direct
// writes and solves it the same way (xfs and ext4 take the inode's I/O
// lock exclusively, wait for direct I/O in flight, and complete the write
// before dropping the lock): a write that is not aligned to the block size
// waits until no other write is in flight, and holds the file until its
// extents are converted; block-aligned writes run together, but not
// alongside an unaligned one. Waiting is FIFO, so a stream of aligned
// writes cannot starve an unaligned one.
//
// Asynchronous writes never block Submit: a write that must wait is queued
// here and launched by whoever releases the gate (the completion of the
// write before it). Synchronous writes wait, reaping meanwhile. A gated
// write converts its extents (the mapper's IOComplete) and releases the
// gate where its I/O completes, usually on the reaper, never behind other
// completion work: a mapper that declares BlockSize must convert without
// blocking on I/O (ExtentMap's conversion is an in-memory update).
type writeGate struct {
	mu         sync.Mutex
	active     int  // writes admitted and not yet released
	excl       bool // the one admitted write is unaligned
	head, tail *Request
	waited     uint64 // writes that had to wait (gateWaited)
}

// admissibleLocked reports whether r may start now.
func (g *writeGate) admissibleLocked(r *Request) bool {
	if g.excl {
		return false
	}
	return !r.gateExcl || g.active == 0
}

func (g *writeGate) admitLocked(r *Request) {
	g.active++
	if r.gateExcl {
		g.excl = true
	}
	r.gateHeld = true
}

// enter admits r (true) or, unless try is set, queues it behind the
// writes already waiting.
func (g *writeGate) enter(r *Request, try bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	r.gateNext = nil
	if g.head == nil && g.admissibleLocked(r) {
		g.admitLocked(r)
		return true
	}
	if try {
		return false
	}
	g.waited++
	if g.tail == nil {
		g.head = r
	} else {
		g.tail.gateNext = r
	}
	g.tail = r
	return false
}

// leave releases r's hold and returns the waiting writes it admits, in
// order, linked through gateNext.
func (g *writeGate) leave(r *Request) *Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if r.gateExcl {
		g.excl = false
	}
	var first, last *Request
	for g.head != nil && g.admissibleLocked(g.head) {
		w := g.head
		g.head = w.gateNext
		if g.head == nil {
			g.tail = nil
		}
		w.gateNext = nil
		g.admitLocked(w)
		if last == nil {
			first = w
		} else {
			last.gateNext = w
		}
		last = w
	}
	return first
}

// remove takes r off the queue if it is still waiting there.
func (g *writeGate) remove(r *Request) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	var prev *Request
	for w := g.head; w != nil; prev, w = w, w.gateNext {
		if w != r {
			continue
		}
		if prev == nil {
			g.head = w.gateNext
		} else {
			prev.gateNext = w.gateNext
		}
		if g.tail == w {
			g.tail = prev
		}
		w.gateNext = nil
		return true
	}
	return false
}

// gateRelease releases r's hold on the file's write gate, if it has one,
// and starts the writes that were waiting for it. Called once r's I/O is
// done and (for writes the mapper converts) its extents are converted.
func (f *File) gateRelease(r *Request) {
	if !r.gateHeld {
		return
	}
	r.gateHeld = false
	for w := f.gate().leave(r); w != nil; {
		next := w.gateNext
		w.gateNext = nil
		if w.gateSync {
			w.gateAdmitted.Store(true)
			signal(w.wake)
		} else {
			f.launchAdmitted(w)
		}
		w = next
	}
}

// awaitAdmission blocks a synchronous write until the gate admits it (the
// writes it waits for complete on the engine's owner). If the caller's context ends first, the write
// leaves the queue and fails with ECANCELED, having done nothing.
func (f *File) awaitAdmission(r *Request) error {
	done := r.gateDone
	for !r.gateAdmitted.Load() {
		select {
		case <-r.wake:
		case <-done:
			if f.gate().remove(r) {
				return syscall.ECANCELED
			}
			done = nil // admitted meanwhile: go on
		}
	}
	return nil
}

// cancelQueued completes r with ECANCELED if it is an asynchronous write
// still waiting at the gate, and reports whether it was.
func (f *File) cancelQueued(r *Request) bool {
	if f.gate() == nil || r.gateSync || !f.gate().remove(r) {
		return false
	}
	f.completeUnlaunched(r, syscall.ECANCELED)
	return true
}

// launchAdmitted starts an asynchronous write the gate admitted after its
// Submit returned. An error can no longer be returned to the submitter:
// the request completes with it, through its policy, having moved no data.
func (f *File) launchAdmitted(r *Request) {
	err := f.launch(r, false, true)
	if err == nil {
		return
	}
	var oe *OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	f.completeUnlaunched(r, err)
}

// completeUnlaunched completes an asynchronous write that Submit accepted
// but that never reached the ring (it failed to map after waiting at the
// gate, or was cancelled there) with err and no bytes, through its policy.
// It holds the File's in-flight reference of its submission.
func (f *File) completeUnlaunched(r *Request, err error) {
	r.pieces = r.pieces[:0]
	r.errno, r.stopAt = err, r.Off
	r.facts = choose.Facts{Write: r.Op == Write, PureOverwrite: true, SingleSQE: true, HasEndIO: f.endIO != nil}
	f.choosePolicy(r, false)
	r.refs.Store(1)
	r.state.Store(stateInflight)
	f.eng.put(r, false)
}

// gateWaited reports how many requests on the file's volume waited at its
// gate (0 for kernel files and mappers that leave zeroing to the kernel).
func (f *File) gateWaited() uint64 {
	g := f.gate()
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waited
}
