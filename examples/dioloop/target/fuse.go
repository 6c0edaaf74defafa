//go:build linux

package target

import (
	"context"
	"errors"
	"io"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/uringdio/uringdio/dio"
	"golang.org/x/sys/unix"
)

// The file system has two nodes: the root directory and the served file.
const (
	rootID = fuse.FUSE_ROOT_ID
	fileID = rootID + 1
)

// fileSystem is the FUSE side of a Target: a directory with one file, the
// disk. Every request on the file's data is carried out on the image by
// dio; what it does not implement answers ENOSYS (the embedded default).
// go-fuse calls it from many goroutines at once.
type fileSystem struct {
	fuse.RawFileSystem
	t *Target
}

func (fs *fileSystem) String() string { return "dioloop(" + fs.t.cfg.Image + ")" }

// status turns an error from dio into the errno the kernel passes on
// (errnoOf, unsupported becoming EIO) and counts it.
func (fs *fileSystem) status(err error) fuse.Status {
	fs.t.st.errors.Add(1)
	return errnoOf(err, syscall.EIO)
}

// errnoOf returns the errno the kernel is to see for err: what the kernel
// said (EIO, ENOSPC, ...) as it said it, anything else EIO; but never
// ENOSYS. The kernel's FUSE reads ENOSYS as "this file system does not
// implement the request": for FSYNC and FLUSH it sets no_fsync or
// no_flush, answers the caller 0 and never sends one again, so a flush
// that failed, and every later one, would become a success. dio's errors
// for what the kernel or the device lacks wrap ENOSYS or
// errors.ErrUnsupported (ring.ErrUnsupported, dio.ErrUnsupported), and so
// do EOPNOTSUPP and ENOTSUP: all of them, whatever the request, become
// unsupported, which is EIO but where the request may say "not
// supported" (fallocate: EOPNOTSUPP).
func errnoOf(err error, unsupported syscall.Errno) fuse.Status {
	var errno syscall.Errno
	switch {
	case errors.Is(err, syscall.ENOSYS), errors.Is(err, errors.ErrUnsupported):
		return fuse.Status(unsupported)
	case errors.As(err, &errno) && errno != 0:
		return fuse.Status(errno)
	}
	return fuse.EIO
}

func (fs *fileSystem) attr(id uint64, out *fuse.Attr) {
	t := fs.t
	out.Ino = id
	out.Owner = fuse.Owner{Uid: uint32(unix.Geteuid()), Gid: uint32(unix.Getegid())}
	sec, nsec := uint64(t.started.Unix()), uint32(t.started.Nanosecond())
	out.Atime, out.Mtime, out.Ctime = sec, sec, sec
	out.Atimensec, out.Mtimensec, out.Ctimensec = nsec, nsec, nsec
	if id == rootID {
		out.Mode = syscall.S_IFDIR | 0o755
		out.Nlink = 2
		return
	}
	out.Mode = syscall.S_IFREG | 0o600
	out.Nlink = 1
	out.Size = uint64(t.size)
	out.Blocks = out.Size / 512
	out.Blksize = uint32(t.cfg.BlockSize)
}

// The disk's size is fixed while it is served, so the kernel may cache
// names and attributes; the data it never caches (FOPEN_DIRECT_IO).
const attrValid = 1 // second

func (fs *fileSystem) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if h.NodeId != rootID || name != fs.t.name {
		return fuse.ENOENT
	}
	out.NodeId, out.Generation = fileID, 1
	out.EntryValid, out.AttrValid = attrValid, attrValid
	fs.attr(fileID, &out.Attr)
	return fuse.OK
}

func (fs *fileSystem) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.NodeId != rootID && in.NodeId != fileID {
		return fuse.ENOENT
	}
	out.AttrValid = attrValid
	fs.attr(in.NodeId, &out.Attr)
	return fuse.OK
}

// SetAttr refuses size changes (a disk's size is not its file system's to
// change; Config.Size sets it) and ignores the rest (mode, owner, times:
// the served file has fixed ones).
func (fs *fileSystem) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.NodeId != fileID {
		return fuse.EPERM
	}
	if size, ok := in.GetSize(); ok && int64(size) != fs.t.size {
		return fuse.EPERM
	}
	out.AttrValid = attrValid
	fs.attr(fileID, &out.Attr)
	return fuse.OK
}

// Open opens the disk. FOPEN_DIRECT_IO: the kernel keeps no page cache for
// it, so every read and write reaches this server, at the offsets and
// lengths the loop driver asked for. FOPEN_PARALLEL_DIRECT_WRITES: writes
// are not serialised on the inode's lock (the disk's size never changes).
func (fs *fileSystem) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.NodeId != fileID {
		return fuse.EISDIR
	}
	if in.Flags&syscall.O_TRUNC != 0 {
		return fuse.EPERM
	}
	t := fs.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return fuse.Status(syscall.ESHUTDOWN)
	}
	if t.open == 0 {
		t.idle = make(chan struct{})
	}
	t.open++
	t.nextFh++
	out.Fh = t.nextFh
	out.OpenFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES
	return fuse.OK
}

// Release: the kernel let go of a handle (the loop device detached, or a
// process closed the file).
func (fs *fileSystem) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	t := fs.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open == 0 {
		return // not one of ours: nothing was open
	}
	if t.open--; t.open == 0 {
		close(t.idle)
	}
}

// Read reads into go-fuse's request buffer, which is page-aligned: an
// aligned request goes to the image zero-copy. A read past the end is
// short, as it is on the image.
func (fs *fileSystem) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := fs.t
	off := int64(in.Offset)
	if off >= t.size {
		return fuse.ReadResultData(nil), fuse.OK
	}
	p := buf[:min(int64(in.Size), t.size-off)]
	n, err := t.img.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return nil, fs.status(err)
	}
	t.st.reads.Add(1)
	t.st.readBytes.Add(uint64(n))
	return fuse.ReadResultData(p[:n]), fuse.OK
}

// Write writes data at its offset. go-fuse reads a WRITE's data into a
// buffer aligned for O_DIRECT, so an aligned request is zero-copy. The
// kernel marks a write to an O_DSYNC or O_SYNC file, or one made with
// RWF_DSYNC, in its flags and leaves the sync to a direct-I/O server: such
// a write goes with DSync (RWF_DSYNC on the SQE: a FUA write, or a write
// and a cache flush) or Sync. A write past the end of the disk fails with
// ENOSPC: the disk does not grow.
func (fs *fileSystem) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := fs.t
	off := int64(in.Offset)
	if off+int64(len(data)) > t.size {
		return 0, fuse.Status(syscall.ENOSPC)
	}
	var fl dio.Flags
	switch {
	case in.Flags&unix.O_SYNC == unix.O_SYNC:
		fl = dio.Sync
	case in.Flags&unix.O_DSYNC != 0:
		fl = dio.DSync
	}
	n, err := t.img.WriteAtContext(context.Background(), data, off, fl)
	if err != nil {
		return uint32(n), fs.status(err)
	}
	t.st.writes.Add(1)
	t.st.writeBytes.Add(uint64(n))
	if fl != 0 {
		t.st.dsyncWrites.Add(1)
	}
	return uint32(n), fuse.OK
}

// datasync makes every write the image has received durable: the block
// device's flush. fsync and fdatasync alike (the size never changes).
// After a flush has failed, every flush fails with its error (Flush).
func (fs *fileSystem) datasync() fuse.Status {
	t := fs.t
	if err := t.Flush(); err != nil {
		return fs.status(err)
	}
	t.st.datasyncs.Add(1)
	return fuse.OK
}

// Fsync is the loop device's flush (REQ_PREFLUSH, and the flush that
// stands in for FUA): Datasync.
func (fs *fileSystem) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.datasync()
}

// Flush is close(2) of a descriptor of the served file: whoever wrote
// through it expects what it wrote to survive, as closing a block device
// flushes it.
func (fs *fileSystem) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fs.datasync()
}

// Fallocate carries out the loop device's discards (PUNCH_HOLE) and
// write-zeroes (PUNCH_HOLE, or ZERO_RANGE where the request asks to keep
// the blocks allocated, REQ_NOUNMAP), each with one Punch of the image.
// Other modes are refused (EOPNOTSUPP: the loop driver then reports the
// operation as unsupported, not as an I/O error).
//
// A write-zeroes must leave the range reading zeroes, or fail and say so.
// Punch does that on every image dio serves: a regular file gets a hole,
// which reads as zeroes; a block device zeroes the range (the kernel's
// fallocate PUNCH_HOLE on a block device is blkdev_issue_zeroout without
// a fallback: the device's write-zeroes, or EOPNOTSUPP); a volume's map
// gets a hole. It is one step, so it succeeds or fails whole: dio has no
// ZERO_RANGE, and Punch followed by Preallocate could zero the range,
// then fail (on a block device KEEP_SIZE preallocation always does) and
// report a write-zeroes that was done as failed. What Punch does not keep
// is a regular file's allocation, which REQ_NOUNMAP asks for: a later
// write to the range allocates again and may fail with ENOSPC, as on a
// thin-provisioned disk. Where the image cannot punch, the answer is
// EOPNOTSUPP, and the block layer writes the zeroes itself.
func (fs *fileSystem) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	t := fs.t
	off, n := int64(in.Offset), int64(in.Length)
	if off < 0 || n <= 0 || off+n > t.size {
		return fuse.EINVAL
	}
	switch in.Mode {
	case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE,
		unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE:
	default:
		return fuse.Status(syscall.EOPNOTSUPP)
	}
	if err := t.img.Punch(off, n); err != nil {
		t.st.errors.Add(1)
		return errnoOf(err, syscall.EOPNOTSUPP)
	}
	t.st.punches.Add(1)
	return fuse.OK
}

func (fs *fileSystem) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.NodeId != rootID {
		return fuse.ENOTDIR
	}
	return fuse.OK
}

// ReadDir lists the root: ".", ".." and the disk.
func (fs *fileSystem) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	entries := [...]fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: rootID, Off: 1},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: rootID, Off: 2},
		{Name: fs.t.name, Mode: syscall.S_IFREG, Ino: fileID, Off: 3},
	}
	for _, e := range entries[min(in.Offset, uint64(len(entries))):] {
		if !out.AddDirEntry(e) {
			break
		}
	}
	return fuse.OK
}

func (fs *fileSystem) ReleaseDir(in *fuse.ReleaseIn) {}

func (fs *fileSystem) StatFs(cancel <-chan struct{}, in *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	bs := uint64(fs.t.cfg.BlockSize)
	out.Bsize, out.Frsize = uint32(bs), uint32(bs)
	out.Blocks = uint64(fs.t.size) / bs
	out.Files = 1
	out.NameLen = 255
	return fuse.OK
}
