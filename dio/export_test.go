//go:build linux

package dio

import (
	"io"
	"testing"
	"time"

	"github.com/uringdio/uringdio/internal/engine"
	"github.com/uringdio/uringdio/ring"
)

// AuditForTest queues a lost-completion audit (audit.go).
func AuditForTest(e *Engine) { e.e.Audit() }

// SizeForTest returns f.Size(), failing the test on an error.
func SizeForTest(t testing.TB, f *File) int64 {
	t.Helper()
	n, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// InflightForTest returns f's count of references on its descriptor
// (requests in flight and calls using it).
func InflightForTest(f *File) int64 { return f.refs.n.Load() }

// NewEngineWithoutRingForTest makes an engine the way DefaultEngine does,
// with a ring constructor that fails with err.
func NewEngineWithoutRingForTest(err error) (*Engine, error) {
	saved := engine.NewRing
	engine.NewRing = func(ring.Params) (*ring.Ring, error) { return nil, err }
	defer func() { engine.NewRing = saved }()
	return NewEngine(nil)
}

// LostAfterForTest returns the engine's lost-completion audit interval (0:
// audits off).
func LostAfterForTest(e *Engine) time.Duration { return e.e.LostAfter() }

// SetSubmitHook sets on o a hook that sees (and may change) every SQE of
// the File opened with o, just before it is queued. The engine's own
// fields (UserData) must be left alone.
func SetSubmitHook(o *Options, h func(r *Request, sqe *ring.SQE)) { o.submitHook = h }

// GateWaitedForTest reports how many requests on f's volume waited at its
// write gate.
func GateWaitedForTest(f *File) uint64 { return f.gateWaited() }

// ErrLostCompletionForTest is the error of a request whose completion an
// audit found lost.
var ErrLostCompletionForTest = errLostCompletion

// DoneForTest reports whether r has completed and its callback returned.
func DoneForTest(r *Request) bool { return r.done() }

// AlignForTest returns f's direct-I/O alignment (Memory, Offset).
func AlignForTest(f *File) alignment { return f.align }

// MaxIOForTest returns the largest SQE the engine issues for f.
func MaxIOForTest(f *File) int64 { return f.maxIO }

// FdForTest returns f's descriptor, or ^uintptr(0) once Close has begun.
func FdForTest(f *File) uintptr {
	if f.refs.closed.Load() {
		return ^uintptr(0)
	}
	return uintptr(f.fd)
}

// DefaultEngineForTest returns the process's engine (the one Files
// opened without an engine share).
func DefaultEngineForTest() (*Engine, error) { return defaultEng() }

// ReadAheadSubmittedForTest returns how many of a ReadAhead reader's
// slots hold a read the engine accepted (submitted, done or not) and the
// reader has not consumed yet.
func ReadAheadSubmittedForTest(rc io.ReadCloser) int {
	n := 0
	for _, s := range rc.(*readAhead).slots {
		if s.busy {
			n++
		}
	}
	return n
}

// RefuseRingForTest makes every ring the engine creates until restore is
// called fail with err, as a seccomp profile or kernel.io_uring_disabled
// would.
func RefuseRingForTest(err error) (restore func()) {
	saved := engine.NewRing
	engine.NewRing = func(ring.Params) (*ring.Ring, error) { return nil, err }
	return func() { engine.NewRing = saved }
}

// ClosedForTest reports whether f's descriptor close has begun (a Close
// that waited, or the last reference after a deferred one).
func ClosedForTest(f *File) bool { return f.refs.closeDone.Load() }

// SetPatchHookForTest sets a hook that runs inside every unaligned write
// of a kernel file, with the inode's lock held exclusive, once the size is
// read and before anything is written (nil: none).
func SetPatchHookForTest(h func(*File)) { patchHook = h }

// BufferedFdForTest returns f's buffered descriptor (0 if not opened).
func BufferedFdForTest(f *File) int { return int(f.bfd.fd.Load()) }
