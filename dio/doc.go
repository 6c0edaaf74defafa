// Package dio is uringdio's public API: files opened with O_DIRECT whose
// reads and writes go to the kernel as io_uring SQEs (or pread/pwrite on
// devices that complete synchronously), at any offset and length, with
// completions where each request asks for them (package completion).
//
// # Layers
//
// The files call one way (file_order_test.go enforces it), down the data
// path: the API (File, Open, Submit) → streams (Appender, ReadAhead) →
// unaligned I/O (bounce buffers, read-modify-write) → size and space
// changes → requests (checked, locked, mapped to pieces, launched) → the
// engine's hooks (the result, the completion work) → the inode (its I/O
// lock, the shared state of kernel files and volumes). Below dio,
// internal/engine owns the ring: one goroutine per engine, locked to an
// OS thread of its own, makes every SQE and reaps every CQE
// (SINGLE_ISSUER | DEFER_TASKRUN, as fio sets a ring up); workers run
// completions that may block; the pread backend serves devices where
// io_uring would only punt to its worker threads, and engines where
// io_uring is refused.
//
// # Two kinds of file
//
// A kernel file (a regular file or block device opened without
// Options.Mapper) is the kernel's: a request goes to it at the same
// offsets, one SQE per piece (split at the device's largest I/O and at
// buffer boundaries), and the kernel maps, allocates, zeroes holes and
// ends reads at its own end of file. A read that comes back with nothing,
// or short of an aligned boundary, has reached the end and returns what
// was there and io.EOF; nothing a File remembers decides what a read
// returns, so other handles, processes and os.File writers may change the
// file at any time.
//
// A mapped file (Options.Mapper) runs iomap's iterator: holes and
// unwritten extents read as zeroes without I/O, mapped extents become
// SQEs, new blocks of a mapper that allocates in blocks larger than the
// I/O alignment get their head and tail zeroed, delayed-allocation
// extents are refused. Files over one mapper share one size, as handles
// share an inode.
//
// # The inode owns its state
//
// Every File on one kernel file in the process (whatever its engine), or
// over one mapper, shares one I/O lock, taken as xfs and ext4 take
// i_rwsem for direct I/O (lock.go says who takes it how). A request
// belongs to its File from Submit to completion: whoever admits it from
// the lock's queue launches it through that File, whose Close waits for
// it. Nothing shrinks a file below a size it did not set (bounce.go).
//
// # Completion
//
// A synchronous call (ReadAt, WriteAt) parks until its I/O is done and
// runs the completion on its own goroutine. An asynchronous Request
// completes Inline (on the engine's owner, right after its CQE), on the
// Caller's goroutine (its completion.Queue, or Request.Wait), or on the
// engine's workers (Pool); the engine downgrades what a request asks for
// the way the kernel's iomap code does: only reads and pure overwrites
// complete inline or deferred. A completion never runs nested in the
// Submit that started it, so a callback that submits again runs in
// constant stack.
//
// # When the ring misbehaves
//
// A CQE that matches nothing in flight breaks the engine: it refuses new
// I/O with ErrRingBroken, and every request in flight reports it once its
// own CQEs are in. A CQE the kernel drops breaks it too, and an audit (a
// NOP with IOSQE_IO_DRAIN) finds whose it was.
//
// # Memory
//
// A buffer passed to ReadAt, WriteAt or their Context forms is the File's
// until the call returns; Appender.Write and ReadAhead's Read copy. A
// Request and its buffers are the engine's from a successful Submit until
// it completes. Page-aligned off-heap memory from ring.Alloc, or the
// engine's registered buffers (EngineOptions.FixedBuffers), satisfy every
// alignment; Go heap memory works where it is aligned, kept reachable by
// the request until its last CQE.
//
// dio needs Linux; elsewhere Open fails with ErrUnsupported.
package dio
