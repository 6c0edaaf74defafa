//go:build linux

package dio

import (
	"os"
	"sync"
	"sync/atomic"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/choose"
	"github.com/uringdio/uringdio/internal/devinfo"
	"github.com/uringdio/uringdio/internal/engine"
	"github.com/uringdio/uringdio/internal/ilock"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

// The package's state, in one place, each piece with its owner; the files
// above this one are its layers (file_order_test.go), calling down.

// File is a file opened for direct I/O through an Engine. ReadAt, WriteAt,
// Submit and the other methods are safe for concurrent use; Close waits for
// I/O and descriptor users in flight.
//
// There are two kinds of File. A kernel file (a regular file or block
// device opened without Options.Mapper) is the kernel's: every read and write
// goes to it at the same offset, the kernel maps, allocates, zeroes holes
// and ends reads at its own end of file, and nothing this File remembers
// decides what a read returns. Other handles, other processes and plain
// os.File writers may change the file at any time and every read sees it.
// A mapped file (Options.Mapper) is one whose mapper is the truth: a volume
// behind an iomap.ExtentMap, or a file whose layout the caller promises no
// one else changes (iomap.FileMapper); every File opened over the same
// mapper shares one size and one I/O lock, as handles share an inode.
type File struct {
	// Set at Open, read-only after.
	path   string
	osf    *os.File
	fd     int32
	regIdx int32 // registered-file slot, -1 if none
	eng    *engine.Engine
	pub    *Engine // the Engine the File was given or made (File.Engine)
	ownEng bool
	// The shared state: the inode of a kernel file (ino), or the volume of
	// a mapped file (vol, with its mapper); lock is the one of the two.
	mapper  iomap.Mapper
	vol     *volume
	ino     *inode
	lock    *ioLock
	mode    fileMode
	align   alignment
	maxIO   int64
	backend string // why the file is served the way it is
	targets []int32
	policy  completion.Policy
	hooks   fileHooks
	// Facts gathered at their first use, read-only after.
	caps capsOnce
	// bfd is a descriptor of the file without O_DIRECT, opened at the
	// first partial sector written past the end of file (bounce.go).
	bfd bufferedFd
	// References on the descriptor (acquire, release): requests in flight
	// and calls using it. Close waits for none, as internal/poll's fdMutex
	// does, or, run on the engine's owner, leaves the close to the last
	// reference.
	refs   fileRefs
	closer func() error // finishClose, handed down to release
}

// fileMode is how the File was opened.
type fileMode struct {
	writable bool
	readable bool // opened for reading by the caller
	canRead  bool // the descriptor reads: a read-modify-write works
	blockDev bool
	strict   bool // Options.StrictAlignment
	pread    bool // served by the pread backend
}

// fileHooks are a test's (export_test.go).
type fileHooks struct {
	endIO func(r *Request, n int64, err error) (int64, error) // like iomap_dio_ops.end_io
	sqe   func(*engine.Req, *ring.SQE)                        // sees every SQE
}

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

type capsOnce struct {
	once       sync.Once
	caps       Capabilities
	untornOnce sync.Once
	untorn     devinfo.Untorn
}

type bufferedFd struct {
	fd atomic.Int32 // 0 until opened; written under the lock held exclusive
}

type fileRefs struct {
	closed     atomic.Bool
	n          atomic.Int64
	deferClose atomic.Bool // Close ran on the engine's owner with I/O in flight
	closeDone  atomic.Bool // the descriptor's close has been claimed
}

// alignment is what direct I/O on a file requires: buffer addresses must be
// multiples of Memory, offsets and lengths multiples of Offset.
type alignment struct {
	Memory, Offset int64
	// Source says where the numbers came from: "statx" (STATX_DIOALIGN) or
	// "logical block size" (the device's, when statx lacks DIOALIGN).
	Source string
}

// Request is one direct-I/O operation: a read or write of one or many
// buffers at one file offset. Fill the exported fields and pass it to
// File.Submit; it comes back through its completion policy. A Request may
// be reused once it has completed; the zero Request is ready to fill. The
// Request and its buffers belong to the engine from a successful Submit
// until completion (the Callback has returned, or Wait has): do not touch,
// resubmit or free them before (a Callback may resubmit the request it is
// given). A Request is not safe for concurrent use: one goroutine submits
// it, and Wait or Result are called by the goroutine that owns its
// completion.
type Request struct {
	Op   Op
	Off  int64
	Buf  []byte   // one buffer; or
	Bufs [][]byte // several (vectored), used when Buf is nil
	Len  int64    // Preallocate: the length of the range
	// Flags, Policy and completion targets.
	Flags  Flags
	Policy completion.Policy
	// Callback runs when the request completes: on the reaper (Inline), on
	// a pool worker (Pool), or on the goroutine that polls or waits
	// (Caller, Wait). It must not block waiting for other I/O of the same
	// engine when it runs inline. It may Open and Close files, including
	// its own: run on the engine's owner, a Close of a File with other
	// I/O in flight does not wait for it (File.Close), nor does an
	// Engine's Close.
	Callback func(*Request)
	// Queue receives the request at completion under the Caller policy;
	// its owner runs the completion with Queue.Poll or Queue.Wait.
	Queue *completion.Queue
	// DoneBefore is added to the result (Partial: bytes done by earlier
	// requests of the same logical operation).
	DoneBefore int64
	// Tag is the caller's, untouched by the engine.
	Tag uint64

	// The engine's part (its identity across reuse is x.Gen), and the
	// File it belongs to from Submit to completion: whoever launches it
	// launches it through that File.
	x    engine.Req
	file *File
	// Set by the submitter before the engine has it.
	length int64 // bytes asked for
	want   int64 // bytes to transfer (a mapped file's read ends at its size)
	sizeAt int64 // a mapped file's size at submission; -1 on a kernel file
	owned  bool  // I/O of the lock's exclusive holder (volume.go): no lock, no size change, no EOF clip
	async  bool
	reason completion.Reason
	facts  choose.Facts
	cur    memCursor // walks the buffers while pieces are built
	// submitted is how many bytes the pieces cover, from Off.
	submitted int64
	lk        lockWait
	// Written by IODone (the last reference), read by the completion.
	conv    conversion
	fileDec bool // the File's reference went at IODone (deferred completions)
	n       int64
	err     error
}

// memCursor is where Request.mem last looked.
type memCursor struct{ buf, off int }

// conversion is what a write through the lock converted at IODone.
type conversion struct {
	done bool
	err  error
}

// lockWait is a request's place at its File's I/O lock (lock.go): the
// lock's waiter, and how the request waits. Written by the submitter
// before it enters, then by the lock.
type lockWait struct {
	w        ilock.Waiter[*Request]
	sync     bool // a synchronous caller waits for admission itself
	admitted atomic.Bool
	done     <-chan struct{} // a synchronous caller's context, while queued
}

// ioLock is the I/O lock of an inode or a volume (lock.go says who takes
// it how).
type ioLock = ilock.Lock[*Request]

// An inode is what every File opened on one kernel file in this process
// shares, whatever its engine: the I/O lock. It lives in the process-wide
// table while a File holds it.
type inode struct {
	key  inodeKey
	refs int // under inodes.mu
	gate ioLock
}

type inodeKey struct{ dev, ino uint64 }

// A volume is what every File opened over one mapper shares, as handles
// share an inode: the size, and the I/O lock that orders writes, hole
// punching and truncation. Files find it by their mapper in a process-wide
// table; it lives while one is open.
type volume struct {
	mapper iomap.Mapper
	// ops is set when the mapper is the file system (it allocates: an
	// iomap.ExtentMap): space and size operations act on the map, never on
	// the container. A mapper without them (iomap.FileMapper) describes a
	// kernel file; those operations go to the kernel and the mapper is told.
	ops     volumeMapper
	bs      int64 // the mapper's allocation unit (ops only)
	zeroBS  int64 // bs when it is larger than the I/O alignment: the engine zeroes sub-block ranges
	sizeSet bool  // the size came from Options.Size
	size    atomicSize
	gate    ioLock
	refs    int // under volumes.mu
}

// volumeMapper is a mapper that owns its space.
type volumeMapper interface {
	iomap.Mapper
	BlockSize() int64
	Punch(off, n int64) error
	Preallocate(off, n int64) error
}

// atomicSize is a size that concurrent write completions raise.
type atomicSize struct{ atomic.Int64 }

// raise sets the size to end if it is larger, and reports whether it did.
func (s *atomicSize) raise(end int64) bool {
	for {
		cur := s.Load()
		if end <= cur {
			return false
		}
		if s.CompareAndSwap(cur, end) {
			return true
		}
	}
}
