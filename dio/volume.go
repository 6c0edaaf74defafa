//go:build linux

package dio

import (
	"context"
	"io"
	"math"
	"syscall"

	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// Size and space: Truncate, Allocate, Preallocate and Punch, on a kernel
// file (the kernel's calls) and on a volume (the engine's map).

// spaceOp runs a size or space operation (op: "truncate", "allocate",
// "preallocate", "punch") with the descriptor held and the lock
// exclusive: after the writes in flight on the inode or volume (every
// handle's, every engine's) drain, none of them landing in space freed,
// or moving a size set, under it.
func (f *File) spaceOp(op string, off, n int64) error {
	if !f.acquire() {
		return f.opErr(op, off, n, ErrClosed)
	}
	defer f.release()
	switch {
	case !f.mode.writable:
		return f.opErr(op, off, n, readOnlyErr{})
	case op == "truncate" && off < 0:
		return f.opErr(op, off, n, syscall.EINVAL)
	case op == "truncate" && f.vol != nil && off > f.maxEnd():
		return f.opErr(op, off, n, syscall.EFBIG)
	case op != "truncate" && (off < 0 || n <= 0):
		return f.opErr(op, off, n, syscall.EINVAL)
	case op != "truncate" && off > math.MaxInt64-n:
		return f.opErr(op, off, n, syscall.EFBIG) // as vfs_fallocate says
	}
	if err := f.exclusive(context.Background(), func() error { return f.space(op, off, n) }); err != nil {
		return f.opErr(op, off, n, err)
	}
	return nil
}

// space carries out spaceOp's operation, the lock held: on the map of a
// volume whose mapper owns its space; otherwise on the kernel's file,
// telling a mapper of it (FileMapper) what changed.
func (f *File) space(op string, off, n int64) error {
	if v := f.vol; v != nil && v.ops != nil {
		switch op {
		case "truncate":
			return v.truncate(f, off)
		case "punch":
			return v.punch(f, off, n)
		}
		return v.allocate(off, n, op == "preallocate")
	}
	err := ignoringEINTR(func() error {
		switch op {
		case "truncate":
			return unix.Ftruncate(int(f.fd), off)
		case "allocate":
			return unix.Fallocate(int(f.fd), 0, off, n)
		case "preallocate":
			return unix.Fallocate(int(f.fd), unix.FALLOC_FL_KEEP_SIZE, off, n)
		}
		return unix.Fallocate(int(f.fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	})
	if v := f.vol; v != nil && err == nil {
		switch op {
		case "truncate":
			v.setSize(off)
		case "allocate":
			v.invalidate(off, n)
			v.extendSize(off + n)
		default:
			v.invalidate(off, n)
		}
	}
	return err
}

// truncate sets a volume's size. Shrinking releases the blocks past the new
// end and zeroes the rest of the new last block, so that growing the
// volume again reads zeroes there, as a file system's truncate does.
func (v *volume) truncate(f *File, size int64) error {
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
func (v *volume) allocate(off, n int64, keepSize bool) error {
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
	end := off + n
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
