//go:build linux

package dio

import (
	"context"
	"sync"
	"unsafe"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/choose"
	"github.com/uringdio/uringdio/internal/engine"
)

// Result returns the bytes transferred (plus DoneBefore) and the error of a
// completed request, or ErrInProgress. It is valid in the request's
// Callback and after.
func (r *Request) Result() (int, error) {
	if r.x.State.Load() < engine.Result {
		return 0, ErrInProgress
	}
	return int(r.n), r.err
}

// EffectivePolicy returns the completion policy the request runs under
// and, if that is a downgrade from what it asked for, why. It is decided
// before Submit returns, so a caller can look right after Submit: a
// request that asked for Caller and was given Pool (a write whose
// completion must do I/O: it fills a hole, extends the file, or needs an
// fdatasync) will not reach its Queue; its Callback runs on an engine
// worker. The one exception is an asynchronous request that waits for the
// I/O lock of its inode or volume (an unaligned write ahead of it): its
// policy is decided when the lock admits it, so read it in the Callback
// or after Wait. Safe to call from any goroutine once decided.
func (r *Request) EffectivePolicy() (completion.Policy, completion.Reason) {
	return r.x.Policy, r.reason
}

// Wait waits for the request to complete, reaping completions meanwhile,
// and returns its result. Under the Caller and Wait policies the
// completion work runs here, on the caller's goroutine. If ctx ends first,
// the request's SQEs are cancelled and Wait still waits for their
// completions (the buffers are the kernel's until then); the result is
// then ECANCELED, or the I/O's own result if it won the race.
func (r *Request) Wait(ctx context.Context) (int, error) {
	if r.x.State.Load() == engine.Idle || r.file == nil {
		return 0, ErrInProgress
	}
	r.file.eng.Await(&r.x, ctx.Done())
	return r.Result()
}

// done reports whether the request has completed: its callback has
// returned, and the request and its buffers are the caller's again.
func (r *Request) done() bool { return r.x.State.Load() == engine.Complete }

func (r *Request) totalLen() int64 {
	if r.Buf != nil {
		return int64(len(r.Buf))
	}
	var n int64
	for _, b := range r.Bufs {
		n += int64(len(b))
	}
	return n
}

// mem returns the request's memory at logical position pos (bytes from
// Off) and how many bytes are contiguous there. It keeps a cursor, so
// walking forward is O(1) per step.
func (r *Request) mem(pos int64) []byte {
	if r.Buf != nil {
		return r.Buf[pos:]
	}
	c := &r.cur
	if pos < int64(c.off) {
		c.buf, c.off = 0, 0
	}
	for c.buf < len(r.Bufs) && pos >= int64(c.off+len(r.Bufs[c.buf])) {
		c.off += len(r.Bufs[c.buf])
		c.buf++
	}
	return r.Bufs[c.buf][pos-int64(c.off):]
}

// zero fills the request's memory over [pos, pos+n) (logical) with zeroes.
func (r *Request) zero(pos, n int64) {
	for n > 0 {
		b := r.mem(pos)
		l := min(int64(len(b)), n)
		clear(b[:l])
		pos += l
		n -= l
	}
}

// choosePolicy picks r's completion policy from what it asked for and
// r.facts (choose.Choose), and whether it completes asynchronously.
func (r *Request) choosePolicy(sync bool) {
	requested := r.Policy
	if requested == completion.Default {
		requested = r.file.policy
	}
	var deferredWhy completion.Reason
	if requested == completion.Wait && !sync {
		// An asynchronous request that its caller will Wait for is deferred
		// completion like Caller, under the same rules: its completion
		// must do no I/O, since the caller may never come.
		if p, why := choose.Choose(completion.Caller, r.facts); p != completion.Caller {
			requested, deferredWhy = p, why
		}
	}
	r.x.Policy, r.reason = choose.Choose(requested, r.facts)
	if deferredWhy != completion.NoDowngrade {
		r.reason = deferredWhy
	}
	if !r.async && r.x.Policy != completion.Polled {
		r.x.Policy = completion.Wait
	}
	if r.x.Policy == completion.Wait || r.x.Policy == completion.Polled {
		r.async = false
	}
	r.x.Queue = r.Queue
}

// Requests of synchronous calls are recycled, process-wide.
var syncReqs struct {
	mu   sync.Mutex
	free []*Request
}

// getReq returns a recycled request for a synchronous call.
func getReq() *Request {
	syncReqs.mu.Lock()
	if n := len(syncReqs.free); n > 0 {
		r := syncReqs.free[n-1]
		syncReqs.free = syncReqs.free[:n-1]
		syncReqs.mu.Unlock()
		select { // a stale wake-up from the previous use
		case <-r.x.Wake:
		default:
		}
		return r
	}
	syncReqs.mu.Unlock()
	return &Request{}
}

func putReq(r *Request) {
	r.Buf, r.Bufs, r.Callback, r.Queue, r.file = nil, nil, nil, nil, nil
	r.DoneBefore, r.Flags, r.Policy, r.Len = 0, 0, completion.Default, 0
	r.x.Err, r.err = nil, nil
	r.owned, r.lk.w.Excl, r.lk.sync = false, false, false
	r.x.State.Store(engine.Idle)
	syncReqs.mu.Lock()
	if len(syncReqs.free) < 1024 {
		syncReqs.free = append(syncReqs.free, r)
	}
	syncReqs.mu.Unlock()
}

func addrOf(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }
