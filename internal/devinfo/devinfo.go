// Package devinfo gathers what a database author needs to know about
// direct I/O on one open file or block device: the alignment the kernel
// demands, whether untorn (RWF_ATOMIC) writes are available and how large,
// the block device underneath and its cache, whether RWF_NOWAIT is
// accepted, whether O_DIRECT may silently turn into buffered I/O, and what
// an O_DSYNC write costs.
//
// Gather never fails: a fact it cannot read is recorded as unknown, with
// the reason, rather than guessed. Every fact is a Fact, which carries
// where its value came from (statx, sysfs, an ioctl) or why it is unknown
// (a loop device, FUSE, tmpfs, a btrfs volume on several devices).
//
// Gathering is cheap enough to run at every open: statx, statfs, fcntl,
// one probing read of length 1 past the end of the file and, on btrfs, two
// ioctls. What sysfs says about a device is read once per device per process and
// kept (see Gather).
package devinfo

import (
	"fmt"
	"strings"
)

// Fact is one answer about a file: Value when Known, otherwise the reason
// it could not be told. The zero Fact is unknown for no stated reason.
type Fact[T any] struct {
	// Value is the answer; it means nothing unless Known.
	Value T
	// Known says whether the kernel gave an answer.
	Known bool
	// From says where Value came from ("statx", "sysfs queue/fua") when
	// Known, and why the fact is unknown otherwise.
	From string
}

func known[T any](v T, from string) Fact[T] { return Fact[T]{Value: v, Known: true, From: from} }

func unknown[T any](why string) Fact[T] { return Fact[T]{From: why} }

// Kind is what kind of file the descriptor refers to.
type Kind uint8

// The kinds of file Gather tells apart.
const (
	KindOther Kind = iota
	KindRegular
	KindBlockDevice
)

func (k Kind) String() string {
	switch k {
	case KindRegular:
		return "regular file"
	case KindBlockDevice:
		return "block device"
	}
	return "other"
}

// Untorn is what statx says about untorn (atomic) writes: a direct write
// with RWF_ATOMIC of a power-of-two length in [Min, Max], at an offset
// aligned to its length, in at most MaxSegments iovecs, is written all or
// nothing. Max == 0 means no untorn writes.
type Untorn struct {
	Min, Max uint32
	// MaxOpt is the largest length that the file system does without
	// falling back to a slower software method (0: Max is all there is).
	MaxOpt      uint32
	MaxSegments uint32
}

// Supported reports whether untorn writes of any length are possible.
func (u Untorn) Supported() bool { return u.Max != 0 }

// WriteCache is what a device's queue/write_cache says.
type WriteCache uint8

// The two cache modes the block layer knows.
const (
	// WriteThrough: a completed write is on stable media.
	WriteThrough WriteCache = iota + 1
	// WriteBack: a completed write may sit in a volatile cache until a
	// flush (or a FUA write) makes it durable.
	WriteBack
)

func (w WriteCache) String() string {
	switch w {
	case WriteThrough:
		return "write through"
	case WriteBack:
		return "write back"
	}
	return "unknown"
}

// DSyncCost is what the device does for a direct write with RWF_DSYNC (or
// on an O_DSYNC file) that needs no metadata update, i.e. an overwrite of
// written blocks. Writes that allocate or convert extents also commit the
// file system journal.
type DSyncCost uint8

// The costs a DSync overwrite can have.
const (
	// DSyncFUA: one write with the FUA bit; no cache flush.
	DSyncFUA DSyncCost = iota + 1
	// DSyncWriteFlush: the write, then a flush of the whole device cache.
	DSyncWriteFlush
	// DSyncWriteOnly: the device has no volatile cache; the write is all.
	DSyncWriteOnly
)

func (c DSyncCost) String() string {
	switch c {
	case DSyncFUA:
		return "FUA write"
	case DSyncWriteFlush:
		return "write + cache flush"
	case DSyncWriteOnly:
		return "write only (write-through cache)"
	}
	return "unknown"
}

// Device is the block device that holds a file's data, as sysfs describes
// it. The queue facts are those of the whole disk (Disk), since a
// partition has no queue of its own.
type Device struct {
	Major, Minor uint32
	// Name is the kernel's name for the device ("vda1", "loop0", "dm-0").
	Name string
	// Disk is the whole disk that Name is a partition of, or Name.
	Disk string
	// BackingFile is the file behind a loop device, "" for other devices.
	BackingFile string

	LogicalBlockSize  Fact[uint32]
	PhysicalBlockSize Fact[uint32]
	// MaxIOBytes is the largest request the block layer sends the device
	// (queue/max_sectors_kb); larger I/O is split.
	MaxIOBytes Fact[uint32]
	Rotational Fact[bool]
	WriteCache Fact[WriteCache]
	// FUA says whether the device honours forced-unit-access writes.
	FUA Fact[bool]
	// IOPoll says whether the device has poll queues, so that a ring set
	// up with IORING_SETUP_IOPOLL can poll for its completions.
	IOPoll Fact[bool]
}

// IsLoop reports whether d is a loop device.
func (d Device) IsLoop() bool { return strings.HasPrefix(d.Name, "loop") && d.Major == loopMajor }

// loopMajor is LOOP_MAJOR from include/uapi/linux/major.h.
const loopMajor = 7

// Info is everything Gather found out about direct I/O on one descriptor.
// It is a plain value, safe to copy and to share.
type Info struct {
	Kind Kind
	// Direct says whether the descriptor was opened with O_DIRECT. The
	// other facts describe direct I/O on the file either way.
	Direct bool
	// FSType names the file system ("ext4", "xfs", "btrfs", "tmpfs",
	// "fuse", "overlay", ...), "block device" for a block device, or the
	// statfs magic number in hex for one this package does not name.
	FSType Fact[string]

	// MemAlign is the alignment, in bytes, of user memory for direct I/O.
	MemAlign Fact[uint32]
	// OffsetAlign is the alignment of file offsets and lengths for
	// direct I/O.
	OffsetAlign Fact[uint32]
	// ReadOffsetAlign is the alignment of file offsets and lengths for
	// direct reads, which some file systems relax below OffsetAlign.
	ReadOffsetAlign Fact[uint32]

	// Untorn holds the limits of untorn writes; Untorn.Value.Max == 0
	// means there are none.
	Untorn Fact[Untorn]

	// Device is the single block device under the file; unknown for file
	// systems without one (tmpfs, FUSE, overlay, network file systems)
	// and for btrfs volumes on several devices.
	Device Fact[Device]

	// NoWait says whether the file accepts RWF_NOWAIT (the kernel's
	// FMODE_NOWAIT). Where it does not, io_uring cannot try a request
	// inline and hands every one to an io-wq worker thread.
	NoWait Fact[bool]

	// MayBeBuffered says whether a direct write to this file may silently
	// be done through the page cache: on btrfs files with data checksums,
	// on ext4 files with data journaling and others that statx reports as
	// having no direct I/O support, and on tmpfs, whose files live in the
	// page cache. BufferedAdvice, when set, says how to get real direct
	// I/O.
	MayBeBuffered  Fact[bool]
	BufferedAdvice string

	// DSync is what a DSync overwrite costs on the device.
	DSync Fact[DSyncCost]
}

// String renders the record for a person: one fact per line, labels
// aligned, "unknown (why)" for what could not be told.
func (i Info) String() string {
	var lines [][2]string
	add := func(label, value string) { lines = append(lines, [2]string{label, value}) }

	kind := i.Kind.String()
	if i.Direct {
		kind += ", opened with O_DIRECT"
	} else {
		kind += ", opened without O_DIRECT"
	}
	add("file", kind)
	add("file system", show(i.FSType, func(s string) string { return s }))
	add("memory alignment", withFrom(i.MemAlign, bytesStr))
	add("offset alignment", withFrom(i.OffsetAlign, bytesStr))
	add("read offset alignment", withFrom(i.ReadOffsetAlign, bytesStr))
	add("untorn writes", withFrom(i.Untorn, func(u Untorn) string {
		if !u.Supported() {
			return "none"
		}
		s := fmt.Sprintf("%s to %s", bytesStr(u.Min), bytesStr(u.Max))
		if u.MaxOpt != 0 {
			s += fmt.Sprintf(", fast up to %s", bytesStr(u.MaxOpt))
		}
		return s + fmt.Sprintf(", %d segment%s", u.MaxSegments, plural(u.MaxSegments))
	}))
	if !i.Device.Known {
		add("device", show(i.Device, nil))
	} else {
		d := i.Device.Value
		name := fmt.Sprintf("%s (%d:%d)", d.Name, d.Major, d.Minor)
		if d.Disk != "" && d.Disk != d.Name {
			name += ", partition of " + d.Disk
		}
		if d.BackingFile != "" {
			name += ", backed by " + d.BackingFile
		}
		add("device", name)
		add("logical block size", show(d.LogicalBlockSize, bytesStr))
		add("physical block size", show(d.PhysicalBlockSize, bytesStr))
		add("max I/O size", show(d.MaxIOBytes, bytesStr))
		add("rotational", show(d.Rotational, yesNo))
		add("write cache", show(d.WriteCache, WriteCache.String))
		add("FUA", show(d.FUA, yesNo))
		add("IOPOLL", show(d.IOPoll, yesNo))
	}
	add("NOWAIT", show(i.NoWait, yesNo))
	buffered := show(i.MayBeBuffered, func(b bool) string {
		return yesNo(b) + ": " + i.MayBeBuffered.From
	})
	if i.MayBeBuffered.Known && i.MayBeBuffered.Value && i.BufferedAdvice != "" {
		buffered += "; " + i.BufferedAdvice
	}
	add("may be buffered", buffered)
	add("DSync write", show(i.DSync, DSyncCost.String))

	width := 0
	for _, l := range lines {
		width = max(width, len(l[0]))
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%-*s  %s\n", width+1, l[0]+":", l[1])
	}
	return b.String()
}

// show renders a fact's value with f, or "unknown (why)".
func show[T any](f Fact[T], str func(T) string) string {
	if !f.Known {
		if f.From == "" {
			return "unknown"
		}
		return "unknown (" + f.From + ")"
	}
	return str(f.Value)
}

// withFrom is show with the value's source after it.
func withFrom[T any](f Fact[T], str func(T) string) string {
	s := show(f, str)
	if f.Known && f.From != "" {
		s += " (" + f.From + ")"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func plural(n uint32) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// bytesStr writes a byte count exactly, in the largest binary unit that
// divides it.
func bytesStr(n uint32) string {
	switch {
	case n == 0:
		return "0"
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
