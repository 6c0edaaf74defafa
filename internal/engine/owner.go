//go:build linux

package engine

import (
	"errors"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

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

func (s *ownerState) init(slots, cqes int) {
	s.slots = make([]slot, slots)
	s.freeSlots = make([]uint32, slots)
	for i := range s.freeSlots {
		s.freeSlots[i] = uint32(slots - 1 - i)
	}
	s.cqes = make([]ring.CQE, cqes)
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

func (e *Engine) startOwner(c *Config) error {
	e.o.efd = -1
	e.o.wakeCh = make(chan struct{}, 1)
	e.o.done = make(chan error, 1)
	started := make(chan error, 1)
	go e.ownerMain(c, started)
	return <-started
}

func (e *Engine) ownerMain(c *Config, started chan<- error) {
	// Never unlocked: when the owner returns its thread ends with it, and
	// no other goroutine runs on a thread the ring is bound to.
	runtime.LockOSThread()
	e.o.tid.Store(int32(unix.Gettid()))
	err := e.setupRing(c)
	if err == nil && !e.iopoll {
		e.o.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	}
	if err != nil {
		if e.ring != nil {
			e.ring.Close()
			e.ring = nil
		}
		started <- err
		return
	}
	started <- nil
	err = e.run()
	if cerr := e.ring.Close(); err == nil {
		err = cerr
	}
	if e.o.efd >= 0 {
		unix.Close(e.o.efd)
	}
	e.o.done <- err
}

func (e *Engine) stopOwner() error {
	e.o.stop.Store(true)
	e.wakeOwner()
	return <-e.o.done
}

// OnOwnerThread reports whether the caller is the owner goroutine (an
// Inline callback): the owner is locked to its thread and nothing else
// runs there, so the thread says who it is.
func (e *Engine) OnOwnerThread() bool {
	return e.ring != nil && e.o.tid.Load() == int32(unix.Gettid())
}

// onOwner runs fn on the owner's thread and waits for it; on the owner it
// runs fn at once.
func (e *Engine) onOwner(fn func()) {
	if e.OnOwnerThread() {
		fn()
		return
	}
	c := &ownerCmd{fn: fn, done: make(chan struct{})}
	for {
		old := e.o.cmds.Load()
		c.next = old
		if e.o.cmds.CompareAndSwap(old, c) {
			break
		}
	}
	e.wakeOwner()
	<-c.done
}

// enqueue hands r to the owner.
func (e *Engine) enqueue(r *Req) {
	for {
		old := e.o.head.Load()
		r.link = old
		if e.o.head.CompareAndSwap(old, r) {
			break
		}
	}
	e.wakeOwner()
}

// requestCancel asks the owner to cancel the use gen of r: its SQEs in
// flight and its pieces not yet submitted. A cancel of an earlier use
// finds a later gen and does nothing.
func (e *Engine) requestCancel(r *Req, gen uint32) {
	r.cancel.gen.Store(gen)
	if !r.cancel.queued.CompareAndSwap(false, true) {
		return // queued already; the owner reads cancel.gen when it takes it
	}
	for {
		old := e.o.cancels.Load()
		r.cancel.next = old
		if e.o.cancels.CompareAndSwap(old, r) {
			break
		}
	}
	e.wakeOwner()
}

// wakeOwner wakes the owner if it sleeps. Go's atomics are sequentially
// consistent: the push before this load and the owner's sleep store
// before its last look at the queues cannot both miss each other.
func (e *Engine) wakeOwner() {
	s := e.o.sleep.Load()
	if s == 0 || !e.o.sleep.CompareAndSwap(s, 0) {
		return
	}
	e.C.Wakes.Add(1)
	if s == sleepChan {
		signal(e.o.wakeCh)
		return
	}
	unix.Write(e.o.efd, eventfdOne[:])
}

var eventfdOne = [8]byte{1}

// pending reports whether launchers left the owner work.
func (e *Engine) pending() bool {
	return e.ready.n.Load() > 0 || e.o.head.Load() != nil || e.o.cancels.Load() != nil || e.o.cmds.Load() != nil
}

// run is the owner's loop.
func (e *Engine) run() error {
	var failures int
	stuck := false
	for {
		e.takeQueues()
		e.drainBacklog()
		e.runReady()
		if e.o.stop.Load() && e.idle() {
			return nil
		}
		err := e.enterAndWait(e.waitPlan(stuck))
		stuck = false
		switch {
		case err == nil || errors.Is(err, ring.ErrTimeout):
			failures = 0
		case isBusy(err):
			stuck = true
		default:
			// The ring itself fails. Requests not yet submitted fail now;
			// those the kernel holds complete when their CQEs come.
			e.broken.Store(true)
			failures++
			stuck = true
			e.failBacklog(err)
			if failures > 1000 && e.inflight.Load() == 0 {
				return err
			}
		}
		e.reap()
		if e.own.lostAfter > 0 {
			e.watch()
		}
	}
}

// waitPlan says whether the owner may sleep in its next enter, and for
// how long at most (0: until a completion).
func (e *Engine) waitPlan(stuck bool) (sleepy bool, timeout time.Duration) {
	s := &e.own
	switch {
	case e.pending():
		return false, 0
	case stuck || s.audit.owed || (s.backlog != nil || len(s.resub) > 0) && e.inflight.Load() == 0:
		// Nothing in flight will wake us for what waits.
		return true, stuckRetry
	case s.lostAfter > 0 && e.inflight.Load() > 0:
		timeout = s.lostAfter // the watchdog's tick (audit.go)
		if at := s.audit.cancelAt; !at.IsZero() {
			timeout = max(min(timeout, time.Until(at)), time.Microsecond)
		}
	}
	return true, timeout
}

// idle reports whether nothing is left to do.
func (e *Engine) idle() bool {
	s := &e.own
	return e.inflight.Load() == 0 && s.backlog == nil && len(s.resub) == 0 && !e.pending()
}

// takeQueues moves what launchers pushed into the owner's own structures:
// commands run now, cancels are carried out, new requests join the
// backlog in the order they were launched.
func (e *Engine) takeQueues() {
	for c := e.o.cmds.Swap(nil); c != nil; {
		next := c.next
		c.fn()
		close(c.done)
		c = next
	}
	for r := e.o.cancels.Swap(nil); r != nil; {
		next := r.cancel.next
		r.cancel.next = nil
		r.cancel.queued.Store(false)
		if r.cancel.gen.Load() == r.gen.Load() {
			e.cancelOnOwner(r)
		}
		r = next
	}
	var rev *Req
	for list := e.o.head.Swap(nil); list != nil; { // newest first: reverse
		next := list.link
		list.link = rev
		rev, list = list, next
	}
	for rev != nil {
		next := rev.link
		rev.link = nil
		e.appendBacklog(rev)
		rev = next
	}
}

func (e *Engine) appendBacklog(r *Req) {
	s := &e.own
	if s.backlogEnd == nil {
		s.backlog = r
	} else {
		s.backlogEnd.link = r
	}
	s.backlogEnd = r
}

func (e *Engine) popBacklog() {
	s := &e.own
	r := s.backlog
	s.backlog = r.link
	r.link = nil
	if s.backlog == nil {
		s.backlogEnd = nil
	}
}

// enterAndWait publishes what is prepared and enters the kernel once: to
// submit, to have completions posted (DEFER_TASKRUN posts them only when
// the owner asks), and, if sleepy, to wait for one (at most timeout).
func (e *Engine) enterAndWait(sleepy bool, timeout time.Duration) error {
	if sleepy && !e.iopoll && !e.o.armed {
		e.armWake()
	}
	wait := uint32(0)
	if sleepy {
		switch {
		case e.iopoll && e.inflight.Load() > 0:
			wait = 1 // an IOPOLL ring is polled, not slept on
		case e.iopoll && timeout == 0:
			if e.sleepOn(sleepChan) {
				<-e.o.wakeCh
				e.o.sleep.Store(0)
			}
			return nil
		case e.o.armed || timeout > 0:
			if e.sleepOn(sleepKernel) {
				wait = 1
			}
		}
	}
	var err error
	switch {
	case wait > 0 && timeout > 0:
		if err = e.submit(); err == nil {
			_, err = e.ring.WaitCQTimeout(1, timeout)
		}
	case e.sw != nil:
		if pending := e.sw.Flush(); pending > 0 || wait > 0 {
			if _, err = e.sw.EnterWait(pending, wait); err == nil {
				e.C.Submitted.Add(uint64(pending))
			}
		}
	default:
		if err = e.submit(); err == nil && wait > 0 {
			_, err = e.ring.WaitCQ(1)
		}
	}
	e.o.sleep.Store(0)
	return err
}

// sleepOn announces the owner's sleep and looks at its queues one last
// time; it reports false (and stays awake) if there is work.
func (e *Engine) sleepOn(where int32) bool {
	e.o.sleep.Store(where)
	if e.pending() || e.o.stop.Load() {
		e.o.sleep.CompareAndSwap(where, 0)
		return false
	}
	return true
}

// submit hands the prepared SQEs to the kernel.
func (e *Engine) submit() error {
	if e.ring.Pending() == 0 {
		return nil
	}
	n, err := e.ring.Submit()
	e.C.Submitted.Add(uint64(n))
	return err
}

// armWake queues the poll of the wake-up eventfd.
func (e *Engine) armWake() {
	sqe := e.ring.GetSQE()
	if sqe == nil {
		return
	}
	sqe.PrepPollAdd(int32(e.o.efd), unix.POLLIN)
	sqe.UserData = wakeTag
	e.o.armed = true
}

// woken handles the eventfd poll's completion.
func (e *Engine) woken() {
	e.o.armed = false
	unix.Read(e.o.efd, e.o.evbuf[:])
}

// drainBacklog moves backlogged requests into the ring in order, as far
// as the SQ and the slots allow. Cancelled requests give up their pieces
// not yet submitted.
func (e *Engine) drainBacklog() {
	s := &e.own
	for i := 0; i < len(s.resub); i++ {
		sqe := e.sqe()
		if sqe == nil {
			s.resub = append(s.resub[:0], s.resub[i:]...)
			return
		}
		idx := s.resub[i]
		e.prep(sqe, &s.slots[idx], idx)
	}
	s.resub = s.resub[:0]
	for s.backlog != nil {
		r := s.backlog
		if r.cancelled.Load() && r.next < len(r.Pieces) {
			e.popBacklog()
			e.dropUnsent(r, syscall.ECANCELED)
			continue
		}
		if !e.submitPieces(r) {
			e.C.Backlogged.Add(1)
			return
		}
		e.popBacklog()
	}
}

// dropUnsent ends r's pieces not yet submitted with err.
func (e *Engine) dropUnsent(r *Req, err error) {
	if r.next >= len(r.Pieces) {
		return
	}
	r.SetErr(err, r.Pieces[r.next].dataOff(r, 0))
	n := len(r.Pieces) - r.next
	r.next = len(r.Pieces)
	for range n {
		e.put(r, false)
	}
}

// sqe returns a free SQE, submitting to make room if the SQ is full, or
// nil if the kernel will not take more now.
func (e *Engine) sqe() *ring.SQE {
	if s := e.ring.GetSQE(); s != nil {
		return s
	}
	if e.submit() != nil {
		return nil
	}
	return e.ring.GetSQE()
}

// submitPieces prepares SQEs for r's pieces from r.next on and reports
// whether all are in the SQ.
func (e *Engine) submitPieces(r *Req) bool {
	s := &e.own
	for r.next < len(r.Pieces) {
		if len(s.freeSlots) == 0 {
			return false
		}
		sqe := e.sqe()
		if sqe == nil {
			return false
		}
		idx := s.freeSlots[len(s.freeSlots)-1]
		s.freeSlots = s.freeSlots[:len(s.freeSlots)-1]
		e.inflight.Add(1)
		sl := &s.slots[idx]
		*sl = slot{req: r, p: r.Pieces[r.next], gen: sl.gen, busy: true}
		e.prep(sqe, sl, idx)
		r.next++
	}
	return true
}

// prep encodes a slot into an SQE: the one place pieces become SQEs.
func (e *Engine) prep(sqe *ring.SQE, s *slot, idx uint32) {
	p := &s.p
	switch {
	case p.Ctl == Fsync:
		sqe.PrepFsync(p.Fd, 0)
	case p.Ctl == Fdatasync:
		sqe.PrepFsync(p.Fd, ring.FsyncDatasync)
	case p.Ctl == Fallocate:
		sqe.PrepFallocate(p.Fd, unix.FALLOC_FL_KEEP_SIZE, uint64(p.Off), uint64(p.CtlLen))
	case p.Write:
		sqe.PrepWriteAddr(p.Fd, uintptr(p.Addr), p.N, uint64(p.Off))
	default:
		sqe.PrepReadAddr(p.Fd, uintptr(p.Addr), p.N, uint64(p.Off))
	}
	if p.Fixed {
		sqe.Opcode = ring.OpReadFixed
		if p.Write {
			sqe.Opcode = ring.OpWriteFixed
		}
		sqe.BufIndex = 0 // the engine registers one arena
	}
	if p.RegFile {
		sqe.SetFixedFile()
	}
	sqe.OpFlags = p.RWFlags
	sqe.UserData = uint64(s.gen)<<32 | uint64(idx)
	s.seq = e.own.sqSeq
	e.own.sqSeq++
	if h := s.req.SQEHook; h != nil {
		h(s.req, sqe)
		sqe.UserData = uint64(s.gen)<<32 | uint64(idx)
	}
}

func (e *Engine) freeSlot(i uint32) {
	s := &e.own.slots[i]
	s.busy, s.req = false, nil
	s.gen++
	e.own.freeSlots = append(e.own.freeSlots, i)
	e.inflight.Add(-1)
}

// cancelOnOwner asks the kernel to cancel r's SQEs in flight; its pieces
// not yet submitted are dropped by drainBacklog. An SQE the kernel
// cancelled completes with ECANCELED, one that finished first keeps its
// result, so the request reports what happened to its data.
func (e *Engine) cancelOnOwner(r *Req) {
	if r.refs.Load() == 0 {
		return
	}
	r.cancelled.Store(true)
	if e.own.lostAfter > 0 && e.own.audit.cancelAt.IsZero() {
		// A cancelled request whose CQE never comes may have lost it:
		// audit once the cancel has had its chance (audit.go).
		e.own.audit.cancelAt = time.Now().Add(cancelAudit)
	}
	for i := range e.own.slots {
		s := &e.own.slots[i]
		if s.busy && s.req == r {
			sqe := e.sqe()
			if sqe == nil {
				break
			}
			sqe.PrepCancel(uint64(s.gen)<<32|uint64(i), 0)
			sqe.UserData = cancelTag
		}
	}
}

// failBacklog fails the requests that never reached the kernel, when the
// ring itself fails.
func (e *Engine) failBacklog(err error) {
	s := &e.own
	for s.backlog != nil {
		r := s.backlog
		e.popBacklog()
		e.dropUnsent(r, err)
	}
	for _, idx := range s.resub {
		sl := &s.slots[idx]
		r := sl.req
		r.SetErr(err, sl.p.dataOff(r, 0))
		e.freeSlot(idx)
		e.put(r, false)
	}
	s.resub = s.resub[:0]
}

func isBusy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EAGAIN)
}
