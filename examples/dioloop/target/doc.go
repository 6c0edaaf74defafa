// Package target serves one disk image as a block device whose data path
// has no page cache in it: the loop driver's reads and writes reach a FUSE
// file opened with FOPEN_DIRECT_IO, and this server carries them out with
// O_DIRECT through uringdio (package dio) on the image. A flush of the
// block device (REQ_PREFLUSH: the loop driver turns it into an fsync of the
// served file) becomes File.Datasync on the image, and a write the kernel
// marks O_DSYNC a DSync write (RWF_DSYNC, the FUA path). So a file system
// made on the device keeps exactly what it flushed, as it would on a disk:
// what the 2009 "O_DIRECT loop" thread set out to give the loop driver.
// Once a flush has failed, every later flush fails with its error (the
// writes it was to make durable may be lost; Target.Flush says why), while
// reads and writes go on.
//
// The stack, top to bottom:
//
//	file system (ext4, xfs, ...) ── its own page cache, its flushes
//	/dev/loopN                   ── LO_FLAGS_DIRECT_IO, 4 KiB blocks (Config.BlockSize)
//	FUSE file <Dir>/<name>       ── FOPEN_DIRECT_IO: no page cache, every request reaches Target
//	Target (this package)        ── READ → ReadAt, WRITE → WriteAt(Context, DSync), FSYNC/FLUSH → Datasync
//	dio.File on the image        ── O_DIRECT, io_uring
//
// Start mounts the FUSE file system and serves it; Attach attaches a loop
// device; Close flushes, detaches the loop device, waits for the kernel to
// let go of the served file, unmounts and closes the image.
//
// A process that serves a block device must not itself wait on that
// device's I/O: a request it reads from /dev/fuse is waited for without
// end, so a process that does I/O to the device while it dies (a panic, a
// test timeout) hangs in exit. The command (package main beside this one)
// serves and does nothing else; the tests run the server in a child
// process.
package target
