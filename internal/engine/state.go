//go:build linux

package engine

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

// Config is what an engine is made with (dio's EngineOptions).
type Config struct {
	Entries     uint32
	RingFlags   ring.SetupFlags
	SQIdle      time.Duration
	FixedCount  int
	FixedSize   int
	RegFiles    int
	MaxInflight int
	Workers     int
	BufMemory   int64
	WrapRing    func(ringhook.Ring) ringhook.Ring // a test's
	LostAfter   time.Duration                     // lost-completion audits (0: off)
}

// Engine is one ring, its owner, the workers, the pread backend and the
// buffer pool. Safe for concurrent use.
type Engine struct {
	ring      ringhook.Ring
	iopoll    bool
	noRing    error         // why the engine has no ring (nil: it has one)
	noProbe   bool          // options shaped the ring, which serves every file
	o         owner         // the owner goroutine and its queues (owner.go)
	own       ownerState    // what only the owner touches
	inflight  atomic.Int64  // SQEs in flight
	directSem chan struct{} // the one synchronous call that may skip an idle ring
	workers   *workers
	preadSem  chan struct{} // bounds the pread backend's calls in progress, and their threads
	Bufs      *Pool         // aligned buffers for bounces and streams (pool.go)
	closed    atomic.Bool
	broken    atomic.Bool
	C         Counters
	fixed     *ring.Arena // registered buffers; nil without them
}

// Counters are an engine's live counters (dio's Stats says what each
// counts).
type Counters struct {
	Submitted, Completed, Resubmits, Backlogged, StrayCQEs, Audits atomic.Uint64
	LostCQEs, DroppedCQEs, Wakes, Syncs, Bounced                   atomic.Uint64
}

// Errors the engine reports.
var (
	// ErrRingBroken: a completion matched no request in flight; no result
	// from the ring can be trusted, and the engine refuses new I/O.
	ErrRingBroken = errors.New("dio: ring broken: completion matches no request in flight")
	// ErrLostCompletion: an audit found a request's completion lost. It
	// matches ErrRingBroken.
	ErrLostCompletion error = lostError{}
)

type lostError struct{}

func (lostError) Error() string {
	return "dio: ring broken: completion lost (the kernel finished the request; its CQE never arrived)"
}

func (lostError) Is(target error) bool { return target == ErrRingBroken }

// unhonoured are setup flags the owner cannot honour: a disabled ring, a
// work queue shared with another ring's owner, and the completion-work
// flags it picks itself.
const unhonoured = ring.SetupRDisabled | ring.SetupAttachWQ | ring.SetupCoopTaskrun |
	ring.SetupTaskrunFlag | ring.SetupSingleIssuer | ring.SetupDeferTaskrun

// The owner. One goroutine, locked to an OS thread nothing else runs on,
// owns the ring: it creates it, makes every SQE, enters the kernel and
// reaps every CQE. Nobody else touches the ring, the slots or the backlog
// (ownerState), so none of them needs a lock.
//
// Launchers hand it requests through a lock-free stack and go on, or park
// on their request. The owner sleeps in io_uring_enter waiting for a
// completion; a poll of an eventfd is kept in the ring, and a launcher
// that finds the owner asleep writes the eventfd. On an IOPOLL ring the
// owner polls while anything is in flight and otherwise sleeps on a
// channel.
type owner struct {
	head    atomic.Pointer[Req]      // launched requests, newest first (through link)
	ready   atomic.Pointer[Req]      // Inline completions to run (through link)
	cancels atomic.Pointer[Req]      // cancels (through cancel.next)
	cmds    atomic.Pointer[ownerCmd] // work for the owner's thread
	// sleep says where the owner sleeps: 0 awake, sleepKernel in a
	// waiting io_uring_enter, sleepChan on wakeCh. The owner sets it
	// before it looks at its queues one last time; a launcher looks at it
	// after it pushed: one of them sees the other's write.
	sleep  atomic.Int32
	efd    int // the wake-up eventfd, -1 on an IOPOLL ring
	armed  bool
	wakeCh chan struct{}
	stop   atomic.Bool
	done   chan error
	evbuf  [8]byte
	tid    atomic.Int32 // the owner's OS thread
}

const (
	sleepKernel = 1
	sleepChan   = 2
)

// ownerState is what only the owner goroutine touches.
type ownerState struct {
	slots      []slot
	freeSlots  []uint32
	backlog    *Req // requests with pieces not yet in the ring (FIFO)
	backlogEnd *Req
	resub      []uint32 // slots whose resubmission waits for SQ room
	cqes       []ring.CQE
	fileSlots  []int32 // registered files: fd per slot, -1 free
	sqSeq      uint64  // SQEs prepared so far
	audit      auditState
	lostAfter  time.Duration
}

// slot is one SQE in flight: its request and piece, so a short completion
// can be resubmitted for the rest.
type slot struct {
	req     *Req
	p       Piece
	gen     uint32
	busy    bool
	retries uint8
	seq     uint64 // position in the SQ order; noSeq while waiting for SQ room
}

const noSeq = ^uint64(0)

// user_data of the engine's own SQEs; a request's SQE carries its slot's
// generation in the high 32 bits and its index in the low 32.
const (
	cancelTag = ^uint64(0)
	auditTag  = ^uint64(0) - 1
	wakeTag   = ^uint64(0) - 2
)

// ownerCmd is work for the owner's thread (registering a file).
type ownerCmd struct {
	fn   func()
	next *ownerCmd
	done chan struct{}
}

// stuckRetry is how long the owner waits when the kernel refused SQEs or
// a request waits for room with nothing in flight, before it tries again.
const stuckRetry = time.Millisecond

// maxRetries bounds the resubmissions of an SQE that keeps completing with
// EAGAIN (without NoWait); EINTR is resubmitted without a bound.
const maxRetries = 64

// auditState is the owner's bookkeeping of audits.
type auditState struct {
	lastOvf   uint32
	owed      bool   // an audit for dropped CQEs is yet to be queued
	inFlight  bool   // an audit NOP is in flight
	seq       uint64 // its place in the SQ order
	completed uint64 // completions seen at the last watch
	since     time.Time
	cancelAt  time.Time // when to audit for a cancelled request still in flight
}

// cancelAudit is how long a cancelled request may stay in flight before
// the owner audits the ring (with audits on).
const cancelAudit = 100 * time.Millisecond

// workers run what must run neither on the owner nor on a launcher's
// stack: Pool completions (work that may block), Inline completions of
// the pread backend's requests, and the pread backend's asynchronous
// requests themselves. Their queue has no bound: the owner hands work over
// without waiting (a Pool callback may wait for I/O only the owner can
// complete), and what it holds is bounded by the requests in flight. The
// goroutines start with the first work, up to max.
type workers struct {
	mu         sync.Mutex
	cond       sync.Cond
	head, tail *Req // FIFO through link
	started    int
	idle       int
	max        int
	stopped    bool
	wg         sync.WaitGroup
	pread      func(*Req)
	tids       []int32                 // the workers' threads; under mu
	tidsView   atomic.Pointer[[]int32] // tids, for readers without mu
}

// Jobs a worker does with a request.
const (
	jobComplete = iota + 1 // run its completion
	jobPread               // carry out its pieces with pread
)

// Pool hands out page-aligned off-heap buffers within one byte bound per
// engine, to two kinds of user, neither of which waits for a buffer while
// holding one, so the pool cannot deadlock:
//   - a bounced ReadAt or WriteAt takes one buffer (Get) before it takes
//     any lock, uses it for its aligned I/O and puts it back; it waits for
//     room, which the bounced calls before it give back;
//   - a stream (an Appender, a ReadAhead reader) reserves its buffers in
//     one step (Reserve), as many as there is room for, maybe none, and
//     keeps them until it is closed; it never waits. Streams together hold
//     at most the bound less MaxBuffer, so bounced calls always have room.
//
// Buffers put back are kept for reuse, and freed when another size needs
// the room.
type Pool struct {
	mu         sync.Mutex
	cond       sync.Cond
	limit      int64
	held       int64 // bytes allocated: handed out or cached
	streamHeld int64 // bytes reserved by streams
	free       [nClasses][][]byte
	closed     bool
	waiting    int
}

// Buffers come in power-of-two sizes from 4 KiB to MaxBuffer; longer
// requests go through in pieces of MaxBuffer.
const (
	minShift  = 12
	maxShift  = 20
	MaxBuffer = 1 << maxShift
	nClasses  = maxShift - minShift + 1
)
