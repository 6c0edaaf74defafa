//go:build linux

package engine

import (
	"fmt"
	"math/bits"
	"syscall"

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
	var bufs [][]byte
	for range count {
		b, err := p.get(size, true)
		if b == nil {
			return bufs, err
		}
		bufs = append(bufs, b)
	}
	return bufs, nil
}

// Release gives back a stream's buffers from Reserve.
func (p *Pool) Release(bufs [][]byte) {
	for _, b := range bufs {
		if b != nil {
			p.put(b, true)
		}
	}
}

// Get returns a buffer of at least n bytes (0 < n <= MaxBuffer), waiting
// for room under the bound. Its contents are undefined.
func (p *Pool) Get(n int64) ([]byte, error) {
	if n <= 0 || n > MaxBuffer {
		return nil, fmt.Errorf("dio: buffer of %d bytes: %w", n, syscall.EINVAL)
	}
	return p.get(n, false)
}

// Put gives back a buffer from Get.
func (p *Pool) Put(b []byte) { p.put(b, false) }

// get takes a cached buffer of n's class, or room for a new one, which it
// allocates: for a stream, nil where there is no room; otherwise, waiting.
func (p *Pool) get(n int64, stream bool) ([]byte, error) {
	c := class(n)
	size := int64(1) << (c + minShift)
	b, room := p.take(c, size, stream)
	if b != nil || !room {
		return b, nil
	}
	b, err := ring.Alloc(int(size))
	if err != nil {
		p.mu.Lock()
		p.held -= size
		if stream {
			p.streamHeld -= size
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		return nil, err
	}
	return b, nil
}

// take returns a cached buffer of class c, or reports room taken for a
// new one of size bytes.
func (p *Pool) take(c int, size int64, stream bool) (b []byte, room bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if stream && p.streamHeld+size > p.limit-MaxBuffer {
			return nil, false // the streams' share is taken
		}
		if l := len(p.free[c]); l > 0 {
			b = p.free[c][l-1]
			p.free[c][l-1] = nil
			p.free[c] = p.free[c][:l-1]
		} else if p.held+size <= p.limit {
			p.held += size
		} else if !p.evictLocked(c) {
			if stream {
				return nil, false
			}
			p.waiting++
			p.cond.Wait()
			p.waiting--
			continue
		} else {
			continue
		}
		if stream {
			p.streamHeld += size
		}
		return b, b == nil
	}
}

func class(n int64) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len64(uint64(n-1)) - minShift
}

// evictLocked frees one cached buffer of another size, reporting whether
// it found one.
func (p *Pool) evictLocked(keep int) bool {
	for c := nClasses - 1; c >= 0; c-- {
		if l := len(p.free[c]); c != keep && l > 0 {
			b := p.free[c][l-1]
			p.free[c][l-1] = nil
			p.free[c] = p.free[c][:l-1]
			p.held -= int64(cap(b))
			ring.Free(b)
			return true
		}
	}
	return false
}

func (p *Pool) put(b []byte, stream bool) {
	b = b[:cap(b)]
	p.mu.Lock()
	defer p.mu.Unlock()
	if stream {
		p.streamHeld -= int64(len(b))
	}
	if p.closed {
		p.held -= int64(len(b))
		ring.Free(b)
		return
	}
	c := class(int64(len(b)))
	p.free[c] = append(p.free[c], b)
	if p.waiting > 0 {
		p.cond.Broadcast()
	}
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
