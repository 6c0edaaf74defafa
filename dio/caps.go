//go:build linux

package dio

import (
	"fmt"
	"math/bits"
	"strings"
	"syscall"

	"github.com/uringdio/uringdio/internal/devinfo"
	"golang.org/x/sys/unix"
)

// Capabilities is what direct I/O on a File can do and costs, in one
// place: the alignment the kernel demands (memory, offset, and the read
// offset some file systems relax), untorn-write limits (RWF_ATOMIC: unit
// minimum, maximum, the largest without a slow fallback, segments), the
// block device underneath with its write cache and FUA (what a DSync write
// costs), IOPOLL and NOWAIT support, the file system, whether direct I/O
// may silently become buffered (btrfs files with data checksums: create
// them with chattr +C / NOCOW, or mount with nodatasum), and which of the
// engine's backends serves the file and why. Where the kernel gives no
// answer (a loop device's cache, FUSE, tmpfs, btrfs over several devices)
// a fact is unknown, with the reason, never a guess. The embedded Info's
// facts each say where they came from.
type Capabilities struct {
	devinfo.Info
	// MemAlignment and OffsetAlignment are the alignments the File holds
	// requests to: ReadAt, WriteAt and Submit go to the kernel zero-copy
	// when buffer addresses are multiples of MemAlignment and offsets and
	// lengths multiples of OffsetAlignment. They come from statx
	// (STATX_DIOALIGN), or the device's logical block size where statx
	// lacks them; never unknown.
	MemAlignment, OffsetAlignment int64
	// MaxIOSize is the largest single SQE the engine issues for the file
	// (the device's max_sectors_kb, or 1 MiB if unknown); an untorn write
	// must fit in one.
	MaxIOSize int64
	// Backend is the engine path that serves the file's I/O ("io_uring").
	Backend string
	// BackendWhy says why that path was chosen.
	BackendWhy string
}

// String is the record as a person reads it: one fact per line.
func (c Capabilities) String() string {
	b := c.Backend + " (" + c.BackendWhy + ")"
	if strings.HasPrefix(c.BackendWhy, c.Backend+" ") {
		b = c.BackendWhy // it names the backend itself
	}
	return c.Info.String() + fmt.Sprintf("%-24s%d bytes\n%-24s%s\n", "largest I/O:", c.MaxIOSize, "backend:", b)
}

// Capabilities returns the file's record, gathered at the first call
// (statx, statfs, sysfs facts cached per device) and kept. Safe for
// concurrent use.
func (f *File) Capabilities() (Capabilities, error) {
	if !f.acquire() {
		return Capabilities{}, f.opErr("capabilities", 0, 0, ErrClosed)
	}
	defer f.release()
	f.capsOnce.Do(func() {
		f.caps = Capabilities{Info: devinfo.Gather(int(f.fd)), Backend: "io_uring", BackendWhy: f.backend,
			MemAlignment: f.align.Memory, OffsetAlignment: f.align.Offset, MaxIOSize: f.maxIO}
		if f.pread {
			f.caps.Backend = "pread"
		}
	})
	return f.caps, nil
}

// untornLimits returns the file's untorn-write limits (statx
// STATX_WRITE_ATOMIC), read at the first untorn write.
func (f *File) untornLimits() devinfo.Untorn {
	f.untornOnce.Do(func() {
		var sx unix.Statx_t
		if unix.Statx(int(f.fd), "", unix.AT_EMPTY_PATH, unix.STATX_WRITE_ATOMIC, &sx) == nil &&
			sx.Mask&unix.STATX_WRITE_ATOMIC != 0 {
			f.untorn = devinfo.Untorn{Min: sx.Atomic_write_unit_min, Max: sx.Atomic_write_unit_max,
				MaxOpt: sx.Atomic_write_unit_max_opt, MaxSegments: sx.Atomic_write_segments_max}
		}
	})
	return f.untorn
}

// checkAtomic refuses an untorn write the kernel could tear or refuse: it
// must be one SQE (one buffer, at most the device's largest I/O), of a
// power-of-two length within the file's untorn unit, at an offset aligned
// to its length, on a kernel file.
func (f *File) checkAtomic(r *Request, length int64) error {
	if r.Op != Write {
		return atomicErr("only writes can be untorn")
	}
	if f.vol != nil {
		return unsupported("untorn writes on a mapped file: the mapping may split them")
	}
	u := f.untornLimits()
	if u.Max == 0 {
		return unsupported("untorn writes: the file system reports none for this file (statx STATX_WRITE_ATOMIC)")
	}
	switch {
	case r.Buf == nil && len(r.Bufs) > 1:
		return atomicErr(fmt.Sprintf("%d buffers: an untorn write is one buffer", len(r.Bufs)))
	case bits.OnesCount64(uint64(length)) != 1:
		return atomicErr(fmt.Sprintf("length %d is not a power of two", length))
	case length < int64(u.Min) || length > int64(u.Max):
		return atomicErr(fmt.Sprintf("length %d is outside the file's untorn unit [%d, %d]", length, u.Min, u.Max))
	case r.Off%length != 0:
		return atomicErr(fmt.Sprintf("offset %d is not a multiple of the length %d", r.Off, length))
	case length > f.maxIO:
		return atomicErr(fmt.Sprintf("length %d is more than one SQE (%d)", length, f.maxIO))
	}
	return nil
}

// atomicError says why an untorn write (Atomic) was refused before it was
// submitted. It matches syscall.EINVAL, what the kernel would say.
type atomicError struct{ Why string }

func (e *atomicError) Error() string { return "dio: untorn write refused: " + e.Why }

// Is makes an atomicError match syscall.EINVAL.
func (e *atomicError) Is(target error) bool { return target == syscall.EINVAL }

func atomicErr(why string) error { return &atomicError{Why: why} }
