//go:build linux

package dio

import (
	"errors"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// The owner. One goroutine, locked to an OS thread that nothing else runs
// on, owns the ring: it creates it (SINGLE_ISSUER binds a ring to its
// creating thread, and DEFER_TASKRUN runs every completion's kernel-side
// work on that thread, in batches, when it asks for completions), makes
// every SQE, enters the kernel and reaps every CQE. Nobody else touches
// the ring, the slots or the backlog, so none of them needs a lock.
//
// Submitters hand it requests through a lock-free stack and go on (Submit)
// or park on their request (ReadAt and WriteAt). Inline completions, and
// the callbacks that resubmit from them, run on the owner; Pool ones are
// handed to the worker pool, whose queue never makes the owner wait.
//
// The owner sleeps in io_uring_enter waiting for a completion; a poll of an
// eventfd is kept in the ring, and a submitter that finds the owner asleep
// writes the eventfd, which completes the poll and wakes it. On an IOPOLL
// ring (where only reads and writes may be queued) the owner polls while
// anything is in flight and otherwise sleeps on a channel.
type owner struct {
	head    atomic.Pointer[Request] // submitted requests, newest first (through backlog)
	cancels atomic.Pointer[Request] // cancel commands (through cancelNext)
	cmds    atomic.Pointer[ownerCmd]
	// sleep says where the owner sleeps: 0 awake, sleepKernel in a
	// waiting io_uring_enter, sleepChan on wakeCh. The owner sets it
	// before it looks at its queues one last time; a submitter looks at it
	// after it pushed: one of them sees the other's write.
	sleep  atomic.Int32
	efd    int // the wake-up eventfd (non-blocking), -1 on an IOPOLL ring
	armed  bool
	wakeCh chan struct{}
	stop   atomic.Bool
	done   chan error
	evbuf  [8]byte
	tid    atomic.Int32 // the owner's OS thread (it is locked to it)
}

const (
	sleepKernel = 1
	sleepChan   = 2
)

// ownerCmd is work for the owner's thread (registering a file).
type ownerCmd struct {
	fn   func()
	next *ownerCmd
	done chan struct{}
}

// stuckRetry is how long the owner waits for a completion when the kernel
// refused SQEs (EBUSY, EAGAIN) or a request waits for room with nothing in
// flight, before it tries again.
const stuckRetry = time.Millisecond

// startOwner starts the owner and waits until its ring is set up.
func (e *Engine) startOwner(c *config) error {
	e.o.efd = -1
	e.o.wakeCh = make(chan struct{}, 1)
	e.o.done = make(chan error, 1)
	started := make(chan error, 1)
	go e.ownerMain(c, started)
	return <-started
}

func (e *Engine) ownerMain(c *config, started chan<- error) {
	// Never unlocked: when the owner returns, its thread ends with it, and
	// no other goroutine ever runs on a thread the ring is bound to.
	runtime.LockOSThread()
	e.o.tid.Store(int32(unix.Gettid()))
	err := e.setupRing(c)
	if err == nil && !e.iopoll {
		e.o.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	}
	if err != nil {
		if e.ring != nil {
			e.ring.Close()
		}
		started <- err
		return
	}
	started <- nil
	err = e.run()
	// The owner closes the ring it owns; nobody else holds it.
	if cerr := e.ring.Close(); err == nil {
		err = cerr
	}
	if e.o.efd >= 0 {
		unix.Close(e.o.efd)
	}
	e.o.done <- err
}

// stopOwner makes the owner finish what is in flight and exit, and waits.
func (e *Engine) stopOwner() error {
	e.o.stop.Store(true)
	e.wakeOwner(true)
	return <-e.o.done
}

// onOwnerThread reports whether the caller is the owner goroutine (an
// Inline callback, or the owner's own work): the owner is locked to its
// thread and nothing else runs there, so the thread says who it is.
func (e *Engine) onOwnerThread() bool {
	return e.ring != nil && e.o.tid.Load() == int32(unix.Gettid())
}

// onOwner runs fn on the owner's thread and waits for it; called on the
// owner (from an Inline callback), it runs fn at once.
func (e *Engine) onOwner(fn func()) {
	if e.onOwnerThread() {
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
	e.wakeOwner(true)
	<-c.done
}

// enqueue hands r's pieces to the owner.
func (e *Engine) enqueue(r *Request) {
	for {
		old := e.o.head.Load()
		r.backlog = old
		if e.o.head.CompareAndSwap(old, r) {
			break
		}
	}
	e.wakeOwner(false)
}

// requestCancel asks the owner to cancel r's I/O (its SQEs in flight and
// its pieces not yet submitted). It is idempotent for one submission.
func (e *Engine) requestCancel(r *Request) {
	r.cancelGen.Store(r.subGen.Load())
	if !r.cancelQueued.CompareAndSwap(false, true) {
		return // queued already; the owner reads cancelGen when it takes it
	}
	for {
		old := e.o.cancels.Load()
		r.cancelNext = old
		if e.o.cancels.CompareAndSwap(old, r) {
			break
		}
	}
	e.wakeOwner(true)
}

// wakeOwner wakes the owner if it sleeps. Go's atomics are sequentially
// consistent: the push before this load, and the owner's sleep store
// before its last look at the queues, cannot both miss each other.
func (e *Engine) wakeOwner(count bool) {
	s := e.o.sleep.Load()
	if s == 0 || !e.o.sleep.CompareAndSwap(s, 0) {
		return
	}
	e.stats.Wakes.Add(1)
	if s == sleepChan {
		signal(e.o.wakeCh)
		return
	}
	unix.Write(e.o.efd, eventfdOne[:])
}

// eventfdOne is what a wake-up adds to the eventfd (never written).
var eventfdOne = [8]byte{1}

// run is the owner's loop.
func (e *Engine) run() error {
	var failures int
	stuck := false
	for {
		e.takeQueues()
		e.drainBacklog()
		if e.readyN.Load() > 0 {
			e.runReady()
		}
		if e.o.stop.Load() && e.idle() {
			return nil
		}
		timeout, sleepy := time.Duration(0), true
		switch {
		case e.readyN.Load() > 0 || e.o.head.Load() != nil || e.o.cancels.Load() != nil || e.o.cmds.Load() != nil:
			sleepy = false
		case stuck || e.owed || (e.backlog != nil || len(e.resub) > 0) && e.inflight.Load() == 0:
			// Nothing in flight will wake us for what waits (or an audit
			// owed for dropped CQEs found no SQE: try again soon).
			timeout = stuckRetry
		case e.lostAfter > 0 && e.inflight.Load() > 0:
			timeout = e.lostAfter // the watchdog's tick (audit.go)
			if !e.cancelAuditAt.IsZero() {
				timeout = max(min(timeout, time.Until(e.cancelAuditAt)), time.Microsecond)
			}
		}
		err := e.enterAndWait(sleepy, timeout)
		stuck = false
		switch {
		case err == nil || errors.Is(err, ring.ErrTimeout):
			failures = 0
		case isBusy(err):
			stuck = true
		default:
			// The ring itself fails. Requests not yet submitted fail now;
			// those the kernel holds complete when their CQEs come (their
			// buffers are the kernel's until then).
			e.broken.Store(true)
			failures++
			stuck = true
			e.failBacklog(err)
			if failures > 1000 && e.inflight.Load() == 0 {
				return err
			}
		}
		e.reap()
		if e.lostAfter > 0 {
			e.watch()
		}
	}
}

// idle reports whether nothing is left to do: nothing in flight, queued or
// waiting for room.
func (e *Engine) idle() bool {
	return e.inflight.Load() == 0 && e.backlog == nil && len(e.resub) == 0 && e.readyN.Load() == 0 &&
		e.o.head.Load() == nil && e.o.cancels.Load() == nil && e.o.cmds.Load() == nil
}

// takeQueues moves what submitters pushed into the owner's own structures:
// commands run now, cancels are carried out, new requests join the
// backlog in the order they were submitted.
func (e *Engine) takeQueues() {
	for c := e.o.cmds.Swap(nil); c != nil; {
		next := c.next
		c.fn()
		close(c.done)
		c = next
	}
	for r := e.o.cancels.Swap(nil); r != nil; {
		next := r.cancelNext
		r.cancelNext = nil
		r.cancelQueued.Store(false)
		if r.cancelGen.Load() == r.subGen.Load() {
			e.cancelOnOwner(r)
		}
		r = next
	}
	list := e.o.head.Swap(nil)
	var rev *Request
	for list != nil { // the stack is newest first
		next := list.backlog
		list.backlog = rev
		rev, list = list, next
	}
	for rev != nil {
		next := rev.backlog
		rev.backlog = nil
		e.appendBacklog(rev)
		rev = next
	}
}

func (e *Engine) appendBacklog(r *Request) {
	if e.backlogEnd == nil {
		e.backlog = r
	} else {
		e.backlogEnd.backlog = r
	}
	e.backlogEnd = r
}

// enterAndWait publishes what is prepared and enters the kernel once: to
// submit, to have completions posted (DEFER_TASKRUN posts them only when
// the owner asks), and, if sleepy, to wait for one (at most timeout, if not
// 0).
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
			// Nothing in flight on an IOPOLL ring: sleep on the channel.
			e.o.sleep.Store(sleepChan)
			if e.o.head.Load() != nil || e.o.cancels.Load() != nil || e.o.cmds.Load() != nil || e.readyN.Load() > 0 || e.o.stop.Load() {
				e.o.sleep.CompareAndSwap(sleepChan, 0)
				return nil
			}
			<-e.o.wakeCh
			e.o.sleep.Store(0)
			return nil
		case e.o.armed || timeout > 0:
			e.o.sleep.Store(sleepKernel)
			if e.o.head.Load() != nil || e.o.cancels.Load() != nil || e.o.cmds.Load() != nil || e.readyN.Load() > 0 || e.o.stop.Load() {
				e.o.sleep.CompareAndSwap(sleepKernel, 0)
			} else {
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
		pending := e.sw.Flush()
		if pending > 0 || wait > 0 {
			_, err = e.sw.EnterWait(pending, wait)
			if err == nil {
				e.stats.Submitted.Add(uint64(pending))
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

// submit hands the prepared SQEs to the kernel.
func (e *Engine) submit() error {
	if e.ring.Pending() == 0 {
		return nil
	}
	n, err := e.ring.Submit()
	e.stats.Submitted.Add(uint64(n))
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

// woken handles the eventfd poll's completion: the poll is spent, and the
// eventfd's count is cleared for the next one.
func (e *Engine) woken() {
	e.o.armed = false
	unix.Read(e.o.efd, e.o.evbuf[:])
}

// reap processes every CQE that is ready.
func (e *Engine) reap() {
	for {
		n, err := e.ring.Peek(e.cqes)
		if err != nil || n == 0 {
			break
		}
		for i := range e.cqes[:n] {
			e.complete(&e.cqes[i])
		}
		if n < len(e.cqes) {
			break
		}
	}
	e.checkDropped()
	if e.readyN.Load() > 0 {
		e.runReady()
	}
}

// drainBacklog moves backlogged requests into the ring in order, as far as
// the SQ and the slots allow. Cancelled requests give up their pieces not
// yet submitted.
func (e *Engine) drainBacklog() {
	for i := 0; i < len(e.resub); i++ {
		sqe := e.sqe()
		if sqe == nil {
			e.resub = append(e.resub[:0], e.resub[i:]...)
			return
		}
		idx := e.resub[i]
		e.prep(sqe, &e.slots[idx], idx)
	}
	e.resub = e.resub[:0]
	for e.backlog != nil {
		r := e.backlog
		if r.cancelled.Load() && r.next < len(r.pieces) {
			r.setErr(syscall.ECANCELED, r.pieces[r.next].dataOff(r))
			n := len(r.pieces) - r.next
			r.next = len(r.pieces)
			e.popBacklog()
			for range n {
				e.put(r, false)
			}
			continue
		}
		if !e.submitPieces(r) {
			e.stats.Backlogged.Add(1)
			return
		}
		e.popBacklog()
	}
}

func (e *Engine) popBacklog() {
	r := e.backlog
	e.backlog = r.backlog
	r.backlog = nil
	if e.backlog == nil {
		e.backlogEnd = nil
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
func (e *Engine) submitPieces(r *Request) bool {
	for r.next < len(r.pieces) {
		if len(e.freeSlots) == 0 {
			return false
		}
		sqe := e.sqe()
		if sqe == nil {
			return false
		}
		p := &r.pieces[r.next]
		idx := e.freeSlots[len(e.freeSlots)-1]
		e.freeSlots = e.freeSlots[:len(e.freeSlots)-1]
		e.inflight.Add(1)
		s := &e.slots[idx]
		*s = slot{req: r, gen: s.gen, busy: true, write: p.write, fixed: p.fixed,
			regFile: p.regFile, fd: p.fd, addr: p.addr, n: p.n, off: p.off,
			fileOff: p.fileOff, rwFlags: p.rwFlags, ctl: p.ctl, ctlLen: p.ctlLen}
		e.prep(sqe, s, idx)
		r.next++
	}
	return true
}

// prep encodes a slot into an SQE: the one place ops become SQEs.
func (e *Engine) prep(sqe *ring.SQE, s *slot, idx uint32) {
	switch {
	case s.ctl == Fsync:
		sqe.PrepFsync(s.fd, 0)
	case s.ctl == Fdatasync:
		sqe.PrepFsync(s.fd, ring.FsyncDatasync)
	case s.ctl == Preallocate:
		sqe.PrepFallocate(s.fd, unix.FALLOC_FL_KEEP_SIZE, uint64(s.off), uint64(s.ctlLen))
	case s.write:
		sqe.PrepWriteAddr(s.fd, s.addr, s.n, uint64(s.off))
	default:
		sqe.PrepReadAddr(s.fd, s.addr, s.n, uint64(s.off))
	}
	if s.fixed {
		if s.write {
			sqe.Opcode = ring.OpWriteFixed
		} else {
			sqe.Opcode = ring.OpReadFixed
		}
		sqe.BufIndex = 0 // the engine registers one arena
	}
	if s.regFile {
		sqe.SetFixedFile()
	}
	sqe.OpFlags = s.rwFlags
	sqe.UserData = uint64(s.gen)<<32 | uint64(idx)
	s.seq = e.sqSeq
	e.sqSeq++
	if h := s.req.file.hook; h != nil {
		h(s.req, sqe)
		sqe.UserData = uint64(s.gen)<<32 | uint64(idx)
	}
}

func (e *Engine) freeSlot(i uint32) {
	s := &e.slots[i]
	s.busy = false
	s.req = nil
	s.gen++
	e.freeSlots = append(e.freeSlots, i)
	e.inflight.Add(-1)
}

// cancelOnOwner asks the kernel to cancel r's SQEs in flight; its pieces
// not yet submitted are dropped by drainBacklog. It records no error
// itself: an SQE the kernel cancelled completes with ECANCELED, one that
// finished first keeps its result, so the request reports what really
// happened to its data.
func (e *Engine) cancelOnOwner(r *Request) {
	if r.refs.Load() == 0 {
		return
	}
	r.cancelled.Store(true)
	if e.lostAfter > 0 && e.cancelAuditAt.IsZero() {
		// A cancelled request whose CQE never comes may have lost it:
		// audit the ring once the cancel has had its chance (audit.go).
		e.cancelAuditAt = time.Now().Add(cancelAudit)
	}
	for i := range e.slots {
		s := &e.slots[i]
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
	for e.backlog != nil {
		r := e.backlog
		e.popBacklog()
		if r.next < len(r.pieces) {
			r.setErr(err, r.pieces[r.next].dataOff(r))
		}
		n := len(r.pieces) - r.next
		r.next = len(r.pieces)
		for range n {
			e.put(r, false)
		}
	}
	for _, idx := range e.resub {
		s := &e.slots[idx]
		r := s.req
		r.setErr(err, s.dataOff())
		e.freeSlot(idx)
		e.put(r, false)
	}
	e.resub = e.resub[:0]
}

func isBusy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EAGAIN)
}
