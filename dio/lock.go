//go:build linux

package dio

import (
	"context"
	"syscall"

	"github.com/uringdio/uringdio/internal/choose"
)

// The I/O lock of an inode (a kernel file's, one per (dev, ino) in the
// process, shared by every File and engine on it) or of a volume (one per
// mapper): the kernel's i_rwsem as xfs and ext4 take it for direct I/O.
// Its count of shared holders is their inode_dio_wait count, since a
// request holds the lock until its I/O is done:
//
//   - shared: writes of a kernel file that need no read-modify-write,
//     extending ones included (the kernel moves the size at completion);
//     every request of a volume whose map the engine keeps, so that no
//     space is freed or zeroed under I/O in flight;
//   - exclusive, after the shared holders drain: a read-modify-write
//     (an unaligned write, bounce.go), a volume write that needs
//     sub-block zeroing, and every size or space change (Truncate,
//     Allocate, Preallocate, Punch), on kernel files as on volumes.
//
// Reads of a kernel file take no lock: the kernel orders them against its
// own size and space changes.
//
// The uncontended paths are one compare-and-swap to take and one atomic
// add to release. Once anyone waits, everyone queues behind it (FIFO): a
// stream of shared holders cannot starve an exclusive one. A synchronous
// caller waits on its request's wake channel; an asynchronous request is
// queued without blocking Submit and launched, with its own File's
// descriptor, engine and policy, by whoever releases the lock last
// (gateRelease): the engine, when the I/O of the request before it is
// done. A queued request holds its own File's reference, so that File's
// Close waits for it; a cancelled context takes it off the queue
// (ECANCELED, nothing done).

// launchAdmitted starts an asynchronous request the lock admitted after
// its Submit returned (submit.go sets it: handed down, so the lock never
// names the layer above it).
var launchAdmitted func(r *Request)

const (
	lockCount  = 1<<32 - 1
	lockExcl   = 1 << 32
	lockQueued = 1 << 33
)

// admissible reports whether a holder of the kind excl may enter in state
// s (the queue aside).
func admissible(s uint64, excl bool) bool {
	return s&lockExcl == 0 && (!excl || s&lockCount == 0)
}

func grant(excl bool) uint64 {
	if excl {
		return lockExcl
	}
	return 1
}

// enter takes the lock for r (exclusive if r.lk.excl) and reports true,
// or, unless try is set, queues r and reports false: r is admitted later
// by the release that makes room (leave).
func (l *ioLock) enter(r *Request, try bool) bool {
	r.lk.next = nil
	for s := l.state.Load(); s&lockQueued == 0 && admissible(s, r.lk.excl); s = l.state.Load() {
		if l.state.CompareAndSwap(s, s+grant(r.lk.excl)) {
			r.lk.held = true
			return true
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		s := l.state.Load()
		if l.head == nil && admissible(s, r.lk.excl) {
			if l.state.CompareAndSwap(s, s+grant(r.lk.excl)) {
				r.lk.held = true
				return true
			}
			continue
		}
		if try {
			return false
		}
		// Once lockQueued is set, every release comes here (under mu) to
		// admit: a release before it changed s, and this CAS fails.
		if s&lockQueued != 0 || l.state.CompareAndSwap(s, s|lockQueued) {
			break
		}
	}
	l.waited.Add(1)
	if l.tail == nil {
		l.head = r
	} else {
		l.tail.lk.next = r
	}
	l.tail = r
	return false
}

// leave releases r's hold and returns the queued requests it admits, in
// order, linked through gateNext.
func (l *ioLock) leave(r *Request) *Request {
	r.lk.held = false
	var s uint64
	if r.lk.excl {
		s = l.state.Add(^uint64(lockExcl - 1)) // -lockExcl
	} else {
		s = l.state.Add(^uint64(0))
	}
	if s&lockQueued == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.admitLocked()
}

// admitLocked admits queued requests from the head while they may enter,
// and returns them linked through gateNext. Called with mu held.
func (l *ioLock) admitLocked() *Request {
	var first, last *Request
	for l.head != nil {
		w := l.head
		s := l.state.Load()
		if !admissible(s, w.lk.excl) {
			break
		}
		if !l.state.CompareAndSwap(s, s+grant(w.lk.excl)) {
			continue // a release meanwhile: look again
		}
		l.head = w.lk.next
		if l.head == nil {
			l.tail = nil
		}
		w.lk.next = nil
		w.lk.held = true
		if last == nil {
			first = w
		} else {
			last.lk.next = w
		}
		last = w
	}
	if l.head == nil {
		for s := l.state.Load(); !l.state.CompareAndSwap(s, s&^lockQueued); s = l.state.Load() {
		}
	}
	return first
}

// remove takes r off the queue if it is still waiting there, and returns
// the requests that its leaving admits (those queued behind it, if it was
// an exclusive one at the head).
func (l *ioLock) remove(r *Request) (found bool, admitted *Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var prev *Request
	for w := l.head; w != nil; prev, w = w, w.lk.next {
		if w != r {
			continue
		}
		if prev == nil {
			l.head = w.lk.next
		} else {
			prev.lk.next = w.lk.next
		}
		if l.tail == w {
			l.tail = prev
		}
		w.lk.next = nil
		return true, l.admitLocked()
	}
	return false, nil
}

// startAdmitted carries on the requests the lock admitted: a synchronous
// caller is woken; an asynchronous request is launched by its own File,
// with that File's descriptor, engine, backend and policy
// (launchAdmitted). A launch that fails releases the lock and starts
// those its release admits, one call deeper per failed launch.
func startAdmitted(w *Request) {
	for w != nil {
		next := w.lk.next
		w.lk.next = nil
		if w.lk.sync {
			w.lk.admitted.Store(true)
			w.x.Signal()
		} else {
			launchAdmitted(w)
		}
		w = next
	}
}

// gateRelease releases r's hold on its File's lock, if it has one, and
// starts the requests that were waiting for it. Called once r's I/O is
// done and (for writes the mapper converts) its extents are converted.
func (f *File) gateRelease(r *Request) {
	if !r.lk.held {
		return
	}
	startAdmitted(f.lock.leave(r))
}

// awaitAdmission blocks a synchronous request until the lock admits it
// (the I/O it waits for completes on the engine). If the caller's context
// ends first, the request leaves the queue and fails with ECANCELED,
// having done nothing.
func (f *File) awaitAdmission(r *Request) error {
	done := r.lk.done
	for !r.lk.admitted.Load() {
		select {
		case <-r.x.Wake:
		case <-done:
			if found, admitted := f.lock.remove(r); found {
				startAdmitted(admitted)
				return syscall.ECANCELED
			}
			done = nil // admitted meanwhile: go on
		}
	}
	return nil
}

// cancelQueued completes r with ECANCELED if it is an asynchronous request
// still queued for the lock, and reports whether it was.
func (f *File) cancelQueued(r *Request) bool {
	if r.lk.sync {
		return false
	}
	found, admitted := f.lock.remove(r)
	startAdmitted(admitted)
	if !found {
		return false
	}
	f.completeUnlaunched(r, syscall.ECANCELED)
	return true
}

// completeUnlaunched completes an asynchronous request that Submit
// accepted but that never reached the engine (it failed to map after
// waiting for the lock, or was cancelled there) with err and no bytes,
// through its policy. It holds the File's in-flight reference of its
// submission.
func (f *File) completeUnlaunched(r *Request, err error) {
	r.x.Pieces = r.x.Pieces[:0]
	r.x.Err, r.x.StopAt = err, r.Off
	r.facts = choose.Facts{Write: r.Op == Write, PureOverwrite: true, SingleSQE: true, HasEndIO: f.hooks.endIO != nil}
	r.choosePolicy(false)
	f.eng.Finish(&r.x)
}

// gateWaited reports how many requests on the file's inode or volume had
// to queue for its lock.
func (f *File) gateWaited() uint64 { return f.lock.waited.Load() }

// exclusive runs fn holding the file's lock alone: no request that takes
// it, from any File on the inode or volume, is in flight meanwhile, and
// none starts. fn's own I/O goes through ownedIO. ctx ending while it
// waits fails it with ECANCELED, having done nothing.
func (f *File) exclusive(ctx context.Context, fn func() error) error {
	r, err := f.lockExclusive(ctx)
	if err != nil {
		return err
	}
	defer f.unlockExclusive(r)
	return fn()
}

// lockExclusive takes the file's lock alone; the request it returns is
// the hold, for unlockExclusive.
func (f *File) lockExclusive(ctx context.Context) (*Request, error) {
	r := getReq()
	r.file = f
	r.x.Begin(0)
	r.lk.excl, r.lk.sync = true, true
	r.lk.admitted.Store(false)
	r.lk.done = ctx.Done()
	if err := f.enterSync(r); err != nil {
		putReq(r)
		return nil, err
	}
	return r, nil
}

// enterSync takes the lock for a synchronous caller, waiting for it; on
// the engine's owner (an Inline callback), which completes the I/O the
// lock may wait for, it fails instead of waiting for itself.
func (f *File) enterSync(r *Request) error {
	if f.lock.enter(r, true) {
		return nil
	}
	if f.eng.OnOwnerThread() {
		return errOwnerWait
	}
	if f.lock.enter(r, false) {
		return nil
	}
	return f.awaitAdmission(r)
}

func (f *File) unlockExclusive(r *Request) {
	f.gateRelease(r)
	putReq(r)
}
