//go:build linux

package dio

import (
	"context"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"syscall"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// Requests of any offset, length and memory, like os.File: those that are
// not aligned to the file's direct-I/O alignment go through bounce
// buffers. A read reads the aligned range around it and copies out. A
// write holds the file's gate alone (its inode's, or its volume's), reads
// the sectors it covers only in part, patches them and writes the aligned
// range back, so that concurrent writes to different bytes of one sector
// in this process both survive; a write that ends past the end of file
// leaves the file exactly as long as its end, as os.File would.

// Bounce buffers come in power-of-two sizes from 4 KiB to maxBounce; longer
// requests go through in pieces of maxBounce.
const (
	minBounceShift = 12
	maxBounceShift = 20
	maxBounce      = 1 << maxBounceShift
	nBounceClasses = maxBounceShift - minBounceShift + 1
)

// defaultBufferMemory is the default bound on the memory an engine keeps
// for bounce buffers (EngineOptions.BufferMemory).
const defaultBufferMemory = 64 << 20

// bufPool hands out page-aligned off-heap buffers within one byte bound
// per engine: bounce buffers, and the buffers of writers and read-ahead
// readers. When the bound is reached, get waits for a put (back-pressure,
// never failure). Buffers that are put back are kept for reuse, and freed
// when another size needs the room.
type bufPool struct {
	mu      sync.Mutex
	cond    sync.Cond
	limit   int64
	held    int64 // bytes allocated: handed out or cached
	free    [nBounceClasses][][]byte
	closed  bool
	waiting int
}

func newBufPool(limit int64) *bufPool {
	if limit <= 0 {
		limit = defaultBufferMemory
	}
	p := &bufPool{limit: max(limit, maxBounce)}
	p.cond.L = &p.mu
	return p
}

func bounceClass(n int64) int {
	if n <= 1<<minBounceShift {
		return 0
	}
	return bits.Len64(uint64(n-1)) - minBounceShift
}

// get returns a buffer of at least n bytes (0 < n <= maxBounce), waiting
// for room under the bound. Its contents are undefined.
func (p *bufPool) get(n int64) ([]byte, error) {
	if n <= 0 || n > maxBounce {
		return nil, fmt.Errorf("dio: bounce buffer of %d bytes: %w", n, syscall.EINVAL)
	}
	b, size := p.take(bounceClass(n))
	if b != nil {
		return b, nil
	}
	b, err := ring.Alloc(int(size))
	if err != nil {
		p.mu.Lock()
		p.held -= size
		p.mu.Unlock()
		return nil, err
	}
	return b, nil
}

// take returns a cached buffer of class c, or reserves room for a new one
// of size bytes (b nil), waiting for room under the bound.
func (p *bufPool) take(c int) (b []byte, size int64) {
	size = int64(1) << (c + minBounceShift)
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
func (p *bufPool) evictLocked(keep int) bool {
	for c := nBounceClasses - 1; c >= 0; c-- {
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
func (p *bufPool) put(b []byte) {
	b = b[:cap(b)]
	p.mu.Lock()
	if p.closed {
		p.held -= int64(len(b))
		p.mu.Unlock()
		ring.Free(b)
		return
	}
	c := bounceClass(int64(len(b)))
	p.free[c] = append(p.free[c], b)
	if p.waiting > 0 {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// close frees the cached buffers; buffers handed out are freed when put.
func (p *bufPool) close() {
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

// isAligned reports whether a request of p at off can go to the kernel as
// it is.
func (f *File) isAligned(p []byte, off int64) bool {
	a := f.align
	return off%a.Offset == 0 && int64(len(p))%a.Offset == 0 && int64(uintptr(addrOf(p)))%a.Memory == 0
}

// bounceRead reads len(p) bytes at off through bounce buffers: the aligned
// range around each piece is read and the bytes asked for copied out.
func (f *File) bounceRead(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	f.eng.stats.Bounced.Add(1)
	a := f.align.Offset
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		if pos >= f.maxEnd() {
			return done, io.EOF // no direct read reaches past the last aligned block
		}
		lo := pos &^ (a - 1)
		want := min(int64(len(p)-done), maxBounce-(pos-lo), f.maxEnd()-pos)
		hi := alignUp(pos+want, a)
		buf, err := f.eng.bufs.get(hi - lo)
		if err != nil {
			return done, f.opErr("read", off, int64(len(p)), err)
		}
		n, err := f.kernelRead(ctx, buf[:hi-lo], lo, fl)
		got := min(max(int64(n)-(pos-lo), 0), want)
		copy(p[done:], buf[pos-lo:pos-lo+got])
		f.eng.bufs.put(buf)
		done += int(got)
		if err != nil && err != io.EOF {
			return done, reframe(err, "read", off, int64(len(p)))
		}
		if got < want {
			return done, io.EOF
		}
	}
	return done, nil
}

// bounceWrite writes p at off holding the file's gate alone: the sectors
// the range covers in part are read, patched and written back with it.
func (f *File) bounceWrite(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	if !f.writable {
		return 0, f.opErr("write", off, int64(len(p)), readOnlyErr{})
	}
	if !f.canRead {
		return 0, f.opErr("write", off, int64(len(p)), unsupported(
			"an unaligned write to a write-only file whose permissions refuse reading: it must read the sectors it covers in part (open with O_RDWR, or write aligned)"))
	}
	if f.gate() == nil {
		// A mapped file whose mapper leaves allocation to the kernel
		// (FileMapper) has no gate: its owner promised no other writer.
		return f.patchWrite(ctx, p, off, fl)
	}
	hold, err := f.lockExclusive(ctx)
	if err != nil {
		return 0, f.opErr("write", off, int64(len(p)), err)
	}
	n, err := f.patchWrite(ctx, p, off, fl)
	f.unlockExclusive(hold)
	return n, err
}

// patchWrite is bounceWrite's work, done with the gate held.
func (f *File) patchWrite(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	f.eng.stats.Bounced.Add(1)
	a := f.align.Offset
	end := off + int64(len(p))
	var size0 int64
	done, reached := 0, int64(0)
	var werr error
	if f.vol != nil {
		size0 = f.vol.size.Load()
	} else {
		size, blk, err := f.kernelStatRef()
		if err != nil {
			return 0, f.opErr("write", off, int64(len(p)), err)
		}
		size0 = size
		// A write that starts past the end leaves a gap, which must read
		// as zeroes. Past the old end, the old last block may hold bytes
		// of a write whose size change a crash lost, and ext4's direct
		// write does not zero them (xfs does): zero the rest of that block
		// first, as a buffered write or a truncate would. The zeroing's
		// aligned writes move the end of file: it is set right below.
		if gapEnd := min(off, alignUp(size, blk)); off > size && gapEnd > size && !f.blockDev {
			reached = alignUp(gapEnd, a)
			werr = f.zeroRange(size, gapEnd-size)
		}
	}
	for done < len(p) && werr == nil {
		pos := off + int64(done)
		lo := pos &^ (a - 1)
		chunkEnd := min(end, lo+maxBounce)
		hi := alignUp(chunkEnd, a)
		buf, err := f.eng.bufs.get(hi - lo)
		if err != nil {
			werr = err
			break
		}
		b := buf[:hi-lo]
		// The sectors covered in part: what the file holds there (zeroes
		// past its end).
		if lo < pos {
			err = f.readSector(ctx, b[:a], lo)
		}
		if err == nil && chunkEnd < hi && (hi-a > lo || lo == pos) {
			err = f.readSector(ctx, b[hi-a-lo:], hi-a)
		}
		if err != nil {
			f.eng.bufs.put(buf)
			werr = err
			break
		}
		copy(b[pos-lo:], p[done:done+int(chunkEnd-pos)])
		n, err := f.directIO(ctx, Write, b, lo, fl, true)
		f.eng.bufs.put(buf)
		if n > 0 {
			reached = max(reached, lo+int64(n))
		}
		done += int(min(max(int64(n)-(pos-lo), 0), chunkEnd-pos))
		if err != nil {
			werr = err
			break
		}
	}
	// The aligned writes may have moved the end of file to a sector
	// boundary past the write's end: the file ends where os.File's write
	// would have left it.
	newSize := size0
	if done > 0 {
		newSize = max(size0, off+int64(done))
	}
	if reached > newSize && (f.vol == nil || f.vol.ops == nil) {
		if err := ignoringEINTR(func() error { return unix.Ftruncate(int(f.fd), newSize) }); err != nil && werr == nil {
			werr = err
		}
		if werr == nil && fl&(DSync|Sync) != 0 {
			werr = f.syncFds(fl&Sync == 0) // the new size, durable with the data
		}
	}
	if f.vol != nil {
		f.vol.extendSize(newSize)
	}
	if werr != nil {
		return done, reframe(werr, "write", off, int64(len(p)))
	}
	return done, nil
}

// readSector reads the sector at off into b (one alignment unit), zeroes
// where the file ends before it.
func (f *File) readSector(ctx context.Context, b []byte, off int64) error {
	n, err := f.directIO(ctx, Read, b, off, 0, true)
	clear(b[n:])
	if err == io.EOF {
		err = nil
	}
	return err
}

// kernelStatRef returns the kernel's size of the file and its block size,
// for a caller that holds no reference of its own.
func (f *File) kernelStatRef() (size, blk int64, err error) {
	if !f.acquire() {
		return 0, 0, ErrClosed
	}
	defer f.release()
	if f.blockDev {
		size, err = f.kernelSize()
		return size, f.align.Offset, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.fd), &st); err != nil {
		return 0, 0, err
	}
	return st.Size, max(int64(st.Blksize), f.align.Offset), nil
}

// reframe makes an error of a bounce buffer's aligned I/O speak of the
// caller's operation and range (a write's read-modify-write read that
// failed is the write's error).
func reframe(err error, op string, off, n int64) error {
	if oe, ok := err.(*OpError); ok {
		c := *oe
		c.Op, c.Off, c.Len = op, off, n
		return &c
	}
	return err
}
