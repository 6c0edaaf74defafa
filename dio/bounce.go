//go:build linux

package dio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/uringdio/uringdio/internal/engine"

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

// kernelRead is an aligned synchronous read. A file system refuses a
// direct read whose aligned range reaches past its largest file (ext4:
// EINVAL for a block past its last logical block) even where the file
// ends before that block, where a buffered read returns the bytes up to
// the end of file. On EINVAL the read is tried again ending at the file's
// aligned end, if that is shorter: a slow path that only such a range
// takes.
func (f *File) kernelRead(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	n, err := f.directIO(ctx, Read, p, off, fl, false)
	if f.vol != nil || !errors.Is(err, syscall.EINVAL) || errors.Is(err, ErrUnaligned) {
		return n, err
	}
	size, _, serr := f.kernelStatRef()
	end := alignUp(size, f.align.Offset)
	switch {
	case serr != nil || end >= off+int64(len(p)):
		return n, err
	case end <= off:
		return 0, io.EOF
	}
	n, err = f.directIO(ctx, Read, p[:end-off], off, fl, false)
	if err == nil {
		err = io.EOF
	}
	return n, err
}

// bounceRead reads len(p) bytes at off through bounce buffers: the aligned
// range around each piece is read and the bytes asked for copied out.
func (f *File) bounceRead(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	f.eng.C.Bounced.Add(1)
	a := f.align.Offset
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		if pos >= f.maxEnd() {
			return done, io.EOF // no direct read reaches past the last aligned block
		}
		lo := pos &^ (a - 1)
		want := min(int64(len(p)-done), engine.MaxBuffer-(pos-lo), f.maxEnd()-pos)
		hi := alignUp(pos+want, a)
		buf, err := f.eng.Bufs.Get(hi - lo)
		if err != nil {
			return done, f.opErr("read", off, int64(len(p)), err)
		}
		n, err := f.kernelRead(ctx, buf[:hi-lo], lo, fl)
		got := min(max(int64(n)-(pos-lo), 0), want)
		copy(p[done:], buf[pos-lo:pos-lo+got])
		f.eng.Bufs.Put(buf)
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
	if !f.mode.writable {
		return 0, f.opErr("write", off, int64(len(p)), readOnlyErr{})
	}
	if !f.mode.canRead {
		return 0, f.opErr("write", off, int64(len(p)), unsupported(
			"an unaligned write to a write-only file whose permissions refuse reading: it must read the sectors it covers in part (open with O_RDWR, or write aligned)"))
	}
	if !f.acquire() { // Close waits for the write, its buffered descriptor too
		return 0, f.opErr("write", off, int64(len(p)), ErrClosed)
	}
	defer f.release()
	// The buffer before the lock: no one waits for the pool holding it.
	a := f.align.Offset
	buf, err := f.eng.Bufs.Get(min(engine.MaxBuffer, alignUp(off+int64(len(p)), a)-off&^(a-1)))
	if err != nil {
		return 0, f.opErr("write", off, int64(len(p)), err)
	}
	defer f.eng.Bufs.Put(buf)
	hold, err := f.lockExclusive(ctx)
	if err != nil {
		return 0, f.opErr("write", off, int64(len(p)), err)
	}
	defer f.unlockExclusive(hold)
	return f.patchWrite(ctx, buf, p, off, fl)
}

// patchWrite is bounceWrite's work, done with the lock held exclusive.
func (f *File) patchWrite(ctx context.Context, buf, p []byte, off int64, fl Flags) (int, error) {
	f.eng.C.Bounced.Add(1)
	if f.vol == nil {
		return f.patchKernel(ctx, buf, p, off, fl)
	}
	// A volume: its size is the engine's, in memory. A FileMapper's file
	// (no ops) is a kernel file its owner promised no one else changes:
	// a sector written past the end is cut back to the write's end.
	size0 := f.vol.size.Load()
	done, reached, werr := f.rmw(ctx, buf, p, off, fl)
	newSize := size0
	if done > 0 {
		newSize = max(size0, off+int64(done))
	}
	if reached > newSize && f.vol.ops == nil {
		if err := ignoringEINTR(func() error { return unix.Ftruncate(int(f.fd), newSize) }); err != nil && werr == nil {
			werr = err
		}
		if werr == nil && fl&(DSync|Sync) != 0 {
			werr = f.syncFds(fl&Sync == 0) // the new size, durable with the data
		}
	}
	f.vol.extendSize(newSize)
	if werr != nil {
		return done, reframe(werr, "write", off, int64(len(p)))
	}
	return done, nil
}

// patchKernel writes p at off on a kernel file so that no size change is
// ever undone: a partial sector that reaches past the end of file (the
// sector of an extending write's end, or of a write that starts past the
// end) is not read, patched and written whole, which would move the end of
// file to the sector's end and need a truncate back, one that could undo a
// size another handle, process or os.File set meanwhile. Its bytes go
// through a buffered descriptor instead, so that the kernel moves the size
// exactly to the write's end (as os.File would), never down. Everything
// else goes direct: whole sectors, and partial sectors inside the file
// through a read-modify-write.
func (f *File) patchKernel(ctx context.Context, buf, p []byte, off int64, fl Flags) (int, error) {
	size, blk, err := f.kernelStatRef()
	if err != nil {
		return 0, f.opErr("write", off, int64(len(p)), err)
	}
	if patchHook != nil {
		patchHook(f) // a test's: the size is read, nothing written yet
	}
	growing := !f.mode.blockDev // a block device's size does not move
	// A write that starts past the end leaves a gap, which must read as
	// zeroes. Past the old end, the old last block may hold bytes of a
	// write whose size change a crash lost, and ext4's direct write does
	// not zero them (xfs does): zero the rest of that block first, as a
	// buffered write or a truncate would.
	// Where the gap ends at the write's unaligned start, the zeroes go
	// with the write's head (patchParts), in one buffered write;
	// otherwise first, and a write that then fails takes back the size
	// they set.
	zeroed, lead := int64(-1), int64(0)
	gapEnd := min(off, alignUp(size, blk))
	switch {
	case !growing || off <= size || gapEnd <= size:
	case gapEnd == off && off%f.align.Offset != 0:
		lead = off - size
	default:
		if _, err := f.writeBuffered(make([]byte, gapEnd-size), size, fl); err != nil {
			return 0, reframe(err, "write", off, int64(len(p)))
		}
		zeroed = gapEnd
	}
	done, err := f.patchParts(ctx, buf, p, off, size, lead, fl)
	if err != nil && done == 0 && zeroed >= 0 {
		// Nothing written (EFBIG, ENOSPC, ...): take back the size the
		// zeroing moved, unless someone moved it since, as os.File's
		// failed write leaves the size alone.
		if cur, _, serr := f.kernelStatRef(); serr == nil && cur == zeroed {
			ignoringEINTR(func() error { return unix.Ftruncate(int(f.fd), size) })
		}
	}
	return done, err
}

// patchParts is patchKernel's write of p at off, size being the end of
// file before it; lead zeroes go before a head written buffered.
func (f *File) patchParts(ctx context.Context, buf, p []byte, off, size, lead int64, fl Flags) (int, error) {
	a := f.align.Offset
	end := off + int64(len(p))
	growing := !f.mode.blockDev
	lo, hi := off, end
	done := 0
	if off%a != 0 && growing && off&^(a-1)+a > size {
		// The head sector reaches past the end of file.
		headEnd := min(end, alignUp(off, a))
		head := p[:headEnd-off]
		if lead > 0 {
			head = append(make([]byte, lead, lead+int64(len(head))), head...)
		}
		n, err := f.writeBuffered(head, off-lead, fl)
		done += int(max(int64(n)-lead, 0))
		if err != nil {
			return done, f.opErr("write", off, int64(len(p)), err)
		}
		lo = headEnd
	}
	if tail := end &^ (a - 1); end%a != 0 && growing && tail+a > size && tail >= lo {
		hi = tail // the tail sector reaches past the end of file
	}
	if lo < hi {
		n, _, err := f.rmw(ctx, buf, p[lo-off:hi-off], lo, fl)
		done += n
		if err != nil {
			return done, reframe(err, "write", off, int64(len(p)))
		}
	}
	if hi < end {
		n, err := f.writeBuffered(p[hi-off:], hi, fl)
		done += n
		if err != nil {
			return done, f.opErr("write", off, int64(len(p)), err)
		}
	}
	return done, nil
}

// patchHook, set by tests (export_test.go), runs in patchKernel with the
// lock held, once the size is read and before anything is written.
var patchHook func(*File)

// rmw writes p at off through buf (a bounce buffer): the aligned range around it,
// in chunks, with the sectors it covers in part read first and patched.
// It returns the bytes of p written, and the end of the furthest aligned
// write (which may lie past off+len(p)).
func (f *File) rmw(ctx context.Context, buf, p []byte, off int64, fl Flags) (done int, reached int64, err error) {
	a := f.align.Offset
	end := off + int64(len(p))
	for done < len(p) {
		pos := off + int64(done)
		lo := pos &^ (a - 1)
		chunkEnd := lo + min(end-lo, engine.MaxBuffer) // (lo+MaxBuffer may overflow near the last block)
		hi := alignUp(chunkEnd, a)
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
			return done, reached, err
		}
		copy(b[pos-lo:], p[done:done+int(chunkEnd-pos)])
		n, err := f.directIO(ctx, Write, b, lo, fl, true)
		if n > 0 {
			reached = max(reached, lo+int64(n))
		}
		done += int(min(max(int64(n)-(pos-lo), 0), chunkEnd-pos))
		if err != nil {
			return done, reached, err
		}
	}
	return done, reached, nil
}

// writeBuffered writes p at off through the file's buffered descriptor,
// with RWF_DSYNC or RWF_SYNC as fl asks, then writes the pages back and
// drops them: the file keeps no page cache that a direct read would have
// to wait for. The caller holds the lock exclusive.
func (f *File) writeBuffered(p []byte, off int64, fl Flags) (int, error) {
	fd, err := f.bufferedFd()
	if err != nil {
		return 0, err
	}
	var rwf uint32
	switch {
	case fl&Sync != 0:
		rwf = unix.RWF_SYNC
	case fl&DSync != 0:
		rwf = unix.RWF_DSYNC
	}
	done := 0
	for done < len(p) {
		n, err := engine.RW(int32(fd), p[done:], off+int64(done), true, rwf)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return done, err
		case n == 0:
			return done, io.ErrShortWrite
		}
		done += n
	}
	page := int64(os.Getpagesize())
	lo, hi := off&^(page-1), alignUp(off+int64(done), page)
	err = unix.SyncFileRange(fd, lo, hi-lo, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	unix.Fadvise(fd, lo, hi-lo, unix.FADV_DONTNEED)
	return done, err // a writeback error is the write's
}

// bufferedFd returns a descriptor of the file without O_DIRECT, opened at
// its first use (through /proc/self/fd, so it is the same file whatever
// happened to the path) with the File's O_SYNC and O_DSYNC, and closed
// with the File. The caller holds the lock exclusive; an error is not
// kept (EMFILE may pass).
func (f *File) bufferedFd() (int, error) {
	if fd := f.bfd.fd.Load(); fd > 0 {
		return int(fd), nil
	}
	fl, err := unix.FcntlInt(uintptr(f.fd), unix.F_GETFL, 0)
	if err != nil {
		return -1, err
	}
	fl &= unix.O_SYNC | unix.O_DSYNC
	if f.mode.canRead {
		fl |= unix.O_RDWR
	} else {
		fl |= unix.O_WRONLY
	}
	fd, err := unix.Open("/proc/self/fd/"+itoa(int(f.fd)), fl|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("a buffered descriptor for the bytes of a sector past the end of file: %w", err)
	}
	f.bfd.fd.Store(int32(fd))
	return fd, nil
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
	if f.mode.blockDev {
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
