//go:build linux

package pebblevfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"golang.org/x/sys/unix"
)

// file is a data file opened through dio. It is one of three kinds:
//   - written (w != nil): made by Create or ReuseForWrite; Write appends
//     through the Appender, Sync and SyncData are the Appender's;
//   - read-write (rw): made by OpenReadWrite; WriteAt and ReadAt go
//     straight to the File, Write appends at the file's position;
//   - read-only: made by Open; ReadAt goes straight to the File, or through
//     the read-ahead window on a sequential handle.
//
// Read (any kind) reads from the file's position through the window.
// ReadAt, Stat and Fd are safe for concurrent use; Write, Sync and Read
// are called sequentially, as vfs.File requires.
type file struct {
	fs   *FS
	f    *dio.File
	name string // as opened
	key  string // a written file's key in FS.writing (its cleaned name, moved by Rename); guarded by FS.mu

	wmu sync.Mutex // w, against Close
	w   dio.Appender
	rw  bool

	sequential bool // ReadAt goes through the window

	mu  sync.Mutex // pos and ra
	pos int64
	ra  window

	// pf is what the last Prefetch read: immutable once stored, replaced
	// whole by the next Prefetch, read by ReadAt without a lock.
	pf atomic.Pointer[prefetched]
}

// prefetched is a span of a read-only file that Prefetch started reading.
// The read is in flight until the first ReadAt that needs it waits for it
// (once: the others wait on the same sync.Once); n and err are its result,
// and data[:n] is the file from off.
type prefetched struct {
	off  int64
	data []byte
	req  *dio.Request
	once sync.Once
	n    int
	err  error
}

// wait waits for the span's read and returns how much of data is the
// file's (0 if the read failed: the caller reads the device itself).
func (pf *prefetched) wait() int {
	pf.once.Do(func() {
		pf.n, pf.err = pf.req.Wait(context.Background())
		if pf.err != nil && !errors.Is(pf.err, io.EOF) {
			pf.n = 0
		}
	})
	return pf.n
}

// serve copies [off, off+len(p)) from the span if it holds all of it.
func (pf *prefetched) serve(p []byte, off int64) (int, bool) {
	if off < pf.off || off+int64(len(p)) > pf.off+int64(len(pf.data)) {
		return 0, false
	}
	n := pf.wait()
	if off+int64(len(p)) > pf.off+int64(n) {
		return 0, false // past what the read returned: the end of the file, or an error
	}
	return copy(p, pf.data[off-pf.off:]), true
}

// maxPrefetch bounds one Prefetch (Pebble asks for 64 KiB to 256 KiB).
const maxPrefetch = 1 << 20

var _ vfs.File = (*file)(nil)

func (fl *file) writer() dio.Appender {
	fl.wmu.Lock()
	defer fl.wmu.Unlock()
	return fl.w
}

// Close implements io.Closer: a written file's Appender is closed (what is
// buffered is written, the file truncated to its logical size and
// fsynced), then the File.
func (fl *file) Close() error {
	fl.wmu.Lock()
	w := fl.w
	fl.w = nil
	fl.wmu.Unlock()
	var err error
	if w != nil {
		fl.fs.untrack(fl)
		err = w.Close()
	}
	fl.mu.Lock()
	fl.fs.putWindow(fl.ra.release())
	fl.mu.Unlock()
	if cerr := fl.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Read implements io.Reader: sequential reads from the file's position,
// through the read-ahead window.
func (fl *file) Read(p []byte) (int, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	n, err := fl.windowRead(p, fl.pos)
	fl.pos += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

// ReadAt implements io.ReaderAt. On a file being written it first makes
// the Appender hand everything it buffers to the kernel (a SyncData: the
// Appender has no flush without one), so that a read sees every byte
// written; Pebble does not read the files it is writing, so this is the
// rare path.
func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	if w := fl.writer(); w != nil {
		if err := w.SyncData(); err != nil {
			return 0, err
		}
	}
	if pf := fl.pf.Load(); pf != nil {
		if n, ok := pf.serve(p, off); ok {
			return n, nil
		}
	}
	if fl.sequential && fl.fs.cfg.readahead > 0 && len(p) <= fl.fs.cfg.readahead/2 {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		return fl.windowRead(p, off)
	}
	return eof(fl.f.ReadAt(p, off))
}

// windowRead reads p at off through the read-ahead window. Called with mu
// held.
func (fl *file) windowRead(p []byte, off int64) (int, error) {
	if fl.fs.cfg.readahead <= 0 || len(p) > fl.fs.cfg.readahead/2 {
		return eof(fl.f.ReadAt(p, off))
	}
	if fl.ra.buf == nil {
		buf, err := fl.fs.getWindow()
		if err != nil {
			return 0, err
		}
		fl.ra.buf = buf
	}
	return fl.ra.readAt(fl.f, p, off)
}

// eof returns io.EOF itself for an error that is io.EOF, as callers that
// compare with == expect.
func eof(n int, err error) (int, error) {
	if err != nil && errors.Is(err, io.EOF) {
		return n, io.EOF
	}
	return n, err
}

// Write implements io.Writer: an append through the Appender, or, on a
// read-write file, a WriteAt at the file's position.
func (fl *file) Write(p []byte) (int, error) {
	if w := fl.writer(); w != nil {
		return w.Write(p)
	}
	if !fl.rw {
		return 0, &fs.PathError{Op: "write", Path: fl.name, Err: syscall.EBADF}
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	n, err := fl.f.WriteAt(p, fl.pos)
	fl.pos += int64(n)
	return n, err
}

// WriteAt implements io.WriterAt, for files opened with OpenReadWrite
// (vfs.File allows it only there). A file being written through a Appender
// refuses it: the Appender owns its contents.
func (fl *file) WriteAt(p []byte, off int64) (int, error) {
	if !fl.rw {
		return 0, &fs.PathError{Op: "writeat", Path: fl.name,
			Err: fmt.Errorf("pebblevfs: WriteAt on a file not opened with OpenReadWrite: %w", syscall.EBADF)}
	}
	return fl.f.WriteAt(p, off)
}

// Preallocate implements vfs.File: fallocate with FALLOC_FL_KEEP_SIZE.
func (fl *file) Preallocate(off, n int64) error {
	return fl.f.Preallocate(off, n)
}

// Stat implements vfs.File: fstat, with a written file's logical size.
func (fl *file) Stat() (vfs.FileInfo, error) {
	var st unix.Stat_t
	rc, err := fl.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, &fs.PathError{Op: "stat", Path: fl.name, Err: serr}
	}
	fi := &fileInfo{name: fl.name, st: st, size: st.Size}
	if w := fl.writer(); w != nil {
		fi.size = w.Size()
	}
	return fi, nil
}

// Sync implements vfs.File (fsync).
func (fl *file) Sync() error {
	if w := fl.writer(); w != nil {
		return w.Sync()
	}
	return fl.f.Sync()
}

// SyncData implements vfs.File (fdatasync).
func (fl *file) SyncData() error {
	if w := fl.writer(); w != nil {
		return w.SyncData()
	}
	return fl.f.Datasync()
}

// SyncTo implements vfs.File. On a written file it does nothing and
// promises nothing (fullSync false): SyncTo exists to keep dirty page
// cache from piling up, and the Appender leaves none; its chunks are
// already written behind. Elsewhere it is a full fdatasync.
func (fl *file) SyncTo(length int64) (bool, error) {
	if fl.writer() != nil {
		return false, nil
	}
	if err := fl.f.Datasync(); err != nil {
		return false, err
	}
	return true, nil
}

// Prefetch implements vfs.File. Pebble calls it on a read-only sstable
// handle when it sees an iterator read blocks in order, just before it
// reads the first of them. Page-cache readahead does nothing under
// O_DIRECT, so Prefetch starts one aligned read of [off, off+n) (a
// dio.Request) and returns; ReadAts within the span wait for it and are
// served from memory until the next Prefetch replaces it, or until spans
// prefetched later on other files push it out (the FS keeps the last
// maxPrefetchSpans: Pebble keeps thousands of files open, and a span kept
// per file would hold memory no cgroup can reclaim). A span dropped before
// anyone waited for it is still read to the end; its Go memory stays the
// engine's until then. It is advisory: errors are dropped (the ReadAt
// that follows reads the device itself and reports its own).
func (fl *file) Prefetch(off, n int64) error {
	if fl.rw || fl.writer() != nil || n <= 0 || off < 0 {
		return nil
	}
	n = min(n, maxPrefetch)
	if pf := fl.pf.Load(); pf != nil && off >= pf.off && off+n <= pf.off+int64(len(pf.data)) {
		return nil
	}
	start := off &^ 4095
	end := (off + n + 4095) &^ 4095
	buf := alignedBuf(int(end - start))
	req := &dio.Request{Op: dio.Read, Off: start, Buf: buf, Policy: completion.Wait}
	if err := fl.f.Submit(req); err != nil {
		return nil
	}
	pf := &prefetched{off: start, data: buf, req: req}
	fl.pf.Store(pf)
	fl.fs.notePrefetch(fl, pf)
	return nil
}

// alignedBuf returns n bytes of Go memory starting on a 4 KiB boundary,
// so that dio reads into it directly (the garbage collector frees it once
// no Prefetch span refers to it).
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	o := int((4096 - uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4096) % 4096)
	return b[o : o+n : o+n]
}

// Fd implements vfs.File: the O_DIRECT descriptor. Pebble only fadvises
// it (harmless) and checks it against InvalidFd to decide whether
// SyncTo and Preallocate are worth calling; both are. It is valid until
// Close, as os.File.Fd's is.
func (fl *file) Fd() uintptr {
	fd := vfs.InvalidFd
	if rc, err := fl.f.SyscallConn(); err == nil {
		rc.Control(func(d uintptr) { fd = d })
	}
	return fd
}

// window is a read-ahead buffer: an aligned span of the file read at once
// and served from memory.
type window struct {
	buf []byte // off-heap, aligned (FS.getWindow); nil until the first use
	off int64  // file offset of buf[0]
	n   int    // valid bytes
}

// readAt copies what it holds of [off, off+len(p)) and refills from an
// aligned offset when it holds nothing more.
func (w *window) readAt(f *dio.File, p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		o := off + int64(done)
		if o >= w.off && o < w.off+int64(w.n) {
			done += copy(p[done:], w.buf[o-w.off:w.n])
			continue
		}
		start := o &^ 4095
		n, err := f.ReadAt(w.buf, start)
		if err != nil && !errors.Is(err, io.EOF) {
			w.n = 0
			return done, err
		}
		w.off, w.n = start, n
		if o >= start+int64(n) {
			return done, io.EOF
		}
	}
	return done, nil
}

func (w *window) release() []byte {
	b := w.buf
	*w = window{}
	return b
}

// fileInfo is a vfs.FileInfo from an fstat, with the logical size.
type fileInfo struct {
	name string
	st   unix.Stat_t
	size int64

	once sync.Once
	dev  vfs.DeviceID
}

func (fi *fileInfo) Name() string       { return baseName(fi.name) }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi *fileInfo) IsDir() bool        { return fi.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (fi *fileInfo) Sys() any           { return &fi.st }
func (fi *fileInfo) Mode() os.FileMode {
	m := os.FileMode(fi.st.Mode & 0o777)
	if fi.IsDir() {
		m |= os.ModeDir
	}
	return m
}

// DeviceID implements vfs.FileInfo. vfs.DeviceID can only be made by
// vfs.Default, so it is vfs.Default's Stat of the same name (the zero
// DeviceID if the name is gone).
func (fi *fileInfo) DeviceID() vfs.DeviceID {
	fi.once.Do(func() {
		if d, err := vfs.Default.Stat(fi.name); err == nil {
			fi.dev = d.DeviceID()
		}
	})
	return fi.dev
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// sizedInfo is vfs.Default's FileInfo with the logical size of a file
// being written.
type sizedInfo struct {
	vfs.FileInfo
	size int64
}

func (s sizedInfo) Size() int64 { return s.size }
