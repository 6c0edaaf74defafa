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
// they make nothing durable here.
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
// image.
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
// everything it served and exits.
//
// Everything needs root and /dev/fuse ([Mount] skips the test without
// them).
package crashfs
