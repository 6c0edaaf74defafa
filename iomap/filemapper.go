package iomap

import (
	"sync"
	"sync/atomic"
)

// FileMapperOptions tune a [FileMapper]; the zero value is the sensible
// default.
type FileMapperOptions struct {
	// Window is how many bytes of the file one cache fill maps around a
	// miss, rounded up to 64 KiB. 0 means 16 MiB.
	Window int64
	// MaxCached bounds the cached spans; a fill that would exceed it drops
	// the cache first. 0 means 1<<18.
	MaxCached int
	// NoFIEMAP learns the layout from SEEK_DATA/SEEK_HOLE even where
	// FIEMAP works. Unwritten extents then look like data.
	NoFIEMAP bool
	// NoSync leaves out FIEMAP_FLAG_SYNC. With it (the default) a fill
	// first writes back the file's dirty page cache, so buffered data not
	// yet on disk shows up as written data rather than as holes, unwritten
	// or delalloc extents that a direct read would wrongly zero-fill.
	NoSync bool
}

const (
	defaultWindow    = 16 << 20
	windowUnit       = 64 << 10
	defaultMaxCached = 1 << 18
	// invalLog is how many recent invalidations a fill that raced with
	// them can check itself against before giving up its result.
	invalLog = 32
	// fillAttempts bounds how often a fill is redone because an
	// invalidation of its window raced with it; the last result is used
	// without caching it.
	fillAttempts = 3
)

// FileMapper maps a real file through the file system: every mapping
// targets the file itself (Target 0, Addr == file offset, BlockSize 0, so
// the file system allocates and zeroes), but tells holes, unwritten,
// inline, delalloc and shared extents apart so that the engine can serve
// reads of holes and unwritten space without I/O and knows which writes are
// pure overwrites.
//
// The layout comes from the FS_IOC_FIEMAP ioctl, or from SEEK_DATA and
// SEEK_HOLE where FIEMAP is missing (tmpfs) or disabled; there unwritten
// extents look like data. It is cached in a B-tree, a window of
// FileMapperOptions.Window bytes per miss. The SEEK fallback moves the
// descriptor's file offset: use positional I/O on it.
//
// Begin for reads: beyond Size is a Hole; Inline comes with nil Data (read
// it through the page cache). Begin for writes: holes and the range beyond
// Size come back Mapped|FlagNew, unwritten extents stay Unwritten (so the
// engine completes them through IOComplete), shared extents are
// Mapped|FlagShared. OpOverwriteOnly refuses with syscall.EAGAIN anything
// but a Mapped, unshared extent below Size; OpNoWait refuses a cache miss,
// since learning the layout may block.
//
// The cache is this process's view: it is invalidated for the ranges
// written through this mapper (End and IOComplete), and by Truncate,
// Punch, Preallocate, SetSize and Invalidate. Changes made by others (other
// processes, or this one through another descriptor) must be reported
// with Invalidate or SetSize; unreported, a read may return zeroes for
// data that is there. So using it for I/O is an opt-in for a caller that
// owns the file exclusively and promises no other writer. Without that
// promise, use it for layout walks (sparse copies, diagnostics) only, and
// do I/O on the kernel file (dio's default), which the kernel maps.
//
// The descriptor must stay open while the mapper is used; the mapper does
// not close it. FileMapper is safe for concurrent use.
type FileMapper struct {
	fd     int
	window int64
	max    int
	sync   bool
	blk    int64       // file system block size, for rounding invalidations
	seek   atomic.Bool // layout from SEEK_DATA/SEEK_HOLE instead of FIEMAP
	size   atomic.Int64

	mu    sync.RWMutex
	cache *extTree // spans: off, len, typ, flags
	// gen counts invalidations; inval[gen%invalLog] is the range of the
	// latest. A fill remembers gen when it starts and caches its result
	// only if no invalidation since then touched its window: a layout read
	// before an invalidation must not land after it.
	gen   uint64
	inval [invalLog]struct{ s, e int64 }

	fills, discards atomic.Int64 // for tests
}

var (
	_ Mapper      = (*FileMapper)(nil)
	_ IOCompleter = (*FileMapper)(nil)
)

func (fm *FileMapper) init(fd int, size, blk int64, opts FileMapperOptions) {
	fm.fd = fd
	fm.window = defaultWindow
	if opts.Window > 0 {
		fm.window = roundUp(opts.Window, windowUnit)
	}
	fm.max = defaultMaxCached
	if opts.MaxCached > 0 {
		fm.max = opts.MaxCached
	}
	fm.sync = !opts.NoSync
	fm.blk = max(blk, 512)
	fm.size.Store(size)
	fm.cache = newExtTree()
	fm.seek.Store(opts.NoFIEMAP)
}

// Size returns the file size the mapper assumes.
func (fm *FileMapper) Size() int64 { return fm.size.Load() }

// SetSize tells the mapper the file size changed behind its back, and
// drops what it cached from the smaller of the two sizes on.
func (fm *FileMapper) SetSize(size int64) {
	old := fm.size.Swap(size)
	if old != size {
		fm.invalidate(min(old, size), maxOff)
	}
}

// ExtendSize raises the size to end if it is smaller; it is safe to call
// from concurrent write completions and keeps the cache.
func (fm *FileMapper) ExtendSize(end int64) {
	for {
		old := fm.size.Load()
		if end <= old || fm.size.CompareAndSwap(old, end) {
			return
		}
	}
}

// UsesSeek reports whether the layout comes from SEEK_DATA/SEEK_HOLE
// rather than FIEMAP.
func (fm *FileMapper) UsesSeek() bool { return fm.seek.Load() }

// Begin implements [Mapper].
func (fm *FileMapper) Begin(pos, length int64, op OpFlags) (Mapping, error) {
	if !validRange(pos, length) {
		return Mapping{}, errRange("FileMapper.Begin", pos, length)
	}
	size := fm.size.Load()
	if op&OpWrite == 0 && pos >= size {
		return Mapping{Offset: size, Length: maxOff - size, Type: Hole, Addr: NoAddr}, nil
	}
	fm.mu.RLock()
	x, ok := lookup(fm.cache, pos)
	fm.mu.RUnlock()
	if !ok {
		if op&OpNoWait != 0 {
			return Mapping{}, errAgain("file layout not cached", pos)
		}
		var err error
		if x, err = fm.fill(pos); err != nil {
			return Mapping{}, err
		}
	}
	return fm.mapping(x, pos, size, op)
}

// mapping turns the span x around pos into the mapping Begin returns.
func (fm *FileMapper) mapping(x ext, pos, size int64, op OpFlags) (Mapping, error) {
	off, end := x.off, x.end()
	// The size cuts spans: reads stop there, writes beyond it extend.
	if pos < size {
		end = min(end, size)
	} else {
		off = max(off, size)
	}
	m := Mapping{Offset: off, Length: end - off, Type: x.typ, Flags: x.flags, Addr: NoAddr}
	if m.Type == Mapped || m.Type == Unwritten {
		m.Addr = off
	}
	if op&OpWrite == 0 {
		return m, nil
	}
	if op&OpOverwriteOnly != 0 && (m.Type != Mapped || m.Flags&FlagShared != 0 || pos >= size) {
		return Mapping{}, errAgain("overwrite-only write needs more than an overwrite", pos)
	}
	if m.Type == Hole {
		m.Type, m.Flags, m.Addr = Mapped, m.Flags|FlagNew, off
	}
	return m, nil
}

// fill learns the layout of the window around pos, caches it unless an
// invalidation raced with it, and returns the span containing pos.
func (fm *FileMapper) fill(pos int64) (ext, error) {
	ws := pos / fm.window * fm.window
	we := ws + min(fm.window, maxOff-ws)
	for attempt := 1; ; attempt++ {
		fm.mu.RLock()
		gen := fm.gen
		fm.mu.RUnlock()
		spans, err := fm.scan(ws, we)
		if err != nil {
			return ext{}, err
		}
		fm.fills.Add(1)
		var x ext
		for _, s := range spans {
			if s.off <= pos && pos < s.end() {
				x = s
				break
			}
		}
		if x.len == 0 {
			return ext{}, errScan(spans, pos)
		}
		lo, hi := spans[0].off, spans[len(spans)-1].end()
		fm.mu.Lock()
		if fm.freshSince(gen, lo, hi) {
			if fm.cache.Len()+len(spans) > fm.max {
				fm.cache.Clear(false)
			}
			cut(fm.cache, lo, hi, nil)
			for _, s := range spans {
				insertMerged(fm.cache, s, mergeSpans)
			}
			fm.mu.Unlock()
			return x, nil
		}
		fm.mu.Unlock()
		fm.discards.Add(1)
		if attempt == fillAttempts {
			return x, nil
		}
	}
}

func mergeSpans(a, b ext) bool { return a.typ == b.typ && a.flags == b.flags }

// freshSince reports whether no invalidation since gen touched [lo, hi).
// Caller holds fm.mu.
func (fm *FileMapper) freshSince(gen uint64, lo, hi int64) bool {
	if fm.gen-gen > invalLog {
		return false
	}
	for g := gen + 1; g <= fm.gen; g++ {
		if r := fm.inval[g%invalLog]; r.s < hi && lo < r.e {
			return false
		}
	}
	return true
}

// Invalidate drops what the mapper cached about [off, off+length), rounded
// out to file system blocks; a length reaching past the largest offset
// means "to the end". Call it after changing the file's layout other than
// through this mapper.
func (fm *FileMapper) Invalidate(off, length int64) {
	if off < 0 || length <= 0 {
		return
	}
	fm.invalidate(off, off+min(length, maxOff-off))
}

func (fm *FileMapper) invalidate(s, e int64) {
	s = s / fm.blk * fm.blk
	if e < maxOff {
		e = roundUp(e, fm.blk)
	}
	fm.mu.Lock()
	cut(fm.cache, s, e, nil)
	fm.gen++
	fm.inval[fm.gen%invalLog] = struct{ s, e int64 }{s, e}
	fm.mu.Unlock()
}

// End implements [Mapper]. After a write that was not a pure overwrite
// (into a hole, unwritten, shared or inline space, or beyond the size) it
// drops the cached layout of the bytes submitted; IOComplete does it again
// once they are written.
func (fm *FileMapper) End(pos, length, done int64, op OpFlags, m *Mapping) error {
	if op&OpWrite != 0 && done > 0 && (m.Type != Mapped || m.Flags&(FlagNew|FlagShared) != 0) {
		fm.invalidate(pos, pos+done)
	}
	return nil
}

// IOComplete implements [IOCompleter]. A successful write extends the
// size; a failed one makes the mapper fstat the file for its size. Unless
// the range is cached as a plain Mapped extent (a pure overwrite), its
// cached layout is dropped, since the file system allocated or converted
// space for it.
func (fm *FileMapper) IOComplete(pos, length int64, op OpFlags, err error) error {
	if op&OpWrite == 0 || length <= 0 {
		return nil
	}
	if !validRange(pos, length) {
		return errRange("FileMapper.IOComplete", pos, length)
	}
	if err == nil {
		fm.ExtendSize(pos + length)
	} else if size, serr := fm.statSize(); serr == nil {
		fm.size.Store(size)
	}
	fm.mu.RLock()
	x, ok := lookup(fm.cache, pos)
	fm.mu.RUnlock()
	if !ok || x.typ != Mapped || x.flags != 0 || x.end() < pos+length {
		fm.invalidate(pos, pos+length)
	}
	return nil
}
