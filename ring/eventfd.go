//go:build linux

package ring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Register opcodes the io_uring dependency lacks (include/uapi/linux/io_uring.h).
const (
	regEventfd        = 4  // IORING_REGISTER_EVENTFD, 5.1
	unregEventfd      = 5  // IORING_UNREGISTER_EVENTFD
	regIOWQMaxWorkers = 19 // IORING_REGISTER_IOWQ_MAX_WORKERS, 5.15
)

// RegisterEventfd makes the kernel signal the eventfd efd (add 1) whenever
// it posts completions to this ring, so a goroutine can wait for
// completions in Go's netpoller instead of in io_uring_enter. Completions
// posted by task work are signalled when the task work runs, not when the
// device finishes.
func (r *Ring) RegisterEventfd(efd int) error {
	if r.closed {
		return ErrClosed
	}
	fd := int32(efd)
	return opErr("register eventfd", register(r.fd, regEventfd, unsafe.Pointer(&fd), 1))
}

// UnregisterEventfd drops the registered eventfd.
func (r *Ring) UnregisterEventfd() error {
	if r.closed {
		return ErrClosed
	}
	return opErr("unregister eventfd", register(r.fd, unregEventfd, nil, 0))
}

// SetIOWQMaxWorkers caps the io-wq worker threads that run the operations
// the kernel cannot issue without blocking (reads of devices that do not
// support NOWAIT, such as zram): bounded covers regular files and block
// devices, unbounded everything else; 0 leaves a limit as it is. It returns
// the limits that were in force. The kernel keeps one io-wq per submitting
// thread; the limits apply to each of them, present and future. On an
// SQPOLL ring they apply to the poll thread's io-wq.
func (r *Ring) SetIOWQMaxWorkers(bounded, unbounded uint32) (prev [2]uint32, err error) {
	if r.closed {
		return prev, ErrClosed
	}
	v := [2]uint32{bounded, unbounded}
	if err := register(r.fd, regIOWQMaxWorkers, unsafe.Pointer(&v[0]), 2); err != nil {
		if err == unix.EINVAL {
			return prev, Unsupported("register iowq max workers", "kernel lacks IORING_REGISTER_IOWQ_MAX_WORKERS (Linux 5.15)", unix.EINVAL)
		}
		return prev, opErr("register iowq max workers", err)
	}
	return v, nil
}

// Enter is one io_uring_enter(2): it submits up to toSubmit published SQEs
// (see Flush) and, with getEvents, runs pending completion work and waits
// until minComplete CQEs are ready. It touches no Go-side ring state, so
// it may be called by any goroutine while others publish or reap; the
// caller owns the protocol. On an SQPOLL ring it submits nothing itself
// and wakes a sleeping poll thread. It returns what the kernel returned
// (SQEs consumed). EINTR is retried.
func (r *Ring) Enter(toSubmit, minComplete uint32, getEvents bool) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	var flags uint32
	if getEvents {
		flags = enterGetEvents
	}
	if r.flags&SetupSQPoll != 0 {
		toSubmit = 0
		flags |= r.wakeFlag()
		if flags == 0 {
			return 0, nil
		}
	}
	n, err := enter(r.fd, toSubmit, minComplete, flags)
	return n, opErr("enter", err)
}
