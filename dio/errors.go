//go:build linux

package dio

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/uringdio/uringdio/internal/engine"
	"github.com/uringdio/uringdio/ring"
)

// Sentinel errors. Errors from the kernel are syscall.Errno values; every
// error a File returns is an *OpError that says which operation, path,
// offset and length it was about.
var (
	// ErrClosed: the File (or its Engine) is closed. Nothing was submitted.
	ErrClosed = errors.New("dio: file closed")
	// ErrUnaligned: a buffer address, offset or length is not a multiple of
	// the file's direct-I/O alignment. It also matches syscall.EINVAL.
	ErrUnaligned = errors.New("dio: unaligned direct I/O")
	// ErrReadOnly: a write to a File opened without write access. It
	// matches syscall.EBADF, what the kernel would have said.
	ErrReadOnly = errors.New("dio: file not opened for writing")
	// ErrRingBroken: the ring delivered a completion that matches no
	// request in flight (lost, duplicated or late CQE). The engine refuses
	// further I/O: a request's result can no longer be trusted.
	ErrRingBroken = engine.ErrRingBroken
	// ErrInProgress: Result was called on a request that has not completed.
	ErrInProgress = errors.New("dio: request still in flight")
)

// Errors that match an exported one.
var (
	// errDelalloc: the mapper returned a delayed-allocation extent, which
	// direct I/O cannot address.
	errDelalloc = errors.New("dio: delayed-allocation extent cannot be used for direct I/O")
	// errLostCompletion: the kernel finished the request, but its
	// completion never arrived (found by an audit, audit.go). It matches
	// ErrRingBroken: the engine refuses further I/O.
	errLostCompletion = engine.ErrLostCompletion
)

// OpError is the error of one operation on one File (or, with no Path,
// of making an Engine). It is returned once, never wrapped in another.
type OpError struct {
	Op   string // "read", "write", "sync", "open", ...
	Path string
	Off  int64
	Len  int64
	Err  error
}

// Error says "dio: op path at offset N length M: err", leaving out the
// path when there is none (an engine's error) and the range when it is
// empty (open, close, sync).
func (e *OpError) Error() string {
	s := "dio: " + e.Op
	if e.Path != "" {
		s += " " + e.Path
	}
	if e.Off != 0 || e.Len != 0 {
		s += fmt.Sprintf(" at offset %d length %d", e.Off, e.Len)
	}
	return s + ": " + fmt.Sprint(e.Err)
}

// Unwrap returns the underlying error.
func (e *OpError) Unwrap() error { return e.Err }

// alignError says which of buffer, offset or length is misaligned. It
// matches ErrUnaligned and syscall.EINVAL.
type alignError struct {
	What  string // "buffer address", "offset", "length", "buffer length"
	Value int64
	Align int64
}

func (e *alignError) Error() string {
	return fmt.Sprintf("dio: %s %#x is not a multiple of the direct-I/O alignment %d", e.What, e.Value, e.Align)
}

// Is makes an alignError match ErrUnaligned and EINVAL.
func (e *alignError) Is(target error) bool {
	return target == ErrUnaligned || target == syscall.EINVAL
}

type readOnlyErr struct{}

func (readOnlyErr) Error() string { return ErrReadOnly.Error() }
func (readOnlyErr) Is(t error) bool {
	return t == ErrReadOnly || t == syscall.EBADF
}

// writeOnlyErr is the error of a read of a File opened O_WRONLY. It
// matches syscall.EBADF, what the kernel would have said.
type writeOnlyErr struct{}

func (writeOnlyErr) Error() string   { return "dio: file not opened for reading" }
func (writeOnlyErr) Is(t error) bool { return t == syscall.EBADF }

// unsupportedErr names what is missing; it matches ErrUnsupported,
// errors.ErrUnsupported and ring.ErrUnsupported.
type unsupportedErr struct{ what string }

func (u unsupportedErr) Error() string { return "dio: unsupported: " + u.what }
func (u unsupportedErr) Is(t error) bool {
	return t == ErrUnsupported || t == errors.ErrUnsupported || t == ring.ErrUnsupported
}

func unsupported(what string) error { return unsupportedErr{what} }

// errUnknownOp is Submit's error for a Request whose Op is none of the
// operations.
var errUnknownOp = fmt.Errorf("dio: unknown Op: %w", syscall.EINVAL)

// errOwnerWait is the error of a call that would wait for the I/O lock on
// the engine's owner (from an Inline callback): the owner completes the
// I/O the lock waits for. It matches syscall.EDEADLK.
var errOwnerWait = fmt.Errorf("dio: on the engine's owner (an Inline callback) this call would wait for I/O that only the owner completes; give the callback the Pool policy: %w", syscall.EDEADLK)
