// Package ring is one io_uring instance done properly in Go: setup from a
// params struct, the SQ, CQ and SQE arrays mapped once and unmapped once,
// SQE preparation for the operations direct I/O needs, registered buffers and
// files, batched submission, CQ reaping that never loses a completion, and a
// kernel probe that says what the running kernel can do.
//
// # Ownership
//
// A Ring is owned by one goroutine at a time. None of its methods are safe for
// concurrent use: the submission side (GetSQE, Submit) and the completion side
// (Peek, Wait) each keep unsynchronised local state, exactly like liburing's
// struct io_uring. Callers that share a ring between goroutines must serialise
// access themselves (package dio does). Misuse shows up as a data race under
// `go test -race`, because the local cursors are plain fields.
//
// # Memory the kernel touches
//
// SQE.UserData is an integer (a slab index in package dio), never a Go
// pointer. Buffers passed to Prep* helpers are recorded by address: the caller
// must keep them alive, and unmoved, until the operation's CQE has been reaped.
// Off-heap memory (see Alloc) or heap memory held by the caller
// satisfies that; goroutine stack memory does not.
package ring
