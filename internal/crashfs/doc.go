// Package crashfs simulates power loss for tests. It is a test helper: no
// production code depends on it.
//
// # File level
//
// [FS] is a FUSE file system (github.com/hanwen/go-fuse/v2) over a
// backing directory that holds the durable image. For each regular file
// it keeps the writes and size changes (truncate, ftruncate, O_TRUNC,
// writes past the end) since the file's last fsync or fdatasync apart
// from the durable image: reads through the mount see the latest state,
// and [FS.Crash] drops what was not synced, all of it ([DropAll]) or a
// seeded random subset torn at 512-byte sector boundaries ([Torn]: each
// pending write survives whole, in part — whole sectors of it — or not
// at all; each pending size change survives or not; the survivors are
// applied in their original order, so every sector holds its old content
// or one write's content for it, never a mix).
//
// What makes a file's pending changes durable: fsync and fdatasync of the
// file (both sync the size too), and writes with O_DSYNC, O_SYNC or
// RWF_DSYNC (the kernel flags such a WRITE request and leaves the sync to
// a direct-I/O server, which this one does). syncfs(2) and sync(2) do not
// reach a FUSE server (the kernel sends FUSE_SYNCFS only to virtiofs), so
// on the file level they make nothing durable; on the block level they
// flush the upper file system, which fsyncs the image.
//
// Durable at once, never dropped by a crash: everything else. Namespace
// operations (create, mkdir, mknod, symlink, link, rename, unlink, rmdir)
// and attribute changes other than the size (chmod, chown, utimes) go
// straight to the backing directory: a file created and never synced
// exists after a crash, with the size and data it was last synced with
// (empty if never). fallocate is refused (EOPNOTSUPP), and so is
// O_TMPFILE. Extended attributes are turned off.
//
// No kernel cache can mask a crash: files are opened with
// FOPEN_DIRECT_IO, so the kernel keeps no page cache for them and every
// read reaches the server, and attributes and names are not cached
// (timeouts of zero). Opens with O_DIRECT work (the server allows direct
// I/O, and does not pass O_DIRECT to the backing file). A file opened
// before a crash belongs to a process that lost power: every later
// request on it fails with EIO. Files opened after it see the durable
// image. Pending state belongs to the inode, so hard links share it; an
// unlinked file's pending state lasts until the next crash or the
// unmount.
//
// [FS.CrashAfter] arms a crash at the n-th request that changes the image
// (write, size change, fsync), for crash points chosen by I/O count
// rather than by time. [Stats] count writes pending, and what the last
// crash kept, tore and dropped.
//
// The FUSE server runs in a process of its own: FS starts the test binary
// again with CRASHFS_SERVE set, and an init function in this package turns
// that process into the server before any test runs. A FUSE request the
// server has read is waited for without end, fatal signals or not; with
// the server inside the test process, a test that died (a panic, a
// timeout) while I/O was in flight would hang in exit. The server process
// outlives the test process, answers until it is gone, then unmounts
// everything it served (block level included) and exits.
//
// # Block level
//
// [BlockMount] is a real ext4 or xfs made in an image file on an FS and
// mounted from a loop device over that file. The loop driver turns the
// upper file system's cache flushes into fsyncs of the image (the loop
// device has a volatile write cache and no FUA, so a FUA write is a write
// and a flush), so a crash keeps exactly what the upper file system
// flushed. ext4 is mounted with commit=3600 (no periodic journal commit
// masks a missing sync) and noauto_da_alloc (nor does the flush ext4 adds
// to replace-by-rename); the image is formatted with no lazy
// initialisation, so no kernel thread writes to it later.
//
// A flush makes every write the device received durable, in every file of
// the upper file system, and so does a FUA write (the block layer
// emulates it with a flush). A program that makes one file durable where
// it meant another can get away with it here, but not at the file level,
// where a sync covers only the file it names.
//
// [BlockMount.Crash] cuts the power (the image's crash: unflushed device
// writes dropped, and every later request of the old loop device fails
// with EIO), then shuts the upper file system down without flushing its
// log (EXT4_IOC_SHUTDOWN with EXT4_GOING_FLAGS_NOLOGFLUSH, or
// XFS_IOC_GOINGDOWN with XFS_FSOP_GOING_FLAGS_NOLOGFLUSH), unmounts it
// (lazily, if files are still open on it: they fail with EIO), lets the
// old loop device detach itself, attaches a new one and mounts again,
// which replays the journal. The power is cut before the shutdown, not
// after, so that nothing the old mount writes on its way down (a log
// write at shutdown, a superblock at unmount) can reach the durable
// image; the cache the upper file system had is gone with its mount.
//
// Everything needs root and /dev/fuse ([Mount] and [MountBlock] skip the
// test without them); the block level also needs loop devices and the
// file system's mkfs, and MountBlock returns an error wrapping
// [ErrUnavailable] where they are missing, so a caller can fall back to
// the file level.
package crashfs
