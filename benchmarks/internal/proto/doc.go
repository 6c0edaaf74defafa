// Package proto holds throwaway prototypes of the synchronous read path:
// small engines, each built on package ring, each with a blocking ReadAt
// that many goroutines call at once. They exist to be measured against
// each other, fio and pread (cmd/protobench); they are not library code.
//
//   - Owner: one goroutine locked to an OS thread owns the ring and does
//     every submission and reap; callers hand it requests through a
//     lock-free stack and park on their request's channel. The owner waits
//     in io_uring_enter, and an eventfd read kept in the ring wakes it when
//     a request arrives while it sleeps.
//   - Evfd: callers prepare and submit their own SQEs (a short mutex
//     around SQE preparation and the tail store, then io_uring_enter
//     outside it, with an atomic count so one enter carries every published
//     SQE); a reaper goroutine waits in Go's netpoller on an eventfd
//     registered with the ring and wakes the callers. With SQPOLL the
//     kernel's poll thread submits and runs the completions' task work.
//   - LF: leader/follower, as package dio does: the caller that holds the
//     token reaps for everyone until its own request is done.
//   - Pread: pread(2) in the calling goroutine.
//
// Every engine is safe for concurrent use. Buffers passed to ReadAt must
// not move until it returns: off-heap memory (ring.Alloc) or heap memory.
package proto
