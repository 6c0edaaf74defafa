package iomap

import "github.com/google/btree"

// ext is the item of every interval tree in this package: file extents of
// an ExtentMap (key = file offset), its copy-on-write reservations, the
// shared-space refcounts and the free space of one target (key = address on
// that target), and the spans a FileMapper has cached.
type ext struct {
	off, len int64 // the range in the tree's key space
	addr     int64 // file trees: address on target of off
	target   int32 // file trees: target index
	count    int32 // refcount trees: references to the range (>= 2)
	typ      Type  // file trees: Mapped or Unwritten; FileMapper: any
	flags    Flags // FileMapper: flags of the span
}

func (x ext) end() int64 { return x.off + x.len }

// clip returns the part [lo, hi) of x, with addr following the offset.
func (x ext) clip(lo, hi int64) ext {
	y := x
	y.off, y.len = lo, hi-lo
	y.addr += lo - x.off
	return y
}

// extTree is a B-tree of non-overlapping exts ordered by off. Its helpers
// do not lock: the owner does.
type extTree = btree.BTreeG[ext]

func newExtTree() *extTree {
	return btree.NewG(16, func(a, b ext) bool { return a.off < b.off })
}

// floor returns the last item that starts at or before pos.
func floor(t *extTree, pos int64) (x ext, ok bool) {
	t.DescendLessOrEqual(ext{off: pos}, func(y ext) bool {
		x, ok = y, true
		return false
	})
	return x, ok
}

// lookup returns the item containing pos.
func lookup(t *extTree, pos int64) (ext, bool) {
	x, ok := floor(t, pos)
	return x, ok && pos < x.end()
}

// find returns the item containing pos, or else the gap [lo, hi) between
// items that contains it, in two tree walks at most.
func find(t *extTree, pos int64) (x ext, in bool, lo, hi int64) {
	x, ok := floor(t, pos)
	if ok && pos < x.end() {
		return x, true, 0, 0
	}
	if ok {
		lo = x.end()
	}
	hi = maxOff
	if y, ok := firstFrom(t, pos); ok {
		hi = y.off
	}
	return ext{}, false, lo, hi
}

// lastBefore returns the last item that starts before pos.
func lastBefore(t *extTree, pos int64) (x ext, ok bool) {
	if pos <= 0 {
		return x, false
	}
	t.DescendLessOrEqual(ext{off: pos - 1}, func(y ext) bool {
		x, ok = y, true
		return false
	})
	return x, ok
}

// firstFrom returns the first item that starts at or after pos.
func firstFrom(t *extTree, pos int64) (x ext, ok bool) {
	t.AscendGreaterOrEqual(ext{off: pos}, func(y ext) bool {
		x, ok = y, true
		return false
	})
	return x, ok
}

// gapAround returns the gap [lo, hi) between items that contains pos, which
// must not lie in an item.
func gapAround(t *extTree, pos int64) (lo, hi int64) {
	hi = maxOff
	if x, ok := lastBefore(t, pos); ok {
		lo = x.end()
	}
	if x, ok := firstFrom(t, pos); ok {
		hi = x.off
	}
	return lo, hi
}

// cut removes [s, e) from t: items inside are deleted, items across s or e
// are trimmed. It appends the removed parts, in order, to out.
func cut(t *extTree, s, e int64, out []ext) []ext {
	var hit []ext
	if x, ok := lastBefore(t, s); ok && x.end() > s {
		hit = append(hit, x)
	}
	t.AscendRange(ext{off: s}, ext{off: e}, func(y ext) bool {
		hit = append(hit, y)
		return true
	})
	for _, x := range hit {
		t.Delete(x)
		if x.off < s {
			t.ReplaceOrInsert(x.clip(x.off, s))
		}
		if x.end() > e {
			t.ReplaceOrInsert(x.clip(e, x.end()))
		}
		out = append(out, x.clip(max(x.off, s), min(x.end(), e)))
	}
	return out
}

// insertMerged inserts x, which must not overlap any item, and merges it
// with the items that end where it starts and start where it ends when
// mergeable says so.
func insertMerged(t *extTree, x ext, mergeable func(a, b ext) bool) {
	if l, ok := lastBefore(t, x.off); ok && l.end() == x.off && mergeable(l, x) {
		t.Delete(l)
		l.len += x.len
		x = l
	}
	if r, ok := lookup(t, x.end()); ok && r.off == x.end() && mergeable(x, r) {
		t.Delete(r)
		x.len += r.len
	}
	t.ReplaceOrInsert(x)
}
