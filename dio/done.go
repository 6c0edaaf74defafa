//go:build linux

package dio

import (
	"io"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/engine"
	"github.com/uringdio/uringdio/iomap"
)

// reqHooks is a Request as the engine's hooks (engine.Hooks): a type of
// its own, so that the hook methods stay out of Request's API.
type reqHooks Request

var _ engine.Hooks = (*reqHooks)(nil)

// IODone turns the I/O's accounting into the raw result and lets go of
// what the I/O held: the File's reference of a completion deferred to a
// caller who may never come, and the I/O lock (after a volume write has
// converted its extents and moved the size, so the next request sees
// them), never behind completion work: a Pool callback may itself wait
// for the lock.
func (h *reqHooks) IODone() {
	r := (*Request)(h)
	r.finishResult()
	f := r.file
	if r.lk.w.Held {
		if r.Op == Write && f.vol != nil {
			if !r.facts.PureOverwrite {
				r.conv = conversion{done: true, err: f.convert(r)}
			}
			if r.n > 0 && !r.owned {
				f.vol.extendSize(r.Off + r.n)
			}
		}
		f.gateRelease(r)
	}
	if r.x.Policy == completion.Caller || (r.x.Policy == completion.Wait && !r.facts.Sync) {
		// Only completions that do no I/O are deferred (choosePolicy), so
		// Close need not wait for them: the File's reference goes now,
		// last, once nothing here uses the File.
		r.fileDec = true
		f.release()
	}
}

// finishResult turns StopAt and Err into the bytes done.
func (r *Request) finishResult() {
	n := min(max(r.x.StopAt-r.Off, 0), r.length)
	if r.Op == Read && r.sizeAt >= 0 && !r.owned && r.sizeAt-r.Off < n && r.x.Err == nil {
		n = max(r.sizeAt-r.Off, 0) // a mapped file ends at its size
	}
	r.n, r.err = n, r.x.Err
}

// Complete runs the request's completion work, where its policy says: size
// extension, extent conversion, the sync a DSync write still needs, the
// end-of-I/O hook, then the callback.
func (h *reqHooks) Complete() {
	r := (*Request)(h)
	f := r.file
	n, err := r.n, r.err
	if r.Op == Write && n > 0 && f.vol != nil && !r.owned {
		f.vol.extendSize(r.Off + n)
	}
	if r.Op == Write && !r.facts.PureOverwrite {
		cerr := r.conv.err
		if !r.conv.done {
			cerr = f.convert(r)
		}
		if cerr != nil && err == nil {
			err = cerr
		}
	}
	if r.facts.NeedsSync && n > 0 && err == nil {
		if serr := f.syncFds(r.Flags&Sync == 0); serr != nil {
			err = serr
		}
	}
	if f.hooks.endIO != nil {
		n, err = f.hooks.endIO(r, n, err)
	}
	if err == nil && r.Op == Read && n < r.length {
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		err = &OpError{Op: r.Op.String(), Path: f.path, Off: r.Off, Len: r.length, Err: err}
	}
	r.n, r.err = n+r.DoneBefore, err
	if !r.fileDec {
		f.release()
	}
	r.x.SetResult()
	if r.Callback != nil {
		r.Callback(r)
	}
}

// ReadEnded reports whether a read that came back short, its data ending
// at off, ran into the end of the file. On a kernel file the kernel says
// so: nothing read, or data that stops short of an aligned boundary (the
// kernel ends direct reads at its unaligned end of file); a short read
// that stops on a boundary is resubmitted for the rest and so learns
// which. On a mapped file the mapper's size says so.
func (h *reqHooks) ReadEnded(off int64, zero bool) bool {
	r := (*Request)(h)
	switch {
	case zero:
		return true
	case r.sizeAt < 0 || r.owned:
		return off%r.file.align.Offset != 0
	}
	return off >= r.sizeAt
}

// Dequeue takes r off its lock's queue if it still waits there, completing
// it cancelled.
func (h *reqHooks) Dequeue() bool {
	r := (*Request)(h)
	return r.file.cancelQueued(r)
}

// convert tells the mapper how a write that was not a pure overwrite
// ended: the bytes reported written did reach the target, and the mapper
// converts them; the rest failed, and the mapper learns that too (a file
// mapper forgets what it cached of the range). It returns the first error
// the mapper reports.
func (f *File) convert(r *Request) error {
	c, ok := f.mapper.(iomap.IOCompleter)
	if !ok {
		return nil
	}
	n, err := r.n, r.err
	var first error
	op := iomap.OpWrite | iomap.OpDirect
	if n > 0 {
		first = c.IOComplete(r.Off, n, op, nil)
	}
	if n < r.length {
		if cerr := c.IOComplete(r.Off+n, r.length-n, op, err); cerr != nil && first == nil {
			first = cerr
		}
	}
	return first
}
