//go:build linux

package dio

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/durability"
	"github.com/uringdio/uringdio/iomap"
	"golang.org/x/sys/unix"
)

// File is a file opened for direct I/O through an Engine. ReadAt, WriteAt
// and Submit are safe for concurrent use; Close waits for I/O in flight.
type File struct {
	path     string
	f        *os.File
	fd       int32
	regIdx   int32 // registered-file slot, -1 if none
	eng      *Engine
	ownEng   bool
	mapper   iomap.Mapper
	targets  []int32 // fd per target; 0 is the file
	writable bool
	size     atomic.Int64
	align    Alignment
	maxIO    int64
	policy   completion.Policy
	endIO    EndIOFunc
	hook     SubmitHookFunc

	closed   atomic.Bool
	inflight atomic.Int64

	// zeroBS is the mapper's allocation unit when it is larger than the
	// I/O alignment (the engine zeroes sub-block ranges): writes then pass
	// the gate.
	zeroBS int64
	gate   writeGate
}

// Alignment is what direct I/O on a file requires: buffer addresses must be
// multiples of Memory, offsets and lengths multiples of Offset.
type Alignment struct {
	Memory int64
	Offset int64
	// Source says where the numbers came from: "statx" (STATX_DIOALIGN) or
	// "logical block size" (the device's, when statx lacks DIOALIGN).
	Source string
}

// EndIOFunc is an end-of-I/O hook, like iomap_dio_ops.end_io: it sees a
// finished request's result and may change it (an error it returns
// replaces the result's error). It runs where the completion runs.
type EndIOFunc func(r *Request, n int64, err error) (int64, error)

// SubmitHookFunc sees every SQE just before it is queued and may change it
// (redirect it to another fd or offset, add flags, wrap it in a link). The
// engine's own fields (UserData) must be left alone.
type SubmitHookFunc func(r *Request, sqe *SQEView)

// Open opens path with O_DIRECT (added to flag) for I/O through an engine.
func Open(path string, flag int, perm os.FileMode, opts ...Option) (*File, error) {
	c := newConfig(opts)
	osf, err := os.OpenFile(path, flag|syscall.O_DIRECT|syscall.O_CLOEXEC, perm)
	if err != nil {
		return nil, &OpError{Op: "open", Path: path, Err: err}
	}
	f := &File{
		path:     path,
		f:        osf,
		fd:       int32(osf.Fd()),
		regIdx:   -1,
		mapper:   c.mapper,
		writable: flag&(os.O_WRONLY|os.O_RDWR) != 0,
		policy:   c.policy,
		endIO:    c.endIO,
		hook:     c.submitHook,
	}
	fail := func(op string, err error) (*File, error) {
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
	size := st.Size
	block := st.Mode&unix.S_IFMT == unix.S_IFBLK
	if block {
		// A block device: fstat says 0; its size is where it ends, and its
		// mapping is the identity (no FIEMAP on a device).
		if size, err = osf.Seek(0, io.SeekEnd); err != nil {
			return fail("size", err)
		}
		if f.mapper == nil {
			f.mapper = iomap.NewWholeFile(size)
		}
	}
	if c.sizeSet {
		size = c.size
	}
	f.size.Store(size)
	if f.align, err = dioAlignment(int(f.fd), &st); err != nil {
		return fail("alignment", err)
	}
	f.maxIO = maxIOSize(&st)
	f.targets = append(f.targets, f.fd)
	for _, t := range c.targets {
		f.targets = append(f.targets, int32(t.Fd()))
	}
	if f.mapper == nil {
		if f.mapper, err = defaultMapper(int(f.fd), size); err != nil {
			return fail("mapper", err)
		}
	}
	if b, ok := f.mapper.(interface{ BlockSize() int64 }); ok && b.BlockSize() > f.align.Offset {
		f.zeroBS = b.BlockSize()
	}
	f.eng = c.engine
	if f.eng == nil {
		if f.eng, err = newEngine(&c); err != nil {
			return fail("engine", err)
		}
		f.ownEng = true
	}
	if f.eng.iopoll {
		if err := checkPolled(int(f.fd)); err != nil {
			return fail("open", err)
		}
	}
	if f.regIdx, err = f.eng.registerFile(f.fd); err != nil {
		return fail("register file", err)
	}
	return f, nil
}

// Name returns the path the file was opened with.
func (f *File) Name() string { return f.path }

// Fd returns the file descriptor. Do not close it.
func (f *File) Fd() uintptr { return uintptr(f.fd) }

// Engine returns the engine the file submits to.
func (f *File) Engine() *Engine { return f.eng }

// Mapper returns the file's mapper.
func (f *File) Mapper() iomap.Mapper { return f.mapper }

// Alignment returns the direct-I/O alignment of the file.
func (f *File) Alignment() Alignment { return f.align }

// MaxIOSize returns the largest single SQE the engine issues for the file
// (the device's max_sectors_kb, or 1 MiB if unknown).
func (f *File) MaxIOSize() int64 { return f.maxIO }

// Size returns the file size as this File knows it: the size at Open,
// moved by writes that extended it and by Truncate.
func (f *File) Size() int64 { return f.size.Load() }

// ReadAt reads len(p) bytes at off into p (io.ReaderAt): a read that stops
// at end of file returns the bytes read and io.EOF. p must be aligned to
// Alignment().Memory, off and len(p) to Alignment().Offset.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.syncIO(context.Background(), Read, p, off, 0)
}

// WriteAt writes p at off (io.WriterAt). Alignment as for ReadAt.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	return f.syncIO(context.Background(), Write, p, off, 0)
}

// ReadAtContext is ReadAt with a context and request flags.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	return f.syncIO(ctx, Read, p, off, fl)
}

// WriteAtContext is WriteAt with a context and request flags (DSync, ...).
func (f *File) WriteAtContext(ctx context.Context, p []byte, off int64, fl Flags) (int, error) {
	return f.syncIO(ctx, Write, p, off, fl)
}

func (f *File) syncIO(ctx context.Context, op Op, p []byte, off int64, fl Flags) (int, error) {
	e := f.eng
	r := e.getReq()
	r.Op, r.Off, r.Buf, r.Flags = op, off, p, fl
	// If nobody is reaping, take the token before submitting: the SQEs are
	// then only published, and submitted by the same io_uring_enter that
	// waits for them (one system call per read at queue depth 1).
	held := false
	if e.sw != nil && (op != Write || f.zeroBS == 0) { // a gated write may wait: not holding the token
		select {
		case <-e.tok:
			held = true
		default:
		}
	}
	r.deferEnter = held
	r.gateDone = ctx.Done()
	err := f.start(r, true)
	r.gateDone = nil
	if err != nil {
		if held {
			e.tok <- struct{}{}
		}
		e.putReq(r)
		return 0, err
	}
	e.awaitHeld(r, ctx.Done(), held)
	n, err := int(r.n), r.err
	e.putReq(r)
	return n, err
}

// Submit starts an asynchronous request. An error means nothing was
// submitted (closed file, bad alignment, ...). Otherwise the request
// completes through its policy: Callback, Queue, or r.Wait.
func (f *File) Submit(r *Request) error {
	if r.wake == nil {
		r.wake = make(chan struct{}, 1)
	}
	// Idle, complete, or in its own callback (stateResult): the callback
	// may resubmit the request it was given.
	if s := r.state.Load(); s != stateIdle && s != stateComplete && s != stateResult {
		return &OpError{Op: r.Op.String(), Path: f.path, Off: r.Off, Err: fmt.Errorf("dio: request resubmitted while in flight")}
	}
	sync := r.Flags&ForceWait != 0
	r.deferEnter = false
	if err := f.start(r, sync); err != nil {
		return err
	}
	if sync {
		f.eng.await(r, nil)
	}
	return nil
}

// Close waits for this file's I/O in flight, then closes it (and its engine,
// unless shared). Submissions after Close begins fail with ErrClosed.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return &OpError{Op: "close", Path: f.path, Err: ErrClosed}
	}
	f.eng.drain(func() bool { return f.inflight.Load() == 0 })
	f.eng.unregisterFile(f.regIdx)
	var err error
	if f.ownEng {
		err = f.eng.Close()
	}
	if cerr := f.f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return &OpError{Op: "close", Path: f.path, Err: err}
	}
	return nil
}

// Sync flushes data and metadata (fsync) of every target.
func (f *File) Sync() error { return f.syncTargets("sync", false) }

// Datasync flushes data and the metadata needed to read it (fdatasync).
func (f *File) Datasync() error { return f.syncTargets("datasync", true) }

func (f *File) syncTargets(op string, data bool) error {
	if f.closed.Load() {
		return &OpError{Op: op, Path: f.path, Err: ErrClosed}
	}
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
			return &OpError{Op: op, Path: f.path, Err: err}
		}
	}
	return nil
}

// Truncate changes the file's size. Reads see the new size from the next
// submission on.
func (f *File) Truncate(size int64) error {
	if f.closed.Load() {
		return &OpError{Op: "truncate", Path: f.path, Err: ErrClosed}
	}
	if !f.writable {
		return &OpError{Op: "truncate", Path: f.path, Off: size, Err: readOnlyErr{}}
	}
	if err := ignoringEINTR(func() error { return unix.Ftruncate(int(f.fd), size) }); err != nil {
		return &OpError{Op: "truncate", Path: f.path, Off: size, Err: err}
	}
	f.size.Store(size)
	if t, ok := f.mapper.(interface{ Truncate(int64) }); ok {
		t.Truncate(size)
	} else if s, ok := f.mapper.(interface{ SetSize(int64) }); ok {
		s.SetSize(size)
	}
	return nil
}

// Allocate preallocates [off, off+n) (fallocate mode 0: unwritten extents
// that read as zeroes, extending the size if past it).
func (f *File) Allocate(off, n int64) error {
	return f.fallocate("allocate", 0, off, n)
}

// Punch deallocates [off, off+n) (a hole), keeping the size.
func (f *File) Punch(off, n int64) error {
	return f.fallocate("punch", unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (f *File) fallocate(op string, mode uint32, off, n int64) error {
	if f.closed.Load() {
		return &OpError{Op: op, Path: f.path, Off: off, Len: n, Err: ErrClosed}
	}
	if !f.writable {
		return &OpError{Op: op, Path: f.path, Off: off, Len: n, Err: readOnlyErr{}}
	}
	if err := ignoringEINTR(func() error { return unix.Fallocate(int(f.fd), mode, off, n) }); err != nil {
		return &OpError{Op: op, Path: f.path, Off: off, Len: n, Err: err}
	}
	if mode == 0 && off+n > f.size.Load() {
		f.extendSize(off + n)
	}
	if inv, ok := f.mapper.(interface{ Invalidate(int64, int64) }); ok {
		inv.Invalidate(off, n)
	}
	return nil
}

// extendSize raises the known size to end if it is larger.
func (f *File) extendSize(end int64) {
	for {
		cur := f.size.Load()
		if end <= cur || f.size.CompareAndSwap(cur, end) {
			break
		}
	}
	if s, ok := f.mapper.(interface{ ExtendSize(int64) }); ok {
		s.ExtendSize(end)
	} else if s, ok := f.mapper.(interface{ SetSize(int64) }); ok {
		s.SetSize(f.size.Load())
	}
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
func dioAlignment(fd int, st *unix.Stat_t) (Alignment, error) {
	var sx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx)
	if err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 {
		if sx.Dio_mem_align == 0 {
			return Alignment{}, unsupported("the filesystem does not support O_DIRECT on this file (statx DIOALIGN is 0)")
		}
		return Alignment{Memory: int64(sx.Dio_mem_align), Offset: int64(sx.Dio_offset_align), Source: "statx"}, nil
	}
	lbs := int64(512)
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	if v, ok := sysfsInt(dev, "queue/logical_block_size"); ok && v > 0 {
		lbs = v
	}
	return Alignment{Memory: lbs, Offset: lbs, Source: "logical block size"}, nil
}

// maxIOSize reads the device's max_sectors_kb; 1 MiB if unknown.
func maxIOSize(st *unix.Stat_t) int64 {
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	if kb, ok := sysfsInt(dev, "queue/max_sectors_kb"); ok && kb >= 4 {
		return kb << 10
	}
	return 1 << 20
}

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
