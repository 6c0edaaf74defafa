//go:build linux

package crashfs

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// server is the file-level crash file system's FUSE server: a mount over
// a backing directory that holds the durable image. It runs in a process
// of its own (serveMain), and FS is its client, so that the test process
// can die at any moment (a panic, a timeout) without waiting forever for
// answers from a server that died with it. Its methods are safe for
// concurrent use, and with the file system's own I/O.
type server struct {
	backing string
	dir     string
	fuse    *fuse.Server

	// cut orders crashes against I/O: every request that touches file
	// data holds it shared, a crash holds it exclusively, so each request
	// runs wholly before or wholly after the crash.
	cut sync.RWMutex
	// gen counts crashes. A handle opened before the last crash belongs
	// to a process that lost power with it: its requests fail with EIO.
	gen atomic.Uint64

	mu       sync.Mutex
	files    map[fileKey]*pendingFile // files with pending state
	crashes  int
	last     CrashStats
	cutSince bool // a crash happened since the last restart
	// The armed crash (crashAfter): countdown reaches zero at the
	// request that finds the power cut; arms[armID] then receives the
	// crash's stats and closes.
	armed     bool
	countdown atomic.Int64
	armID     uint64
	armSeed   uint64
	armMode   Mode
	arms      map[uint64]chan CrashStats

	writes, syncs atomic.Int64
}

// fileKey names a file: go-fuse's stable inode number and generation.
type fileKey struct{ ino, gen uint64 }

// newServer mounts a crash file system at dir over the durable image in
// backing, served by this process.
func newServer(backing, dir string) (*server, error) {
	c := &server{
		backing: backing,
		dir:     dir,
		files:   make(map[fileKey]*pendingFile),
		arms:    make(map[uint64]chan CrashStats),
	}
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("crashfs: %w", err)
	}
	zero := time.Duration(0)
	opts := &fs.Options{
		// No kernel caching of attributes or names: the size the kernel
		// believes must be the one the server holds, before a crash and
		// after.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true, // root mounts directly, no fusermount
			FsName:            "crashfs",
			Name:              "crashfs",
			// Without xattrs the kernel stops asking for
			// security.capability before every write.
			DisableXAttrs: true,
			MaxWrite:      1 << 20,
		},
	}
	rawFS := fs.NewNodeFS(&node{LoopbackNode: root.(*fs.LoopbackNode), c: c}, opts)
	srv, err := fuse.NewServer(dsyncFS{rawFS}, dir, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("crashfs: mount %s: %w", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("crashfs: mount %s: %w", dir, err)
	}
	c.fuse = srv
	return c, nil
}

// unmount unmounts the file system and forgets what was pending. It fails
// while files on it are open.
func (c *server) unmount() error {
	if err := c.fuse.Unmount(); err != nil {
		return fmt.Errorf("crashfs: unmount %s: %w", c.dir, err)
	}
	c.fuse.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, p := range c.files {
		p.close()
		delete(c.files, k)
	}
	return nil
}

// crashNow is FS.Crash: it disarms an armed crash, then crashes.
func (c *server) crashNow(seed uint64, mode Mode) (CrashStats, error) {
	c.disarm()
	return c.crash(seed, mode)
}

// disarm forgets the armed crash, if any: its waitArmed returns false.
func (c *server) disarm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed {
		c.armed = false
		c.countdown.Store(0)
		close(c.arms[c.armID])
	}
}

// crash cuts the power: it drops the pending operations of every file as
// mode says, and fences the handles open now.
func (c *server) crash(seed uint64, mode Mode) (CrashStats, error) {
	c.cut.Lock()
	defer c.cut.Unlock()
	c.gen.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]fileKey, 0, len(c.files))
	for k := range c.files {
		keys = append(keys, k)
	}
	// A fixed order, so that a seed always makes the same choices.
	slices.SortFunc(keys, func(a, b fileKey) int {
		if a.ino != b.ino {
			return cmpU64(a.ino, b.ino)
		}
		return cmpU64(a.gen, b.gen)
	})
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var st CrashStats
	var first error
	for _, k := range keys {
		p := c.files[k]
		if err := p.crash(mode, rng, &st); err != nil && first == nil {
			first = fmt.Errorf("crashfs: crash: %w", err)
		}
		p.close()
		delete(c.files, k)
	}
	c.crashes++
	c.last = st
	c.cutSince = true
	return st, first
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// crashAfter is FS.CrashAfter; it returns the arm's id for waitArmed.
func (c *server) crashAfter(n int64, seed uint64, mode Mode) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed {
		close(c.arms[c.armID])
	}
	c.armID++
	c.armed, c.armSeed, c.armMode = true, seed, mode
	c.arms[c.armID] = make(chan CrashStats, 1)
	c.countdown.Store(max(n, 1))
	return c.armID
}

// waitArmed waits until arm id fires (its stats, true) or is replaced or
// disarmed (false). Each arm is waited for once (FS does, always): the
// wait forgets it.
func (c *server) waitArmed(id uint64) (CrashStats, bool) {
	c.mu.Lock()
	ch := c.arms[id]
	c.mu.Unlock()
	if ch == nil {
		return CrashStats{}, false
	}
	st, ok := <-ch
	c.mu.Lock()
	delete(c.arms, id)
	c.mu.Unlock()
	return st, ok
}

// tick counts one request that would change the durable image, and
// fires the armed crash at its count. It must be called without cut held.
func (c *server) tick() {
	if c.countdown.Load() <= 0 || c.countdown.Add(-1) != 0 {
		return
	}
	c.fireArmed()
}

// fireArmed makes the armed crash happen now, if one is armed.
func (c *server) fireArmed() error {
	c.mu.Lock()
	if !c.armed {
		c.mu.Unlock()
		return nil
	}
	c.armed = false
	c.countdown.Store(0)
	seed, mode, id := c.armSeed, c.armMode, c.armID
	c.mu.Unlock()
	st, err := c.crash(seed, mode)
	c.mu.Lock()
	ch := c.arms[id]
	c.mu.Unlock()
	if ch != nil {
		ch <- st
		close(ch)
	}
	return err
}

// restart is FS.Restart.
func (c *server) restart() error {
	if err := c.fireArmed(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.cutSince {
		return fmt.Errorf("crashfs: Restart without a crash")
	}
	c.cutSince = false
	return nil
}

// stats is FS.Stats.
func (c *server) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Writes: c.writes.Load(), Syncs: c.syncs.Load(), Crashes: c.crashes, LastCrash: c.last}
	for _, p := range c.files {
		w, b := p.pending()
		s.PendingWrites += w
		s.PendingBytes += b
	}
	return s
}

// lookup returns the pending state of file k, or nil if it has none.
func (c *server) lookup(k fileKey) *pendingFile {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files[k]
}

// pendingFor returns the pending state of file k, making it (on a
// duplicate of f's descriptor) if it has none.
func (c *server) pendingFor(k fileKey, f *os.File) (*pendingFile, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.files[k]; p != nil {
		return p, nil
	}
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	p, err := newPendingFile(os.NewFile(uintptr(fd), f.Name()))
	if err != nil {
		return nil, err
	}
	c.files[k] = p
	return p, nil
}

// forget drops any pending state of file k: a file just created has none,
// whatever an older file with the same inode number left.
func (c *server) forget(k fileKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.files[k]; p != nil {
		p.close()
		delete(c.files, k)
	}
}

// fixAttr replaces the durable size in out by the latest one.
func (c *server) fixAttr(k fileKey, out *fuse.Attr) {
	if p := c.lookup(k); p != nil {
		out.Size = uint64(p.Size())
		out.Blocks = max(out.Blocks, (out.Size+511)/512)
	}
}

// node is a loopback node whose regular files keep unsynced data apart.
// Namespace operations (create, mkdir, rename, link, unlink, rmdir,
// symlink) and attribute changes other than the size go straight to the
// backing directory: they are durable at once.
type node struct {
	*fs.LoopbackNode
	c *server
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeStatxer     = (*node)(nil)
	_ fs.NodeTmpfiler    = (*node)(nil)
)

func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), c: n.c}
}

func (n *node) key() fileKey { return keyOf(n.EmbeddedInode()) }

func keyOf(in *fs.Inode) fileKey {
	sa := in.StableAttr()
	return fileKey{ino: sa.Ino, gen: sa.Gen}
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno == 0 {
		n.c.fixAttr(keyOf(ch), &out.Attr)
	}
	return ch, errno
}

// backingFlags turns open flags into the flags the backing file is opened
// with: readable whenever writable (the overlay reads around writes), and
// without what the crash file system does itself (O_DIRECT, O_APPEND,
// O_TRUNC, O_SYNC/O_DSYNC: the backing file is the durable image and only
// syncs and crashes write to it). O_CREAT and O_EXCL stay: Create needs
// them, and the kernel does not send them with Open.
func backingFlags(flags uint32) uint32 {
	f := flags &^ (syscall.O_DIRECT | syscall.O_APPEND | syscall.O_TRUNC | syscall.O_SYNC | syscall.O_DSYNC)
	if f&syscall.O_ACCMODE == syscall.O_WRONLY {
		f = f&^syscall.O_ACCMODE | syscall.O_RDWR
	}
	return f
}

// adopt makes a handle from the loopback's: it takes a duplicate of its
// descriptor and releases it.
func (n *node) adopt(ctx context.Context, lf fs.FileHandle, k fileKey) (*handle, syscall.Errno) {
	defer lf.(fs.FileReleaser).Release(ctx)
	pf, ok := lf.(fs.FilePassthroughFder)
	if !ok {
		return nil, syscall.EIO
	}
	fd, _ := pf.PassthroughFd()
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return &handle{c: n.c, key: k, f: os.NewFile(uintptr(dup), ""), gen: n.c.gen.Load()}, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, lf, _, errno := n.LoopbackNode.Create(ctx, name, backingFlags(flags), mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	k := keyOf(ch)
	n.c.forget(k)
	h, errno := n.adopt(ctx, lf, k)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, h, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	lf, _, errno := n.LoopbackNode.Open(ctx, backingFlags(flags))
	if errno != 0 {
		return nil, 0, errno
	}
	h, errno := n.adopt(ctx, lf, n.key())
	if errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if errno := h.truncate(0); errno != 0 {
			h.Release(ctx)
			return nil, 0, errno
		}
	}
	// FOPEN_DIRECT_IO: the kernel keeps no page cache for the file, so
	// every read reaches the server and no cached page can hide a crash.
	return h, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := f.(*handle); ok {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(h.f.Fd()), &st); err != nil {
			return fs.ToErrno(err)
		}
		out.FromStat(&st)
	} else if errno := n.LoopbackNode.Getattr(ctx, nil, out); errno != 0 {
		return errno
	}
	n.c.fixAttr(n.key(), &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		h, ok := f.(*handle)
		if !ok {
			// truncate(2) by path: a handle of our own for it.
			lf, _, errno := n.LoopbackNode.Open(ctx, syscall.O_RDWR)
			if errno != 0 {
				return errno
			}
			if h, errno = n.adopt(ctx, lf, n.key()); errno != 0 {
				return errno
			}
			defer h.Release(ctx)
		}
		if errno := h.truncate(int64(size)); errno != 0 {
			return errno
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	if in.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) != 0 {
		if errno := n.LoopbackNode.Setattr(ctx, nil, in, out); errno != 0 {
			return errno
		}
	}
	return n.Getattr(ctx, f, out)
}

// Statx is refused, so the kernel asks Getattr, which knows the latest size.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

// Tmpfile is refused: O_TMPFILE files are not supported.
func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// handle is an open file: a descriptor of the backing file, for reads of
// what has no pending state and to make that state from.
type handle struct {
	c   *server
	key fileKey
	f   *os.File
	gen uint64 // the crash generation it was opened in
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileWritever  = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
)

// begin starts a request: it holds cut shared until end, and fails if the
// handle is from before a crash.
func (h *handle) begin() syscall.Errno {
	h.c.cut.RLock()
	if h.gen != h.c.gen.Load() {
		h.c.cut.RUnlock()
		return syscall.EIO
	}
	return 0
}

func (h *handle) end() { h.c.cut.RUnlock() }

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if errno := h.begin(); errno != 0 {
		return nil, errno
	}
	defer h.end()
	var n int
	var err error
	if p := h.c.lookup(h.key); p != nil {
		n, err = p.ReadAt(dest, off)
	} else {
		n, err = h.f.ReadAt(dest, off)
	}
	if err != nil && err != io.EOF {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.c.tick()
	if errno := h.begin(); errno != 0 {
		return 0, errno
	}
	defer h.end()
	p, err := h.c.pendingFor(h.key, h.f)
	if err == nil {
		err = p.WriteAt(data, off)
	}
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	h.c.writes.Add(1)
	return uint32(len(data)), 0
}

func (h *handle) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	return h.Write(ctx, slices.Concat(data...), off)
}

func (h *handle) truncate(size int64) syscall.Errno {
	h.c.tick()
	if errno := h.begin(); errno != 0 {
		return errno
	}
	defer h.end()
	p, err := h.c.pendingFor(h.key, h.f)
	if err == nil {
		err = p.Truncate(size)
	}
	return fs.ToErrno(err)
}

// Fsync makes the file's pending operations durable (fsync and fdatasync
// alike: the size is always part of it).
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.c.tick()
	if errno := h.begin(); errno != 0 {
		return errno
	}
	defer h.end()
	h.c.syncs.Add(1)
	if p := h.c.lookup(h.key); p != nil {
		return fs.ToErrno(p.Sync())
	}
	return 0
}

// Flush (close(2)) makes nothing durable.
func (h *handle) Flush(ctx context.Context) syscall.Errno { return 0 }

func (h *handle) Release(ctx context.Context) syscall.Errno {
	return fs.ToErrno(h.f.Close())
}

// Allocate is refused: fallocate would change the durable image behind
// the pending state's back.
func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return syscall.EOPNOTSUPP
}

// dsyncFS makes an O_DSYNC or O_SYNC write (open flag, RWF_DSYNC, or a
// write through a direct-I/O handle of such a file) durable: the kernel
// passes the flag in the WRITE request and leaves the sync to a server
// that asked for direct I/O; go-fuse's node API does not show it.
type dsyncFS struct{ fuse.RawFileSystem }

func (d dsyncFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, st := d.RawFileSystem.Write(cancel, in, data)
	return d.sync(cancel, in, n, st)
}

func (d dsyncFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := d.RawFileSystem.Writev(cancel, in, data)
	return d.sync(cancel, in, n, st)
}

func (d dsyncFS) sync(cancel <-chan struct{}, in *fuse.WriteIn, n uint32, st fuse.Status) (uint32, fuse.Status) {
	if st != fuse.OK || in.Flags&syscall.O_DSYNC == 0 {
		return n, st
	}
	if st := d.RawFileSystem.Fsync(cancel, &fuse.FsyncIn{InHeader: in.InHeader, Fh: in.Fh, FsyncFlags: 1}); st != fuse.OK {
		return 0, st
	}
	return n, st
}
