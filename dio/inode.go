//go:build linux

package dio

import (
	"sync"

	"golang.org/x/sys/unix"
)

// An inode is what every File opened on one kernel file in this process
// shares: the gate that orders its writes. Aligned writes pass it together;
// an unaligned write, which reads, patches and rewrites the sectors it
// covers in part, holds it alone, so that two writes to different bytes of
// one sector both survive and no aligned write lands between its read and
// its write. Writers in other processes do not pass it: for them the
// kernel's own rules hold, and two unaligned writers in two processes may
// lose each other's bytes of a shared sector, as with any read-modify-write.
type inode struct {
	key  inodeKey
	refs int // under inodes.mu
	gate ioLock
}

type inodeKey struct{ dev, ino uint64 }

var inodes struct {
	mu sync.Mutex
	m  map[inodeKey]*inode
}

// openInode returns the shared state of the file st describes.
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
