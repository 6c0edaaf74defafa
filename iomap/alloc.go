package iomap

import (
	"fmt"
	"sync"
	"syscall"
)

// Allocator hands out space on the targets of an [ExtentMap].
// Implementations must be safe for concurrent use: clones of a map, and
// maps that share an allocator, call it at once.
type Allocator interface {
	// Alloc returns up to n bytes of contiguous free space: the target, the
	// address on it and the length, with 0 < length <= n. Addresses and
	// lengths are multiples of the map's block size, and n is too. When
	// nothing is free it fails with an error wrapping syscall.ENOSPC.
	Alloc(n int64) (target int, addr, length int64, err error)
	// Free returns space obtained from Alloc, whole or in pieces.
	Free(target int, addr, length int64)
}

// FirstFit is the default [Allocator]: free space is a B-tree of ranges per
// target, and Alloc takes the first range, in (target, address) order, that
// holds the whole request, or else the largest one. Freed ranges merge with
// their neighbours. Freeing space that is already free panics: it means the
// caller's bookkeeping is broken.
//
// FirstFit is safe for concurrent use.
type FirstFit struct {
	mu    sync.Mutex
	bs    int64
	total int64
	sizes []int64
	free  []*extTree // per target: free ranges keyed by address
	avail int64
}

var _ Allocator = (*FirstFit)(nil)

// NewFirstFit returns an allocator over targets of the given sizes in bytes,
// handing out multiples of blockSize (a power of two). Sizes are rounded
// down to whole blocks.
func NewFirstFit(blockSize int64, devices []int64) (*FirstFit, error) {
	if blockSize <= 0 || blockSize&(blockSize-1) != 0 {
		return nil, fmt.Errorf("iomap: block size %d is not a power of two: %w", blockSize, syscall.EINVAL)
	}
	f := &FirstFit{bs: blockSize}
	for i, size := range devices {
		if size < 0 {
			return nil, fmt.Errorf("iomap: device %d has negative size %d: %w", i, size, syscall.EINVAL)
		}
		size &^= blockSize - 1
		t := newExtTree()
		if size > 0 {
			t.ReplaceOrInsert(ext{off: 0, len: size})
		}
		f.sizes = append(f.sizes, size)
		f.free = append(f.free, t)
		f.total += size
		f.avail += size
	}
	return f, nil
}

// Alloc implements [Allocator].
func (f *FirstFit) Alloc(n int64) (target int, addr, length int64, err error) {
	if n <= 0 || n%f.bs != 0 {
		return 0, 0, 0, fmt.Errorf("iomap: allocation of %d bytes is not a positive multiple of %d: %w", n, f.bs, syscall.EINVAL)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	best, bestT := ext{}, -1
	for t, tree := range f.free {
		tree.Ascend(func(x ext) bool {
			if x.len >= n {
				best, bestT = x, t
				return false
			}
			if x.len > best.len {
				best, bestT = x, t
			}
			return true
		})
		if best.len >= n {
			break
		}
	}
	if bestT < 0 {
		return 0, 0, 0, fmt.Errorf("iomap: allocating %d bytes: %w", n, syscall.ENOSPC)
	}
	length = min(n, best.len)
	tree := f.free[bestT]
	tree.Delete(best)
	if best.len > length {
		tree.ReplaceOrInsert(best.clip(best.off+length, best.end()))
	}
	f.avail -= length
	return bestT, best.off, length, nil
}

// Free implements [Allocator].
func (f *FirstFit) Free(target int, addr, length int64) {
	if length == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if target < 0 || target >= len(f.free) || addr < 0 || length < 0 || addr > f.sizes[target]-length ||
		(addr|length)%f.bs != 0 {
		panic(fmt.Sprintf("iomap: FirstFit.Free(%d, %d, %d): not allocatable space", target, addr, length))
	}
	tree := f.free[target]
	x := ext{off: addr, len: length}
	if l, ok := lastBefore(tree, x.end()); ok && l.end() > x.off {
		panic(fmt.Sprintf("iomap: FirstFit.Free(%d, %d, %d): overlaps free range [%d,%d)", target, addr, length, l.off, l.end()))
	}
	insertMerged(tree, x, func(a, b ext) bool { return true })
	f.avail += length
}

// FreeBytes returns the bytes free on all targets.
func (f *FirstFit) FreeBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.avail
}

// TotalBytes returns the bytes the allocator manages on all targets.
func (f *FirstFit) TotalBytes() int64 { return f.total }
