//go:build linux

// Package engine carries out direct I/O for package dio: one goroutine
// per engine, locked to an OS thread, owns an io_uring (owner.go), makes
// every SQE and reaps every CQE (reap.go), audits the ring for lost
// completions (audit.go); workers run completions that may block
// (workers.go); a pread backend serves devices that complete synchronously
// and engines without a ring (pread.go); a bounded pool holds aligned
// buffers (pool.go).
//
// It knows operations on descriptors with memory ranges, flags, a
// completion policy and hooks (req.go): nothing of files, sizes, ends of
// file, inodes or mappers, which are dio's. It imports ring and
// completion, never dio.
package engine

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

// Config is what an engine is made with (dio's EngineOptions).
type Config struct {
	Entries     uint32
	RingFlags   ring.SetupFlags
	SQIdle      time.Duration
	FixedCount  int
	FixedSize   int
	RegFiles    int
	MaxInflight int
	Workers     int
	BufMemory   int64
	WrapRing    func(ringhook.Ring) ringhook.Ring // a test's
	LostAfter   time.Duration                     // lost-completion audits (0: off)
}

// NeedsRing names the setting that asks for a ring (so the engine cannot
// fall back to pread where io_uring is refused), or returns "".
func (c *Config) NeedsRing() string {
	switch {
	case c.RingFlags&ring.SetupSQPoll != 0:
		return "EngineOptions.SQPoll"
	case c.RingFlags&ring.SetupIOPoll != 0:
		return "EngineOptions.IOPoll"
	case c.RingFlags != 0:
		return "EngineOptions.RingFlags"
	case c.FixedCount > 0:
		return "EngineOptions.FixedBuffers"
	case c.RegFiles > 0:
		return "EngineOptions.RegisteredFiles"
	case c.WrapRing != nil:
		return "a ring wrapper (test hook)"
	}
	return ""
}

// Engine is one ring, its owner, the workers, the pread backend and the
// buffer pool. Safe for concurrent use.
type Engine struct {
	ring   ringhook.Ring
	sw     submitWaiter    // nil if the ring cannot submit and wait in one call
	ovf    overflowCounter // the kernel's dropped-CQE count
	iopoll bool
	noRing error // why the engine has no ring (nil: it has one)
	// noProbe: options shaped the ring, which serves every file.
	noProbe bool

	o   owner      // the owner goroutine and its queues (owner.go)
	own ownerState // what only the owner touches

	inflight  atomic.Int64  // SQEs in flight
	directSem chan struct{} // the one synchronous call that may skip an idle ring
	ready     readyList     // Inline completions for the owner to run (reap.go)

	workers *workers
	pr      *preadBackend
	Bufs    *Pool // aligned buffers for bounces and streams (pool.go)

	closed atomic.Bool
	broken atomic.Bool
	C      Counters

	fixed fixedBufs
	zero  zeroBuf
}

// Counters are an engine's live counters (dio's Stats says what each
// counts).
type Counters struct {
	Submitted, Completed, Resubmits, Backlogged, StrayCQEs, Audits atomic.Uint64
	LostCQEs, DroppedCQEs, Wakes, Syncs, Bounced                   atomic.Uint64
}

// Errors the engine reports.
var (
	// ErrRingBroken: a completion matched no request in flight; no result
	// from the ring can be trusted, and the engine refuses new I/O.
	ErrRingBroken = errors.New("dio: ring broken: completion matches no request in flight")
	// ErrLostCompletion: an audit found a request's completion lost. It
	// matches ErrRingBroken.
	ErrLostCompletion error = lostError{}
)

type lostError struct{}

func (lostError) Error() string {
	return "dio: ring broken: completion lost (the kernel finished the request; its CQE never arrived)"
}

func (lostError) Is(target error) bool { return target == ErrRingBroken }

// submitWaiter is the part of a ring that publishes SQEs, then submits and
// waits in one system call.
type submitWaiter interface {
	Flush() uint32
	EnterWait(toSubmit, n uint32) (uint32, error)
}

// overflowCounter is the part of a ring that says how many CQEs the kernel
// dropped.
type overflowCounter interface{ Overflow() uint32 }

var (
	_ submitWaiter    = (*ring.Ring)(nil)
	_ overflowCounter = (*ring.Ring)(nil)
)

// unhonoured are setup flags the owner cannot honour: a disabled ring, a
// work queue shared with another ring's owner, and the completion-work
// flags it picks itself.
const unhonoured = ring.SetupRDisabled | ring.SetupAttachWQ | ring.SetupCoopTaskrun |
	ring.SetupTaskrunFlag | ring.SetupSingleIssuer | ring.SetupDeferTaskrun

// New makes an engine. Where io_uring is refused (a seccomp profile,
// kernel.io_uring_disabled, no kernel support) it serves everything with
// pread, unless c asks for a ring (NeedsRing).
func New(c Config) (*Engine, error) {
	if bad := c.RingFlags & unhonoured; bad != 0 {
		return nil, fmt.Errorf("setup flags %v: the engine's owner cannot honour them (it picks SINGLE_ISSUER|DEFER_TASKRUN itself): %w", bad, syscall.EINVAL)
	}
	e := &Engine{
		Bufs:      NewPool(c.BufMemory),
		pr:        newPreadBackend(),
		directSem: make(chan struct{}, 1),
		noProbe:   c.WrapRing != nil || c.RingFlags != 0 || c.FixedCount > 0 || c.RegFiles > 0,
	}
	e.own.lostAfter = c.LostAfter
	e.workers = newWorkers(e, c.Workers)
	err := e.startOwner(&c) // the owner makes the ring on its own thread
	if err == nil {
		return e, nil
	}
	if !refusedRing(err) {
		return nil, err
	}
	if opt := c.NeedsRing(); opt != "" {
		return nil, fmt.Errorf("%s needs io_uring, and the ring was refused: %w", opt, err)
	}
	e.noRing = err
	return e, nil
}

// setupRing creates and sets up the ring; the owner calls it on its
// thread (SINGLE_ISSUER binds a ring to the thread that makes it).
func (e *Engine) setupRing(c *Config) error {
	r, err := createRing(c)
	if err != nil {
		return err
	}
	var rr ringhook.Ring = r
	if c.WrapRing != nil {
		rr = c.WrapRing(r)
	}
	e.ring = rr
	e.iopoll = r.Flags()&ring.SetupIOPoll != 0
	e.ovf = r // a wrapper that does not forward it: the kernel's counter is the truth
	if o, ok := rr.(overflowCounter); ok {
		e.ovf = o
	}
	e.sw, _ = rr.(submitWaiter)
	// io-wq's workers (requests the kernel cannot issue without blocking)
	// are threads of this process: bound them.
	r.SetIOWQMaxWorkers(uint32(min(4, runtime.GOMAXPROCS(0))), 2)
	n := c.MaxInflight
	if n <= 0 {
		n = 8 * int(r.SQEntries())
	}
	e.own.init(n, int(r.CQEntries()))
	if c.FixedCount > 0 {
		if err := e.fixed.setup(e.ring, c.FixedCount, c.FixedSize); err != nil {
			return err
		}
	}
	if c.RegFiles > 0 {
		e.own.fileSlots = make([]int32, c.RegFiles)
		for i := range e.own.fileSlots {
			e.own.fileSlots[i] = -1
		}
		if err := e.ring.RegisterFiles(e.own.fileSlots); err != nil {
			return fmt.Errorf("register files: %w", err)
		}
	}
	return nil
}

// createRing makes the ring with the flags fio uses where the kernel has
// them (SINGLE_ISSUER | DEFER_TASKRUN: completion work runs only when the
// owner asks for completions, in batches, never interrupting another
// thread), falling back to a plain ring.
func createRing(c *Config) (*ring.Ring, error) {
	flags := c.RingFlags
	if flags&ring.SetupSQPoll == 0 {
		if p, err := ring.Probe(); err == nil {
			want := ring.SetupSingleIssuer | ring.SetupDeferTaskrun
			if p.SetupFlags&want == want {
				r, err := NewRing(ring.Params{Entries: c.Entries, Flags: flags | want, SQThreadIdle: c.SQIdle})
				if err == nil || refusedRing(err) {
					return r, err
				}
			}
		}
	}
	return NewRing(ring.Params{Entries: c.Entries, Flags: flags, SQThreadIdle: c.SQIdle})
}

// NewRing creates an engine's ring (a variable: tests make it fail).
var NewRing = ring.New

// refusedRing reports whether a ring's creation error means io_uring is
// not allowed or not there: a seccomp profile or kernel.io_uring_disabled
// (EPERM), a kernel without it (ENOSYS).
func refusedRing(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EACCES)
}

// NoRing says why the engine has no ring (nil: it has one).
func (e *Engine) NoRing() error { return e.noRing }

// IOPoll reports whether the ring polls for completions.
func (e *Engine) IOPoll() bool { return e.iopoll }

// Closed reports whether Close has begun; Broken whether the ring
// delivered a completion that matched nothing (ErrRingBroken).
func (e *Engine) Closed() bool { return e.closed.Load() }

// Broken: see Closed.
func (e *Engine) Broken() bool { return e.broken.Load() }

// Close stops the engine once what is in flight has completed: the owner,
// the workers, the ring, the memory. Called on the owner (from an Inline
// callback) it cannot wait for the owner: it returns at once and the
// engine stops by itself.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	if e.OnOwnerThread() {
		go e.shutdown()
		return nil
	}
	return e.shutdown()
}

func (e *Engine) shutdown() error {
	var err error
	if e.ring != nil {
		err = e.stopOwner() // the owner drains, then closes the ring
	}
	e.workers.close()
	e.Bufs.close()
	e.fixed.free()
	e.zero.free()
	return err
}

// Inflight is the number of SQEs in flight.
func (e *Engine) Inflight() int64 { return max(e.inflight.Load(), 0) }

// fixedBufs are the registered buffers: one arena, cut in pieces.
type fixedBufs struct {
	arena []byte
	bufs  [][]byte
}

func (f *fixedBufs) setup(r ringhook.Ring, count, size int) error {
	if size <= 0 {
		size = 1 << 20
	}
	arena, err := ring.Alloc(count * size)
	if err != nil {
		return fmt.Errorf("fixed buffers of %d bytes: %w", count*size, err)
	}
	f.arena = arena
	if err := r.RegisterBuffers([][]byte{arena}); err != nil {
		return fmt.Errorf("register buffers of %d bytes: %w", len(arena), err)
	}
	for i := range count {
		f.bufs = append(f.bufs, arena[i*size:(i+1)*size:(i+1)*size])
	}
	return nil
}

func (f *fixedBufs) free() {
	if f.arena != nil {
		ring.Free(f.arena)
	}
}

// FixedBuffers returns the registered buffers (none without them).
func (e *Engine) FixedBuffers() [][]byte { return e.fixed.bufs }

// Fixed reports whether b lies in the registered arena.
func (e *Engine) Fixed(b []byte) bool {
	a := e.fixed.arena
	if a == nil || len(b) == 0 {
		return false
	}
	base, p := uintptr(addrOf(a)), uintptr(addrOf(b))
	return p >= base && p+uintptr(len(b)) <= base+uintptr(len(a))
}

// RegisterFile puts fd in a registered-file slot and returns the slot, or
// -1 if the engine registers no files or its table is full.
func (e *Engine) RegisterFile(fd int32) (int32, error) {
	if e.own.fileSlots == nil {
		return -1, nil
	}
	idx, err := int32(-1), error(nil)
	e.onOwner(func() {
		for i, v := range e.own.fileSlots {
			if v == -1 {
				if err = e.ring.UpdateFiles(uint32(i), []int32{fd}); err == nil {
					e.own.fileSlots[i], idx = fd, int32(i)
				}
				return
			}
		}
	})
	return idx, err
}

// UnregisterFile frees a slot from RegisterFile.
func (e *Engine) UnregisterFile(idx int32) {
	if idx < 0 {
		return
	}
	e.onOwner(func() {
		e.ring.UpdateFiles(uint32(idx), []int32{-1})
		e.own.fileSlots[idx] = -1
	})
}

// zeroBuf is a buffer of zeroes for the pieces that zero sub-blocks; it
// only grows, and an outgrown one may still be in flight: freed at Close.
type zeroBuf struct {
	mu  sync.Mutex
	buf []byte
	old [][]byte
}

// Zeroes returns n bytes of zeroes in off-heap memory, valid until Close.
func (e *Engine) Zeroes(n int) ([]byte, error) {
	z := &e.zero
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(z.buf) < n {
		b, err := ring.Alloc(n)
		if err != nil {
			return nil, err
		}
		if z.buf != nil {
			z.old = append(z.old, z.buf)
		}
		z.buf = b
	}
	return z.buf[:n], nil
}

func (z *zeroBuf) free() {
	for _, b := range append(z.old, z.buf) {
		if b != nil {
			ring.Free(b)
		}
	}
}
