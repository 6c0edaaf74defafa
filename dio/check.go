//go:build linux

package dio

import (
	"fmt"
	"math"
	"math/bits"
	"syscall"

	"github.com/uringdio/uringdio/internal/devinfo"
	"golang.org/x/sys/unix"
)

// Inputs are checked once, at the API, the way the kernel checks them,
// before any lock is taken or buffer reserved.

// checkRange checks a read or write of n bytes at off: a negative offset,
// or an end past what an int64 holds, is EINVAL (rw_verify_area); a write
// whose aligned end is past the last aligned offset an int64 holds can
// never be carried out by direct I/O, and is EFBIG, as a write past a file
// system's largest file is. A read whose aligned end lies there reads up
// to it and ends there (bounceRead). Reads need a file opened for reading.
func (f *File) checkRange(op Op, off, n int64) error {
	switch {
	case off < 0 || n < 0 || off > math.MaxInt64-n:
		return syscall.EINVAL
	case op == Read && !f.mode.readable:
		return writeOnlyErr{}
	case op == Write && n > 0 && off+n > f.maxEnd():
		return syscall.EFBIG
	}
	return nil
}

// maxEnd is the end of the last aligned block an int64 offset can reach:
// no direct I/O of the file goes past it.
func (f *File) maxEnd() int64 { return math.MaxInt64 &^ (f.align.Offset - 1) }

// isAligned reports whether a request of p at off can go to the kernel as
// it is.
func (f *File) isAligned(p []byte, off int64) bool {
	a := f.align
	return off%a.Offset == 0 && int64(len(p))%a.Offset == 0 && int64(uintptr(addrOf(p)))%a.Memory == 0
}

// checkAlign checks a request's offset, buffers and lengths against the
// file's direct-I/O alignment.
func (f *File) checkAlign(r *Request) error {
	if r.totalLen() == 0 {
		return nil // nothing reaches the kernel
	}
	a := f.align
	if r.Off%a.Offset != 0 {
		return &alignError{What: "offset", Value: r.Off, Align: a.Offset}
	}
	check := func(b []byte) error {
		if len(b) == 0 {
			return nil
		}
		if p := int64(uintptr(addrOf(b))); p%a.Memory != 0 {
			return &alignError{What: "buffer address", Value: p, Align: a.Memory}
		}
		if int64(len(b))%a.Offset != 0 {
			return &alignError{What: "length", Value: int64(len(b)), Align: a.Offset}
		}
		return nil
	}
	if r.Buf != nil {
		return check(r.Buf)
	}
	for _, b := range r.Bufs {
		if err := check(b); err != nil {
			return err
		}
	}
	return nil
}

// untornLimits returns the file's untorn-write limits (statx
// STATX_WRITE_ATOMIC), read at the first untorn write.
func (f *File) untornLimits() devinfo.Untorn {
	f.caps.untornOnce.Do(func() {
		var sx unix.Statx_t
		if unix.Statx(int(f.fd), "", unix.AT_EMPTY_PATH, unix.STATX_WRITE_ATOMIC, &sx) == nil &&
			sx.Mask&unix.STATX_WRITE_ATOMIC != 0 {
			f.caps.untorn = devinfo.Untorn{Min: sx.Atomic_write_unit_min, Max: sx.Atomic_write_unit_max,
				MaxOpt: sx.Atomic_write_unit_max_opt, MaxSegments: sx.Atomic_write_segments_max}
		}
	})
	return f.caps.untorn
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
