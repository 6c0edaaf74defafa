package iomap

import (
	"fmt"
	"syscall"
)

// Mapper maps file ranges to extents, like the kernel's iomap_begin and
// iomap_end. Implementations must be safe for concurrent use: several
// requests map at once.
type Mapper interface {
	// Begin returns the mapping covering pos for an operation on
	// [pos, pos+length). The mapping may start before pos and may be shorter
	// or longer than length, but it always contains pos and is never empty.
	// Under OpNoWait or OpOverwriteOnly it may fail with an error wrapping
	// syscall.EAGAIN.
	Begin(pos, length int64, op OpFlags) (Mapping, error)
	// End is told how many bytes of [pos, pos+length) were actually
	// submitted (done <= length); length is the range Begin was asked for,
	// trimmed to the mapping m it returned. End may release what was reserved
	// but not used. m is valid only during the call: End must not keep it.
	End(pos, length, done int64, op OpFlags, m *Mapping) error
}

// IOCompleter is implemented by mappers that must act after the data of a
// write has reached the target: convert unwritten space to mapped, finish a
// copy-on-write, invalidate a cache. The engine calls IOComplete once per
// completed write request over the range that was written, with err == nil
// only for bytes that made it. IOComplete may block.
type IOCompleter interface {
	IOComplete(pos, length int64, op OpFlags, err error) error
}

// errAgain is what mappers return where OpNoWait or OpOverwriteOnly forbid
// the work a mapping would need.
func errAgain(why string, pos int64) error {
	return fmt.Errorf("iomap: %s at offset %d: %w", why, pos, syscall.EAGAIN)
}

// errRange reports a Begin call with a position or length no mapper accepts.
func errRange(fn string, pos, length int64) error {
	return fmt.Errorf("iomap: %s(%d, %d): bad range: %w", fn, pos, length, syscall.EINVAL)
}

// validRange reports whether [pos, pos+length) is a non-empty range of
// non-negative offsets that does not overflow.
func validRange(pos, length int64) bool {
	return pos >= 0 && length > 0 && pos <= maxOff-length
}

// maxOff is the largest file offset; holes beyond the last extent reach it.
const maxOff = 1<<63 - 1
