//go:build linux

package dio

// Op says what a Request does.
type Op uint8

// Request operations. Fsync, Fdatasync and Preallocate are fsync(2),
// fdatasync(2) and fallocate(2) with FALLOC_FL_KEEP_SIZE over
// [Off, Off+Len), done asynchronously through the engine like reads and
// writes; they take no buffers and complete with 0 bytes.
const (
	Read Op = iota
	Write
	Fsync
	Fdatasync
	Preallocate
)

func (o Op) String() string {
	switch o {
	case Write:
		return "write"
	case Fsync:
		return "fsync"
	case Fdatasync:
		return "fdatasync"
	case Preallocate:
		return "preallocate"
	}
	return "read"
}

// control reports whether the op moves no data.
func (o Op) control() bool { return o >= Fsync }

// Flags change how a request is carried out (iomap's IOMAP_DIO_* and the
// kiocb flags it looks at).
type Flags uint32

// Request flags.
const (
	// NoWait fails the request with EAGAIN instead of blocking (RWF_NOWAIT
	// on the SQEs, and a mapper that must not block). A write goes out as
	// one SQE per buffer and per MaxIOSize (Capabilities); a NoWait write
	// that needs more than one fails with EAGAIN before anything is
	// submitted, so nothing is ever half done, unless it also has Partial:
	// then every SQE goes out, and the result counts the bytes before the
	// first one that would have blocked (with EAGAIN), so the caller can
	// resume there.
	NoWait Flags = 1 << iota
	// OverwriteOnly fails a write with EAGAIN if it would allocate space or
	// extend the file.
	OverwriteOnly
	// Partial submits what could be mapped when the mapper fails part way
	// (instead of nothing), lets a NoWait write span several SQEs, and
	// counts DoneBefore in the result, so a caller can resume where a
	// request stopped.
	Partial
	// DSync makes the data durable before completion: RWF_DSYNC on every
	// SQE when every extent is a pure overwrite (write-through), otherwise
	// an fdatasync on the pool after the data is in.
	DSync
	// Sync is DSync plus metadata: fsync after the data is in.
	Sync
	// Atomic makes a write untorn (RWF_ATOMIC): after a crash the range
	// holds all of it or none of it. The write must be one buffer, of a
	// power-of-two length within the file's untorn unit
	// (Capabilities().Untorn), at an offset aligned to its length, and
	// aligned to the file's direct-I/O alignment; otherwise it is refused
	// before anything is submitted (an error that says why and matches
	// syscall.EINVAL, or ErrUnsupported where
	// the file has no untorn writes).
	Atomic
)
