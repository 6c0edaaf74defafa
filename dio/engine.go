//go:build linux

package dio

import (
	"sync"
	"time"

	"github.com/uringdio/uringdio/internal/engine"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

// Engine is one ring and the goroutine that owns it, locked to an OS
// thread of its own; a slab of SQEs in flight; completion workers; the
// memory for bounce buffers and streams; and the pread backend for files
// whose device completes synchronously (or for every file, where no ring
// could be made). Files share an engine: by default the process's, shared
// by every File opened without one. Safe for concurrent use.
type Engine struct {
	e         *engine.Engine
	permanent bool // the default engine: Close does nothing
}

// EngineOptions configure an Engine (NewEngine, or a File's own engine
// through Options.EngineOptions). A nil *EngineOptions, like the zero
// value, is the default: a 256-entry ring with the flags the engine picks,
// no registered buffers or files, 8 × the SQ size in flight, 4 ×
// GOMAXPROCS completion workers and 64 MiB of bounce buffers.
//
// Options that shape the ring itself (SQPoll, IOPoll, RingFlags,
// FixedBuffers, RegisteredFiles) make the engine serve every file through
// the ring; otherwise each device gets the faster backend (a device that
// completes synchronously is served by pread).
type EngineOptions struct {
	// QueueDepth is the ring's SQ size (default 256).
	QueueDepth int
	// SQPoll makes the ring use a kernel submission thread that spins for
	// SQPollIdle before it sleeps.
	SQPoll     bool
	SQPollIdle time.Duration
	// IOPoll makes the ring poll for completions (IORING_SETUP_IOPOLL).
	// The device must support polled I/O: Open fails with
	// ring.ErrNoPolledIO if it does not.
	IOPoll bool
	// RingFlags are raw setup flags added to the ring's. Flags the
	// engine's owner cannot honour (R_DISABLED, ATTACH_WQ and the
	// completion-work flags it picks itself) are an error (EINVAL).
	RingFlags ring.SetupFlags
	// FixedBuffers registers that many buffers of FixedBufferSize bytes
	// (default 1 MiB) with the ring; I/O whose memory lies in them uses
	// read_fixed and write_fixed.
	FixedBuffers    int
	FixedBufferSize int
	// RegisteredFiles registers the engine's files with the ring (slots
	// for that many files), so SQEs carry a fixed-file index instead of
	// an fd.
	RegisteredFiles int
	// MaxInflight bounds the SQEs in flight at once (default 8 × the SQ
	// size). Requests beyond it wait in the engine's backlog.
	MaxInflight int
	// Workers is how many worker goroutines the engine keeps for
	// completion work that may block (the Pool policy) and for the pread
	// backend's asynchronous requests (default 4 × GOMAXPROCS). Their
	// queue has no bound: the engine's owner never waits to hand work
	// over.
	Workers int
	// BufferMemory bounds the memory the engine keeps for bounce buffers
	// (unaligned ReadAt and WriteAt, Appender and ReadAhead) at that many
	// bytes (default 64 MiB, at least 2 MiB). A request that finds the
	// bound reached waits for a buffer to come back; a stream takes its
	// buffers when it is made, fewer where there is no room for all.
	BufferMemory int64

	hooks ringhook.Hooks // test hooks (internal/ringhook)
}

func init() {
	ringhook.Attach = func(o any, h ringhook.Hooks) { o.(*EngineOptions).hooks = h }
}

// engineConfig is the configuration of an engine made with o (nil: the
// defaults).
func engineConfig(o *EngineOptions) engine.Config {
	c := engine.Config{Entries: 256}
	if o == nil {
		return c
	}
	if o.QueueDepth > 0 {
		c.Entries = uint32(o.QueueDepth)
	}
	c.RingFlags = o.RingFlags
	if o.SQPoll {
		c.RingFlags |= ring.SetupSQPoll
		c.SQIdle = o.SQPollIdle
	}
	if o.IOPoll {
		c.RingFlags |= ring.SetupIOPoll
	}
	c.FixedCount, c.FixedSize = o.FixedBuffers, o.FixedBufferSize
	c.RegFiles, c.MaxInflight, c.Workers = o.RegisteredFiles, o.MaxInflight, o.Workers
	c.BufMemory = o.BufferMemory
	c.WrapRing = o.hooks.WrapRing
	c.LostAfter = max(o.hooks.LostAfter, 0)
	return c
}

// NewEngine creates an engine: a ring owned by a goroutine locked to its
// own OS thread, and a completion worker pool. A nil o means the defaults
// (EngineOptions). Where io_uring is refused (a seccomp profile,
// kernel.io_uring_disabled) the engine serves every file through pread,
// unless o asks for what only a ring does (SQPoll, IOPoll, RingFlags,
// FixedBuffers, RegisteredFiles): then it fails, naming the option.
// NewEngine keeps nothing of o but its values. Close the engine after
// every File that uses it.
func NewEngine(o *EngineOptions) (*Engine, error) {
	e, err := engine.New(engineConfig(o))
	if err != nil {
		return nil, &OpError{Op: "engine", Err: err}
	}
	return &Engine{e: e}, nil
}

var defaultEngine struct {
	once sync.Once
	e    *Engine
	err  error
}

// defaultEng returns the process's engine, created at its first use: what
// Open gives every File opened without Options.Engine or
// Options.EngineOptions. It lives as long as the process; its Close does
// nothing.
func defaultEng() (*Engine, error) {
	defaultEngine.once.Do(func() {
		e, err := engine.New(engineConfig(nil))
		if err == nil {
			defaultEngine.e = &Engine{e: e, permanent: true}
		}
		defaultEngine.err = err
	})
	return defaultEngine.e, defaultEngine.err
}

// Close stops the engine: it waits for every request in flight, stops the
// owner and the workers, and closes the ring. Files using it must be
// closed first. Called from a callback that runs on the engine's owner
// (Inline), it cannot wait for the owner: it refuses new I/O at once,
// returns nil, and the owner stops once what is in flight has completed.
// The default engine's Close does nothing.
func (e *Engine) Close() error {
	if e.permanent {
		return nil
	}
	return e.e.Close()
}

// Stats is a snapshot of an engine's counters (Engine.Stats): counts since
// the engine was made, and what was in flight when it was taken.
type Stats struct {
	Submitted   uint64 // SQEs submitted (pread backend: system calls)
	Completed   uint64 // CQEs processed (pread backend: pieces done)
	Resubmits   uint64 // short completions resubmitted
	Backlogged  uint64 // requests that waited for SQ room or slots
	StrayCQEs   uint64 // CQEs that matched nothing
	Audits      uint64 // lost-completion audits completed
	LostCQEs    uint64 // requests' SQEs whose completion an audit found lost
	DroppedCQEs uint64 // CQEs the kernel reported dropping (CQ overflow)
	Wakes       uint64 // times a submitter woke the sleeping owner
	// Syncs counts the fsyncs and fdatasyncs that appenders' syncs issued
	// (a group commit issues one for all its callers).
	Syncs uint64
	// Bounced counts ReadAt and WriteAt calls that were not aligned and went
	// through bounce buffers.
	Bounced uint64
	// Inflight is the number of SQEs in flight.
	Inflight uint64
}

// Stats returns a snapshot of the engine's counters. Each is read
// atomically, not all at one instant. Safe for concurrent use.
func (e *Engine) Stats() Stats {
	c := &e.e.C
	return Stats{
		Submitted: c.Submitted.Load(), Completed: c.Completed.Load(), Resubmits: c.Resubmits.Load(),
		Backlogged: c.Backlogged.Load(), StrayCQEs: c.StrayCQEs.Load(), Audits: c.Audits.Load(),
		LostCQEs: c.LostCQEs.Load(), DroppedCQEs: c.DroppedCQEs.Load(), Wakes: c.Wakes.Load(),
		Syncs: c.Syncs.Load(), Bounced: c.Bounced.Load(), Inflight: uint64(e.e.Inflight()),
	}
}

// FixedBuffers returns the engine's registered buffers
// (EngineOptions.FixedBuffers of FixedBufferSize bytes each; none without
// them). A request whose memory lies in one goes out as read_fixed or
// write_fixed. They are off-heap and page aligned, so every request on
// them is zero-copy; they are the caller's to share out (each call returns
// the same ones), and valid until the engine is closed. Safe for
// concurrent use.
func (e *Engine) FixedBuffers() [][]byte { return e.e.FixedBuffers() }
