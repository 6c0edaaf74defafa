//go:build linux

package dio

import (
	"context"
	"syscall"

	"github.com/uringdio/uringdio/internal/choose"
	"github.com/uringdio/uringdio/internal/ilock"
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
// The lock itself is internal/ilock's: one compare-and-swap to take and one
// atomic add to release, uncontended; a FIFO queue once anyone waits. A synchronous
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

// startAdmitted carries on the requests the lock admitted: a synchronous
// caller is woken; an asynchronous request is launched by its own File,
// with that File's descriptor, engine, backend and policy
// (launchAdmitted). A launch that fails releases the lock and starts
// those its release admits, one call deeper per failed launch.
func startAdmitted(a *ilock.Waiter[*Request]) {
	for a != nil {
		next, w := a.Next(), a.Value
		if w.lk.sync {
			w.lk.admitted.Store(true)
			w.x.Signal()
		} else {
			launchAdmitted(w)
		}
		a = next
	}
}

// gateRelease releases r's hold on its File's lock, if it has one, and
// starts the requests that were waiting for it. Called once r's I/O is
// done and (for writes the mapper converts) its extents are converted.
func (f *File) gateRelease(r *Request) {
	if !r.lk.w.Held {
		return
	}
	startAdmitted(f.lock.Leave(&r.lk.w))
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
			if found, admitted := f.lock.Remove(&r.lk.w); found {
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
	found, admitted := f.lock.Remove(&r.lk.w)
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
	f.eng.Launch(&r.x, false) // no pieces: it completes through its policy
}

// gateWaited reports how many requests on the file's inode or volume had
// to queue for its lock.
func (f *File) gateWaited() uint64 { return f.lock.Waited() }

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
	r.lk.w.Value, r.lk.w.Excl, r.lk.sync = r, true, true
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
	if f.lock.Enter(&r.lk.w, true) {
		return nil
	}
	if f.eng.OnOwnerThread() {
		return errOwnerWait
	}
	if f.lock.Enter(&r.lk.w, false) {
		return nil
	}
	return f.awaitAdmission(r)
}

func (f *File) unlockExclusive(r *Request) {
	f.gateRelease(r)
	putReq(r)
}
