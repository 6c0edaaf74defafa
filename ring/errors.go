package ring

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. Kernel errors are returned as syscall.Errno values wrapped
// in an *Error that names the operation.
var (
	// ErrClosed is returned by every method of a closed Ring.
	ErrClosed = errors.New("ring: use of closed ring")
	// ErrSQFull means every SQE slot is taken: submit (and reap) before
	// preparing more. No SQE is lost.
	ErrSQFull = errors.New("ring: submission queue full")
	// ErrUnsupported wraps errors.ErrUnsupported for what the kernel or the
	// device lacks; the error it comes in says what is missing.
	ErrUnsupported = fmt.Errorf("ring: %w", errors.ErrUnsupported)
	// ErrNoPolledIO is the result of polled I/O on a device that cannot poll
	// (its queue/io_poll is 0): the kernel completes the read with
	// EOPNOTSUPP. It matches ErrUnsupported and syscall.EOPNOTSUPP.
	ErrNoPolledIO = &Error{Op: "iopoll", Err: unsupported{syscall.EOPNOTSUPP,
		"device does not support polled I/O (its queue/io_poll is 0; use a ring without IOPOLL, or SQPOLL)"}}
	// ErrTimeout is returned by WaitTimeout when the time ran out first.
	ErrTimeout = &Error{Op: "wait", Err: syscall.ETIME}
)

// Error is an error from the kernel (or a check made before asking it),
// with the operation that failed. Err is usually a syscall.Errno.
type Error struct {
	Op  string // "setup", "enter", "register buffers", ...
	Err error
}

func (e *Error) Error() string { return "ring: " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// unsupported is an errno with the reason it matters; it matches
// errors.ErrUnsupported and ErrUnsupported as well as the errno.
type unsupported struct {
	errno syscall.Errno
	what  string
}

func (u unsupported) Error() string { return u.what + ": " + u.errno.Error() }
func (u unsupported) Is(target error) bool {
	return target == errors.ErrUnsupported || target == ErrUnsupported || target == u.errno
}

// Unsupported returns an error that names what is missing and matches
// ErrUnsupported and errors.ErrUnsupported (and errno, if not 0).
func Unsupported(op, what string, errno syscall.Errno) error {
	if errno == 0 {
		errno = syscall.EOPNOTSUPP
	}
	return &Error{Op: op, Err: unsupported{errno, what}}
}

func opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Err: err}
}
