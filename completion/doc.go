// Package completion names who runs a direct-I/O request's end-of-I/O work
// and when (a [Policy], and the [Reason] a request got another than it
// asked for), and provides the per-caller [Queue] where caller-deferred
// completion runs.
//
// The model is the Linux iomap direct-I/O code (fs/iomap/direct-io.c):
// __iomap_dio_rw sets a request's completion flags from what it knows at
// submission, iomap_dio_bio_iter clears them per extent as it learns that
// completion will need more I/O, and iomap_dio_bio_end_io runs completion
// where the surviving flags say. The engine's decision (internal/choose)
// is one pure function over what it knows of the request; each rule names
// its kernel counterpart, and each downgrade is a Reason.
//
//	Policy   runs on                         kernel counterpart
//	Wait     the caller's goroutine          wait_for_completion (sync kiocb, FORCE_WAIT)
//	Inline   the engine's owner, after the CQE IOMAP_DIO_INLINE_COMP
//	Caller   the caller's goroutine, later   IOMAP_DIO_CALLER_COMP (since removed from Linux)
//	Pool     the engine's worker goroutines  queue_work(s_dio_done_wq)
//	Polled   the goroutine polling the ring  IOCB_HIPRI
//
// Caller-deferred completion was removed from the kernel after it went unused
// and broke; here it is our own design and the most tested path (see
// queue_test.go).
//
// The package imports nothing from the project. Its hot paths (Queue.Push
// and Queue.Poll) do not allocate in steady state.
package completion
