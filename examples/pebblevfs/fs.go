//go:build linux

package pebblevfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
)

// FS is a vfs.FS whose sstables, blob files, WALs and MANIFESTs go through
// direct I/O on one shared dio engine, and whose other files and
// directories go through vfs.Default. Safe for concurrent use.
type FS struct {
	base vfs.FS
	eng  *dio.Engine // nil: every file falls back (no io_uring)
	cfg  config

	// writing holds the files open for writing through a Writer, by
	// cleaned path, so that Stat by name reports their logical size.
	mu      sync.Mutex
	writing map[string]*file

	direct, fallbacks atomic.Uint64

	// Read-ahead windows kept for reuse (off-heap, so a sync.Pool would
	// leak what it drops).
	wmu     sync.Mutex
	windows [][]byte

	// The last maxPrefetchSpans spans Prefetch read, oldest at pfNext:
	// a span pushed out is dropped from its file.
	pfMu   sync.Mutex
	pfRing [maxPrefetchSpans]pfSlot
	pfNext int
}

// maxPrefetchSpans bounds the Prefetch spans an FS keeps (at Pebble's
// 256 KiB at most, 16 MiB).
const maxPrefetchSpans = 64

type pfSlot struct {
	fl *file
	pf *prefetched
}

// notePrefetch records fl's new span and drops the oldest span from its
// file, unless that file has replaced it since.
func (f *FS) notePrefetch(fl *file, pf *prefetched) {
	f.pfMu.Lock()
	old := f.pfRing[f.pfNext]
	f.pfRing[f.pfNext] = pfSlot{fl, pf}
	f.pfNext = (f.pfNext + 1) % maxPrefetchSpans
	f.pfMu.Unlock()
	if old.fl != nil {
		old.fl.pf.CompareAndSwap(old.pf, nil)
	}
}

// maxFreeWindows bounds the read-ahead windows an FS keeps for reuse.
const maxFreeWindows = 32

var _ vfs.FS = (*FS)(nil)

// New returns an FS with one engine for all its files. If io_uring is
// unavailable (dio.ErrUnsupported) every file falls back to vfs.Default,
// and the log says so. Close the FS after the Pebble DB that uses it.
func New(opts ...Option) (*FS, error) {
	c := config{readahead: DefaultReadahead}
	for _, o := range opts {
		o(&c)
	}
	if c.readahead > 0 {
		c.readahead = (c.readahead + 4095) &^ 4095
	}
	f := &FS{base: vfs.Default, cfg: c, writing: make(map[string]*file)}
	eng, err := dio.NewEngine(c.engineOpts)
	if err != nil {
		if !unavailable(err) {
			return nil, err
		}
		f.logf("pebblevfs: no direct I/O engine (%v): every file goes through vfs.Default", err)
	}
	f.eng = eng
	return f, nil
}

// Close closes the engine. Every file of the FS must be closed first.
func (f *FS) Close() error {
	f.wmu.Lock()
	for _, b := range f.windows {
		ring.Free(b)
	}
	f.windows = nil
	f.wmu.Unlock()
	if f.eng == nil {
		return nil
	}
	return f.eng.Close()
}

// getWindow returns a read-ahead window: aligned off-heap memory of the
// configured size.
func (f *FS) getWindow() ([]byte, error) {
	f.wmu.Lock()
	if n := len(f.windows); n > 0 {
		b := f.windows[n-1]
		f.windows = f.windows[:n-1]
		f.wmu.Unlock()
		return b, nil
	}
	f.wmu.Unlock()
	return ring.Alloc(f.cfg.readahead)
}

// putWindow takes back a window from getWindow (nil is ignored).
func (f *FS) putWindow(b []byte) {
	if b == nil {
		return
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if len(f.windows) < maxFreeWindows {
		f.windows = append(f.windows, b)
		return
	}
	ring.Free(b)
}

// Stats returns how many data files were opened through dio and how many
// fell back to vfs.Default.
func (f *FS) Stats() Stats {
	return Stats{Direct: f.direct.Load(), Fallbacks: f.fallbacks.Load()}
}

// Engine returns the FS's engine (nil if io_uring is unavailable), for its
// counters.
func (f *FS) Engine() *dio.Engine { return f.eng }

func (f *FS) logf(format string, args ...any) {
	if f.cfg.logf != nil {
		f.cfg.logf(format, args...)
	}
}

// isData reports whether name is one of Pebble's data files, which go
// through direct I/O: sstables, blob files, WALs and MANIFESTs.
func isData(name string) bool {
	b := filepath.Base(name)
	return strings.HasSuffix(b, ".sst") || strings.HasSuffix(b, ".blob") ||
		strings.HasSuffix(b, ".log") || strings.HasPrefix(b, "MANIFEST-")
}

// unavailable reports whether err says that direct I/O cannot be had for
// a file (O_DIRECT refused, no io_uring), rather than that the file
// cannot be opened at all.
func unavailable(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported) ||
		errors.Is(err, dio.ErrUnsupported)
}

// open opens name through dio, or reports fallback=true if direct I/O is
// unavailable for it (logged and counted).
func (f *FS) open(name string, flag int) (df *dio.File, fallback bool, err error) {
	if f.eng == nil {
		f.fallbacks.Add(1)
		return nil, true, nil
	}
	df, err = dio.Open(name, flag, 0o666, &dio.Options{Engine: f.eng})
	if err != nil {
		if unavailable(err) {
			f.fallbacks.Add(1)
			f.logf("pebblevfs: %s: no direct I/O (%v): using vfs.Default", name, err)
			return nil, true, nil
		}
		return nil, false, pathErr("open", name, err)
	}
	f.direct.Add(1)
	return df, false, nil
}

// pathErr turns a dio open error into the *fs.PathError os.OpenFile would
// have returned, so that oserror.IsNotExist and friends see it.
func pathErr(op, name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// Create implements vfs.FS: a data file is created anew (an existing file
// is removed first, so the result is a new inode, as vfs.Default does) and
// written through a dio.Appender.
func (f *FS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if !isData(name) {
		return f.base.Create(name, category)
	}
	const flag = os.O_RDWR | os.O_CREATE | os.O_EXCL
	df, fallback, err := f.open(name, flag)
	for err != nil && errors.Is(err, fs.ErrExist) {
		if rerr := os.Remove(name); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return nil, rerr
		}
		df, fallback, err = f.open(name, flag)
	}
	if fallback {
		return f.base.Create(name, category)
	}
	if err != nil {
		return nil, err
	}
	return f.newWriting(name, df)
}

// ReuseForWrite implements vfs.FS: oldname is renamed to newname and
// written from its start without truncation (a recycled WAL keeps its
// space; what is past the new log's end is the old log, which Pebble's
// recyclable records tell apart, or the zero padding of the last sync).
func (f *FS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if !isData(newname) {
		return f.base.ReuseForWrite(oldname, newname, category)
	}
	if err := f.base.Rename(oldname, newname); err != nil {
		return nil, err
	}
	df, fallback, err := f.open(newname, os.O_RDWR|os.O_CREATE)
	if fallback {
		return f.base.OpenReadWrite(newname, category)
	}
	if err != nil {
		return nil, err
	}
	return f.newWriting(newname, df)
}

func (f *FS) newWriting(name string, df *dio.File) (vfs.File, error) {
	wo := f.cfg.writer
	if strings.HasSuffix(name, ".log") {
		wo = WriterOptions{ChunkSize: DefaultLogChunk}
		if f.cfg.logWriter != nil {
			wo = *f.cfg.logWriter
		}
	}
	w, err := df.Appender(0, wo.ChunkSize, wo.MaxInflight)
	if err != nil {
		df.Close()
		return nil, err
	}
	fl := &file{fs: f, f: df, name: name, key: filepath.Clean(name), w: w}
	f.mu.Lock()
	f.writing[fl.key] = fl
	f.mu.Unlock()
	return fl, nil
}

// Open implements vfs.FS. A data file opened with vfs.SequentialReadsOption
// (compactions, long scans) reads through a read-ahead window; other
// handles read each ReadAt directly. Pebble's fadvise options mean nothing
// under O_DIRECT and are not applied; other options are.
func (f *FS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	if !isData(name) {
		return f.base.Open(name, opts...)
	}
	df, fallback, err := f.open(name, os.O_RDONLY)
	if fallback {
		return f.base.Open(name, opts...)
	}
	if err != nil {
		return nil, err
	}
	fl := &file{fs: f, f: df, name: name}
	for _, o := range opts {
		switch o {
		case vfs.SequentialReadsOption:
			fl.sequential = true
		case vfs.RandomReadsOption:
		default:
			o.Apply(fl)
		}
	}
	return fl, nil
}

// OpenReadWrite implements vfs.FS: a data file read and written at
// offsets (WriteAt) through dio, without a Writer.
func (f *FS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	if !isData(name) {
		return f.base.OpenReadWrite(name, category, opts...)
	}
	df, fallback, err := f.open(name, os.O_RDWR|os.O_CREATE)
	if fallback {
		return f.base.OpenReadWrite(name, category, opts...)
	}
	if err != nil {
		return nil, err
	}
	fl := &file{fs: f, f: df, name: name, rw: true}
	for _, o := range opts {
		if o != vfs.SequentialReadsOption && o != vfs.RandomReadsOption {
			o.Apply(fl)
		}
	}
	return fl, nil
}

// Rename implements vfs.FS (vfs.Default); a file being written keeps its
// logical size under its new name.
func (f *FS) Rename(oldname, newname string) error {
	if err := f.base.Rename(oldname, newname); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.writing[filepath.Clean(oldname)]; ok {
		delete(f.writing, fl.key)
		fl.key = filepath.Clean(newname)
		f.writing[fl.key] = fl
	}
	return nil
}

// Stat implements vfs.FS: the kernel's, except that a file being written
// through a Writer reports its logical size.
func (f *FS) Stat(name string) (vfs.FileInfo, error) {
	fi, err := f.base.Stat(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	fl := f.writing[filepath.Clean(name)]
	f.mu.Unlock()
	if fl != nil {
		if w := fl.writer(); w != nil {
			return sizedInfo{fi, w.Size()}, nil
		}
	}
	return fi, nil
}

func (f *FS) untrack(fl *file) {
	f.mu.Lock()
	if f.writing[fl.key] == fl {
		delete(f.writing, fl.key)
	}
	f.mu.Unlock()
}

// The rest is vfs.Default's.

// Link implements vfs.FS.
func (f *FS) Link(oldname, newname string) error { return f.base.Link(oldname, newname) }

// OpenDir implements vfs.FS: directory handles (and their real fsync).
func (f *FS) OpenDir(name string) (vfs.File, error) { return f.base.OpenDir(name) }

// Remove implements vfs.FS.
func (f *FS) Remove(name string) error { return f.base.Remove(name) }

// RemoveAll implements vfs.FS.
func (f *FS) RemoveAll(name string) error { return f.base.RemoveAll(name) }

// MkdirAll implements vfs.FS.
func (f *FS) MkdirAll(dir string, perm os.FileMode) error { return f.base.MkdirAll(dir, perm) }

// Lock implements vfs.FS.
func (f *FS) Lock(name string) (io.Closer, error) { return f.base.Lock(name) }

// List implements vfs.FS.
func (f *FS) List(dir string) ([]string, error) { return f.base.List(dir) }

// PathBase implements vfs.FS.
func (f *FS) PathBase(path string) string { return f.base.PathBase(path) }

// PathJoin implements vfs.FS.
func (f *FS) PathJoin(elem ...string) string { return f.base.PathJoin(elem...) }

// PathDir implements vfs.FS.
func (f *FS) PathDir(path string) string { return f.base.PathDir(path) }

// GetDiskUsage implements vfs.FS.
func (f *FS) GetDiskUsage(path string) (vfs.DiskUsage, error) { return f.base.GetDiskUsage(path) }

// Unwrap implements vfs.FS: the FS wraps nothing, it is a base FS (its
// data files are not vfs.Default's).
func (f *FS) Unwrap() vfs.FS { return nil }
