//go:build linux

package dio

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/ring"
)

// Ring is the part of *ring.Ring the engine uses. A wrapper can stand in
// for it (WithRingWrapper) to inject faults: rewrite CQE results, refuse
// submissions, drop or duplicate completions.
type Ring interface {
	GetSQE() *ring.SQE
	Submit() (int, error)
	Pending() uint32
	Peek(dst []ring.CQE) (int, error)
	WaitCQ(n uint32) (uint32, error)
	WaitCQTimeout(n uint32, d time.Duration) (uint32, error)
	Err(res int32) error
	Flags() ring.SetupFlags
	RegisterBuffers(bufs [][]byte) error
	RegisterFiles(fds []int32) error
	UpdateFiles(off uint32, fds []int32) error
	Close() error
}

var _ Ring = (*ring.Ring)(nil)

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

// userData layout: generation in the high 32 bits, slot index in the low 32.
// A CQE whose generation does not match its slot is late or duplicated.
// cancelTag marks the engine's own cancel SQEs, whose CQEs carry no result.
const cancelTag = ^uint64(0)

// auditTag marks the engine's audit NOPs (IOSQE_IO_DRAIN), which look for
// lost completions.
const auditTag = ^uint64(0) - 1

// slot is one SQE in flight: which request it belongs to and what it does,
// so a short completion can be resubmitted for the remainder.
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
	retries uint8
	seq     uint64 // position in the SQ order (prepLocked); noSeq while waiting for SQ room
}

// noSeq is the SQ position of a slot whose SQE is not in the SQ.
const noSeq = ^uint64(0)

// Engine owns one ring, the slab of SQEs in flight, the reaping protocol
// and the completion worker pool. Files share an engine with WithEngine;
// by default each File has its own. Safe for concurrent use.
//
// Reaping is leader/follower: whoever waits for a request takes the reap
// token and reaps for everyone until its own request is done, then passes
// the token on; a background reaper takes it only while asynchronous
// requests are in flight and nobody else is reaping.
type Engine struct {
	ring    Ring
	sw      submitWaiter    // nil if the ring cannot combine submit and wait
	ovf     overflowCounter // the kernel's dropped-CQE count (the inner ring's if the wrapper hides it)
	lastOvf uint32          // the drop count last seen (token holder)
	owed    bool            // an audit for dropped CQEs is yet to be queued (token holder)
	iopoll  bool
	ownRing bool

	mu         sync.Mutex // submission side: SQEs, slots, backlog
	slots      []slot
	freeSlots  []uint32
	backlog    *Request // requests with pieces not yet submitted (FIFO)
	backlogEnd *Request
	reqFree    []*Request // recycled requests of synchronous calls
	fileSlots  []int32    // registered files: fd per slot, -1 free

	// Inline completions handed to the reaper (put), run by the token
	// holder (runReady).
	readyMu  sync.Mutex
	ready    []*Request
	readyOld []*Request // the previous batch's array, for reuse
	readyN   atomic.Int32

	reaping atomic.Bool // the token holder is processing a batch: defer entering
	tok     chan struct{}
	cqes    []ring.CQE // owned by the token holder

	pool          *completion.WorkerPool
	spill         spill // Pool completions that found the pool's queue full
	asyncInflight atomic.Int64
	kick          chan struct{}
	stop          chan struct{}
	wg            sync.WaitGroup
	closed        atomic.Bool
	broken        atomic.Bool
	failed        atomic.Bool // fail ran: the ring itself failed
	stats         Stats

	fixedArena []byte
	fixedFree  []int // free buffer indices
	fixedSize  int
	fixedMu    sync.Mutex
	zero       []byte   // zeroes for sub-block zeroing
	zeroOld    [][]byte // outgrown zero buffers, freed at Close
	resub      []uint32 // slots whose resubmission waits for SQ room
	dropped    []droppedPieces

	// Lost-completion audits (audit.go). Under mu.
	sqSeq     uint64 // SQEs prepared so far: each slot's seq
	auditing  bool   // an audit NOP is in flight
	auditSeq  uint64 // its seq
	lostAfter time.Duration
}

// Stats are engine counters, read with Engine.Stats.
type Stats struct {
	Submitted   atomic.Uint64 // SQEs submitted
	Completed   atomic.Uint64 // CQEs processed
	Resubmits   atomic.Uint64 // short completions resubmitted
	Backlogged  atomic.Uint64 // requests that waited for SQ room or slots
	StrayCQEs   atomic.Uint64 // CQEs that matched nothing
	Audits      atomic.Uint64 // lost-completion audits completed
	LostCQEs    atomic.Uint64 // requests' SQEs whose completion an audit found lost
	DroppedCQEs atomic.Uint64 // CQEs the kernel reported dropping (CQ overflow)
	// PoolOverflow counts Pool completions that found the pool's queue
	// full (or others already waiting) and waited for room off the reaper.
	PoolOverflow atomic.Uint64
}

// NewEngine creates an engine: a ring, a reaper and a worker pool.
func NewEngine(opts ...Option) (*Engine, error) {
	c := newConfig(opts)
	return newEngine(&c)
}

func newEngine(c *config) (*Engine, error) {
	flags := c.ringFlags
	if flags&ring.SetupSQPoll == 0 && c.coop {
		// COOP_TASKRUN: completions that need their submitting thread (task
		// work) wait until that thread next enters the kernel instead of
		// interrupting it: on a device whose reads all come back as task
		// work (zram), those interruptions are a large part of the cost
		// (benchmarks/RESULTS.md). But a Go thread that submitted and
		// then parked in the scheduler is not woken for it: a completion can
		// wait until that thread happens to run again (seen as a hang of an
		// asynchronous request whose submitter went to sleep in Wait). So it
		// is opt-in (WithCoopTaskrun), for programs whose submissions come
		// from the engine's reaper (callbacks) or from threads that keep
		// entering the kernel. TASKRUN_FLAG lets a reaper see pending work.
		if p, err := ring.Probe(); err == nil {
			want := ring.SetupCoopTaskrun | ring.SetupTaskrunFlag
			if p.SetupFlags&want == want {
				flags |= want
			}
		}
	}
	p := ring.Params{Entries: c.entries, Flags: flags, SQThreadIdle: c.sqIdle}
	r, err := ring.New(p)
	if err != nil {
		return nil, &OpError{Op: "engine", Err: err}
	}
	var rr Ring = r
	if c.wrapRing != nil {
		rr = c.wrapRing(r)
	}
	n := c.maxInflight
	if n <= 0 {
		n = 8 * int(r.SQEntries())
	}
	e := &Engine{
		ring:    rr,
		iopoll:  r.Flags()&ring.SetupIOPoll != 0,
		ownRing: true,
		slots:   make([]slot, n),
		tok:     make(chan struct{}, 1),
		cqes:    make([]ring.CQE, r.CQEntries()),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		pool:    completion.NewPool(c.workers, c.poolQueue),

		lostAfter: c.lostAfter,
	}
	if o, ok := rr.(overflowCounter); ok {
		e.ovf = o
	} else {
		e.ovf = r // a wrapper that does not forward it: the kernel's counter is the truth
	}
	e.sw, _ = rr.(submitWaiter)
	e.freeSlots = make([]uint32, n)
	for i := range e.freeSlots {
		e.freeSlots[i] = uint32(n - 1 - i)
	}
	e.tok <- struct{}{}
	if c.fixedCount > 0 {
		if err := e.setupFixed(c.fixedCount, c.fixedSize); err != nil {
			e.Close()
			return nil, err
		}
	}
	if c.regFiles > 0 {
		e.fileSlots = make([]int32, c.regFiles)
		for i := range e.fileSlots {
			e.fileSlots[i] = -1
		}
		if err := e.ring.RegisterFiles(e.fileSlots); err != nil {
			e.Close()
			return nil, &OpError{Op: "register files", Err: err}
		}
	}
	if !c.noReaper {
		e.wg.Add(1)
		go e.backgroundReaper()
	}
	e.spill.wake = make(chan struct{}, 1)
	e.wg.Add(1)
	go e.spillFeeder()
	return e, nil
}

// Close stops the engine: it waits for every request in flight, stops the
// reaper and the pool, and closes the ring. Files using it must be closed
// first.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.drain(func() bool { return e.inflightSQEs() == 0 && e.backlogEmpty() })
	close(e.stop)
	e.wg.Wait()
	e.pool.Close()
	err := e.ring.Close()
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

// Stats returns the engine's counters.
func (e *Engine) Stats() *Stats { return &e.stats }

// PoolDepth reports the completion pool's queue depth.
func (e *Engine) PoolDepth() int { return e.pool.QueueDepth() }

func (e *Engine) inflightSQEs() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.slots) - len(e.freeSlots)
}

func (e *Engine) backlogEmpty() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.backlog == nil
}

// ---- fixed buffers ----

func (e *Engine) setupFixed(count, size int) error {
	if size <= 0 {
		size = 1 << 20
	}
	arena, err := ring.Alloc(count * size)
	if err != nil {
		return &OpError{Op: "fixed buffers", Len: int64(count * size), Err: err}
	}
	e.fixedArena, e.fixedSize = arena, size
	if err := e.ring.RegisterBuffers([][]byte{arena}); err != nil {
		return &OpError{Op: "register buffers", Len: int64(len(arena)), Err: err}
	}
	for i := count - 1; i >= 0; i-- {
		e.fixedFree = append(e.fixedFree, i)
	}
	return nil
}

// GetBuffer returns a registered buffer (nil if none is free or the engine
// has none). I/O on it uses read_fixed/write_fixed. It is off-heap and page
// aligned; give it back with PutBuffer once no request uses it.
func (e *Engine) GetBuffer() []byte {
	e.fixedMu.Lock()
	defer e.fixedMu.Unlock()
	if len(e.fixedFree) == 0 {
		return nil
	}
	i := e.fixedFree[len(e.fixedFree)-1]
	e.fixedFree = e.fixedFree[:len(e.fixedFree)-1]
	return e.fixedArena[i*e.fixedSize : (i+1)*e.fixedSize : (i+1)*e.fixedSize]
}

// PutBuffer returns a buffer from GetBuffer.
func (e *Engine) PutBuffer(b []byte) {
	i, ok := e.fixedIndex(b)
	if !ok {
		panic("dio: PutBuffer of a buffer that GetBuffer did not return")
	}
	e.fixedMu.Lock()
	e.fixedFree = append(e.fixedFree, int(i)/e.fixedSize)
	e.fixedMu.Unlock()
}

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

// ---- registered files ----

func (e *Engine) registerFile(fd int32) (int32, error) {
	if e.fileSlots == nil {
		return -1, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, v := range e.fileSlots {
		if v == -1 {
			if err := e.ring.UpdateFiles(uint32(i), []int32{fd}); err != nil {
				return -1, err
			}
			e.fileSlots[i] = fd
			return int32(i), nil
		}
	}
	return -1, nil // table full: use the plain fd
}

func (e *Engine) unregisterFile(idx int32) {
	if idx < 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ring.UpdateFiles(uint32(idx), []int32{-1})
	e.fileSlots[idx] = -1
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

// ---- reaping ----

// errStop is returned by wait loops when the engine is closing.
var errStop = errors.New("dio: engine stopping")

// backgroundReaper reaps while asynchronous requests are in flight and no
// waiter holds the token.
func (e *Engine) backgroundReaper() {
	defer e.wg.Done()
	// One OS thread submits what callbacks resubmit and reaps: completions
	// of reads the kernel had to hand to io_uring's workers come back to
	// the submitting thread as task work, and io-wq worker pools are per
	// submitting thread, so a reaper hopping between threads costs both.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var wd watchdog
	var tick <-chan time.Time
	if e.lostAfter > 0 {
		t := time.NewTicker(e.lostAfter)
		defer t.Stop()
		tick = t.C
	}
	for {
		if e.asyncInflight.Load() <= 0 && e.readyN.Load() == 0 {
			select {
			case <-e.kick:
				continue
			case <-tick:
				wd.check(e)
				continue
			case <-e.stop:
				return
			}
		}
		select {
		case <-e.tok:
		case <-tick:
			wd.check(e)
			continue
		case <-e.stop:
			return
		}
		for i := 0; i < 64 && (e.asyncInflight.Load() > 0 || e.readyN.Load() > 0); i++ {
			if err := e.reapBatch(true, 50*time.Millisecond); err != nil && !errors.Is(err, ring.ErrTimeout) {
				break
			}
			select {
			case <-tick:
				wd.check(e)
			default:
			}
		}
		e.tok <- struct{}{}
	}
}

// reapBatch processes the CQEs that are ready; if none is and block is set
// it waits for one (at most timeout, if not 0). The caller holds the token.
func (e *Engine) reapBatch(block bool, timeout time.Duration) error {
	if e.readyN.Load() > 0 {
		e.runReady()
		block = false // what those completions did may be all there is to wait for
	}
	// Anything prepared but not yet handed to the kernel goes in first,
	// or the wait below could wait for completions of SQEs never submitted.
	// Where the ring can, publishing and submitting are split so that the
	// submit rides on the wait's system call.
	combine := block && timeout == 0 && e.sw != nil
	pending, stuck := e.flush(combine)
	if stuck && block && (timeout == 0 || timeout > stuckRetry) {
		// The kernel refused SQEs (EBUSY, EAGAIN), or the SQ or the slab
		// is full with requests backlogged: a wait without a limit could
		// wait for completions of work that was never submitted. Wait a
		// little, then try again.
		timeout, combine = stuckRetry, false
	}
	n, err := e.ring.Peek(e.cqes)
	if err != nil {
		return err
	}
	e.checkDropped()
	if e.owed && block && (timeout == 0 || timeout > stuckRetry) {
		// The audit that finds a dropped CQE's owner could not be queued
		// (no SQE): do not wait without a limit for a CQE that is gone.
		timeout, combine = stuckRetry, false
	}
	switch {
	case n == 0 && block:
		if combine {
			_, err = e.sw.EnterWait(pending, 1)
			if isBusy(err) {
				_, err = e.ring.WaitCQTimeout(1, stuckRetry)
			} else {
				e.stats.Submitted.Add(uint64(pending))
			}
		} else if timeout > 0 {
			_, err = e.ring.WaitCQTimeout(1, timeout)
		} else {
			_, err = e.ring.WaitCQ(1)
		}
		if err != nil && !errors.Is(err, ring.ErrTimeout) {
			return err
		}
		if n, err = e.ring.Peek(e.cqes); err != nil {
			return err
		}
	case combine && pending > 0:
		if _, err := e.sw.EnterWait(pending, 0); err == nil {
			e.stats.Submitted.Add(uint64(pending))
		}
	}
	if n == 0 {
		return nil
	}
	e.reaping.Store(true)
	for i := range e.cqes[:n] {
		e.complete(&e.cqes[i])
	}
	e.reaping.Store(false)
	e.flush(false)
	if e.readyN.Load() > 0 {
		e.runReady()
	}
	return nil
}

// stuckRetry is how long a reaper waits for a completion before it tries
// again to submit what the kernel (or a full SQ) refused.
const stuckRetry = time.Millisecond

func isBusy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EAGAIN)
}

// flush moves backlogged requests into the ring and submits prepared
// SQEs; with publishOnly it only publishes them and returns how many the
// kernel has yet to take (the caller submits them with its wait). stuck
// says that a wait for a CQE must have a limit: work is left that no
// completion will push along (requests still backlogged, SQEs the kernel
// refused), nothing is in flight, or requests completed here.
func (e *Engine) flush(publishOnly bool) (pending uint32, stuck bool) {
	e.mu.Lock()
	e.drainBacklogLocked()
	if publishOnly {
		pending = e.sw.Flush()
	} else if e.ring.Pending() > 0 {
		stuck = !e.enterLocked()
	}
	stuck = stuck || e.backlog != nil || len(e.resub) > 0 ||
		// Pieces dropped here may complete the caller's own request, and
		// with no SQE in flight no CQE may ever come: either way, a wait
		// must not be without a limit.
		len(e.dropped) > 0 || len(e.freeSlots) == len(e.slots)
	e.unlockAndDrop()
	return pending, stuck
}

// unlockAndDrop releases mu, then drops the references of backlogged
// pieces that cancelled requests gave up (outside mu: the last reference
// may run a completion, which may submit).
func (e *Engine) unlockAndDrop() {
	if len(e.dropped) == 0 {
		e.mu.Unlock()
		return
	}
	d := append([]droppedPieces(nil), e.dropped...)
	e.dropped = e.dropped[:0]
	e.mu.Unlock()
	for _, p := range d {
		for i := int32(0); i < p.n; i++ {
			e.put(p.r, false)
		}
	}
}

// drain drives reaping until cond holds (used by Close paths).
func (e *Engine) drain(cond func() bool) {
	for !cond() {
		select {
		case <-e.tok:
			e.reapBatch(true, 10*time.Millisecond)
			e.tok <- struct{}{}
		case <-time.After(time.Millisecond):
		}
	}
}

// waitReq waits until req's I/O is done (every reference dropped), reaping
// when it holds the token. ctx cancellation (done) cancels the request's
// SQEs and goes on waiting for their CQEs: a buffer is never given back
// before its CQE.
func (e *Engine) waitReq(req *Request, done <-chan struct{}, held bool) {
	cancelled := false
	var nextAudit time.Time
	auditGap := cancelAudit
	cancel := func() {
		cancelled = true
		nextAudit = time.Now().Add(auditGap)
		e.cancel(req)
	}
	// audit audits the ring (if audits are on) when a cancelled request
	// has stayed in flight past nextAudit, at doubling intervals.
	audit := func() {
		if cancelled && e.lostAfter > 0 && time.Now().After(nextAudit) {
			e.audit()
			auditGap = min(2*auditGap, max(e.lostAfter, cancelAudit))
			nextAudit = time.Now().Add(auditGap)
		}
	}
	for req.state.Load() < stateIODone {
		if !held {
			select {
			case <-e.tok:
				held = true
			case <-req.wake:
				continue
			case <-done:
				if !cancelled {
					cancel()
				}
				done = nil
				continue
			}
		}
		for req.state.Load() < stateIODone {
			timeout := time.Duration(0)
			if done != nil && !cancelled {
				timeout = 5 * time.Millisecond
			} else if cancelled && e.lostAfter > 0 {
				// A cancelled request whose CQE does not come may have lost
				// it: wait in slices, and audit the ring when the cancel
				// has had its chance.
				timeout = 20 * time.Millisecond
				audit()
			}
			err := e.reapBatch(true, timeout)
			if done != nil && !cancelled {
				select {
				case <-done:
					cancel()
				default:
				}
			}
			if err != nil && !errors.Is(err, ring.ErrTimeout) {
				// The ring itself failed: nothing more will complete.
				e.fail(err)
			}
		}
		e.tok <- struct{}{}
		held = false
		audit() // whoever reaps now will see the audit's completion
	}
	if held {
		e.tok <- struct{}{}
	}
}

// fail marks the engine broken after the ring itself failed, completing
// every request in flight with err.
func (e *Engine) fail(err error) {
	e.broken.Store(true)
	if e.failed.Swap(true) {
		return
	}
	e.mu.Lock()
	// Resubmissions waiting for SQ room are for slots freed below: a later
	// flush must not prepare SQEs for them (their request is gone).
	e.resub = e.resub[:0]
	var reqs []*Request
	for i := range e.slots {
		s := &e.slots[i]
		if s.busy {
			reqs = append(reqs, s.req)
			s.req.setErr(err, s.dataOff())
			e.freeSlotLocked(uint32(i))
		}
	}
	e.mu.Unlock()
	for _, r := range reqs {
		e.put(r, false)
	}
}

// cancel asks the kernel to cancel req's SQEs in flight and drops its
// backlogged pieces. It records no error itself: an SQE the kernel
// cancelled completes with ECANCELED, one that finished first keeps its
// result, so the request reports what really happened to its data.
func (e *Engine) cancel(req *Request) {
	if f := req.file; f != nil && f.cancelQueued(req) {
		return // it was still waiting at the write gate: nothing was submitted
	}
	e.mu.Lock()
	if req.refs.Load() == 0 {
		e.mu.Unlock()
		return
	}
	req.cancelled = true
	for i := range e.slots {
		s := &e.slots[i]
		if s.busy && s.req == req {
			sqe := e.sqeLocked()
			if sqe == nil {
				break
			}
			sqe.PrepCancel(uint64(s.gen)<<32|uint64(i), 0)
			sqe.UserData = cancelTag
		}
	}
	e.drainBacklogLocked()
	e.enterLocked()
	e.unlockAndDrop()
}

// sqeLocked returns a free SQE, submitting to make room if the SQ is full.
// It returns nil if the kernel will not take more now.
func (e *Engine) sqeLocked() *ring.SQE {
	if s := e.ring.GetSQE(); s != nil {
		return s
	}
	if _, err := e.ring.Submit(); err != nil {
		return nil
	}
	return e.ring.GetSQE()
}

// submitBatch is how many SQEs a reaper gathers from callbacks before it
// submits them in the middle of a batch. Holding a whole reaped batch back
// until the end sends the device bursts it completes together, leaving it
// idle in between; an enter per SQE costs a system call each. A few SQEs
// per enter keep the device busy for little more than that
// (benchmarks/RESULTS.md has the measurements).
const submitBatch = 8

// enterLocked hands prepared SQEs to the kernel, unless a reaper is
// processing a batch and fewer than submitBatch are waiting: then it
// submits them with the next group or when the batch is done.
func (e *Engine) enterLocked() bool {
	if e.reaping.Load() && e.ring.Pending() < submitBatch {
		return true
	}
	n, err := e.ring.Submit()
	if err != nil {
		// EBUSY/EAGAIN: the SQEs stay in the SQ and the next flush retries.
		return false
	}
	e.stats.Submitted.Add(uint64(n))
	return true
}

func (e *Engine) freeSlotLocked(i uint32) {
	s := &e.slots[i]
	s.busy = false
	s.req = nil
	s.gen++
	e.freeSlots = append(e.freeSlots, i)
}

// Poll processes the completions that are ready now, without blocking,
// and returns how many CQEs it processed (0 if another goroutine is
// reaping). Callers that spin on the completion queue (SQPOLL rings, where
// neither submitting nor polling enters the kernel) call it in a loop.
func (e *Engine) Poll() int {
	select {
	case <-e.tok:
	default:
		return 0
	}
	before := e.stats.Completed.Load()
	e.reapBatch(false, 0)
	e.tok <- struct{}{}
	return int(e.stats.Completed.Load() - before)
}

// Inflight returns the number of SQEs in flight.
func (e *Engine) Inflight() int { return e.inflightSQEs() }
