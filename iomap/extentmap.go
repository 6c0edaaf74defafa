package iomap

import (
	"fmt"
	"sync"
	"syscall"
)

// ExtentMapConfig configures an [ExtentMap]. The zero BlockSize means 4096.
type ExtentMapConfig struct {
	// BlockSize is the allocation unit in bytes, a power of two. All
	// extents start and end on block boundaries.
	BlockSize int64
	// Devices are the sizes in bytes of targets 0..len(Devices)-1. The
	// default allocator hands out their space; with a custom Allocator they
	// only size Stats().Total.
	Devices []int64
	// Allocator, if set, replaces the default first-fit allocator over
	// Devices. It may be shared with other maps.
	Allocator Allocator
}

// ExtentMap is an in-memory extent map for engines that manage their own
// space: a raw device, one big preallocated file, several devices. It maps
// file offsets to (target, address) extents in a B-tree; lookups are
// O(log n) and adjacent compatible extents merge.
//
// Writes:
//
//   - into a hole, Begin allocates whole blocks covering the write and
//     returns them as Unwritten|FlagNew: until IOComplete reports the data
//     written, reads of that range still return zeros, never stale device
//     contents. IOComplete converts it to Mapped. (FlagNew lives only in the
//     mapping Begin returns; the tree records Unwritten.)
//   - into Unwritten space (see Preallocate), Begin returns it as Unwritten;
//     IOComplete converts it.
//   - into a shared extent (see Clone), Begin allocates fresh space, records
//     it as a copy-on-write reservation and returns it as
//     Mapped|FlagShared|FlagNew. Reads keep seeing the old data until
//     IOComplete reports the write done; then the reservation replaces the
//     old extent, whose share is dropped (and its space freed when no other
//     map uses it). Writes that touch shared extents must be aligned to the
//     block size.
//
// Under OpNoWait or OpOverwriteOnly, a write that would allocate fails with
// syscall.EAGAIN; OpOverwriteOnly also refuses Unwritten space and pending
// copy-on-write, which need work at completion.
//
// End keeps what Begin allocated even when a write stopped short: the space
// stays Unwritten or reserved, and the next write of the range uses it.
// Releasing it there could free space that a concurrent write to the same
// range is already writing to. Punch and Release free it.
//
// IOComplete must be called for every write (the dio engine does). As with
// the kernel's reflink and punch, the caller must not Clone or Punch a range
// while writes to it are in flight.
//
// ExtentMap is safe for concurrent use. Clones share the allocator and the
// reference counts of shared space, each with its own lock.
type ExtentMap struct {
	mu   sync.RWMutex
	data *extTree // file extents, Mapped or Unwritten
	cow  *extTree // copy-on-write reservations, by file offset
	sp   *space
	bs   int64
}

var (
	_ Mapper      = (*ExtentMap)(nil)
	_ IOCompleter = (*ExtentMap)(nil)
)

// space is what clones share: the allocator, the reference counts of
// shared space, and the accounting.
type space struct {
	mu    sync.RWMutex
	alloc Allocator
	bs    int64
	total int64
	// allocated counts bytes obtained from alloc and not freed.
	allocated int64
	// refs[target] holds the ranges of that target referenced by two or
	// more extents or reservations, with the count. Allocated space without
	// a record has exactly one reference.
	refs []*extTree
}

// NewExtentMap returns an empty map (all holes) over the configured space.
func NewExtentMap(cfg ExtentMapConfig) (*ExtentMap, error) {
	bs := cfg.BlockSize
	if bs == 0 {
		bs = 4096
	}
	if bs < 0 || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("iomap: block size %d is not a power of two: %w", bs, syscall.EINVAL)
	}
	sp := &space{alloc: cfg.Allocator, bs: bs}
	for _, size := range cfg.Devices {
		sp.total += max(size, 0) &^ (bs - 1)
	}
	if sp.alloc == nil {
		if len(cfg.Devices) == 0 {
			return nil, fmt.Errorf("iomap: extent map needs Devices or an Allocator: %w", syscall.EINVAL)
		}
		ff, err := NewFirstFit(bs, cfg.Devices)
		if err != nil {
			return nil, err
		}
		sp.alloc = ff
	}
	return &ExtentMap{data: newExtTree(), cow: newExtTree(), sp: sp, bs: bs}, nil
}

// BlockSize returns the allocation unit.
func (m *ExtentMap) BlockSize() int64 { return m.bs }

func mergeData(a, b ext) bool {
	return a.typ == b.typ && a.target == b.target && a.addr+a.len == b.addr
}

func mergeCow(a, b ext) bool { return a.target == b.target && a.addr+a.len == b.addr }

func mergeRefs(a, b ext) bool { return a.count == b.count }

// Begin implements [Mapper].
func (m *ExtentMap) Begin(pos, length int64, op OpFlags) (Mapping, error) {
	if !validRange(pos, length) {
		return Mapping{}, errRange("ExtentMap.Begin", pos, length)
	}
	m.mu.RLock()
	if op&OpWrite == 0 {
		mp := m.readMapping(pos)
		m.mu.RUnlock()
		return mp, nil
	}
	// Pure overwrites, the common case, only need the read lock.
	mp, ok, err := m.overwriteMapping(pos, op)
	m.mu.RUnlock()
	if ok || err != nil {
		return mp, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writeMapping(pos, length, op)
}

// readMapping maps pos for a read. Caller holds m.mu.
func (m *ExtentMap) readMapping(pos int64) Mapping {
	x, ok, lo, hi := find(m.data, pos)
	if !ok {
		return Mapping{Offset: lo, Length: hi - lo, Type: Hole, Addr: NoAddr, BlockSize: m.bs}
	}
	return m.extentMapping(x, pos)
}

// extentMapping returns the part of data extent x around pos where sharing
// does not change, flagged FlagShared if it is shared.
func (m *ExtentMap) extentMapping(x ext, pos int64) Mapping {
	m.sp.mu.RLock()
	shared, lo, hi := m.sp.sharedRun(x.target, x.addr+(pos-x.off))
	m.sp.mu.RUnlock()
	// [lo, hi) is on the target; bring it back to file offsets.
	lo = max(x.off, lo-x.addr+x.off)
	if hi < x.addr+x.len {
		hi = hi - x.addr + x.off
	} else {
		hi = x.end()
	}
	mp := Mapping{Offset: lo, Length: hi - lo, Type: x.typ, Target: int(x.target),
		Addr: x.addr + (lo - x.off), BlockSize: m.bs}
	if shared {
		mp.Flags |= FlagShared
	}
	return mp
}

// overwriteMapping returns the mapping for a write at pos when the write
// needs no change to the map: no reservation, an extent not shared. ok is
// false when writeMapping must decide under the write lock. Caller holds
// m.mu at least for reading.
func (m *ExtentMap) overwriteMapping(pos int64, op OpFlags) (mp Mapping, ok bool, err error) {
	if _, inCow := lookup(m.cow, pos); inCow {
		return Mapping{}, false, nil
	}
	x, inData := lookup(m.data, pos)
	if !inData {
		return Mapping{}, false, nil
	}
	mp = m.extentMapping(x, pos)
	if mp.Flags&FlagShared != 0 {
		return Mapping{}, false, nil
	}
	if mp.Type == Unwritten && op&OpOverwriteOnly != 0 {
		return Mapping{}, false, errAgain("overwrite-only write into unwritten space", pos)
	}
	// Keep out the copy-on-write reservations around pos: writes there go
	// to them.
	if m.cow.Len() > 0 {
		if r, ok := lastBefore(m.cow, pos); ok && r.end() > mp.Offset {
			mp.Addr += r.end() - mp.Offset
			mp.Length -= r.end() - mp.Offset
			mp.Offset = r.end()
		}
		if r, ok := firstFrom(m.cow, pos); ok && r.off < mp.End() {
			mp.Length = r.off - mp.Offset
		}
	}
	return mp, true, nil
}

// writeMapping maps pos for a write of [pos, pos+length), allocating as
// needed. Caller holds m.mu for writing.
func (m *ExtentMap) writeMapping(pos, length int64, op OpFlags) (Mapping, error) {
	if r, ok := lookup(m.cow, pos); ok {
		if op&OpOverwriteOnly != 0 {
			return Mapping{}, errAgain("overwrite-only write into a shared extent", pos)
		}
		if err := m.checkAligned("write into a shared extent", pos, length); err != nil {
			return Mapping{}, err
		}
		return m.cowMapping(r), nil
	}
	if mp, ok, err := m.overwriteMapping(pos, op); ok || err != nil {
		return mp, err
	}
	if op&(OpNoWait|OpOverwriteOnly) != 0 {
		return Mapping{}, errAgain(fmt.Sprintf("%v write needs allocation", op), pos)
	}
	x, ok := lookup(m.data, pos)
	if ok {
		// A shared extent: copy on write into fresh space.
		if err := m.checkAligned("write into a shared extent", pos, length); err != nil {
			return Mapping{}, err
		}
		mp := m.extentMapping(x, pos)
		end := min(mp.End(), pos+length)
		if r, ok := firstFrom(m.cow, pos); ok {
			end = min(end, r.off)
		}
		r, err := m.allocate(pos, end)
		if err != nil {
			return Mapping{}, err
		}
		insertMerged(m.cow, r, mergeCow)
		return m.cowMapping(r), nil
	}
	// A hole: allocate the blocks the write covers, up to the next extent.
	lo, hi := gapAround(m.data, pos)
	start := pos &^ (m.bs - 1)
	end := min(hi, roundUp(pos+length, m.bs))
	if start < lo || end <= pos {
		return Mapping{}, fmt.Errorf("iomap: write at %d beyond the largest block-aligned offset: %w", pos, syscall.EFBIG)
	}
	x, err := m.allocate(start, end)
	if err != nil {
		return Mapping{}, err
	}
	x.typ = Unwritten
	insertMerged(m.data, x, mergeData)
	return Mapping{Offset: x.off, Length: x.len, Type: Unwritten, Flags: FlagNew,
		Target: int(x.target), Addr: x.addr, BlockSize: m.bs}, nil
}

func (m *ExtentMap) cowMapping(r ext) Mapping {
	return Mapping{Offset: r.off, Length: r.len, Type: Mapped, Flags: FlagShared | FlagNew,
		Target: int(r.target), Addr: r.addr, BlockSize: m.bs}
}

// allocate gets space for file range [start, end), or for a prefix of it
// if the allocator returns less, as an ext at start.
func (m *ExtentMap) allocate(start, end int64) (ext, error) {
	m.sp.mu.Lock()
	defer m.sp.mu.Unlock()
	t, addr, n, err := m.sp.allocate(end - start)
	if err != nil {
		return ext{}, fmt.Errorf("iomap: allocating [%d,%d): %w", start, end, err)
	}
	return ext{off: start, len: n, target: t, addr: addr, typ: Mapped}, nil
}

func (m *ExtentMap) checkAligned(what string, pos, length int64) error {
	if (pos|length)&(m.bs-1) != 0 {
		return fmt.Errorf("iomap: %s at [%d,+%d) must be aligned to the block size %d: %w",
			what, pos, length, m.bs, syscall.EINVAL)
	}
	return nil
}

// End implements [Mapper]. It does nothing: see the type's documentation
// for why space Begin allocated is kept when a write stops short.
func (m *ExtentMap) End(pos, length, done int64, op OpFlags, mp *Mapping) error { return nil }

// IOComplete implements [IOCompleter]. For a write whose data reached the
// target (err == nil) it replaces shared extents in the blocks written by
// their copy-on-write reservations and converts Unwritten blocks to
// Mapped. After a failed write it changes nothing: the old data stays
// visible, reservations and unwritten space wait for the next write.
func (m *ExtentMap) IOComplete(pos, length int64, op OpFlags, err error) error {
	if op&OpWrite == 0 || err != nil || length == 0 {
		return nil
	}
	if !validRange(pos, length) {
		return errRange("ExtentMap.IOComplete", pos, length)
	}
	s, e := pos&^(m.bs-1), min(roundUp(pos+length, m.bs), maxOff&^(m.bs-1))
	m.mu.RLock()
	work := m.completionWork(s, e, nil)
	m.mu.RUnlock()
	if !work {
		return nil // a pure overwrite
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	// Finish copy-on-write: the reservations become the data extents, and
	// the extents they replace lose this map's reference.
	if rs := cut(m.cow, s, e, nil); len(rs) > 0 {
		m.sp.mu.Lock()
		for _, r := range rs {
			for _, old := range cut(m.data, r.off, r.end(), nil) {
				m.sp.dropRef(old.target, old.addr, old.len)
			}
			r.typ = Mapped
			insertMerged(m.data, r, mergeData)
		}
		m.sp.mu.Unlock()
	}

	// Convert unwritten extents; insertMerged joins them with Mapped
	// neighbours that continue on the target.
	var unwritten []ext
	m.completionWork(s, e, &unwritten)
	for _, x := range unwritten {
		for _, y := range cut(m.data, max(x.off, s), min(x.end(), e), nil) {
			y.typ = Mapped
			insertMerged(m.data, y, mergeData)
		}
	}
	return nil
}

// completionWork reports whether [s, e) holds reservations or unwritten
// extents, and appends the unwritten extents to *unwritten if it is not
// nil. Caller holds m.mu.
func (m *ExtentMap) completionWork(s, e int64, unwritten *[]ext) bool {
	work := false
	if r, ok := firstFrom(m.cow, s); ok && r.off < e {
		work = true
	} else if r, ok := lastBefore(m.cow, s); ok && r.end() > s {
		work = true
	}
	visit := func(x ext) bool {
		if x.typ != Unwritten {
			return true
		}
		work = true
		if unwritten == nil {
			return false
		}
		*unwritten = append(*unwritten, x)
		return true
	}
	if x, ok := lastBefore(m.data, s); ok && x.end() > s {
		visit(x)
	}
	if work && unwritten == nil {
		return true
	}
	m.data.AscendRange(ext{off: s}, ext{off: e}, visit)
	return work
}

// Preallocate allocates Unwritten space for the holes in the blocks
// covering [off, off+length); reads of it return zeros until it is
// written. Existing extents are left alone. If the space runs out it
// returns an error wrapping syscall.ENOSPC, keeping what it allocated.
func (m *ExtentMap) Preallocate(off, length int64) error {
	if !validRange(off, length) {
		return errRange("ExtentMap.Preallocate", off, length)
	}
	s, e := off&^(m.bs-1), min(roundUp(off+length, m.bs), maxOff&^(m.bs-1))
	m.mu.Lock()
	defer m.mu.Unlock()
	for pos := s; pos < e; {
		if x, ok := lookup(m.data, pos); ok {
			pos = x.end()
			continue
		}
		_, hi := gapAround(m.data, pos)
		x, err := m.allocate(pos, min(hi, e))
		if err != nil {
			return err
		}
		x.typ = Unwritten
		insertMerged(m.data, x, mergeData)
		pos = x.end()
	}
	return nil
}

// Punch turns [off, off+length) into a hole and drops the map's references
// to the space behind it, freeing what no clone shares, pending
// copy-on-write reservations included. off and length must be multiples of
// the block size.
func (m *ExtentMap) Punch(off, length int64) error {
	if !validRange(off, length) {
		return errRange("ExtentMap.Punch", off, length)
	}
	if err := m.checkAligned("punch", off, length); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.punch(off, off+length)
	return nil
}

// Release punches the whole map: every extent and reservation is dropped.
// Use it to discard a clone.
func (m *ExtentMap) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.punch(0, maxOff)
}

func (m *ExtentMap) punch(s, e int64) {
	removed := cut(m.data, s, e, nil)
	removed = cut(m.cow, s, e, removed)
	m.sp.mu.Lock()
	for _, x := range removed {
		m.sp.dropRef(x.target, x.addr, x.len)
	}
	m.sp.mu.Unlock()
}

// Clone returns a copy of the map that shares all its space: both maps
// report the shared extents with FlagShared, and a write to a shared
// range in either goes to fresh space (copy on write), so the two diverge
// only where written. The tree itself is cloned lazily (B-tree
// copy-on-write); the shared space gains one reference per extent. Pending
// copy-on-write reservations stay with m. Do not Clone while writes to m
// are in flight.
func (m *ExtentMap) Clone() *ExtentMap {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sp.mu.Lock()
	m.data.Ascend(func(x ext) bool {
		m.sp.addRef(x.target, x.addr, x.len)
		return true
	})
	m.sp.mu.Unlock()
	return &ExtentMap{data: m.data.Clone(), cow: newExtTree(), sp: m.sp, bs: m.bs}
}

// Extents calls fn for each extent of the map in file order, as for a
// read (so shared runs come with FlagShared), until fn returns false. The
// map is read-locked during the walk: fn must not call back into it.
func (m *ExtentMap) Extents(fn func(Mapping) bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var xs []ext
	m.data.Ascend(func(x ext) bool { xs = append(xs, x); return true })
	for _, x := range xs {
		for pos := x.off; pos < x.end(); {
			mp := m.extentMapping(x, pos)
			if !fn(mp) {
				return
			}
			pos = mp.End()
		}
	}
}

// ExtentMapStats is a snapshot of an ExtentMap's space accounting.
type ExtentMapStats struct {
	Total     int64 // bytes on all Devices
	Allocated int64 // bytes this map and its clones hold, shared bytes counted once
	Free      int64 // bytes the allocator has free (Total-Allocated if it cannot tell)
	Shared    int64 // allocated bytes referenced more than once
	Reserved  int64 // bytes of this map's copy-on-write reservations not yet remapped
	Extents   int   // data extents in this map
}

// Stats returns the space accounting of the map and its clones. With the
// default allocator, Allocated + Free == Total after any sequence of
// operations.
func (m *ExtentMap) Stats() ExtentMapStats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	st := ExtentMapStats{Extents: m.data.Len()}
	m.cow.Ascend(func(x ext) bool { st.Reserved += x.len; return true })
	m.sp.mu.RLock()
	defer m.sp.mu.RUnlock()
	st.Total, st.Allocated = m.sp.total, m.sp.allocated
	for _, t := range m.sp.refs {
		t.Ascend(func(x ext) bool { st.Shared += x.len; return true })
	}
	if fb, ok := m.sp.alloc.(interface{ FreeBytes() int64 }); ok {
		st.Free = fb.FreeBytes()
	} else {
		st.Free = st.Total - st.Allocated
	}
	return st
}

func roundUp(x, bs int64) int64 {
	if x > maxOff-(bs-1) {
		return maxOff &^ (bs - 1)
	}
	return (x + bs - 1) &^ (bs - 1)
}

// allocate asks the allocator for n bytes and checks what it returns.
// Caller holds sp.mu.
func (sp *space) allocate(n int64) (int32, int64, int64, error) {
	t, addr, got, err := sp.alloc.Alloc(n)
	if err != nil {
		return 0, 0, 0, err
	}
	if got <= 0 || got > n || t < 0 || t > 1<<20 || addr < 0 || (addr|got)&(sp.bs-1) != 0 {
		return 0, 0, 0, fmt.Errorf("iomap: allocator returned (%d, %d, %d) for %d bytes: %w", t, addr, got, n, syscall.EIO)
	}
	sp.allocated += got
	return int32(t), addr, got, nil
}

func (sp *space) refTree(t int32) *extTree {
	for int(t) >= len(sp.refs) {
		sp.refs = append(sp.refs, newExtTree())
	}
	return sp.refs[t]
}

// sharedRun reports whether address a on target t is referenced more than
// once, and the run [lo, hi) around a where that does not change. Caller
// holds sp.mu.
func (sp *space) sharedRun(t int32, a int64) (shared bool, lo, hi int64) {
	if int(t) >= len(sp.refs) || sp.refs[t].Len() == 0 {
		return false, 0, maxOff
	}
	tree := sp.refs[t]
	x, ok, lo, hi := find(tree, a)
	if ok {
		// Records differ by count only; the run goes on through adjacent
		// records so that mappings are not cut where nobody cares.
		lo, hi = x.off, x.end()
		tree.DescendLessOrEqual(ext{off: lo - 1}, func(y ext) bool {
			if y.end() != lo {
				return false
			}
			lo = y.off
			return true
		})
		tree.AscendGreaterOrEqual(ext{off: hi}, func(y ext) bool {
			if y.off != hi {
				return false
			}
			hi = y.end()
			return true
		})
		return true, lo, hi
	}
	return false, lo, hi
}

// addRef adds a reference to [a, a+n) on target t. Caller holds sp.mu.
func (sp *space) addRef(t int32, a, n int64) {
	tree := sp.refTree(t)
	cur := a
	for _, x := range cut(tree, a, a+n, nil) {
		if x.off > cur {
			insertMerged(tree, ext{off: cur, len: x.off - cur, count: 2}, mergeRefs)
		}
		x.count++
		insertMerged(tree, x, mergeRefs)
		cur = x.end()
	}
	if cur < a+n {
		insertMerged(tree, ext{off: cur, len: a + n - cur, count: 2}, mergeRefs)
	}
}

// dropRef drops a reference to [a, a+n) on target t, freeing the parts
// nothing else references. Caller holds sp.mu.
func (sp *space) dropRef(t int32, a, n int64) {
	tree := sp.refTree(t)
	cur := a
	for _, x := range cut(tree, a, a+n, nil) {
		if x.off > cur {
			sp.free(t, cur, x.off-cur)
		}
		if x.count > 2 {
			x.count--
			insertMerged(tree, x, mergeRefs)
		}
		cur = x.end()
	}
	if cur < a+n {
		sp.free(t, cur, a+n-cur)
	}
}

func (sp *space) free(t int32, a, n int64) {
	sp.alloc.Free(int(t), a, n)
	sp.allocated -= n
}
