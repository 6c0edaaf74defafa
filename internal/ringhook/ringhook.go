//go:build linux

// Package ringhook holds the test hooks of package dio's engine: a wrapper
// around the engine's ring (fault injection, see internal/faultring) and
// the lost-completion audit interval. They are not public API: a test
// attaches them to a *dio.EngineOptions with Attach, which package dio
// installs.
package ringhook

import (
	"time"

	"github.com/uringdio/uringdio/ring"
)

// Ring is the part of *ring.Ring the engine uses. A wrapper can stand in
// for it to inject faults: rewrite CQE results, refuse submissions, drop or
// duplicate completions.
type Ring interface {
	GetSQE() *ring.SQE
	Submit() (int, error)
	Pending() uint32
	// Flush publishes the prepared SQEs; EnterWait submits toSubmit of
	// them and waits for n completions in one system call.
	Flush() uint32
	EnterWait(toSubmit, n uint32) (uint32, error)
	// Overflow is the kernel's count of CQEs it dropped.
	Overflow() uint32
	Peek(dst []ring.CQE) (int, error)
	WaitCQ(n uint32) (uint32, error)
	WaitCQTimeout(n uint32, d time.Duration) (uint32, error)
	Err(res int32) error
	Flags() ring.SetupFlags
	RegisterBuffers(bufs [][]byte) error
	RegisterFiles(fds []int32) error
	UpdateFiles(off uint32, fds []int32) error
	Close() error
}

var _ Ring = (*ring.Ring)(nil)

// Hooks are an engine's test hooks. The zero value is none.
type Hooks struct {
	// WrapRing wraps the engine's ring when the engine creates it.
	WrapRing func(Ring) Ring
	// LostAfter turns on audits for completions lost in user space: the
	// engine's owner audits when SQEs have been in flight with no
	// completion at all for LostAfter (dio's audit.go says what an audit
	// costs). Zero: off.
	LostAfter time.Duration
}

// Attach sets h on opts, which must be a *dio.EngineOptions; the hooks go
// with the struct when it is copied. Package dio sets Attach when it is
// initialised.
var Attach func(opts any, h Hooks)
