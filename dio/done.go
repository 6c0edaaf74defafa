//go:build linux

package dio

import (
	"io"

	"github.com/uringdio/uringdio/iomap"
)

// finishResult turns the I/O accounting into the request's raw result.
// Called once, by whoever drops the last reference.
func (r *Request) finishResult() {
	n := r.stopAt - r.Off
	if end := r.Off + r.length; r.stopAt > end {
		n = r.length
	}
	if n < 0 {
		n = 0
	}
	if r.Op == Read && r.sizeAt >= 0 && !r.owned && r.sizeAt-r.Off < n && r.errno == nil {
		n = max(r.sizeAt-r.Off, 0) // a mapped file ends at its size
	}
	r.n = n
	r.err = r.errno
}

// runCompletion runs the request's completion work exactly once: size
// extension, extent conversion, the sync a DSYNC write still needs, the
// end-of-I/O hook, then the callback. Where it runs is the policy's
// choice.
func (r *Request) runCompletion() {
	if !r.once.Claim() {
		return
	}
	f := r.file
	n, err := r.n, r.err
	if r.Op == Write && n > 0 && f.vol != nil && !r.owned {
		f.vol.extendSize(r.Off + n)
	}
	if r.Op == Write && !r.facts.PureOverwrite {
		cerr := r.convErr
		if !r.converted {
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
	if f.endIO != nil {
		n, err = f.endIO(r, n, err)
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
	r.state.Store(stateResult)
	r.runCallback()
	wake := r.wake
	// From here the caller may reuse r. The callback may already have
	// resubmitted it (the usual asynchronous loop): then it is in flight
	// again and stays so.
	r.state.CompareAndSwap(stateResult, stateComplete)
	signal(wake)
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

func (r *Request) runCallback() {
	if r.Callback != nil {
		r.Callback(r)
	}
}
