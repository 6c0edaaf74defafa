//go:build linux

package dio

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// A volume is what every File opened over one mapper shares, as handles
// share an inode: the size, and (where the engine is the file system) the
// gate that orders writes, hole punching and truncation. Files find it by
// their mapper in a process-wide table; it lives while one is open.
type volume struct {
	mapper iomap.Mapper
	// ops is set when the mapper is the file system (it allocates: an
	// iomap.ExtentMap): space and size operations act on the map, never on
	// the container. A mapper without them (iomap.FileMapper) describes a
	// kernel file; those operations go to the kernel and the mapper is told.
	ops     volumeMapper
	bs      int64 // the mapper's allocation unit (ops only)
	zeroBS  int64 // bs when it is larger than the I/O alignment: the engine zeroes sub-block ranges
	sizeSet bool  // the size came from Options.Size
	size    atomicSize
	gate    ioLock
	refs    int // under volumes.mu
}

// volumeMapper is a mapper that owns its space.
type volumeMapper interface {
	iomap.Mapper
	BlockSize() int64
	Punch(off, n int64) error
	Preallocate(off, n int64) error
}

var volumes struct {
	mu sync.Mutex
	m  map[iomap.Mapper]*volume
}

// openVolume returns the shared state of mapper m, creating it at the first
// Open. fileSize is the opened file's size, the volume's size unless
// Options.Size says otherwise. A second Open that asks for another size fails:
// one volume has one size.
func openVolume(m iomap.Mapper, fileSize int64, c *config, align int64) (*volume, error) {
	shared := reflect.TypeOf(m).Comparable()
	volumes.mu.Lock()
	defer volumes.mu.Unlock()
	if shared {
		if v := volumes.m[m]; v != nil {
			if c.sizeSet && c.size != v.size.Load() {
				return nil, fmt.Errorf("the mapper is open with size %d, Options.Size asks for %d: %w", v.size.Load(), c.size, syscall.EINVAL)
			}
			v.refs++
			return v, nil
		}
	}
	v := &volume{mapper: m, refs: 1, sizeSet: c.sizeSet}
	size := fileSize
	if c.sizeSet {
		size = c.size
	}
	if size < 0 {
		return nil, fmt.Errorf("size %d: %w", size, syscall.EINVAL)
	}
	v.size.Store(size)
	if ops, ok := m.(volumeMapper); ok {
		v.ops, v.bs = ops, ops.BlockSize()
		if v.bs > align {
			v.zeroBS = v.bs
		}
	}
	if shared {
		if volumes.m == nil {
			volumes.m = make(map[iomap.Mapper]*volume)
		}
		volumes.m[m] = v
	}
	return v, nil
}

// release drops a File's hold on the volume.
func (v *volume) release() {
	volumes.mu.Lock()
	defer volumes.mu.Unlock()
	v.refs--
	if v.refs == 0 && volumes.m[v.mapper] == v {
		delete(volumes.m, v.mapper)
	}
}

// gate returns the I/O lock the file's requests take (gate.go): its
// inode's for a kernel file, its volume's for a mapped file.
func (f *File) gate() *ioLock {
	if f.ino != nil {
		return &f.ino.gate
	}
	return &f.vol.gate
}

// gated reports whether r takes the file's lock (shared unless it needs
// sub-block zeroing). On a volume whose map the engine keeps every request
// does, so that hole punching and truncation, which hold it alone, never
// free space under I/O. Elsewhere writes do, so that an unaligned write,
// which holds it alone, reads and rewrites its partial sectors with no
// other write of this process in between, and size changes wait for the
// writes in flight. The lock holder's own I/O (owned) does not take it.
func (f *File) gated(r *Request) bool {
	if r.owned {
		return false
	}
	if f.vol != nil && f.vol.ops != nil {
		return true
	}
	return r.Op == Write
}

// extendSize raises the volume's size to end if it is smaller, and tells
// the mapper.
func (v *volume) extendSize(end int64) {
	if !v.size.raise(end) {
		return
	}
	if s, ok := v.mapper.(interface{ ExtendSize(int64) }); ok {
		s.ExtendSize(end)
	} else if s, ok := v.mapper.(interface{ SetSize(int64) }); ok {
		s.SetSize(v.size.Load())
	}
}

// setSize sets the volume's size after a truncate, and tells the mapper.
func (v *volume) setSize(n int64) {
	v.size.Store(n)
	if t, ok := v.mapper.(interface{ Truncate(int64) }); ok {
		t.Truncate(n)
	} else if s, ok := v.mapper.(interface{ SetSize(int64) }); ok {
		s.SetSize(n)
	}
}

// invalidate tells a mapper that caches a kernel file's layout that the
// kernel changed [off, off+n).
func (v *volume) invalidate(off, n int64) {
	if inv, ok := v.mapper.(interface{ Invalidate(int64, int64) }); ok {
		inv.Invalidate(off, n)
	}
}

// exclusive runs fn holding the file's gate alone (its volume's, or its
// inode's): no gated request of any File over it is in flight meanwhile,
// and none starts. fn's own I/O goes through f.ownedIO. ctx ending while
// it waits for the gate fails it with ECANCELED, having done nothing.
func (f *File) exclusive(ctx context.Context, fn func() error) error {
	r, err := f.lockExclusive(ctx)
	if err != nil {
		return err
	}
	defer f.unlockExclusive(r)
	return fn()
}

// lockExclusive takes the file's gate alone (see exclusive); the request it
// returns is the hold, for unlockExclusive.
func (f *File) lockExclusive(ctx context.Context) (*Request, error) {
	e := f.eng
	r := e.getReq()
	r.file = f
	r.gateExcl, r.gateSync = true, true
	r.gateAdmitted.Store(false)
	r.gateDone = ctx.Done()
	if !f.gate().enter(r, false) {
		if err := f.awaitAdmission(r); err != nil {
			e.putReq(r)
			return nil, err
		}
	}
	return r, nil
}

func (f *File) unlockExclusive(r *Request) {
	f.gateRelease(r)
	f.eng.putReq(r)
}

// The size and space operations below run with the lock held exclusive
// (File.fileOp).

// truncate sets a volume's size. Shrinking releases the blocks past the new
// end and zeroes the rest of the new last block, so that growing the
// volume again reads zeroes there, as a file system's truncate does.
func (v *volume) truncate(f *File, size int64) error {
	if v.ops == nil {
		if err := ignoringEINTR(func() error { return unix.Ftruncate(int(f.fd), size) }); err != nil {
			return err
		}
		v.setSize(size)
		return nil
	}
	if size < v.size.Load() {
		end := alignUp(size, v.bs)
		if end > size {
			if err := f.zeroMapped(size, end-size); err != nil {
				return err
			}
		}
		if last := maxBlockEnd(v.bs); end < last {
			if err := v.ops.Punch(end, last-end); err != nil {
				return err
			}
		}
	}
	v.setSize(size)
	return nil
}

// allocate preallocates [off, off+n) in the map (unwritten: reads as
// zeroes), growing the size unless keepSize.
func (v *volume) allocate(f *File, off, n int64, keepSize bool) error {
	if v.ops == nil {
		mode := uint32(0)
		if keepSize {
			mode = unix.FALLOC_FL_KEEP_SIZE
		}
		if err := ignoringEINTR(func() error { return unix.Fallocate(int(f.fd), mode, off, n) }); err != nil {
			return err
		}
		v.invalidate(off, n)
		if !keepSize {
			v.extendSize(off + n)
		}
		return nil
	}
	if err := v.ops.Preallocate(off, n); err != nil {
		return err
	}
	if !keepSize {
		v.extendSize(off + n)
	}
	return nil
}

// punch turns [off, off+n) into a hole: whole blocks leave the map, the
// parts of blocks at either end are zeroed.
func (v *volume) punch(f *File, off, n int64) error {
	if v.ops == nil {
		if err := ignoringEINTR(func() error {
			return unix.Fallocate(int(f.fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		}); err != nil {
			return err
		}
		v.invalidate(off, n)
		return nil
	}
	end := off + n
	if end < off {
		return syscall.EINVAL
	}
	lo, hi := alignUp(off, v.bs), end&^(v.bs-1)
	if lo >= hi {
		return f.zeroMapped(off, n) // within one block, or two partial ones
	}
	if off < lo {
		if err := f.zeroMapped(off, lo-off); err != nil {
			return err
		}
	}
	if hi < end {
		if err := f.zeroMapped(hi, end-hi); err != nil {
			return err
		}
	}
	return v.ops.Punch(lo, hi-lo)
}

// maxBlockEnd is the largest block-aligned file offset.
func maxBlockEnd(bs int64) int64 { return (1<<63 - 1) &^ (bs - 1) }

// zeroMapped writes zeroes over the parts of [off, off+n) that the volume
// maps to written space (holes and unwritten space read as zeroes
// already), reading and rewriting the sectors it covers only in part. The
// caller holds the gate alone; the writes neither pass it nor move the
// size.
func (f *File) zeroMapped(off, n int64) error {
	v := f.vol
	for end := off + n; off < end; {
		m, err := v.mapper.Begin(off, end-off, iomap.OpDirect)
		if err != nil {
			return err
		}
		stop := min(end, m.Offset+m.Length)
		v.mapper.End(off, end-off, stop-off, iomap.OpDirect, &m)
		if m.Type == iomap.Mapped {
			if err := f.zeroRange(off, stop-off); err != nil {
				return err
			}
		}
		off = stop
	}
	return nil
}

// zeroRange writes zeroes over [off, off+n) through the engine, as owned
// I/O (see zeroMapped); a sector the range covers in part is read, patched
// and written back.
func (f *File) zeroRange(off, n int64) error {
	a := f.align.Offset
	end := off + n
	lo, hi := alignUp(off, a), end&^(a-1)
	buf, err := ring.Alloc(int(max(a, min(hi-lo, 1<<20))))
	if err != nil {
		return err
	}
	defer ring.Free(buf)
	patch := func(sec int64) error {
		b := buf[:a]
		if err := f.ownedIO(Read, b, sec); err != nil {
			return err
		}
		clear(b[max(off, sec)-sec : min(end, sec+a)-sec])
		return f.ownedIO(Write, b, sec)
	}
	if lo > hi { // inside one sector
		return patch(hi)
	}
	if off < lo {
		if err := patch(lo - a); err != nil {
			return err
		}
	}
	if hi < end {
		if err := patch(hi); err != nil {
			return err
		}
	}
	clear(buf)
	for pos := lo; pos < hi; {
		l := min(hi-pos, int64(len(buf)))
		if err := f.ownedIO(Write, buf[:l], pos); err != nil {
			return err
		}
		pos += l
	}
	return nil
}

// ownedIO is a synchronous read or write made by the holder of the
// volume's gate: it does not pass the gate, a write does not move the
// size, and a read past the end reads what the map holds there.
func (f *File) ownedIO(op Op, p []byte, off int64) error {
	_, err := f.directIO(context.Background(), op, p, off, 0, true)
	if err != nil && err != io.EOF {
		return err
	}
	return nil
}

// atomicSize is a file size that concurrent write completions raise.
type atomicSize struct{ atomic.Int64 }

// raise sets the size to end if it is larger, and reports whether it did.
func (s *atomicSize) raise(end int64) bool {
	for {
		cur := s.Load()
		if end <= cur {
			return false
		}
		if s.CompareAndSwap(cur, end) {
			return true
		}
	}
}
