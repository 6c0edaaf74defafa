//go:build linux

package dio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/uringdio/uringdio/internal/devinfo"
	"github.com/uringdio/uringdio/internal/engine"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// The API: a File, as os.File has one, opened for direct I/O.

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
	if c.size != 0 && c.mapper == nil {
		return nil, &OpError{Op: "open", Path: path, Err: fmt.Errorf("Options.Size needs Options.Mapper: a kernel file's size is the kernel's: %w", syscall.EINVAL)}
	}
	if c.engine != nil && c.engineSet {
		return nil, &OpError{Op: "open", Path: path, Err: fmt.Errorf("Options.EngineOptions given with Options.Engine: they configure a new engine: %w", syscall.EINVAL)}
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
	f := &File{path: path, fd: int32(osf.Fd()), regIdx: -1, mapper: c.mapper, policy: c.policy, hooks: c.hooks}
	f.mode = fileMode{writable: flag&(os.O_WRONLY|os.O_RDWR) != 0, readable: flag&os.O_WRONLY == 0,
		canRead: canRead, strict: c.strict}
	f.closer = f.finishClose
	if op, err := f.setup(osf, &c); err != nil {
		f.finishClose()
		return nil, &OpError{Op: op, Path: path, Err: err}
	}
	return f, nil
}

// setup gathers what a File knows of its file, finds its shared state and
// its engine; on error it names what failed.
func (f *File) setup(osf *os.File, c *config) (op string, err error) {
	f.osf = osf
	var st unix.Stat_t
	if err := unix.Fstat(int(f.fd), &st); err != nil {
		return "stat", err
	}
	f.mode.blockDev = st.Mode&unix.S_IFMT == unix.S_IFBLK
	if f.align, err = dioAlignment(int(f.fd), &st); err != nil {
		return "alignment", err
	}
	f.maxIO = devinfo.MaxIO(&st)
	f.targets = append(f.targets, f.fd)
	for _, t := range c.targets {
		f.targets = append(f.targets, int32(t.Fd()))
	}
	if f.mapper == nil {
		f.ino = openInode(&st)
		f.lock = &f.ino.gate
	} else {
		size := st.Size
		if f.mode.blockDev {
			if size, err = unix.Seek(int(f.fd), 0, io.SeekEnd); err != nil {
				return "size", err
			}
		}
		if c.size != 0 {
			size = c.size
		}
		if f.vol, err = openVolume(f.mapper, size, c.size != 0, f.align.Offset); err != nil {
			return "open", err
		}
		f.lock = &f.vol.gate
	}
	if err := f.setupEngine(c); err != nil {
		return "engine", err
	}
	if f.eng.IOPoll() {
		if err := checkPolled(int(f.fd)); err != nil {
			return "open", err
		}
	}
	f.mode.pread, f.backend = f.eng.Backend(int(f.fd), &st)
	if f.regIdx, err = f.eng.RegisterFile(f.fd); err != nil {
		return "register file", err
	}
	return "", nil
}

// setupEngine finds the File's engine: the one it was given, one of its
// own (EngineOptions), or the process's.
func (f *File) setupEngine(c *config) error {
	switch {
	case c.engine != nil:
		f.pub = c.engine
	case c.engineSet:
		e, err := engine.New(c.eng)
		if err != nil {
			return err
		}
		f.pub, f.ownEng = &Engine{e: e}, true
	default:
		e, err := defaultEng()
		if err != nil {
			return err
		}
		f.pub = e
	}
	f.eng = f.pub.e
	return nil
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
	if f.refs.closed.Load() {
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

// Engine returns the engine the file submits to (for its Stats and
// FixedBuffers); the File's own engine is closed with the File.
func (f *File) Engine() *Engine { return f.pub }

// Size returns the file's size: the kernel's for a kernel file (fstat, or
// the device's size), asked at each call; for a mapped file, the size
// every File over the mapper shares (Options.Size or the file's at the
// first Open, moved by writes past it, Truncate and Allocate).
func (f *File) Size() (int64, error) {
	if !f.acquire() {
		return 0, f.opErr("size", 0, 0, ErrClosed)
	}
	defer f.release()
	if f.vol != nil {
		return f.vol.size.Load(), nil
	}
	n, err := f.kernelSize()
	if err != nil {
		return 0, f.opErr("size", 0, 0, err)
	}
	return n, nil
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
	if !f.mode.strict && fl&Atomic == 0 && len(p) > 0 {
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

// gapWrite reports whether a write at off on a kernel file starts past the
// end of the file, inside or after an old last block that holds bytes past
// the end: such a write goes the way of an unaligned one, which zeroes
// them first (see patchWrite). It costs an fstat per write.
func (f *File) gapWrite(off int64) bool {
	if f.vol != nil || f.mode.blockDev {
		return false
	}
	size, blk, err := f.kernelStatRef()
	return err == nil && off > size && size%blk != 0
}

// Submit starts an asynchronous request. An error means nothing was
// submitted (closed file, bad alignment, ...) and r is the caller's again.
// Otherwise r and its buffers are the engine's until r completes through
// its policy (EffectivePolicy, set when Submit returns): its Callback, its
// Queue, or r.Wait; never on the stack of this call, so a callback that
// submits again runs in constant stack whatever the chain's length. Safe
// for concurrent use with other requests; one Request is submitted by one
// goroutine at a time.
func (f *File) Submit(r *Request) error { return f.submit(r) }

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
	if f.refs.closed.Swap(true) {
		return f.opErr("close", 0, 0, ErrClosed)
	}
	if f.refs.n.Load() != 0 && f.eng.OnEngineThread() {
		f.refs.deferClose.Store(true)
		if f.refs.n.Load() == 0 && f.refs.closeDone.CompareAndSwap(false, true) {
			go f.finishClose() // the last reference went before it could see deferClose
		}
		return nil
	}
	waitUntil(func() bool { return f.refs.n.Load() == 0 })
	if !f.refs.closeDone.CompareAndSwap(false, true) {
		return nil
	}
	if err := f.finishClose(); err != nil {
		return f.opErr("close", 0, 0, err)
	}
	return nil
}

// finishClose gives up what the File holds once nothing uses its
// descriptor (and what Open got before it failed).
func (f *File) finishClose() error {
	if f.eng != nil {
		f.eng.UnregisterFile(f.regIdx)
	}
	if f.vol != nil {
		f.vol.release()
	}
	if f.ino != nil {
		f.ino.release()
	}
	var err error
	if f.ownEng && f.pub != nil {
		err = f.pub.Close()
	}
	if fd := f.bfd.fd.Load(); fd > 0 {
		unix.Close(int(fd))
	}
	if f.osf != nil {
		if cerr := f.osf.Close(); cerr != nil && err == nil {
			err = cerr
		}
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

// Truncate changes the file's size. On a kernel file it is ftruncate. On a
// volume it acts on the map: the blocks past the new end are released and
// the part of the last block past it zeroed, so that growing the file again
// reads zeroes there.
func (f *File) Truncate(size int64) error {
	return f.spaceOp("truncate", size, 0)
}

// Allocate allocates [off, off+n) and grows the file to off+n if it is
// smaller (fallocate mode 0): the new space reads as zeroes.
func (f *File) Allocate(off, n int64) error {
	return f.spaceOp("allocate", off, n)
}

// Preallocate reserves space for [off, off+n) without changing the size
// (fallocate FALLOC_FL_KEEP_SIZE): what databases call preallocation, so
// that later writes into the range do not allocate (and, for a write-ahead
// log, do not grow the file one write at a time).
func (f *File) Preallocate(off, n int64) error {
	return f.spaceOp("preallocate", off, n)
}

// Punch deallocates [off, off+n), keeping the size: the range reads as
// zeroes.
func (f *File) Punch(off, n int64) error {
	return f.spaceOp("punch", off, n)
}

// dioAlignment is the file's direct-I/O alignment (devinfo.DirectIO).
func dioAlignment(fd int, st *unix.Stat_t) (alignment, error) {
	mem, off, src, err := devinfo.DirectIO(fd, st)
	if err != nil {
		return alignment{}, unsupported(err.Error())
	}
	return alignment{Memory: mem, Offset: off, Source: src}, nil
}

var _ io.ReaderAt = (*File)(nil)
var _ io.WriterAt = (*File)(nil)

// checkPolled explains why an IOPOLL engine cannot serve fd.
func checkPolled(fd int) error {
	ok, err := ring.PolledIOSupported(fd)
	if ok {
		return nil
	}
	if err == nil {
		err = ring.ErrNoPolledIO
	}
	return err
}
