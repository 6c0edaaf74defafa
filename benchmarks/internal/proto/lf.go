//go:build linux

package proto

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// LF is the leader/follower engine (package dio's protocol, stripped to
// the synchronous read): a caller publishes its SQE, and if it can take
// the token it submits and waits in one io_uring_enter and reaps for
// everyone until its own read is done; otherwise it submits and parks
// until either its read completes or the token comes free.
type LF struct {
	r *ring.Ring

	mu sync.Mutex // submission side and the slab
	s  slab

	pending  atomic.Uint32
	tok      chan struct{} // the reap token: whoever holds it owns cqes
	cqes     []ring.CQE
	reqs     []*req
	inflight atomic.Int64
	c        counters
}

var _ Engine = (*LF)(nil)

// NewLF creates the ring.
func NewLF(c Config) (*LF, error) {
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
	e := &LF{r: r, s: newSlab(int(r.CQEntries())), tok: make(chan struct{}, 1), cqes: make([]ring.CQE, r.CQEntries())}
	e.tok <- struct{}{}
	return e, nil
}

// ReadAt publishes the read, then leads or follows until it is done.
func (e *LF) ReadAt(fd int32, buf []byte, off int64) (int, error) {
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
		e.mu.Unlock()
		e.submit(e.pending.Swap(0), 0)
		runtime.Gosched()
		e.mu.Lock()
	}
	e.r.Flush()
	e.pending.Add(1)
	e.mu.Unlock()

	select {
	case <-e.tok:
		e.lead(r)
	default:
		// A leader is waiting in the kernel: submit now rather than when it
		// wakes up.
		e.submit(e.pending.Swap(0), 0)
		select {
		case <-e.tok:
			e.lead(r)
		case <-r.wake:
			r.wake <- struct{}{} // finish receives it
		}
	}
	n, err := finish(r)
	e.inflight.Add(-1)
	return n, err
}

// lead reaps until r is complete, then passes the token on. The caller
// holds the token.
func (e *LF) lead(r *req) {
	for {
		select {
		case <-r.wake:
			r.wake <- struct{}{} // finish receives it
			e.tok <- struct{}{}
			return
		default:
		}
		n := e.pending.Swap(0)
		if e.r.Ready() == 0 {
			e.submit(n, 1) // submit and wait: one system call
		} else {
			e.submit(n, 0)
		}
		e.reap()
	}
}

func (e *LF) submit(n, wait uint32) {
	if n == 0 && wait == 0 {
		return
	}
	for {
		_, err := e.r.Enter(n, wait, wait > 0)
		e.c.enters.Add(1)
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EAGAIN) {
			panic(err)
		}
		runtime.Gosched()
	}
}

// reap completes the ready CQEs. The caller holds the token.
func (e *LF) reap() {
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

// Counters returns the engine's counters.
func (e *LF) Counters() Counters { return e.c.snapshot() }

// Close closes the ring once no read is in flight.
func (e *LF) Close() error {
	for e.inflight.Load() > 0 {
		runtime.Gosched()
	}
	return e.r.Close()
}

// Pread is pread(2) in the calling goroutine (what os.File does, minus its
// fd reference counting).
type Pread struct{ c counters }

var _ Engine = (*Pread)(nil)

// ReadAt is one pread.
func (p *Pread) ReadAt(fd int32, buf []byte, off int64) (int, error) { return pread(fd, buf, off) }

// Counters is empty: pread counts nothing.
func (p *Pread) Counters() Counters { return Counters{} }

// Close does nothing.
func (p *Pread) Close() error { return nil }
