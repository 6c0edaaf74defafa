//go:build linux

package proto

import (
	"errors"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// Config is what every ring-based prototype is built from.
type Config struct {
	Entries uint32          // SQ entries; 0 means 512
	Flags   ring.SetupFlags // setup flags
	// IOWQMax caps io-wq's bounded workers (reads of files and block
	// devices the kernel cannot issue without blocking); 0 keeps the
	// kernel's default.
	IOWQMax uint32
	// PerCallEnter makes Evfd callers enter with to_submit=1 each instead
	// of sharing enters through the pending count.
	PerCallEnter bool
	// ForceAsync sets IOSQE_ASYNC on reads (Owner): they go straight to
	// io-wq, skipping the non-blocking attempt that a device without
	// NOWAIT support (zram) always fails. io-wq then also runs them
	// concurrently: without it a new worker is started only when none is
	// running, and zram reads never sleep, so one worker runs them all.
	ForceAsync bool
}

func (c Config) entries() uint32 {
	if c.Entries == 0 {
		return 512
	}
	return c.Entries
}

// evTag is the user_data of the owner's eventfd read.
const evTag = ^uint64(0)

// Owner is the owner-thread engine: one goroutine, locked to its OS thread
// (which created the ring, as SINGLE_ISSUER and DEFER_TASKRUN require),
// does every submission and every reap. Callers push requests on a
// lock-free stack and park on their request. The owner sleeps in
// io_uring_enter; a caller that finds it asleep writes to an eventfd whose
// read the owner keeps queued in the ring, which completes and wakes it.
type Owner struct {
	head     atomic.Pointer[req] // submitted requests, newest first
	sleeping atomic.Bool         // the owner is (about to be) in a waiting enter
	stop     atomic.Bool
	efd      int
	done     chan error

	forceAsync bool
	c          counters

	// Owned by the owner goroutine.
	r       *ring.Ring
	s       slab
	cqes    []ring.CQE
	evbuf   []byte
	armed   bool
	backlog []*req
}

var _ Engine = (*Owner)(nil)

// NewOwner starts the owner goroutine and its ring.
func NewOwner(c Config) (*Owner, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC) // blocking: the ring polls it
	if err != nil {
		return nil, err
	}
	o := &Owner{efd: efd, done: make(chan error, 1), forceAsync: c.ForceAsync}
	started := make(chan error)
	go o.loop(c, started)
	if err := <-started; err != nil {
		unix.Close(efd)
		return nil, err
	}
	return o, nil
}

// ReadAt queues the read for the owner and waits for it.
func (o *Owner) ReadAt(fd int32, buf []byte, off int64) (int, error) {
	r := getReq(fd, buf, off)
	for {
		old := o.head.Load()
		r.next = old
		if o.head.CompareAndSwap(old, r) {
			break
		}
	}
	// The owner sets sleeping before it checks head one last time, and we
	// check sleeping after the push: one of us sees the other (Go atomics
	// are sequentially consistent), so a request never waits for a wake-up
	// nobody sends. The CAS makes one caller write the eventfd.
	if o.sleeping.Load() && o.sleeping.CompareAndSwap(true, false) {
		o.kick()
	}
	return finish(r)
}

// eventfdOne is what a wake-up adds to an eventfd (shared, never written).
var eventfdOne = [8]byte{1}

func (o *Owner) kick() {
	unix.Write(o.efd, eventfdOne[:])
	o.c.wakes.Add(1)
}

// Counters returns the owner's counters.
func (o *Owner) Counters() Counters { return o.c.snapshot() }

// Close stops the owner once the reads in flight are done. Callers must
// have returned.
func (o *Owner) Close() error {
	o.stop.Store(true)
	o.kick()
	err := <-o.done
	unix.Close(o.efd)
	return err
}

func (o *Owner) loop(c Config, started chan<- error) {
	// Never unlocked: when the loop returns, the thread exits with it.
	runtime.LockOSThread()
	r, err := ring.New(ring.Params{Entries: c.entries(), Flags: c.Flags})
	if err == nil && c.IOWQMax > 0 {
		_, err = r.SetIOWQMaxWorkers(c.IOWQMax, 0)
	}
	if err == nil {
		o.evbuf, err = ring.Alloc(8)
	}
	if err != nil {
		if r != nil {
			r.Close()
		}
		started <- err
		return
	}
	o.r = r
	o.s = newSlab(int(r.CQEntries()))
	o.cqes = make([]ring.CQE, r.CQEntries())
	started <- nil
	o.done <- o.run()
	r.Close()
	ring.Free(o.evbuf)
}

func (o *Owner) arm() bool {
	sqe := o.r.GetSQE()
	if sqe == nil {
		return false
	}
	sqe.PrepReadAddr(int32(o.efd), uintptr(unsafe.Pointer(&o.evbuf[0])), 8, 0)
	sqe.UserData = evTag
	o.armed = true
	return true
}

func (o *Owner) run() error {
	o.arm()
	for {
		// Take what callers pushed, oldest first.
		if list := o.head.Swap(nil); list != nil {
			var rev *req
			for list != nil {
				next := list.next
				list.next = rev
				rev, list = list, next
			}
			for ; rev != nil; rev = rev.next {
				o.backlog = append(o.backlog, rev)
			}
		}
		o.prep()
		if o.stop.Load() && o.s.inflight() == 0 && len(o.backlog) == 0 && o.head.Load() == nil {
			return nil
		}
		if !o.armed && !o.stop.Load() {
			o.arm()
		}
		pending := o.r.Flush()
		var wait uint32
		if o.r.Ready() == 0 && len(o.backlog) == 0 {
			o.sleeping.Store(true)
			if o.head.Load() != nil || o.stop.Load() {
				o.sleeping.Store(false)
			} else {
				wait = 1
			}
		}
		if pending > 0 || wait > 0 || o.r.Ready() == 0 {
			_, err := o.r.Enter(pending, wait, true)
			o.c.enters.Add(1)
			if wait > 0 {
				o.sleeping.Store(false)
			}
			if err != nil && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EAGAIN) {
				return err
			}
		}
		o.reap()
	}
}

// prep moves backlogged requests into SQEs while the SQ and slab have room.
func (o *Owner) prep() {
	i := 0
	for ; i < len(o.backlog); i++ {
		r := o.backlog[i]
		sqe := o.r.GetSQE()
		if sqe == nil {
			break
		}
		idx, ok := o.s.put(r)
		if !ok {
			o.r.Flush()
			// No slot: hand the SQE back as a no-op that completes at once.
			sqe.PrepNop()
			sqe.UserData = evTag - 1
			break
		}
		sqe.PrepReadAddr(r.fd, r.addr, r.n, r.off)
		sqe.UserData = uint64(idx)
		if o.forceAsync {
			sqe.SetFlags(ring.SQEAsync)
		}
		o.backlog[i] = nil
	}
	// Keep the slice's capacity: shift the rest to the front.
	k := copy(o.backlog, o.backlog[i:])
	clear(o.backlog[k:])
	o.backlog = o.backlog[:k]
}

func (o *Owner) reap() {
	if o.r.Ready() == 0 {
		return
	}
	n, _ := o.r.Peek(o.cqes)
	if n == 0 {
		return
	}
	o.c.reaps.Add(1)
	for _, cqe := range o.cqes[:n] {
		switch cqe.UserData {
		case evTag:
			o.armed = false
		case evTag - 1:
		default:
			o.c.reads.Add(1) // before the wake-up: the woken caller may read the counters
			complete(o.s.take(uint32(cqe.UserData)), cqe.Res)
		}
	}
}
