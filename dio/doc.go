// Package dio is uringdio's direct-I/O engine: files opened with O_DIRECT
// whose reads and writes are mapped to extents by an iomap.Mapper and
// carried out as io_uring SQEs, completing under the policy each request
// needs (package completion).
//
// # The data path
//
// File.ReadAt, File.WriteAt and File.Submit check alignment (statx
// STATX_DIOALIGN, or the device's logical block size) before anything is
// submitted. What happens next depends on the kind of file.
//
// A kernel file (a regular file or block device opened without Options.Mapper)
// is the kernel's: the request goes to it at the same offsets, one SQE per
// piece (split at the device's maximum I/O size and at buffer boundaries),
// and the kernel maps, allocates, zeroes holes and unwritten space, and
// ends reads at its own end of file. A read that comes back with nothing,
// or short of an aligned boundary, has reached the end of the file and
// returns what was there and io.EOF; a short read that stops on a boundary
// is resubmitted for the rest. Nothing a File remembers decides what a read
// returns: other handles, other processes and plain os.File writers may
// change the file at any time. Size asks the kernel.
//
// A mapped file (Options.Mapper) runs iomap's iterator over the range: holes
// and unwritten extents read as zeroes without I/O, mapped extents become
// SQEs, new blocks of a mapper that allocates in blocks larger than the
// I/O alignment get their head and tail zeroed, and delayed-allocation
// extents are refused. Every File over one mapper shares one size and one
// gate, as handles share an inode. Each SQE holds a reference on its
// request; the first error wins, the last reference completes the request.
// Short transfers before end of file are resubmitted for the remainder.
//
// # Completion
//
// One goroutine per engine, locked to an OS thread of its own, owns the
// ring (owner.go): it makes every SQE, enters the kernel and reaps every
// CQE, so the ring is set up the way fio sets it up (SINGLE_ISSUER |
// DEFER_TASKRUN: the kernel's completion work runs on that one thread, in
// batches, never interrupting another). Submitters hand it requests
// through a lock-free queue and wake it when it sleeps. A synchronous call
// (ReadAt, WriteAt) parks until the owner has completed its I/O and runs
// the completion on its own goroutine. An asynchronous Request completes
// Inline (on the owner, right after its CQE; a callback that submits again
// has its SQE in the owner's next enter), on the Caller's goroutine
// (through its completion.Queue, or in Request.Wait), or on the engine's
// workers (Pool); the engine downgrades what a request asks for the
// way the kernel's iomap code does: only reads and pure overwrites may
// complete inline or deferred, everything that may block (fdatasync, size
// extension, extent conversion, an end-of-I/O hook) goes to the workers.
//
// Files on a device that completes synchronously (zram, tmpfs: io_uring
// would hand each request to its io-wq threads) are served by the pread
// backend instead: pread/pwrite in the calling goroutine, or on a worker
// for an asynchronous request (its Inline callback runs there). So is
// every file of an engine that could not create a ring (io_uring refused by
// a seccomp profile or kernel.io_uring_disabled). File.Capabilities says
// which backend serves a file, and why.
//
// A completion never runs nested in the Submit that started it (a request
// that needs no I/O hands its Inline completion to the owner), so a
// callback that submits again runs in constant stack.
//
// On a kernel file no write needs completion work in the engine: the
// kernel has allocated, converted, moved the size and (for DSync and Sync,
// RWF_DSYNC and RWF_SYNC on the SQE) made it durable before it posts the
// completion. On a mapped file, writes that allocate, extend or need a sync
// are completed on the pool.
//
// Requests on a volume whose map the engine keeps (iomap.ExtentMap) pass
// the volume's gate, as direct I/O does the inode lock in the kernel: a
// write not aligned to the map's blocks (whose head and tail the engine
// zeroes) runs alone and holds the volume until its extents are converted,
// so no write's zeroing lands on another's data; Punch, Truncate, Allocate
// and Preallocate, which act on the map, hold it alone too, so no space is
// freed under I/O in flight. Asynchronous requests that must wait are
// queued, never blocking Submit.
//
// # When the ring misbehaves
//
// A CQE that matches nothing in flight (duplicated or late) breaks the
// engine: it refuses new I/O with ErrRingBroken and every request in flight
// reports ErrRingBroken once its own CQEs are in. A CQE the kernel drops
// (it counts them) breaks the engine too, and an audit, a NOP with
// IOSQE_IO_DRAIN that completes only after every earlier SQE has, finds
// whose it was: that request fails with an error that matches
// ErrRingBroken and says its completion was lost. Audits for CQEs
// lost without the kernel's knowledge are off (tests turn them on):
// while one waits for a request stuck in a device, the kernel holds back
// every later SQE.
//
// # Memory
//
// A buffer passed to ReadAt, WriteAt or their Context forms is the File's
// until the call returns; Appender.Write and ReadAhead's Read copy, so
// their slices are the caller's again when they return. A Request and its
// buffers are the engine's from a successful Submit until the request
// completes (its Callback has returned, or Wait has): untouched and not
// freed before. Page-aligned off-heap memory from ring.Alloc, or
// registered buffers from Engine.FixedBuffers
// (EngineOptions.FixedBuffers), satisfy every alignment; Go heap
// memory works where it is aligned, since the garbage collector does not
// move heap objects and the engine keeps the request (and so the buffer)
// reachable until its last CQE.
//
// dio needs Linux; elsewhere Open fails with ErrUnsupported.
package dio
