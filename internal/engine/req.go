//go:build linux

package engine

import (
	"sync/atomic"
	"unsafe"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/choose"
	"github.com/uringdio/uringdio/ring"
)

// Req is one operation as the engine carries it out: pieces of I/O on
// descriptors (one SQE each), a reference per piece, and the hooks its
// owner gives for the end. It is caller-owned and intrusive (TigerBeetle's
// completions): the engine never allocates one, links it into its queues
// through its own fields, and keeps it from Launch until Hooks.Complete
// has returned. The owner fills the exported fields before Launch and
// reads Err and StopAt in Hooks.IODone.
type Req struct {
	Pieces  []Piece
	Base    int64             // the logical offset of the first byte, for accounting
	Policy  completion.Policy // where the completion runs (decided by the owner)
	Queue   *completion.Queue // Caller: where the completion goes
	NoWait  bool              // EAGAIN is a result, not retried
	Pread   bool              // carried out by the pread backend
	Direct  bool              // a synchronous request that may skip an idle ring (Engine.direct)
	Hooks   Hooks
	SQEHook func(*Req, *ring.SQE) // a test's: sees (and may change) every SQE

	// Written by whoever carries out the I/O (the owner, a pread
	// goroutine) until the last reference drops: the first error, and the
	// lowest logical offset where data stopped (an error, the end of the
	// data).
	Err    error
	StopAt int64

	// State is where the request is (Idle ... Complete).
	State atomic.Uint32
	// Wake is signalled when the I/O is done or the completion has run.
	Wake chan struct{}

	refs      atomic.Int32
	once      choose.Once
	next      int  // first piece not yet in the ring
	link      *Req // the owner's queue and backlog, the workers' queue
	job       uint8
	gen       atomic.Uint32 // Launch count: a request's identity across reuse
	cancelled atomic.Bool
	cancel    cancelMark
}

// cancelMark is a request's place in the owner's cancel queue: which use
// of the request (gen) the cancel is for.
type cancelMark struct {
	gen    atomic.Uint32
	queued atomic.Bool
	next   *Req
}

// Request states.
const (
	Idle     uint32 = iota
	Inflight        // launched, references held
	IODone          // every piece done; completion not yet run
	Result          // result final; the callback runs
	Complete        // the callback returned
)

// Hooks are what the engine calls back on a request's owner.
type Hooks interface {
	// IODone runs once, when the last reference drops, on whichever
	// goroutine dropped it (the owner, a pread goroutine, the launcher),
	// before anyone is woken: it turns Err and StopAt into the result
	// and releases what the I/O held. It must not block.
	IODone()
	// Complete runs the completion work and the callback, once, where
	// Policy says; it calls SetResult before the callback.
	Complete()
	// ReadEnded reports whether a read piece that came back short, its
	// data ending at the logical offset off (zero: nothing read), ran into
	// the end of the data; otherwise the rest is read again.
	ReadEnded(off int64, zero bool) bool
	// Dequeue takes a request that waits in its owner's own queue (not
	// launched yet) out of it and completes it cancelled, and reports
	// whether it did.
	Dequeue() bool
}

// Piece is one SQE's worth of a request.
type Piece struct {
	Ctl     Ctl   // 0 for data
	CtlLen  int64 // Fallocate's length
	Fd      int32 // a descriptor, or a registered-file slot (RegFile)
	RegFile bool
	Fixed   bool // the memory lies in the engine's registered buffers
	Write   bool
	Addr    unsafe.Pointer // the memory (off-heap, or Go memory its owner keeps alive)
	N       uint32
	Off     int64  // on the descriptor
	LogOff  int64  // logical offset of its data; -1: not the caller's data (zeroes)
	RWFlags uint32 // RWF_* on the SQE
}

// Ctl is a piece that moves no data.
type Ctl uint8

// Control pieces.
const (
	Fsync Ctl = iota + 1
	Fdatasync
	Fallocate // FALLOC_FL_KEEP_SIZE over [Off, Off+CtlLen)
)

// dataOff is the logical offset of the piece's data at done bytes in, for
// error accounting (a zeroing piece counts as the request's start).
func (p *Piece) dataOff(r *Req, done int64) int64 {
	if p.LogOff < 0 {
		return r.Base
	}
	return p.LogOff + done
}

// Begin readies r for a new use before its pieces are filled: the result
// accounting (StopAt starts at end, the logical end of its data), the
// cancel state and its identity (Gen).
func (r *Req) Begin(end int64) {
	if r.Wake == nil {
		r.Wake = make(chan struct{}, 1)
	}
	r.Pieces = r.Pieces[:0]
	r.next = 0
	r.Err, r.StopAt = nil, end
	r.cancelled.Store(false)
	r.once.Reset()
	r.gen.Add(1)
}

// Gen is the request's use count: a cancel names the use it is for.
func (r *Req) Gen() uint32 { return r.gen.Load() }

// SetErr records err as the request's error if it is the first, and moves
// StopAt back to off. Only whoever carries out the I/O calls it (or the
// owner before Launch).
func (r *Req) SetErr(err error, off int64) {
	if r.Err == nil {
		r.Err = err
	}
	r.Ended(off)
}

// Ended records that data stopped at off (the end of the data).
func (r *Req) Ended(off int64) {
	if off < r.StopAt {
		r.StopAt = off
	}
}

// Completed marks a request that needed no I/O and no completion work
// complete, before it is launched: Await returns at once and runs nothing.
func (r *Req) Completed() {
	r.once.Claim()
	r.State.Store(Complete)
}

// SetResult marks the result final (Complete calls it before the
// callback).
func (r *Req) SetResult() { r.State.Store(Result) }

// Signal wakes whoever waits on the request.
func (r *Req) Signal() { signal(r.Wake) }

// runCompletion runs the completion exactly once, and marks the request
// complete unless its callback launched it again.
func (r *Req) runCompletion() {
	if !r.once.Claim() {
		return
	}
	wake := r.Wake
	r.Hooks.Complete()
	r.State.CompareAndSwap(Result, Complete)
	signal(wake)
}

// task is a request as the work a completion.Queue runs (Caller): one
// pointer, so boxing it does not allocate.
type task struct{ r *Req }

func (t task) RunCompletion() { t.r.runCompletion() }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
