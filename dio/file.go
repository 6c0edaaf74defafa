//go:build linux

package dio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/devinfo"
	"github.com/uringdio/uringdio/internal/durability"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

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
// mapper shares one size and one write gate, as handles share an inode.
type File struct {
	path     string
	f        *os.File
	fd       int32
	regIdx   int32 // registered-file slot, -1 if none
	eng      *Engine
	ownEng   bool
	mapper   iomap.Mapper // nil for a kernel file
	vol      *volume      // shared state of a mapped file; nil for a kernel file
	ino      *inode       // shared state of a kernel file; nil for a mapped file
	strict   bool         // Options.StrictAlignment: unaligned requests fail
	pread    bool         // served by the pread backend (pread.go)
	backend  string       // why the file is served the way it is
	targets  []int32      // fd per target; 0 is the file
	writable bool
	readable bool // opened for reading by the caller (ReadAt, Submit of a Read)
	canRead  bool // the descriptor reads: an unaligned write's read-modify-write works
	blockDev bool
	align    alignment
	maxIO    int64
	policy   completion.Policy
	endIO    func(r *Request, n int64, err error) (int64, error) // a test's end-of-I/O hook, like iomap_dio_ops.end_io
	hook     func(r *Request, sqe *ring.SQE)                     // a test's hook that sees (and may change) every SQE

	capsOnce   sync.Once
	caps       Capabilities
	untornOnce sync.Once
	untorn     devinfo.Untorn

	// bfd is a descriptor of the file without O_DIRECT, for the bytes of
	// a partial sector past the end of file (bounce.go); 0 until opened.
	bfdOnce sync.Once
	bfd     atomic.Int32
	bfdErr  error

	closed atomic.Bool
	// inflight counts references on the descriptor: requests in flight and
	// calls that use the fd (Sync, Truncate, ...). Close waits for it to
	// drop to zero before it closes the fd, as internal/poll's fdMutex does;
	// a Close that must not wait (deferClose) leaves the closing to
	// whoever drops the last reference (release).
	inflight   atomic.Int64
	deferClose atomic.Bool // Close ran on the engine's owner with I/O in flight
	closeDone  atomic.Bool // the descriptor's close has been claimed
}

// alignment is what direct I/O on a file requires: buffer addresses must be
// multiples of Memory, offsets and lengths multiples of Offset.
type alignment struct {
	Memory int64
	Offset int64
	// Source says where the numbers came from: "statx" (STATX_DIOALIGN) or
	// "logical block size" (the device's, when statx lacks DIOALIGN).
	Source string
}

// Open opens path with O_DIRECT (added to flag) for I/O through an
// engine, as os.OpenFile opens it. A nil o means the defaults (Options).
// Open keeps nothing of o but its values.
//
// O_APPEND is refused (EINVAL): Linux writes every write of such a file at
// its end, whatever offset WriteAt names (os.File.WriteAt refuses them
// too); append with File.Appender instead. A file opened O_WRONLY is
// opened for reading and writing underneath where its permissions allow,
// so that an unaligned write can read the sectors it covers in part; its
// reads still fail (EBADF) as the caller asked.
func Open(path string, flag int, perm os.FileMode, o *Options) (*File, error) {
	c := fileConfig(o)
	if c.sizeSet && c.mapper == nil {
		return nil, &OpError{Op: "open", Path: path, Err: fmt.Errorf("Options.Size needs Options.Mapper: a kernel file's size is the kernel's: %w", syscall.EINVAL)}
	}
	if flag&os.O_APPEND != 0 {
		return nil, &OpError{Op: "open", Path: path, Err: fmt.Errorf("O_APPEND: Linux would write every WriteAt at the end of the file, whatever its offset; use File.Appender: %w", syscall.EINVAL)}
	}
	osf, canRead, err := openFile(path, flag, perm)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the OpError names the op and the path
		}
		return nil, &OpError{Op: "open", Path: path, Err: err}
	}
	f := &File{
		path:     path,
		f:        osf,
		fd:       int32(osf.Fd()),
		regIdx:   -1,
		mapper:   c.mapper,
		writable: flag&(os.O_WRONLY|os.O_RDWR) != 0,
		readable: flag&os.O_WRONLY == 0,
		canRead:  canRead,
		policy:   c.policy,
		endIO:    c.endIO,
		hook:     c.submitHook,
		strict:   c.strict,
	}
	fail := func(op string, err error) (*File, error) {
		if f.vol != nil {
			f.vol.release()
		}
		if f.ino != nil {
			f.ino.release()
		}
		osf.Close()
		if f.ownEng && f.eng != nil {
			f.eng.Close()
		}
		return nil, &OpError{Op: op, Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.fd), &st); err != nil {
		return fail("stat", err)
	}
	f.blockDev = st.Mode&unix.S_IFMT == unix.S_IFBLK
	if f.align, err = dioAlignment(int(f.fd), &st); err != nil {
		return fail("alignment", err)
	}
	f.maxIO = maxIOSize(&st)
	f.targets = append(f.targets, f.fd)
	for _, t := range c.targets {
		f.targets = append(f.targets, int32(t.Fd()))
	}
	if f.mapper != nil {
		size := st.Size
		if f.blockDev {
			if size, err = unix.Seek(int(f.fd), 0, io.SeekEnd); err != nil {
				return fail("size", err)
			}
		}
		if f.vol, err = openVolume(f.mapper, size, &c, f.align.Offset); err != nil {
			return fail("open", err)
		}
	} else {
		f.ino = openInode(&st)
	}
	switch {
	case c.engine != nil && c.engineSet:
		return fail("open", fmt.Errorf("Options.EngineOptions given with Options.Engine: they configure a new engine: %w", syscall.EINVAL))
	case c.engine != nil:
		f.eng = c.engine
	case c.engineSet:
		// Engine options: an engine of the File's own, closed with it.
		if f.eng, err = newEngine(&c); err != nil {
			return fail("engine", err)
		}
		f.ownEng = true
	default:
		if f.eng, err = defaultEng(); err != nil {
			return fail("engine", err)
		}
	}
	if f.eng.iopoll {
		if err := checkPolled(int(f.fd)); err != nil {
			return fail("open", err)
		}
	}
	f.pread, f.backend = f.eng.chooseBackend(int(f.fd), &st)
	if f.regIdx, err = f.eng.registerFile(f.fd); err != nil {
		return fail("register file", err)
	}
	return f, nil
}

// openFile opens path for direct I/O. A write-only open becomes a
// read-write one where the file's permissions allow (canRead reports
// whether the descriptor reads).
func openFile(path string, flag int, perm os.FileMode) (f *os.File, canRead bool, err error) {
	flag |= syscall.O_DIRECT | syscall.O_CLOEXEC
	if flag&os.O_WRONLY != 0 {
		rw := flag&^os.O_WRONLY | os.O_RDWR
		if f, err = os.OpenFile(path, rw, perm); err == nil {
			return f, true, nil
		}
		if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EROFS) {
			return nil, false, err
		}
		f, err = os.OpenFile(path, flag, perm)
		return f, false, err
	}
	f, err = os.OpenFile(path, flag, perm)
	return f, true, err
}

// Name returns the path the file was opened with.
func (f *File) Name() string { return f.path }

// SyscallConn returns a raw connection whose Control runs its function
// with the descriptor held open: a concurrent Close waits for it.
func (f *File) SyscallConn() (syscall.RawConn, error) {
	if f.closed.Load() {
		return nil, f.opErr("syscallconn", 0, 0, ErrClosed)
	}
	return rawConn{f}, nil
}

type rawConn struct{ f *File }

func (c rawConn) Control(fn func(fd uintptr)) error {
	if !c.f.acquire() {
		return c.f.opErr("control", 0, 0, ErrClosed)
	}
	defer c.f.release()
	fn(uintptr(c.f.fd))
	return nil
}

func (c rawConn) Read(func(fd uintptr) bool) error {
	return c.f.opErr("read", 0, 0, unsupported("RawConn.Read on a regular file"))
}

func (c rawConn) Write(func(fd uintptr) bool) error {
	return c.f.opErr("write", 0, 0, unsupported("RawConn.Write on a regular file"))
}

// acquire takes a reference on the descriptor for one operation; it fails
// if the File is closed. The reference is taken before the closed check:
// Close either sees it and waits, or acquire sees closed and backs out.
func (f *File) acquire() bool {
	f.inflight.Add(1)
	if f.closed.Load() {
		f.release()
		return false
	}
	return true
}

// release drops a reference taken by acquire or by a request. The last
// one closes the descriptor if a Close left that to it (deferClose).
func (f *File) release() {
	if f.inflight.Add(-1) == 0 && f.deferClose.Load() {
		f.closeDeferred()
	}
}

func (f *File) opErr(op string, off, n int64, err error) error {
	return &OpError{Op: op, Path: f.path, Off: off, Len: n, Err: err}
}

// Engine returns the engine the file submits to (for its Stats and
// FixedBuffers); the File's own engine is closed with the File.
func (f *File) Engine() *Engine { return f.eng }

// Size returns the file's size. For a kernel file it is the kernel's, asked
// at each call (fstat; the device's size for a block device), so it sees
// what other handles and processes did. For a mapped file it is the size
// every File over the mapper shares: set at the first Open (Options.Size, or
// the file's size), moved by writes that end past it and by Truncate and
// Allocate.
func (f *File) Size() (int64, error) {
	if f.vol != nil {
		if f.closed.Load() {
			return 0, f.opErr("size", 0, 0, ErrClosed)
		}
		return f.vol.size.Load(), nil
	}
	if !f.acquire() {
		return 0, f.opErr("size", 0, 0, ErrClosed)
	}
	defer f.release()
	n, err := f.kernelSize()
	if err != nil {
		return 0, f.opErr("size", 0, 0, err)
	}
	return n, nil
}

// kernelSize asks the kernel for the file's size. The caller holds a
// reference.
func (f *File) kernelSize() (int64, error) {
	if f.blockDev {
		return unix.Seek(int(f.fd), 0, io.SeekEnd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.fd), &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

// ReadAt reads len(p) bytes at off into p (io.ReaderAt): a read that stops
// at end of file returns the bytes read and io.EOF. Any offset, length and
// memory: a read aligned to the file's direct-I/O alignment (Capabilities)
// goes to the kernel zero-copy, any other through a bounce buffer (or
// fails with ErrUnaligned under Options.StrictAlignment). p is the
// File's until ReadAt returns. Safe for concurrent use.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.syncIO(context.Background(), Read, p, off, 0)
}

// WriteAt writes p at off (io.WriterAt), any offset, length and memory. A
// write that starts past the end of the file leaves zeroes in the gap, as
// os.File does: it first zeroes the rest of the old last block, where ext4
// may keep bytes of a write whose size change a crash lost (an
// asynchronous Submit does not: it goes to the kernel as it is). p is the
// File's until WriteAt returns. Safe for concurrent use.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	return f.syncIO(context.Background(), Write, p, off, 0)
}

// ReadAtContext is ReadAt with a context and request flags. If ctx ends
// first, the read is cancelled and the call still waits until the kernel
// has let go of p; p is the caller's again when it returns.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	return f.syncIO(ctx, Read, p, off, fl)
}

// WriteAtContext is WriteAt with a context and request flags (DSync, ...).
// If ctx ends first, the write is cancelled (some of it may be written)
// and the call still waits until the kernel has let go of p; p is the
// caller's again when it returns.
func (f *File) WriteAtContext(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	return f.syncIO(ctx, Write, p, off, fl)
}

func (f *File) syncIO(ctx context.Context, op Op, p []byte, off int64, fl Flags) (int, error) {
	if err := f.checkRange(op, off, int64(len(p))); err != nil {
		return 0, f.opErr(op.String(), off, int64(len(p)), err)
	}
	if !f.strict && fl&Atomic == 0 && len(p) > 0 {
		switch {
		case !f.isAligned(p, off) && op == Read:
			return f.bounceRead(ctx, p, off, fl)
		case !f.isAligned(p, off) || op == Write && f.gapWrite(off):
			return f.bounceWrite(ctx, p, off, fl)
		}
	}
	if op == Read {
		return f.kernelRead(ctx, p, off, fl)
	}
	return f.directIO(ctx, op, p, off, fl, false)
}

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

// checkRange checks a read or write of n bytes at off the way the kernel
// does before any lock is taken or buffer reserved: a negative offset, or
// an end past what an int64 holds, is EINVAL (rw_verify_area); a write
// whose aligned end is past the last aligned offset an int64 holds can
// never be carried out by direct I/O, and is EFBIG, as a write past a file
// system's largest file is. A read whose aligned end lies there reads up
// to it and ends there (bounceRead). Reads need a file opened for reading.
func (f *File) checkRange(op Op, off, n int64) error {
	switch {
	case off < 0 || n < 0 || off > math.MaxInt64-n:
		return syscall.EINVAL
	case op == Read && !f.readable:
		return writeOnlyErr{}
	case op == Write && n > 0 && off+n > f.maxEnd():
		return syscall.EFBIG
	}
	return nil
}

// maxEnd is the end of the last aligned block an int64 offset can reach:
// no direct I/O of the file goes past it.
func (f *File) maxEnd() int64 { return math.MaxInt64 &^ (f.align.Offset - 1) }

// gapWrite reports whether a write at off on a kernel file starts past the
// end of the file, inside or after an old last block that holds bytes past
// the end: such a write goes the way of an unaligned one, which zeroes
// them first (see patchWrite). It costs an fstat per write.
func (f *File) gapWrite(off int64) bool {
	if f.vol != nil || f.blockDev {
		return false
	}
	size, blk, err := f.kernelStatRef()
	return err == nil && off > size && size%blk != 0
}

// directIO is a synchronous request of aligned memory at an aligned
// offset: the kernel reads into or writes from p itself. owned marks the
// I/O of the gate's holder (see exclusive).
func (f *File) directIO(ctx context.Context, op Op, p []byte, off int64, fl Flags, owned bool) (int, error) {
	e := f.eng
	r := e.getReq()
	r.Op, r.Off, r.Buf, r.Flags = op, off, p, fl
	r.owned = owned
	r.gateDone = ctx.Done()
	err := f.start(r, true)
	r.gateDone = nil
	if err != nil {
		e.putReq(r)
		return 0, err
	}
	e.await(r, ctx.Done())
	n, err := int(r.n), r.err
	e.putReq(r)
	return n, err
}

// Submit starts an asynchronous request. An error means nothing was
// submitted (closed file, bad alignment, ...) and r is the caller's again.
// Otherwise r and its buffers are the engine's until r completes through
// its policy (EffectivePolicy, set when Submit returns): its Callback, its
// Queue, or r.Wait; never on the stack of this call, so a callback that
// submits again runs in constant stack whatever the chain's length. Safe
// for concurrent use with other requests; one Request is submitted by one
// goroutine at a time.
func (f *File) Submit(r *Request) error {
	if r.wake == nil {
		r.wake = make(chan struct{}, 1)
	}
	// Idle, complete, or in its own callback (stateResult): the callback
	// may resubmit the request it was given.
	if s := r.state.Load(); s != stateIdle && s != stateComplete && s != stateResult {
		return &OpError{Op: r.Op.String(), Path: f.path, Off: r.Off, Err: errors.New("request resubmitted while in flight")}
	}
	switch {
	case r.Op == Read || r.Op == Write:
		if err := f.checkRange(r.Op, r.Off, r.totalLen()); err != nil {
			return f.opErr(r.Op.String(), r.Off, r.totalLen(), err)
		}
	case r.Op == Preallocate && r.Len > 0 && r.Off > math.MaxInt64-r.Len:
		return f.opErr(r.Op.String(), r.Off, r.Len, syscall.EFBIG)
	case r.Op > Preallocate:
		return f.opErr(r.Op.String(), r.Off, 0, fmt.Errorf("unknown Op %d: %w", r.Op, syscall.EINVAL))
	}
	return f.start(r, false)
}

// Close waits for this file's I/O in flight and for calls using its
// descriptor, then closes it (and its engine, unless shared). Calls after
// Close begins fail with ErrClosed.
//
// Called from a callback that runs on the engine's owner (Inline) while
// other I/O of the file is in flight, Close cannot wait: that I/O
// completes only on the owner, which is running the callback. It refuses
// new I/O at once, returns nil, and the descriptor is closed when the last
// of that I/O completes (an error of that close is not reported).
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return f.opErr("close", 0, 0, ErrClosed)
	}
	if f.inflight.Load() != 0 && f.eng.onOwnerThread() {
		f.deferClose.Store(true)
		if f.inflight.Load() == 0 {
			f.closeDeferred() // the last reference went before it could see deferClose
		}
		return nil
	}
	waitUntil(func() bool { return f.inflight.Load() == 0 })
	if !f.closeDone.CompareAndSwap(false, true) {
		return nil
	}
	if err := f.finishClose(); err != nil {
		return f.opErr("close", 0, 0, err)
	}
	return nil
}

// closeDeferred closes the descriptor for a Close that could not wait,
// once: off the owner, so that unregistering the file and closing an
// engine of the file's own can wait for it.
func (f *File) closeDeferred() {
	if f.closeDone.CompareAndSwap(false, true) {
		go f.finishClose()
	}
}

// finishClose gives up what the File holds once nothing uses its
// descriptor.
func (f *File) finishClose() error {
	f.eng.unregisterFile(f.regIdx)
	if f.vol != nil {
		f.vol.release()
	}
	if f.ino != nil {
		f.ino.release()
	}
	var err error
	if f.ownEng {
		err = f.eng.Close()
	}
	if fd := f.bfd.Load(); fd > 0 {
		unix.Close(int(fd))
	}
	if cerr := f.f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// Sync flushes data and metadata (fsync) of every target.
func (f *File) Sync() error { return f.syncTargets("sync", false) }

// Datasync flushes data and the metadata needed to read it (fdatasync).
func (f *File) Datasync() error { return f.syncTargets("datasync", true) }

func (f *File) syncTargets(op string, data bool) error {
	if !f.acquire() {
		return f.opErr(op, 0, 0, ErrClosed)
	}
	defer f.release()
	if err := f.syncFds(data); err != nil {
		return f.opErr(op, 0, 0, err)
	}
	return nil
}

// syncFds fsyncs (or fdatasyncs) every target. The caller holds a
// reference.
func (f *File) syncFds(data bool) error {
	if durability.SkipSync.Load() {
		return nil // a power-loss test's counter-check: lie
	}
	for _, fd := range f.targets {
		var err error
		if data {
			err = ignoringEINTR(func() error { return unix.Fdatasync(int(fd)) })
		} else {
			err = ignoringEINTR(func() error { return unix.Fsync(int(fd)) })
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Truncate changes the file's size. On a kernel file it is ftruncate. On a
// volume it acts on the map: the blocks past the new end are released and
// the part of the last block past it zeroed, so that growing the file again
// reads zeroes there.
func (f *File) Truncate(size int64) error {
	if size < 0 {
		return f.opErr("truncate", size, 0, syscall.EINVAL)
	}
	return f.fileOp("truncate", size, 0, func() error {
		if f.vol != nil {
			return f.vol.truncate(f, size)
		}
		return ignoringEINTR(func() error { return unix.Ftruncate(int(f.fd), size) })
	})
}

// Allocate allocates [off, off+n) and grows the file to off+n if it is
// smaller (fallocate mode 0): the new space reads as zeroes.
func (f *File) Allocate(off, n int64) error {
	return f.fileOp("allocate", off, n, func() error {
		if f.vol != nil {
			return f.vol.allocate(f, off, n, false)
		}
		return ignoringEINTR(func() error { return unix.Fallocate(int(f.fd), 0, off, n) })
	})
}

// Preallocate reserves space for [off, off+n) without changing the size
// (fallocate FALLOC_FL_KEEP_SIZE): what databases call preallocation, so
// that later writes into the range do not allocate (and, for a write-ahead
// log, do not grow the file one write at a time).
func (f *File) Preallocate(off, n int64) error {
	return f.fileOp("preallocate", off, n, func() error {
		if f.vol != nil {
			return f.vol.allocate(f, off, n, true)
		}
		return ignoringEINTR(func() error { return unix.Fallocate(int(f.fd), unix.FALLOC_FL_KEEP_SIZE, off, n) })
	})
}

// Punch deallocates [off, off+n), keeping the size: the range reads as
// zeroes.
func (f *File) Punch(off, n int64) error {
	return f.fileOp("punch", off, n, func() error {
		if f.vol != nil {
			return f.vol.punch(f, off, n)
		}
		return ignoringEINTR(func() error {
			return unix.Fallocate(int(f.fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		})
	})
}

// fileOp runs a size or space operation with the descriptor held.
func (f *File) fileOp(op string, off, n int64, fn func() error) error {
	if !f.acquire() {
		return f.opErr(op, off, n, ErrClosed)
	}
	defer f.release()
	if !f.writable {
		return f.opErr(op, off, n, readOnlyErr{})
	}
	if op != "truncate" && (off < 0 || n <= 0) {
		return f.opErr(op, off, n, syscall.EINVAL)
	}
	if op != "truncate" && off > math.MaxInt64-n {
		return f.opErr(op, off, n, syscall.EFBIG) // as vfs_fallocate says
	}
	if op == "truncate" && f.vol != nil && off > f.maxEnd() {
		return f.opErr(op, off, n, syscall.EFBIG)
	}
	// A size or space change runs alone, after the writes in flight on
	// the inode (every handle's, every engine's) drain: none of them
	// lands in space freed, or moves a size set, under it.
	if err := f.exclusive(context.Background(), fn); err != nil {
		return f.opErr(op, off, n, err)
	}
	return nil
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != syscall.EINTR {
			return err
		}
	}
}

// dioAlignment asks statx for STATX_DIOALIGN and falls back to the logical
// block size of the file's device.
func dioAlignment(fd int, st *unix.Stat_t) (alignment, error) {
	var sx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx)
	if err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 {
		if sx.Dio_mem_align == 0 {
			return alignment{}, unsupported("the filesystem does not support O_DIRECT on this file (statx DIOALIGN is 0)")
		}
		return alignment{Memory: int64(sx.Dio_mem_align), Offset: int64(sx.Dio_offset_align), Source: "statx"}, nil
	}
	lbs := int64(512)
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	if v, ok := sysfsInt(dev, "queue/logical_block_size"); ok && v > 0 {
		lbs = v
	}
	return alignment{Memory: lbs, Offset: lbs, Source: "logical block size"}, nil
}

// maxIOSize reads the device's max_sectors_kb; 1 MiB if unknown.
func maxIOSize(st *unix.Stat_t) int64 {
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	if v, ok := maxIOByDev.Load(dev); ok {
		return v.(int64)
	}
	n := int64(1 << 20)
	if kb, ok := sysfsInt(dev, "queue/max_sectors_kb"); ok && kb >= 4 {
		n = kb << 10
	}
	maxIOByDev.Store(dev, n)
	return n
}

// maxIOByDev keeps each device's largest I/O: a database opens files by
// the thousand, and sysfs says the same for every one on a device.
var maxIOByDev sync.Map

func sysfsInt(dev uint64, attr string) (int64, bool) {
	base := fmt.Sprintf("/sys/dev/block/%d:%d/", unix.Major(dev), unix.Minor(dev))
	for _, p := range []string{base + attr, base + "../" + attr} {
		if b, err := os.ReadFile(p); err == nil {
			if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

var _ io.ReaderAt = (*File)(nil)
var _ io.WriterAt = (*File)(nil)

// waitUntil waits for cond, which the engine's owner or the pread backend
// will make true (Close paths): it checks at growing intervals.
func waitUntil(cond func() bool) {
	for d := time.Microsecond; !cond(); d = min(2*d, time.Millisecond) {
		time.Sleep(d)
	}
}
