//go:build linux

package proto

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// Evfd is the netpoller engine: callers prepare and submit their own SQEs;
// a reaper goroutine parks in Go's netpoller on an eventfd registered with
// the ring, so no OS thread sits in io_uring_enter. With SQPOLL in the
// flags the kernel's poll thread takes the SQEs (callers enter only to
// wake it) and runs the completions' task work.
type Evfd struct {
	r       *ring.Ring
	perCall bool

	mu sync.Mutex // submission side: GetSQE, Flush, the slab's free list
	s  slab

	pending    atomic.Uint32 // SQEs published and not yet passed to an enter
	submitting atomic.Bool   // a caller is in io_uring_enter for the others (combine)
	efile      *os.File
	rc         syscall.RawConn
	inflight   atomic.Int64
	stop       atomic.Bool
	done       chan struct{}
	c          counters

	// Owned by the reaper.
	cqes []ring.CQE
	reqs []*req
}

var _ Engine = (*Evfd)(nil)

// NewEvfd creates the ring, registers the eventfd and starts the reaper.
func NewEvfd(c Config) (*Evfd, error) {
	r, err := ring.New(ring.Params{Entries: c.entries(), Flags: c.Flags})
	if err != nil {
		return nil, err
	}
	if c.IOWQMax > 0 {
		if _, err := r.SetIOWQMaxWorkers(c.IOWQMax, 0); err != nil {
			r.Close()
			return nil, err
		}
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		r.Close()
		return nil, err
	}
	if err := r.RegisterEventfd(efd); err != nil {
		unix.Close(efd)
		r.Close()
		return nil, err
	}
	// A non-blocking fd given to os.NewFile is registered with the netpoller.
	ef := os.NewFile(uintptr(efd), "uring-eventfd")
	rc, err := ef.SyscallConn()
	if err != nil {
		ef.Close()
		r.Close()
		return nil, err
	}
	e := &Evfd{
		r: r, perCall: c.PerCallEnter, s: newSlab(int(r.CQEntries())),
		efile: ef, rc: rc, done: make(chan struct{}),
		cqes: make([]ring.CQE, r.CQEntries()),
	}
	go e.reaper()
	return e, nil
}

// ReadAt prepares and submits the read, then parks until the reaper
// completes it.
func (e *Evfd) ReadAt(fd int32, buf []byte, off int64) (int, error) {
	r := getReq(fd, buf, off)
	e.inflight.Add(1)
	e.mu.Lock()
	for {
		if len(e.s.free) > 0 {
			if sqe := e.r.GetSQE(); sqe != nil {
				idx, _ := e.s.put(r)
				sqe.PrepReadAddr(r.fd, r.addr, r.n, r.off)
				sqe.UserData = uint64(idx)
				break
			}
		}
		// Full: the SQEs already published will make room once submitted.
		e.mu.Unlock()
		e.submit(e.pending.Swap(0))
		runtime.Gosched()
		e.mu.Lock()
	}
	e.r.Flush() // store-release of the SQ tail: the kernel may take it from now on
	e.pending.Add(1)
	e.mu.Unlock()
	if e.perCall {
		e.pending.Add(^uint32(0))
		e.submit(1)
	} else {
		e.combine()
	}
	n, err := finish(r)
	e.inflight.Add(-1)
	return n, err
}

// combine submits the published SQEs unless another caller is already in
// io_uring_enter: that one submits ours when it comes back. One enter then
// carries every SQE published while the previous one ran.
func (e *Evfd) combine() {
	for e.pending.Load() > 0 && e.submitting.CompareAndSwap(false, true) {
		for n := e.pending.Swap(0); n > 0; n = e.pending.Swap(0) {
			e.submit(n)
		}
		e.submitting.Store(false)
		// A caller that published after our last Swap and saw submitting
		// set left its SQE to us: the loop condition looks again.
	}
}

func (e *Evfd) submit(n uint32) {
	if n == 0 {
		return
	}
	for {
		_, err := e.r.Enter(n, 0, false)
		if e.r.Flags()&ring.SetupSQPoll == 0 || err != nil {
			e.c.enters.Add(1)
		}
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EAGAIN) {
			panic(err) // a prototype: the ring itself failed
		}
		runtime.Gosched()
	}
}

func (e *Evfd) reaper() {
	defer close(e.done)
	var buf [8]byte
	read := func(fd uintptr) bool {
		_, err := unix.Read(int(fd), buf[:])
		return err != unix.EAGAIN
	}
	for {
		e.reap()
		if e.stop.Load() {
			return
		}
		if err := e.rc.Read(read); err != nil {
			return
		}
	}
}

// reap completes every CQE that is ready, then gives the slab indices
// back under one lock.
func (e *Evfd) reap() {
	for e.r.Ready() > 0 {
		n, _ := e.r.Peek(e.cqes)
		if n == 0 {
			return
		}
		e.c.reaps.Add(1)
		e.mu.Lock()
		e.reqs = e.reqs[:0]
		for _, cqe := range e.cqes[:n] {
			e.reqs = append(e.reqs, e.s.take(uint32(cqe.UserData)))
		}
		e.mu.Unlock()
		e.c.reads.Add(uint64(n)) // before the wake-ups: a woken caller may read the counters
		for i, r := range e.reqs {
			complete(r, e.cqes[i].Res)
			e.reqs[i] = nil
		}
	}
}

// Counters returns the engine's counters.
func (e *Evfd) Counters() Counters { return e.c.snapshot() }

// Close waits for reads in flight, stops the reaper and closes the ring.
func (e *Evfd) Close() error {
	for e.inflight.Load() > 0 {
		runtime.Gosched()
	}
	e.stop.Store(true)
	e.rc.Write(func(fd uintptr) bool { unix.Write(int(fd), eventfdOne[:]); return true })
	<-e.done
	e.efile.Close()
	return e.r.Close()
}
