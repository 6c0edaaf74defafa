package iomap

import "sync/atomic"

// WholeFile maps a file as one Mapped extent over [0, size) on target 0 with
// Addr == Offset, and a Hole beyond size for reads. Writes beyond size are
// Mapped at Addr == pos too: the kernel file system behind target 0
// allocates and zeroes. It suits block devices, fully allocated files, and
// engines that let the kernel do all the mapping.
//
// WholeFile is safe for concurrent use.
type WholeFile struct {
	size atomic.Int64
}

var _ Mapper = (*WholeFile)(nil)

// NewWholeFile returns a WholeFile for a file of size bytes.
func NewWholeFile(size int64) *WholeFile {
	w := new(WholeFile)
	w.size.Store(size)
	return w
}

// Size returns the size the mapper assumes.
func (w *WholeFile) Size() int64 { return w.size.Load() }

// SetSize sets the size the mapper assumes.
func (w *WholeFile) SetSize(size int64) { w.size.Store(size) }

// ExtendSize raises the size to end if it is smaller, and is safe to call
// from concurrent write completions.
func (w *WholeFile) ExtendSize(end int64) {
	for {
		old := w.size.Load()
		if end <= old || w.size.CompareAndSwap(old, end) {
			return
		}
	}
}

// Begin implements [Mapper]. With OpOverwriteOnly a write at or beyond size
// fails with syscall.EAGAIN, since it would extend the file.
func (w *WholeFile) Begin(pos, length int64, op OpFlags) (Mapping, error) {
	if !validRange(pos, length) {
		return Mapping{}, errRange("WholeFile.Begin", pos, length)
	}
	size := max(w.size.Load(), 0)
	if pos < size {
		return Mapping{Offset: 0, Length: size, Type: Mapped, Addr: 0}, nil
	}
	if op&OpWrite == 0 {
		return Mapping{Offset: size, Length: maxOff - size, Type: Hole, Addr: NoAddr}, nil
	}
	if op&OpOverwriteOnly != 0 {
		return Mapping{}, errAgain("overwrite-only write beyond end of file", pos)
	}
	return Mapping{Offset: size, Length: maxOff - size, Type: Mapped, Addr: size}, nil
}

// End implements [Mapper]; WholeFile reserves nothing, so it does nothing.
func (w *WholeFile) End(pos, length, done int64, op OpFlags, m *Mapping) error { return nil }
