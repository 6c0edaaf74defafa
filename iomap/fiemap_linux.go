//go:build linux

package iomap

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// struct fiemap and struct fiemap_extent from <linux/fiemap.h>; x/sys/unix
// does not define them. TestFiemapABI checks sizes and offsets.
type fiemapHdr struct {
	Start         uint64 // fm_start: first logical byte to map
	Length        uint64 // fm_length
	Flags         uint32 // fm_flags: FIEMAP_FLAG_*
	MappedExtents uint32 // fm_mapped_extents (out)
	ExtentCount   uint32 // fm_extent_count: room in the array after the header
	Reserved      uint32
}

type fiemapExtent struct {
	Logical    uint64 // fe_logical
	Physical   uint64 // fe_physical
	Length     uint64 // fe_length
	Reserved64 [2]uint64
	Flags      uint32 // fe_flags: FIEMAP_EXTENT_*
	Reserved   [3]uint32
}

// fiemapBatch is how many extents one FS_IOC_FIEMAP call returns at most.
const fiemapBatch = 128

type fiemapBuf struct {
	hdr fiemapHdr
	ext [fiemapBatch]fiemapExtent
}

var fiemapPool = sync.Pool{New: func() any { return new(fiemapBuf) }}

// Flags from <linux/fiemap.h>.
const (
	fiemapFlagSync = 0x1 // FIEMAP_FLAG_SYNC: write back dirty data first

	fiemapExtentLast         = 0x1    // last extent of the file
	fiemapExtentUnknown      = 0x2    // location unknown
	fiemapExtentDelalloc     = 0x4    // delayed allocation (also sets UNKNOWN)
	fiemapExtentEncoded      = 0x8    // compressed or otherwise encoded
	fiemapExtentNotAligned   = 0x100  // offsets not block aligned
	fiemapExtentDataInline   = 0x200  // data stored with the metadata
	fiemapExtentDataTail     = 0x400  // packed tail
	fiemapExtentUnwritten    = 0x800  // allocated, reads as zeros
	fiemapExtentMerged       = 0x1000 // merged from several
	fiemapExtentShared       = 0x2000 // shared with other files
	fiemapExtentDataEncrypt  = 0x80   // encrypted
	fiemapExtentInlineOrTail = fiemapExtentDataInline | fiemapExtentDataTail | fiemapExtentNotAligned
)

// fsIocFiemap is FS_IOC_FIEMAP, _IOWR('f', 11, struct fiemap). x/sys/unix
// lacks it; FS_IOC_MEASURE_VERITY is _IOWR('f', 134, 4 bytes) and carries
// this architecture's read|write direction bits, so swap size and number.
const fsIocFiemap = unix.FS_IOC_MEASURE_VERITY - 4<<16 - 134 + uint(unsafe.Sizeof(fiemapHdr{}))<<16 + 11

// fiemapType maps FIEMAP extent flags onto a type and flags.
func fiemapType(fl uint32) (Type, Flags) {
	var f Flags
	if fl&fiemapExtentShared != 0 {
		f |= FlagShared
	}
	switch {
	case fl&fiemapExtentDelalloc != 0:
		return Delalloc, f
	case fl&fiemapExtentInlineOrTail != 0:
		return Inline, f
	case fl&fiemapExtentUnwritten != 0:
		return Unwritten, f
	default: // including UNKNOWN without DELALLOC, ENCODED, ENCRYPTED
		return Mapped, f
	}
}

// NewFileMapper returns a mapper for the regular file open on fd. It reads
// the size with fstat, and probes FIEMAP once, falling back to
// SEEK_DATA/SEEK_HOLE if the file system does not support it.
func NewFileMapper(fd int, opts FileMapperOptions) (*FileMapper, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("iomap: fstat fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("iomap: fd %d is not a regular file (mode %#o; use WholeFile for devices): %w",
			fd, st.Mode, syscall.EINVAL)
	}
	fm := new(FileMapper)
	fm.init(fd, st.Size, int64(st.Blksize), opts)
	if !opts.NoFIEMAP {
		var buf fiemapHdr // ExtentCount 0: count only
		buf.Length = 1
		if err := fiemap(fd, &buf); err != nil {
			if !fiemapUnsupported(err) {
				return nil, fmt.Errorf("iomap: FIEMAP probe on fd %d: %w", fd, err)
			}
			fm.seek.Store(true)
		}
	}
	return fm, nil
}

func fiemap(fd int, hdr *fiemapHdr) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(fsIocFiemap), uintptr(unsafe.Pointer(hdr)))
		if e != unix.EINTR {
			if e != 0 {
				return e
			}
			return nil
		}
	}
}

func fiemapUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS)
}

// scan returns the layout of [ws, we) and possibly more, as contiguous
// spans starting at ws.
func (fm *FileMapper) scan(ws, we int64) ([]ext, error) {
	if !fm.seek.Load() {
		spans, err := fm.scanFIEMAP(ws, we)
		if err == nil || !fiemapUnsupported(err) {
			return spans, err
		}
		fm.seek.Store(true)
	}
	return fm.scanSeek(ws, we)
}

// spanList appends spans, merging neighbours of the same kind.
type spanList []ext

func (l *spanList) add(off, end int64, t Type, f Flags) {
	if end <= off {
		return
	}
	if n := len(*l); n > 0 && (*l)[n-1].end() == off && (*l)[n-1].typ == t && (*l)[n-1].flags == f {
		(*l)[n-1].len = end - (*l)[n-1].off
		return
	}
	*l = append(*l, ext{off: off, len: end - off, typ: t, flags: f})
}

func (fm *FileMapper) scanFIEMAP(ws, we int64) ([]ext, error) {
	buf := fiemapPool.Get().(*fiemapBuf)
	defer fiemapPool.Put(buf)
	var spans spanList
	cur := ws
	flags := uint32(0)
	if fm.sync {
		flags = fiemapFlagSync
	}
	for {
		buf.hdr = fiemapHdr{Start: uint64(cur), Length: uint64(we - cur), Flags: flags, ExtentCount: fiemapBatch}
		if err := fiemap(fm.fd, &buf.hdr); err != nil {
			return nil, fmt.Errorf("iomap: FIEMAP [%d,%d) on fd %d: %w", cur, we, fm.fd, err)
		}
		flags &^= fiemapFlagSync // written back once is enough
		n := int(min(buf.hdr.MappedExtents, fiemapBatch))
		last := false
		for _, e := range buf.ext[:n] {
			lo, hi := int64(e.Logical), int64(e.Logical+e.Length)
			if e.Length == 0 || hi <= cur || lo < 0 || hi < lo {
				continue
			}
			lo = max(lo, cur)
			spans.add(cur, lo, Hole, 0)
			t, f := fiemapType(e.Flags)
			spans.add(lo, hi, t, f)
			cur = hi
			// iomap-based file systems (ext4, xfs) set LAST on the last
			// extent of the range asked for, not of the file: it ends
			// this window, it says nothing about what lies beyond.
			last = last || e.Flags&fiemapExtentLast != 0
		}
		if last || n < fiemapBatch || cur >= we {
			// Everything in [start, we) was returned.
			spans.add(cur, we, Hole, 0)
			return spans, nil
		}
	}
}

func (fm *FileMapper) scanSeek(ws, we int64) ([]ext, error) {
	var spans spanList
	cur := ws
	for cur < we {
		data, err := unix.Seek(fm.fd, cur, unix.SEEK_DATA)
		if err == unix.ENXIO { // no data at or after cur
			spans.add(cur, maxOff, Hole, 0)
			return spans, nil
		}
		if err != nil {
			return nil, fmt.Errorf("iomap: SEEK_DATA %d on fd %d: %w", cur, fm.fd, err)
		}
		spans.add(cur, data, Hole, 0)
		cur = max(cur, data)
		if cur >= we {
			break
		}
		hole, err := unix.Seek(fm.fd, cur, unix.SEEK_HOLE)
		if err == unix.ENXIO { // truncated under us: data ran out
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("iomap: SEEK_HOLE %d on fd %d: %w", cur, fm.fd, err)
		}
		if hole <= cur {
			return nil, fmt.Errorf("iomap: SEEK_HOLE %d on fd %d returned %d: %w", cur, fm.fd, hole, syscall.EIO)
		}
		spans.add(cur, hole, Mapped, 0)
		cur = hole
	}
	return spans, nil
}

func errScan(spans []ext, pos int64) error {
	return fmt.Errorf("iomap: file layout %v does not cover offset %d: %w", spans, pos, syscall.EIO)
}

func (fm *FileMapper) statSize() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fm.fd, &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

// Truncate truncates the file to size (ftruncate) and drops the cached
// layout from the smaller of the old and new size on.
func (fm *FileMapper) Truncate(size int64) error {
	if err := unix.Ftruncate(fm.fd, size); err != nil {
		return fmt.Errorf("iomap: truncate fd %d to %d: %w", fm.fd, size, err)
	}
	old := fm.size.Swap(size)
	fm.invalidate(min(old, size), maxOff)
	return nil
}

// Punch deallocates [off, off+length) (fallocate PUNCH_HOLE|KEEP_SIZE) and
// drops the cached layout of that range.
func (fm *FileMapper) Punch(off, length int64) error {
	if !validRange(off, length) {
		return errRange("FileMapper.Punch", off, length)
	}
	err := unix.Fallocate(fm.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	fm.invalidate(off, off+length) // even on error: part may be punched
	if err != nil {
		return fmt.Errorf("iomap: punch [%d,+%d) in fd %d: %w", off, length, fm.fd, err)
	}
	return nil
}

// Preallocate allocates [off, off+length) (fallocate mode 0: unwritten
// extents where there were holes, the size grows to cover the range) and
// drops the cached layout of that range.
func (fm *FileMapper) Preallocate(off, length int64) error {
	if !validRange(off, length) {
		return errRange("FileMapper.Preallocate", off, length)
	}
	err := unix.Fallocate(fm.fd, 0, off, length)
	fm.invalidate(off, off+length)
	if err != nil {
		return fmt.Errorf("iomap: preallocate [%d,+%d) in fd %d: %w", off, length, fm.fd, err)
	}
	fm.ExtendSize(off + length)
	return nil
}
