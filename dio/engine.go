//go:build linux

package dio

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

// submitWaiter is the optional part of a Ring that publishes SQEs and then
// submits and waits in one system call (*ring.Ring has it; a wrapper that
// lacks it gets the two-call path).
type submitWaiter interface {
	Flush() uint32
	EnterWait(toSubmit, n uint32) (uint32, error)
}

var _ submitWaiter = (*ring.Ring)(nil)

// overflowCounter is the optional part of a Ring that reports how many
// CQEs the kernel dropped (the CQ ring's overflow counter).
type overflowCounter interface {
	Overflow() uint32
}

var _ overflowCounter = (*ring.Ring)(nil)

// Engine is one ring and the goroutine that owns it (owner.go), a slab of
// SQEs in flight, a completion worker pool, the bounce-buffer memory, and
// the pread backend for files whose device completes synchronously (or
// for every file, where no ring could be created). Files share an engine:
// by default the process's, shared by every File opened without one. Safe
// for concurrent use.
type Engine struct {
	ring   ringhook.Ring
	sw     submitWaiter    // nil if the ring cannot combine submit and wait
	ovf    overflowCounter // the kernel's dropped-CQE count
	iopoll bool

	o       owner // the ring's owner goroutine and its queues (owner.go)
	ownerMu sync.Mutex
	started bool

	// Owned by the owner goroutine.
	slots      []slot
	freeSlots  []uint32
	backlog    *Request // requests with pieces not yet in the ring (FIFO)
	backlogEnd *Request
	resub      []uint32 // slots whose resubmission waits for SQ room
	cqes       []ring.CQE
	fileSlots  []int32 // registered files: fd per slot, -1 free
	lastOvf    uint32
	owed       bool   // an audit for dropped CQEs is yet to be queued
	sqSeq      uint64 // SQEs prepared so far: each slot's seq
	auditing   bool   // an audit NOP is in flight
	auditSeq   uint64 // its seq
	lostAfter  time.Duration
	// The lost-completion watchdog (audit.go): completions seen at the
	// last check, and since when.
	watchCompleted uint64
	watchSince     time.Time
	cancelAuditAt  time.Time // when to audit for a cancelled request still in flight

	inflight  atomic.Int64  // SQEs in flight (the owner's count, read by anyone)
	directSem chan struct{} // the one synchronous call that may skip an idle ring (backend.go)

	// Inline completions that must not run where they were found (put):
	// run by the owner.
	readyMu sync.Mutex
	ready   []*Request
	spare   []*Request
	readyN  atomic.Int32

	reqMu   sync.Mutex
	reqFree []*Request // recycled requests of synchronous calls

	workers   *workers
	bufs      *bufPool      // bounce buffers (bounce.go)
	pr        *preadBackend // files on synchronous devices; every file without a ring (pread.go)
	noRing    error         // why the engine has no ring (nil: it has one)
	noProbe   bool          // the ring serves every file (an engine shaped by its options)
	closed    atomic.Bool
	broken    atomic.Bool
	permanent bool // the default engine: Close does nothing
	stats     counters

	fixedArena []byte
	fixedBufs  [][]byte // the arena cut in FixedBufferSize pieces
	fixedSize  int
	fixedMu    sync.Mutex
	zero       []byte   // zeroes for sub-block zeroing
	zeroOld    [][]byte // outgrown zero buffers, freed at Close
}

// slot is one SQE in flight: which request it belongs to and what it does,
// so a short completion can be resubmitted for the remainder. Slots belong
// to the owner.
type slot struct {
	req     *Request
	gen     uint32
	busy    bool
	write   bool
	fixed   bool // registered buffer
	regFile bool
	fd      int32
	addr    uintptr
	n       uint32
	off     int64 // offset on the target
	fileOff int64 // logical file offset, for EOF and error accounting
	rwFlags uint32
	ctl     Op    // Fsync, Fdatasync, Preallocate; 0 for data
	ctlLen  int64 // Preallocate's length
	retries uint8
	seq     uint64 // position in the SQ order (prep); noSeq while waiting for SQ room
}

// noSeq is the SQ position of a slot whose SQE is not in the SQ.
const noSeq = ^uint64(0)

// userData tags of the engine's own SQEs; a request's SQE carries the
// slot's generation in the high 32 bits and its index in the low 32, and a
// CQE whose generation does not match its slot is late or duplicated.
const (
	cancelTag = ^uint64(0)     // the engine's cancels: no result
	auditTag  = ^uint64(0) - 1 // lost-completion audits (audit.go)
	wakeTag   = ^uint64(0) - 2 // the owner's eventfd poll (owner.go)
)

// Stats is a snapshot of an engine's counters (Engine.Stats): counts since
// the engine was made, and what was in flight when it was taken.
type Stats struct {
	Submitted   uint64 // SQEs submitted (pread backend: system calls)
	Completed   uint64 // CQEs processed (pread backend: pieces done)
	Resubmits   uint64 // short completions resubmitted
	Backlogged  uint64 // requests that waited for SQ room or slots
	StrayCQEs   uint64 // CQEs that matched nothing
	Audits      uint64 // lost-completion audits completed
	LostCQEs    uint64 // requests' SQEs whose completion an audit found lost
	DroppedCQEs uint64 // CQEs the kernel reported dropping (CQ overflow)
	Wakes       uint64 // times a submitter woke the sleeping owner
	// Syncs counts the fsyncs and fdatasyncs that appenders' syncs issued
	// (a group commit issues one for all its callers).
	Syncs uint64
	// Bounced counts ReadAt and WriteAt calls that were not aligned and went
	// through bounce buffers.
	Bounced uint64
	// Inflight is the number of SQEs in flight.
	Inflight uint64
}

// counters are the engine's live counters (Stats has their meanings).
type counters struct {
	Submitted, Completed, Resubmits, Backlogged, StrayCQEs, Audits atomic.Uint64
	LostCQEs, DroppedCQEs, Wakes, Syncs, Bounced                   atomic.Uint64
}

// NewEngine creates an engine: a ring owned by a goroutine locked to its
// own OS thread, and a completion worker pool. A nil o means the defaults
// (EngineOptions). NewEngine keeps nothing of o but its values. Close the
// engine after every File that uses it.
func NewEngine(o *EngineOptions) (*Engine, error) {
	c := engineConfig(o)
	e, err := newEngine(&c)
	if err != nil {
		return nil, &OpError{Op: "engine", Err: err}
	}
	return e, nil
}

var defaultEngine struct {
	once sync.Once
	e    *Engine
	err  error
}

// defaultEng returns the process's engine, created at its first use:
// what Open gives every File opened without Options.Engine or
// Options.EngineOptions. It lives as long as the process; its Close does
// nothing.
func defaultEng() (*Engine, error) {
	defaultEngine.once.Do(func() {
		c := engineConfig(nil)
		defaultEngine.e, defaultEngine.err = newEngine(&c)
		if defaultEngine.e != nil {
			defaultEngine.e.permanent = true
		}
	})
	return defaultEngine.e, defaultEngine.err
}

// unhonoured are the setup flags the owner design cannot honour: a
// disabled ring nobody enables, a work queue shared with another ring's
// owner thread, and the completion-work flags the engine chooses itself.
const unhonoured = ring.SetupRDisabled | ring.SetupAttachWQ | ring.SetupCoopTaskrun |
	ring.SetupTaskrunFlag | ring.SetupSingleIssuer | ring.SetupDeferTaskrun

func newEngine(c *config) (*Engine, error) {
	if bad := c.ringFlags & unhonoured; bad != 0 {
		return nil, fmt.Errorf("setup flags %v: the engine's owner cannot honour them (it picks SINGLE_ISSUER|DEFER_TASKRUN itself): %w", bad, syscall.EINVAL)
	}
	e := &Engine{
		bufs:      newBufPool(c.bufMemory),
		pr:        newPreadBackend(),
		lostAfter: c.lostAfter,
		// Options that shape the ring itself (a wrapper, SQPOLL, IOPOLL,
		// registered buffers or files) ask for the ring for every file;
		// otherwise each device gets the faster backend.
		noProbe: c.wrapRing != nil || c.ringFlags != 0 || c.fixedCount > 0 || c.regFiles > 0,
	}
	// The ring is created, set up and used by its owner, on the owner's
	// OS thread: SINGLE_ISSUER binds a ring to the thread that creates it.
	e.workers = newWorkers(e, c.workers)
	e.directSem = make(chan struct{}, 1)
	err := e.startOwner(c)
	if err == nil {
		return e, nil
	}
	if refusedRing(err) {
		if opt := c.needsRing(); opt != "" {
			return nil, fmt.Errorf("%s needs io_uring, and the ring was refused: %w", opt, err)
		}
		return newPreadEngine(c, err), nil // where io_uring is refused, the pread backend
	}
	return nil, err
}

// needsRing names the option that asks for a ring (and so cannot fall
// back to the pread backend), or returns "".
func (c *config) needsRing() string {
	switch {
	case c.ringFlags&ring.SetupSQPoll != 0:
		return "EngineOptions.SQPoll"
	case c.ringFlags&ring.SetupIOPoll != 0:
		return "EngineOptions.IOPoll"
	case c.ringFlags != 0:
		return "EngineOptions.RingFlags"
	case c.fixedCount > 0:
		return "EngineOptions.FixedBuffers"
	case c.regFiles > 0:
		return "EngineOptions.RegisteredFiles"
	case c.wrapRing != nil:
		return "a ring wrapper (test hook)"
	}
	return ""
}

// setupRing creates and sets up the ring; the owner calls it on its
// thread.
func (e *Engine) setupRing(c *config) error {
	r, err := createRing(c)
	if err != nil {
		return err
	}
	var rr ringhook.Ring = r
	if c.wrapRing != nil {
		rr = c.wrapRing(r)
	}
	e.ring = rr
	e.iopoll = r.Flags()&ring.SetupIOPoll != 0
	if o, ok := rr.(overflowCounter); ok {
		e.ovf = o
	} else {
		e.ovf = r // a wrapper that does not forward it: the kernel's counter is the truth
	}
	e.sw, _ = rr.(submitWaiter)
	// io-wq's workers (requests the kernel cannot issue without blocking)
	// are threads of this process: bound them.
	r.SetIOWQMaxWorkers(uint32(min(4, runtime.GOMAXPROCS(0))), 2)
	n := c.maxInflight
	if n <= 0 {
		n = 8 * int(r.SQEntries())
	}
	e.slots = make([]slot, n)
	e.freeSlots = make([]uint32, n)
	for i := range e.freeSlots {
		e.freeSlots[i] = uint32(n - 1 - i)
	}
	e.cqes = make([]ring.CQE, r.CQEntries())
	if c.fixedCount > 0 {
		if err := e.setupFixed(c.fixedCount, c.fixedSize); err != nil {
			return err
		}
	}
	if c.regFiles > 0 {
		e.fileSlots = make([]int32, c.regFiles)
		for i := range e.fileSlots {
			e.fileSlots[i] = -1
		}
		if err := e.ring.RegisterFiles(e.fileSlots); err != nil {
			return fmt.Errorf("register files: %w", err)
		}
	}
	return nil
}

// createRing makes the ring with the flags fio uses where the ring allows
// them (SINGLE_ISSUER | DEFER_TASKRUN: completion work runs only when the
// owner asks for completions, in batches, and never interrupts another
// thread), falling back to a plain ring on a kernel without them.
func createRing(c *config) (*ring.Ring, error) {
	flags := c.ringFlags
	if flags&ring.SetupSQPoll == 0 {
		if p, err := ring.Probe(); err == nil {
			want := ring.SetupSingleIssuer | ring.SetupDeferTaskrun
			if p.SetupFlags&want == want {
				r, err := newRing(ring.Params{Entries: c.entries, Flags: flags | want, SQThreadIdle: c.sqIdle})
				if err == nil || refusedRing(err) {
					return r, err
				}
			}
		}
	}
	return newRing(ring.Params{Entries: c.entries, Flags: flags, SQThreadIdle: c.sqIdle})
}

// newRing creates the engine's ring (a variable: tests make it fail).
var newRing = ring.New

// refusedRing reports whether a ring creation error means io_uring is not
// allowed or not there: a seccomp profile (EPERM), the
// kernel.io_uring_disabled sysctl (EPERM), a kernel without it (ENOSYS).
func refusedRing(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EACCES)
}

// newPreadEngine is an engine without a ring: every File it serves uses
// the pread backend. why is the ring creation's error.
func newPreadEngine(c *config, why error) *Engine {
	e := &Engine{
		noRing: why,
		bufs:   newBufPool(c.bufMemory),
		pr:     newPreadBackend(),
	}
	e.workers = newWorkers(e, c.workers)
	return e
}

// Close stops the engine: it waits for every request in flight, stops the
// owner and the pool, and closes the ring. Files using it must be closed
// first. The default engine's Close does nothing.
//
// Called from a callback that runs on the engine's owner (Inline), Close
// cannot wait for the owner: it refuses new I/O at once, returns nil, and
// the owner stops once what is in flight has completed.
func (e *Engine) Close() error {
	if e.permanent || e.closed.Swap(true) {
		return nil
	}
	if e.onOwnerThread() {
		go e.shutdown()
		return nil
	}
	return e.shutdown()
}

// shutdown stops the owner and the workers and frees the engine's memory.
func (e *Engine) shutdown() error {
	var err error
	if e.ring != nil {
		err = e.stopOwner() // the owner drains, then closes the ring
	}
	e.workers.close()
	e.bufs.close()
	if e.fixedArena != nil {
		ring.Free(e.fixedArena)
	}
	for _, z := range append(e.zeroOld, e.zero) {
		if z != nil {
			ring.Free(z)
		}
	}
	return err
}

// Stats returns a snapshot of the engine's counters. Each is read
// atomically, not all at one instant. Safe for concurrent use.
func (e *Engine) Stats() Stats {
	c := &e.stats
	return Stats{
		Submitted: c.Submitted.Load(), Completed: c.Completed.Load(), Resubmits: c.Resubmits.Load(),
		Backlogged: c.Backlogged.Load(), StrayCQEs: c.StrayCQEs.Load(), Audits: c.Audits.Load(),
		LostCQEs: c.LostCQEs.Load(), DroppedCQEs: c.DroppedCQEs.Load(), Wakes: c.Wakes.Load(),
		Syncs: c.Syncs.Load(), Bounced: c.Bounced.Load(), Inflight: uint64(max(e.inflight.Load(), 0)),
	}
}

// ---- fixed buffers ----

func (e *Engine) setupFixed(count, size int) error {
	if size <= 0 {
		size = 1 << 20
	}
	arena, err := ring.Alloc(count * size)
	if err != nil {
		return fmt.Errorf("fixed buffers of %d bytes: %w", count*size, err)
	}
	e.fixedArena, e.fixedSize = arena, size
	if err := e.ring.RegisterBuffers([][]byte{arena}); err != nil {
		return fmt.Errorf("register buffers of %d bytes: %w", len(arena), err)
	}
	for i := range count {
		e.fixedBufs = append(e.fixedBufs, arena[i*size:(i+1)*size:(i+1)*size])
	}
	return nil
}

// FixedBuffers returns the engine's registered buffers
// (EngineOptions.FixedBuffers of FixedBufferSize bytes each; none without
// them). A request whose memory lies in one goes out as read_fixed or
// write_fixed. They are off-heap and page aligned, so every request on
// them is zero-copy; they are the caller's to share out (each call returns
// the same ones), and valid until the engine is closed. Safe for
// concurrent use.
func (e *Engine) FixedBuffers() [][]byte { return e.fixedBufs }

// fixedIndex reports whether b lies in the registered arena, and its
// offset there.
func (e *Engine) fixedIndex(b []byte) (uintptr, bool) {
	if e.fixedArena == nil || len(b) == 0 {
		return 0, false
	}
	base := uintptr(addrOf(e.fixedArena))
	a := uintptr(addrOf(b))
	if a < base || a+uintptr(len(b)) > base+uintptr(len(e.fixedArena)) {
		return 0, false
	}
	return a - base, true
}

// ---- registered files (changed by the owner: a ring belongs to its thread) ----

func (e *Engine) registerFile(fd int32) (int32, error) {
	if e.fileSlots == nil {
		return -1, nil
	}
	idx, err := int32(-1), error(nil)
	e.onOwner(func() {
		for i, v := range e.fileSlots {
			if v == -1 {
				if err = e.ring.UpdateFiles(uint32(i), []int32{fd}); err == nil {
					e.fileSlots[i], idx = fd, int32(i)
				}
				return
			}
		}
	})
	return idx, err // -1: the table is full, use the plain fd
}

func (e *Engine) unregisterFile(idx int32) {
	if idx < 0 {
		return
	}
	e.onOwner(func() {
		e.ring.UpdateFiles(uint32(idx), []int32{-1})
		e.fileSlots[idx] = -1
	})
}

// ---- zero buffer for sub-block zeroing ----

func (e *Engine) zeroes(n int) ([]byte, error) {
	e.fixedMu.Lock()
	defer e.fixedMu.Unlock()
	if len(e.zero) < n {
		z, err := ring.Alloc(n)
		if err != nil {
			return nil, err
		}
		if e.zero != nil {
			// The smaller buffer may still be in flight: keep it until Close.
			e.zeroOld = append(e.zeroOld, e.zero)
		}
		e.zero = z
	}
	return e.zero[:n], nil
}

// ---- requests of synchronous calls ----

// getReq returns a recycled request for a synchronous call.
func (e *Engine) getReq() *Request {
	e.reqMu.Lock()
	if n := len(e.reqFree); n > 0 {
		r := e.reqFree[n-1]
		e.reqFree = e.reqFree[:n-1]
		e.reqMu.Unlock()
		select { // a stale wake-up from the previous use
		case <-r.wake:
		default:
		}
		return r
	}
	e.reqMu.Unlock()
	return newRequest()
}

func (e *Engine) putReq(r *Request) {
	r.Buf, r.Bufs, r.Callback, r.Queue, r.file = nil, nil, nil, nil, nil
	r.DoneBefore, r.Flags, r.Policy, r.Len = 0, 0, completion.Default, 0
	r.errno, r.err = nil, nil
	r.owned, r.gateExcl, r.gateSync = false, false, false
	r.state.Store(stateIdle)
	e.reqMu.Lock()
	if len(e.reqFree) < 1024 {
		e.reqFree = append(e.reqFree, r)
	}
	e.reqMu.Unlock()
}
