//go:build linux

package engine

import (
	"fmt"
	"math/bits"
	"syscall"

	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

// DefaultMemory is the default bound on a pool (EngineOptions.BufferMemory).
const DefaultMemory = 64 << 20

// NewPool makes a pool of at most limit bytes (at least 2 MiB; 0:
// DefaultMemory).
func NewPool(limit int64) *Pool {
	if limit <= 0 {
		limit = DefaultMemory
	}
	p := &Pool{limit: max(limit, 2*MaxBuffer)}
	p.cond.L = &p.mu
	return p
}

// Reserve takes up to count buffers of size bytes (0 < size <= MaxBuffer)
// for a stream, in one step: as many as fit in the streams' share of the
// bound now, none if none fit. It never waits: a stream is made by a
// goroutine that may hold other streams, and waiting for the room they
// hold would be waiting for itself. Release gives them back.
func (p *Pool) Reserve(count int, size int64) ([][]byte, error) {
	if size <= 0 || size > MaxBuffer || count <= 0 {
		return nil, fmt.Errorf("dio: %d stream buffers of %d bytes: %w", count, size, syscall.EINVAL)
	}
	c := class(size)
	size = int64(1) << (c + minShift)
	bufs, fresh := p.reserveLocked(c, count, size)
	for i := len(bufs) - fresh; i < len(bufs); i++ {
		b, err := ring.Alloc(int(size))
		if err != nil {
			p.mu.Lock()
			p.held -= size * int64(len(bufs)-i)
			p.streamHeld -= size * int64(len(bufs)-i)
			p.cond.Broadcast()
			p.mu.Unlock()
			p.Release(bufs[:i])
			return nil, err
		}
		bufs[i] = b
	}
	return bufs, nil
}

// reserveLocked takes the mutex and reserves what Reserve takes: cached
// buffers first, then room for fresh ones (the last fresh entries of the
// result, nil for the caller to allocate).
func (p *Pool) reserveLocked(c, count int, size int64) (bufs [][]byte, fresh int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := min(int64(count), (p.limit-MaxBuffer-p.streamHeld)/size)
	for k > 0 && len(p.free[c]) < int(k) && p.held+size*(k-int64(len(p.free[c]))) > p.limit && p.evictLocked(c) {
	}
	if k = min(k, int64(len(p.free[c]))+(p.limit-p.held)/size); k <= 0 {
		return nil, 0
	}
	bufs = make([][]byte, k)
	for i := range bufs {
		if l := len(p.free[c]); l > 0 {
			bufs[i] = p.free[c][l-1]
			p.free[c][l-1] = nil
			p.free[c] = p.free[c][:l-1]
		} else {
			p.held += size
			fresh++
		}
	}
	p.streamHeld += k * size
	return bufs, fresh
}

// Release gives back a stream's buffers from Reserve.
func (p *Pool) Release(bufs [][]byte) {
	var n int64
	for _, b := range bufs {
		if b != nil {
			n += int64(cap(b))
		}
	}
	p.mu.Lock()
	p.streamHeld -= n
	p.mu.Unlock()
	for _, b := range bufs {
		if b != nil {
			p.Put(b)
		}
	}
}

func class(n int64) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len64(uint64(n-1)) - minShift
}

// get returns a buffer of at least n bytes (0 < n <= MaxBuffer), waiting
// for room under the bound. Its contents are undefined.
func (p *Pool) Get(n int64) ([]byte, error) {
	if n <= 0 || n > MaxBuffer {
		return nil, fmt.Errorf("dio: buffer of %d bytes: %w", n, syscall.EINVAL)
	}
	b, size := p.take(class(n))
	if b != nil {
		return b, nil
	}
	b, err := ring.Alloc(int(size))
	if err != nil {
		p.mu.Lock()
		p.held -= size
		p.cond.Broadcast()
		p.mu.Unlock()
		return nil, err
	}
	return b, nil
}

// take returns a cached buffer of class c, or reserves room for a new one
// of size bytes (b nil), waiting for room under the bound.
func (p *Pool) take(c int) (b []byte, size int64) {
	size = int64(1) << (c + minShift)
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if l := len(p.free[c]); l > 0 {
			b = p.free[c][l-1]
			p.free[c][l-1] = nil
			p.free[c] = p.free[c][:l-1]
			return b, size
		}
		if p.held+size <= p.limit {
			p.held += size
			return nil, size
		}
		if !p.evictLocked(c) {
			p.waiting++
			p.cond.Wait()
			p.waiting--
		}
	}
}

// evictLocked frees one cached buffer of another size, reporting whether
// it found one.
func (p *Pool) evictLocked(keep int) bool {
	for c := nClasses - 1; c >= 0; c-- {
		if c == keep || len(p.free[c]) == 0 {
			continue
		}
		l := len(p.free[c])
		b := p.free[c][l-1]
		p.free[c][l-1] = nil
		p.free[c] = p.free[c][:l-1]
		p.held -= int64(cap(b))
		ring.Free(b)
		return true
	}
	return false
}

// put gives back a buffer from get.
func (p *Pool) Put(b []byte) {
	b = b[:cap(b)]
	p.mu.Lock()
	if p.closed {
		p.held -= int64(len(b))
		p.mu.Unlock()
		ring.Free(b)
		return
	}
	c := class(int64(len(b)))
	p.free[c] = append(p.free[c], b)
	if p.waiting > 0 {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// close frees the cached buffers; buffers handed out are freed when put.
func (p *Pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.free {
		for _, b := range p.free[c] {
			p.held -= int64(cap(b))
			ring.Free(b)
		}
		p.free[c] = nil
	}
}

func (f *fixedBufs) setup(r ringhook.Ring, count, size int) error {
	if size <= 0 {
		size = 1 << 20
	}
	arena, err := ring.Alloc(count * size)
	if err != nil {
		return fmt.Errorf("fixed buffers of %d bytes: %w", count*size, err)
	}
	f.arena = arena
	if err := r.RegisterBuffers([][]byte{arena}); err != nil {
		return fmt.Errorf("register buffers of %d bytes: %w", len(arena), err)
	}
	for i := range count {
		f.bufs = append(f.bufs, arena[i*size:(i+1)*size:(i+1)*size])
	}
	return nil
}

func (f *fixedBufs) free() {
	if f.arena != nil {
		ring.Free(f.arena)
	}
}

func (z *zeroBuf) free() {
	for _, b := range append(z.old, z.buf) {
		if b != nil {
			ring.Free(b)
		}
	}
}
