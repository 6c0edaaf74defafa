package completion

import (
	"errors"
	"fmt"
	"strconv"
)

// Policy says who runs a request's end-of-I/O work and when.
// The zero value is Default.
type Policy uint8

const (
	// Default lets the engine choose (Request.EffectivePolicy says what it chose).
	Default Policy = iota
	// Wait is synchronous completion: the caller blocks and completes the
	// request on its own goroutine.
	Wait
	// Inline runs completion on the engine's owner goroutine (the one that
	// reaps the ring) right after the last CQE.
	// It is the default for reads; the work must not block.
	Inline
	// Caller defers completion: the reaper only pushes the request onto the
	// caller's Queue, and the caller's goroutine runs the work when it calls
	// Queue.Poll or Queue.Wait. Only pure overwrites may use it for writes.
	Caller
	// Pool runs completion on the engine's worker goroutines: for work that may
	// block (fdatasync, size extension, unwritten extent conversion, hooks).
	Pool
	// Polled is for rings set up with IOPOLL: the waiter polls the ring
	// instead of sleeping. Single-SQE requests only.
	Polled

	numPolicies
)

var policyNames = [numPolicies]string{
	Default: "default",
	Wait:    "wait",
	Inline:  "inline",
	Caller:  "caller",
	Pool:    "pool",
	Polled:  "polled",
}

// String returns the policy's name as ParsePolicy accepts it, or "Policy(N)"
// for a value out of range.
func (p Policy) String() string {
	if p < numPolicies {
		return policyNames[p]
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// Valid reports whether p is one of the defined policies.
func (p Policy) Valid() bool { return p < numPolicies }

// ErrUnknownPolicy is wrapped by the error ParsePolicy returns for a name it
// does not know.
var ErrUnknownPolicy = errors.New("completion: unknown policy")

// ParsePolicy returns the policy named s: "default", "wait", "inline",
// "caller", "pool" or "polled" (exactly as String spells them). The empty
// string is Default.
func ParsePolicy(s string) (Policy, error) {
	if s == "" {
		return Default, nil
	}
	for p, name := range policyNames {
		if s == name {
			return Policy(p), nil
		}
	}
	return Default, fmt.Errorf("%w %q (want default, wait, inline, caller, pool or polled)", ErrUnknownPolicy, s)
}

// MarshalText implements encoding.TextMarshaler, so a Policy can be a flag
// (flag.TextVar) or a configuration field.
func (p Policy) MarshalText() ([]byte, error) {
	if !p.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownPolicy, uint8(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParsePolicy.
func (p *Policy) UnmarshalText(b []byte) error {
	q, err := ParsePolicy(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// Reason says why the engine did not give a request the policy it asked for
// (for tests, logs and metrics). The zero value is NoDowngrade.
type Reason uint8

const (
	// NoDowngrade: the request runs under the policy it asked for, or under
	// the engine's first choice when it asked for Default.
	NoDowngrade Reason = iota
	// DowngradeWrite: Inline was asked for a write that has an end-of-I/O
	// hook. A write's hook does the filesystem's completion work and never
	// runs on the reaper (the kernel never sets INLINE_COMP on a write); an
	// explicit Inline vouches only for read hooks.
	DowngradeWrite
	// DowngradeNotOverwrite: the write is not a pure overwrite (it zeroes,
	// converts unwritten extents, allocates or copies shared blocks), so its
	// completion may do I/O and goes to the pool.
	DowngradeNotOverwrite
	// DowngradeExtends: the write ends past the size seen at submission; the
	// size is updated at completion, on the pool.
	DowngradeExtends
	// DowngradeNeedsSync: DSYNC or SYNC that write-through cannot serve; the
	// pool runs fdatasync after the data is in.
	DowngradeNeedsSync
	// DowngradeMultiSQE: polled completion was wanted but the request spans
	// more than one SQE.
	DowngradeMultiSQE
	// DowngradeNotPolledRing: Polled was asked for on a ring without IOPOLL.
	DowngradeNotPolledRing
	// DowngradeEndIO: an end-of-I/O hook that may block is installed and
	// the request did not ask for Inline explicitly, so it runs on the pool.
	DowngradeEndIO
	// DowngradeSync: a synchronous caller asked for Inline, Caller or Pool;
	// it waits and completes on its own goroutine instead.
	DowngradeSync
	// DowngradeUnknownPolicy: the requested Policy is not a defined value;
	// the request runs as if it asked for Default.
	DowngradeUnknownPolicy

	numReasons
)

var reasonNames = [numReasons]string{
	NoDowngrade:            "none",
	DowngradeWrite:         "write",
	DowngradeNotOverwrite:  "not-overwrite",
	DowngradeExtends:       "extends",
	DowngradeNeedsSync:     "needs-sync",
	DowngradeMultiSQE:      "multi-sqe",
	DowngradeNotPolledRing: "not-polled-ring",
	DowngradeEndIO:         "end-io",
	DowngradeSync:          "sync",
	DowngradeUnknownPolicy: "unknown-policy",
}

// String returns a short lower-case name for the reason, suitable as a
// metric label, or "Reason(N)" for a value out of range.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}
