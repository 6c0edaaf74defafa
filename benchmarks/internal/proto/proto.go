//go:build linux

package proto

import (
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Engine is a prototype's synchronous read path.
type Engine interface {
	// ReadAt reads len(buf) bytes at off from fd and blocks until done.
	ReadAt(fd int32, buf []byte, off int64) (int, error)
	// Counters returns what the engine did so far.
	Counters() Counters
	// Close waits for reads in flight and releases the engine.
	Close() error
}

// Counters count system calls and hand-offs, to show batching.
type Counters struct {
	Reads  uint64 // reads completed
	Enters uint64 // io_uring_enter calls
	Wakes  uint64 // eventfd writes to wake a sleeping owner
	Reaps  uint64 // reap passes that found completions
}

type counters struct {
	reads, enters, wakes, reaps atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{Reads: c.reads.Load(), Enters: c.enters.Load(), Wakes: c.wakes.Load(), Reaps: c.reaps.Load()}
}

// req is one synchronous read. The waiter parks on wake; whoever reaps
// the CQE stores res and sends exactly one token. reqs are recycled
// through reqPool, so the steady state allocates nothing.
type req struct {
	fd   int32
	addr uintptr
	n    uint32
	off  uint64
	res  int32
	wake chan struct{}
	next *req // intrusive link: Owner's submission stack, backlogs
}

var reqPool = sync.Pool{New: func() any { return &req{wake: make(chan struct{}, 1)} }}

func getReq(fd int32, buf []byte, off int64) *req {
	r := reqPool.Get().(*req)
	r.fd, r.off, r.n = fd, uint64(off), uint32(len(buf))
	r.addr = uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return r
}

// finish waits for r's completion token and recycles r.
func finish(r *req) (int, error) {
	<-r.wake
	res := r.res
	r.next = nil
	reqPool.Put(r)
	if res < 0 {
		return 0, syscall.Errno(-res)
	}
	return int(res), nil
}

// complete posts r's result and wakes its waiter. r must not be touched
// afterwards: the waiter may already have recycled it.
func complete(r *req, res int32) {
	r.res = res
	r.wake <- struct{}{}
}

// slab maps user_data (an index) to the request in flight. Not safe for
// concurrent use: each engine says what guards it.
type slab struct {
	reqs []*req
	free []uint32
}

func newSlab(n int) slab {
	s := slab{reqs: make([]*req, n), free: make([]uint32, n)}
	for i := range s.free {
		s.free[i] = uint32(n - 1 - i)
	}
	return s
}

func (s *slab) put(r *req) (uint32, bool) {
	if len(s.free) == 0 {
		return 0, false
	}
	i := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	s.reqs[i] = r
	return i, true
}

func (s *slab) take(i uint32) *req {
	r := s.reqs[i]
	s.reqs[i] = nil
	s.free = append(s.free, i)
	return r
}

func (s *slab) inflight() int { return len(s.reqs) - len(s.free) }

func pread(fd int32, buf []byte, off int64) (int, error) {
	for {
		n, err := syscall.Pread(int(fd), buf, off)
		if err != syscall.EINTR {
			return n, err
		}
	}
}
