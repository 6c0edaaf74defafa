package iomap

import (
	"fmt"
	"strconv"
	"strings"
)

// Type says what backs a range of a file.
type Type uint8

const (
	// Hole has no storage: reads return zeros, and a write has to allocate.
	Hole Type = iota
	// Mapped has data on Mapping.Target at Mapping.Addr.
	Mapped
	// Unwritten is allocated on Target but reads as zeros; a write into it
	// must convert it to Mapped once the data has reached the target
	// (see [IOCompleter]).
	Unwritten
	// Inline keeps the data in Mapping.Data rather than on a target. A nil
	// Data means the bytes are packed into metadata the mapper cannot hand
	// out (a FIEMAP "inline" or "not aligned" extent): read and write that
	// range through the page cache.
	Inline
	// Delalloc is dirty page-cache data whose space is not allocated yet.
	// Direct I/O refuses it.
	Delalloc

	numTypes
)

var typeNames = [numTypes]string{"hole", "mapped", "unwritten", "inline", "delalloc"}

// String returns the lower-case name of t ("hole", "mapped", ...), or
// "Type(n)" for a value outside the known types.
func (t Type) String() string {
	if t < numTypes {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// Flags qualify a Mapping.
type Flags uint16

const (
	// FlagNew marks space freshly allocated for this write: the parts of its
	// first and last blocks that the write does not cover must be zeroed.
	FlagNew Flags = 1 << iota
	// FlagShared marks an extent shared with a clone: a write must go to
	// fresh space (the mapper returns that space with FlagShared|FlagNew).
	FlagShared
	// FlagDirty marks metadata that is not durable yet: a DSYNC write needs a
	// sync after the data, write-through alone is not enough.
	FlagDirty
	// FlagStale tells [Iter] that the mapping went stale while it was used:
	// Iter maps the same position again even though nothing advanced.
	FlagStale

	// FlagPrivateShift is the first bit free for library-private flags:
	// bits from Flags(1)<<FlagPrivateShift up are never used by this package.
	FlagPrivateShift = 8
)

var flagNames = [...]string{"new", "shared", "dirty", "stale"}

// String returns the set flags joined by "|" ("new|shared"), "none" for no
// flags, and any other bits (private flags) in hex ("new|0x100").
func (f Flags) String() string {
	if f == 0 {
		return "none"
	}
	var b strings.Builder
	for i, name := range flagNames {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(name)
			f &^= 1 << i
		}
	}
	if f != 0 {
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		fmt.Fprintf(&b, "%#x", uint16(f))
	}
	return b.String()
}

// OpFlags describe the operation a mapping is asked for.
type OpFlags uint32

const (
	// OpWrite asks for a write mapping; without it the mapping is for a read.
	OpWrite OpFlags = 1 << iota
	// OpNoWait asks the mapper not to block: it returns an error wrapping
	// syscall.EAGAIN where it would have to (read metadata, allocate).
	OpNoWait
	// OpOverwriteOnly asks for a pure overwrite: a write that would allocate,
	// convert unwritten space, copy a shared extent or extend the file fails
	// with an error wrapping syscall.EAGAIN instead.
	OpOverwriteOnly
	// OpDirect marks direct I/O (the engine sets it; mappers may ignore it).
	OpDirect
)

var opNames = [...]string{"write", "nowait", "overwrite-only", "direct"}

// String returns "read" or "write" followed by the other flags joined by
// "|" ("write|nowait|direct").
func (o OpFlags) String() string {
	var b strings.Builder
	if o&OpWrite != 0 {
		b.WriteString("write")
	} else {
		b.WriteString("read")
	}
	for i := 1; i < len(opNames); i++ {
		if o&(1<<i) != 0 {
			b.WriteByte('|')
			b.WriteString(opNames[i])
		}
	}
	if rest := o &^ (1<<len(opNames) - 1); rest != 0 {
		fmt.Fprintf(&b, "|%#x", uint32(rest))
	}
	return b.String()
}

// NoAddr is Mapping.Addr for mappings without an address on a target:
// Hole, Delalloc and Inline.
const NoAddr int64 = -1

// Mapping describes one extent of a file: the range [Offset, Offset+Length)
// and what backs it. A Mapping is a plain value; Data, when set, is owned by
// the mapper and must be treated as read-only.
type Mapping struct {
	// Offset is the file offset where the mapping starts. A mapper may return
	// a mapping that starts before the position it was asked for.
	Offset int64
	// Length is the number of bytes mapped, always > 0.
	Length int64
	Type   Type
	Flags  Flags
	// Target indexes the engine's target table; 0 is the file itself.
	Target int
	// Addr is the byte address on Target that corresponds to Offset, or
	// NoAddr for Hole, Delalloc and Inline.
	Addr int64
	// BlockSize is the allocation unit on Target that sub-block zeroing of
	// FlagNew and Unwritten writes rounds to. 0 means the target (a kernel
	// file system) zeroes on its own.
	BlockSize int64
	// Data holds the bytes of [Offset, Offset+len(Data)) for Inline
	// mappings; nil means "go through the page cache".
	Data []byte
}

// End returns the file offset just past the mapping.
func (m Mapping) End() int64 { return m.Offset + m.Length }

// AddrAt returns the address on Target of file offset pos, which must lie
// inside the mapping, or NoAddr if the mapping has no address.
func (m Mapping) AddrAt(pos int64) int64 {
	if m.Addr == NoAddr {
		return NoAddr
	}
	return m.Addr + (pos - m.Offset)
}

// String formats the mapping for logs and test failures, for example
// "mapped [0,4096) flags=new target=0 addr=8192".
func (m Mapping) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v [%d,%d) flags=%v target=%d", m.Type, m.Offset, m.End(), m.Flags, m.Target)
	if m.Addr == NoAddr {
		b.WriteString(" addr=none")
	} else {
		fmt.Fprintf(&b, " addr=%d", m.Addr)
	}
	if m.BlockSize != 0 {
		fmt.Fprintf(&b, " bs=%d", m.BlockSize)
	}
	if m.Data != nil {
		fmt.Fprintf(&b, " data=%dB", len(m.Data))
	}
	return b.String()
}
