//go:build linux

package engine

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

func (s *ownerState) init(slots, cqes int) {
	s.slots = make([]slot, slots)
	s.freeSlots = make([]uint32, slots)
	for i := range s.freeSlots {
		s.freeSlots[i] = uint32(slots - 1 - i)
	}
	s.cqes = make([]ring.CQE, cqes)
}

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
	e.o.tid.Store(0) // the thread ends with the owner
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
		case errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EAGAIN): // the kernel refused SQEs for now
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
	default:
		if pending := e.ring.Flush(); pending > 0 || wait > 0 {
			if _, err = e.ring.EnterWait(pending, wait); err == nil {
				e.C.Submitted.Add(uint64(pending))
			}
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

// setupRing creates and sets up the ring; the owner calls it on its
// thread (SINGLE_ISSUER binds a ring to the thread that makes it).
func (e *Engine) setupRing(c *Config) error {
	r, err := createRing(c)
	if err != nil {
		return err
	}
	var rr ringhook.Ring = r
	if c.WrapRing != nil {
		rr = c.WrapRing(r)
	}
	e.ring = rr
	e.iopoll = r.Flags()&ring.SetupIOPoll != 0
	// io-wq's workers (requests the kernel cannot issue without blocking)
	// are threads of this process: bound them.
	r.SetIOWQMaxWorkers(uint32(min(4, runtime.GOMAXPROCS(0))), 2)
	n := c.MaxInflight
	if n <= 0 {
		n = 8 * int(r.SQEntries())
	}
	e.own.init(n, int(r.CQEntries()))
	if c.FixedCount > 0 {
		if e.fixed, err = ring.NewArena(e.ring, c.FixedCount, c.FixedSize); err != nil {
			return err
		}
	}
	if c.RegFiles > 0 {
		e.own.fileSlots = make([]int32, c.RegFiles)
		for i := range e.own.fileSlots {
			e.own.fileSlots[i] = -1
		}
		if err := e.ring.RegisterFiles(e.own.fileSlots); err != nil {
			return fmt.Errorf("register files: %w", err)
		}
	}
	return nil
}

// createRing makes the ring with the flags fio uses where the kernel has
// them (SINGLE_ISSUER | DEFER_TASKRUN: completion work runs only when the
// owner asks for completions, in batches, never interrupting another
// thread), falling back to a plain ring.
func createRing(c *Config) (*ring.Ring, error) {
	flags := c.RingFlags
	if flags&ring.SetupSQPoll == 0 {
		if p, err := ring.Probe(); err == nil {
			want := ring.SetupSingleIssuer | ring.SetupDeferTaskrun
			if p.SetupFlags&want == want {
				r, err := NewRing(ring.Params{Entries: c.Entries, Flags: flags | want, SQThreadIdle: c.SQIdle})
				if err == nil || refusedRing(err) {
					return r, err
				}
			}
		}
	}
	return NewRing(ring.Params{Entries: c.Entries, Flags: flags, SQThreadIdle: c.SQIdle})
}

// NewRing creates an engine's ring (a variable: tests make it fail).
var NewRing = ring.New

// refusedRing reports whether a ring's creation error means io_uring is
// not allowed or not there: a seccomp profile or kernel.io_uring_disabled
// (EPERM), a kernel without it (ENOSYS).
func refusedRing(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EACCES)
}
