//go:build linux

package dio

import (
	"fmt"
	"reflect"
	"sync"
	"syscall"

	"github.com/uringdio/uringdio/iomap"
	"golang.org/x/sys/unix"
)

// The shared state's tables: an inode per kernel file, a volume per
// mapper, each found by every File that opens it and kept while one holds
// it.

var inodes struct {
	mu sync.Mutex
	m  map[inodeKey]*inode
}

// openInode returns the shared state of the kernel file st describes.
func openInode(st *unix.Stat_t) *inode {
	k := inodeKey{dev: st.Dev, ino: st.Ino}
	inodes.mu.Lock()
	defer inodes.mu.Unlock()
	if i := inodes.m[k]; i != nil {
		i.refs++
		return i
	}
	if inodes.m == nil {
		inodes.m = make(map[inodeKey]*inode)
	}
	i := &inode{key: k, refs: 1}
	inodes.m[k] = i
	return i
}

// release drops a File's hold on the inode.
func (i *inode) release() {
	inodes.mu.Lock()
	defer inodes.mu.Unlock()
	i.refs--
	if i.refs == 0 && inodes.m[i.key] == i {
		delete(inodes.m, i.key)
	}
}

var volumes struct {
	mu sync.Mutex
	m  map[iomap.Mapper]*volume
}

// openVolume returns the shared state of mapper m, made at the first Open
// with size (Options.Size if sizeSet, else the opened file's). A second
// Open that asks for another size fails: one volume has one size.
func openVolume(m iomap.Mapper, size int64, sizeSet bool, align int64) (*volume, error) {
	shared := reflect.TypeOf(m).Comparable()
	volumes.mu.Lock()
	defer volumes.mu.Unlock()
	if shared {
		if v := volumes.m[m]; v != nil {
			if sizeSet && size != v.size.Load() {
				return nil, fmt.Errorf("the mapper is open with size %d, Options.Size asks for %d: %w", v.size.Load(), size, syscall.EINVAL)
			}
			v.refs++
			return v, nil
		}
	}
	if size < 0 {
		return nil, fmt.Errorf("size %d: %w", size, syscall.EINVAL)
	}
	v := &volume{mapper: m, refs: 1, sizeSet: sizeSet}
	v.size.Store(size)
	if ops, ok := m.(volumeMapper); ok {
		v.ops, v.bs = ops, ops.BlockSize()
		if v.bs > align {
			v.zeroBS = v.bs
		}
	}
	if shared {
		if volumes.m == nil {
			volumes.m = make(map[iomap.Mapper]*volume)
		}
		volumes.m[m] = v
	}
	return v, nil
}

// release drops a File's hold on the volume.
func (v *volume) release() {
	volumes.mu.Lock()
	defer volumes.mu.Unlock()
	v.refs--
	if v.refs == 0 && volumes.m[v.mapper] == v {
		delete(volumes.m, v.mapper)
	}
}

// extendSize raises the volume's size to end if it is smaller, and tells
// the mapper.
func (v *volume) extendSize(end int64) {
	if !v.size.raise(end) {
		return
	}
	if s, ok := v.mapper.(interface{ ExtendSize(int64) }); ok {
		s.ExtendSize(end)
	} else if s, ok := v.mapper.(interface{ SetSize(int64) }); ok {
		s.SetSize(v.size.Load())
	}
}

// setSize sets the volume's size after a truncate, and tells the mapper.
func (v *volume) setSize(n int64) {
	v.size.Store(n)
	if t, ok := v.mapper.(interface{ Truncate(int64) }); ok {
		t.Truncate(n)
	} else if s, ok := v.mapper.(interface{ SetSize(int64) }); ok {
		s.SetSize(n)
	}
}

// invalidate tells a mapper that caches a kernel file's layout that the
// kernel changed [off, off+n).
func (v *volume) invalidate(off, n int64) {
	if inv, ok := v.mapper.(interface{ Invalidate(int64, int64) }); ok {
		inv.Invalidate(off, n)
	}
}

// gated reports whether r takes the file's lock (shared unless it needs
// sub-block zeroing). On a volume whose map the engine keeps every request
// does, so that hole punching and truncation, which hold it alone, never
// free space under I/O. Elsewhere writes do, so that an unaligned write,
// which holds it alone, reads and rewrites its partial sectors with no
// other write of this process in between, and size changes wait for the
// writes in flight. The lock holder's own I/O (owned) does not take it.
func (f *File) gated(r *Request) bool {
	if r.owned {
		return false
	}
	if f.vol != nil && f.vol.ops != nil {
		return true
	}
	return r.Op == Write || r.Op == Preallocate
}
