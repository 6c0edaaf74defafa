//go:build linux

package dio

import (
	"context"
	"sync/atomic"
	"unsafe"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/choose"
)

// Op says what a Request does.
type Op uint8

// Request operations. Fsync, Fdatasync and Preallocate are fsync(2),
// fdatasync(2) and fallocate(2) with FALLOC_FL_KEEP_SIZE over
// [Off, Off+Len), done asynchronously through the engine like reads and
// writes; they take no buffers and complete with 0 bytes.
const (
	Read Op = iota
	Write
	Fsync
	Fdatasync
	Preallocate
)

func (o Op) String() string {
	switch o {
	case Write:
		return "write"
	case Fsync:
		return "fsync"
	case Fdatasync:
		return "fdatasync"
	case Preallocate:
		return "preallocate"
	}
	return "read"
}

// control reports whether the op moves no data.
func (o Op) control() bool { return o >= Fsync }

// Flags change how a request is carried out (iomap's IOMAP_DIO_* and the
// kiocb flags it looks at).
type Flags uint32

// Request flags.
const (
	// NoWait fails the request with EAGAIN instead of blocking (RWF_NOWAIT
	// on the SQEs, and a mapper that must not block). A write goes out as
	// one SQE per buffer and per MaxIOSize (Capabilities); a NoWait write
	// that needs more than one fails with EAGAIN before anything is
	// submitted, so nothing is ever half done, unless it also has Partial:
	// then every SQE goes out, and the result counts the bytes before the
	// first one that would have blocked (with EAGAIN), so the caller can
	// resume there.
	NoWait Flags = 1 << iota
	// OverwriteOnly fails a write with EAGAIN if it would allocate space or
	// extend the file.
	OverwriteOnly
	// Partial submits what could be mapped when the mapper fails part way
	// (instead of nothing), lets a NoWait write span several SQEs, and
	// counts DoneBefore in the result, so a caller can resume where a
	// request stopped.
	Partial
	// DSync makes the data durable before completion: RWF_DSYNC on every
	// SQE when every extent is a pure overwrite (write-through), otherwise
	// an fdatasync on the pool after the data is in.
	DSync
	// Sync is DSync plus metadata: fsync after the data is in.
	Sync
	// Atomic makes a write untorn (RWF_ATOMIC): after a crash the range
	// holds all of it or none of it. The write must be one buffer, of a
	// power-of-two length within the file's untorn unit
	// (Capabilities().Untorn), at an offset aligned to its length, and
	// aligned to the file's direct-I/O alignment; otherwise it is refused
	// before anything is submitted (an error that says why and matches
	// syscall.EINVAL, or ErrUnsupported where
	// the file has no untorn writes).
	Atomic
)

// Request states.
const (
	stateIdle     uint32 = iota
	stateInflight        // submitted, I/O references held
	stateIODone          // every SQE completed; completion work not yet run
	stateResult          // result final; the callback is running
	stateComplete        // result final, callback returned
)

// Request is one direct-I/O operation: a read or write of one or many
// buffers at one file offset. Fill the exported fields and pass it to
// File.Submit; it comes back through its completion policy. A Request may
// be reused once it has completed; the zero Request is ready to fill. The
// Request and its buffers belong to the engine from a successful Submit
// until completion (the Callback has returned, or Wait has): do not touch,
// resubmit or free them before (a Callback may resubmit the request it is
// given). A Request is not safe for concurrent use: one goroutine submits
// it, and Wait or Result are called by the goroutine that owns its
// completion.
type Request struct {
	Op   Op
	Off  int64
	Buf  []byte   // one buffer; or
	Bufs [][]byte // several (vectored), used when Buf is nil
	Len  int64    // Preallocate: the length of the range
	// Flags, Policy and completion targets.
	Flags  Flags
	Policy completion.Policy
	// Callback runs when the request completes: on the reaper (Inline), on
	// a pool worker (Pool), or on the goroutine that polls or waits
	// (Caller, Wait). It must not block waiting for other I/O of the same
	// engine when it runs inline. It may Open and Close files, including
	// its own: run on the engine's owner, a Close of a File with other
	// I/O in flight does not wait for it (File.Close), nor does an
	// Engine's Close.
	Callback func(*Request)
	// Queue receives the request at completion under the Caller policy;
	// its owner runs the completion with Queue.Poll or Queue.Wait.
	Queue *completion.Queue
	// DoneBefore is added to the result (Partial: bytes done by earlier
	// requests of the same logical operation).
	DoneBefore int64
	// Tag is the caller's, untouched by the engine.
	Tag uint64

	// engine state
	file    *File
	state   atomic.Uint32
	refs    atomic.Int32
	once    choose.Once
	wake    chan struct{}
	pieces  []piece
	next    int      // first piece not yet submitted
	backlog *Request // next in the owner's queue or backlog, or the pread backend's
	// Cancellation (owner.go): the submission count, the one a cancel was
	// asked for, and the link of the owner's cancel queue.
	subGen       atomic.Uint32
	cancelGen    atomic.Uint32
	cancelQueued atomic.Bool
	cancelNext   *Request
	submitted    int64 // bytes covered by pieces, from Off
	length       int64 // bytes asked for (after EOF clipping: see want)
	want         int64
	sizeAt       int64 // a mapped file's size at submission; -1 on a kernel file
	owned        bool  // I/O of the volume gate's holder (volume.go): no gate, no size change, no EOF clip
	job          uint8 // what a worker does with it (workers.go)
	policy       completion.Policy
	reason       completion.Reason
	facts        choose.Facts
	async        bool
	fileDec      bool
	cancelled    atomic.Bool
	// the file's write gate (gate.go)
	gateExcl     bool // not aligned to the block size: needs the file alone
	gateSync     bool // a synchronous caller waits for admission itself
	gateHeld     bool // admitted, not yet released
	gateAdmitted atomic.Bool
	gateNext     *Request
	gateDone     <-chan struct{} // a synchronous caller's context, while at the gate
	converted    bool            // extents converted at I/O completion (gated writes)
	convErr      error
	// written by whoever carries out the I/O (the owner, a pread worker)
	// until the last reference is dropped
	errno  error
	stopAt int64 // lowest file offset where data stopped (EOF, error)
	// results
	n   int64
	err error
	// buffer cursor used while building pieces
	curBuf, curOff int
}

// piece is one SQE's worth of a request.
type piece struct {
	ctl     Op    // Fsync, Fdatasync, Preallocate; 0 for data
	ctlLen  int64 // Preallocate's length
	fd      int32
	regFile bool
	fixed   bool
	write   bool
	addr    uintptr
	n       uint32
	off     int64 // on the target
	fileOff int64
	rwFlags uint32
}

// newRequest returns a request with its wake-up channel made (Submit
// makes it for a zero Request).
func newRequest() *Request {
	return &Request{wake: make(chan struct{}, 1)}
}

// Result returns the bytes transferred (plus DoneBefore) and the error of a
// completed request, or ErrInProgress. It is valid in the request's
// Callback and after.
func (r *Request) Result() (int, error) {
	if r.state.Load() < stateResult {
		return 0, ErrInProgress
	}
	return int(r.n), r.err
}

// done reports whether the request has completed: its callback has
// returned, and the request and its buffers are the caller's again.
func (r *Request) done() bool { return r.state.Load() == stateComplete }

// EffectivePolicy returns the completion policy the request runs under
// and, if that is a downgrade from what it asked for, why. It is decided
// before Submit returns, so a caller can look right after Submit: a
// request that asked for Caller and was given Pool (a write whose
// completion must do I/O: it fills a hole, extends the file, or needs an
// fdatasync) will not reach its Queue; its Callback runs on an engine
// worker. The one exception is an asynchronous write to a mapped file that
// waits at the volume's write gate (an unaligned write ahead of it): its
// policy is decided when the gate admits it, so read it in the Callback or
// after Wait. Safe to call from any goroutine once decided.
func (r *Request) EffectivePolicy() (completion.Policy, completion.Reason) {
	return r.policy, r.reason
}

// Wait waits for the request to complete, reaping completions meanwhile,
// and returns its result. Under the Caller and Wait policies the
// completion work runs here, on the caller's goroutine. If ctx ends first,
// the request's SQEs are cancelled and Wait still waits for their
// completions (the buffers are the kernel's until then); the result is
// then ECANCELED, or the I/O's own result if it won the race.
func (r *Request) Wait(ctx context.Context) (int, error) {
	if r.state.Load() == stateIdle {
		return 0, ErrInProgress
	}
	r.file.eng.await(r, ctx.Done())
	return r.Result()
}

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

// mem returns the address of the request's memory at logical position pos
// (bytes from Off) and how many bytes are contiguous there. It keeps a
// cursor, so walking forward is O(1) per step.
func (r *Request) mem(pos int64) (uintptr, int64, []byte) {
	if r.Buf != nil {
		return uintptr(unsafe.Pointer(&r.Buf[pos])), int64(len(r.Buf)) - pos, r.Buf[pos:]
	}
	// Walk from the cursor (reset when pos goes backwards).
	if pos < int64(r.curOff) {
		r.curBuf, r.curOff = 0, 0
	}
	for r.curBuf < len(r.Bufs) && pos >= int64(r.curOff+len(r.Bufs[r.curBuf])) {
		r.curOff += len(r.Bufs[r.curBuf])
		r.curBuf++
	}
	b := r.Bufs[r.curBuf][pos-int64(r.curOff):]
	return uintptr(unsafe.Pointer(&b[0])), int64(len(b)), b
}

// zero fills the request's memory over [pos, pos+n) (logical) with zeroes.
func (r *Request) zero(pos, n int64) {
	for n > 0 {
		_, l, b := r.mem(pos)
		if l > n {
			l = n
		}
		clear(b[:l])
		pos += l
		n -= l
	}
}

// setErr records err as the request's error if it is the first, and moves
// stopAt back to off. Called with the engine's mu held (or before the
// request is submitted).
func (r *Request) setErr(err error, off int64) {
	if r.errno == nil {
		r.errno = err
	}
	if off < r.stopAt {
		r.stopAt = off
	}
}

// eof records that data stopped at off because the file ends there.
func (r *Request) eof(off int64) {
	if off < r.stopAt {
		r.stopAt = off
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func addrOf(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// reqTask is a Request as the completion work a Queue runs (Caller
// policy). One pointer: putting it in the interface does not allocate.
type reqTask struct{ r *Request }

func (t reqTask) RunCompletion() { t.r.runCompletion() }

var _ completion.Task = reqTask{}
