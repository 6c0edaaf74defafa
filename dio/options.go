//go:build linux

package dio

import (
	"os"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

// Options configure a File (Open). A nil *Options, like the zero value,
// means: the process's engine (shared by every such File, never closed), a kernel file (no mapper),
// the completion policy each request asks for, and unaligned I/O through
// bounce buffers. Open reads the struct and keeps nothing of it but the
// values: the caller may reuse it.
type Options struct {
	// Engine shares an engine (its ring, owner and pool) between Files.
	// The File does not close it. Nil: the process's engine, unless
	// EngineOptions is set.
	Engine *Engine
	// EngineOptions gives the File an engine of its own, made with them
	// and closed with the File. Setting both Engine and EngineOptions is
	// an error (EINVAL).
	EngineOptions *EngineOptions

	// Mapper makes the File a mapped file: it maps the File's ranges to
	// extents, and its view is the truth. Nil: a kernel file, mapped by
	// the kernel (the identity), which is what a file other handles or
	// processes may change needs.
	//
	// Two kinds of mapper make sense. A volume mapper that owns its space
	// (iomap.ExtentMap over devices or container files): the engine is the
	// file system there. Or iomap.FileMapper over a kernel file, which
	// reads holes and unwritten extents as zeroes without I/O: only for a
	// caller that owns the file exclusively and promises that nothing else
	// (no other handle, process or os.File) changes it while the File is
	// open, since the mapper's cached layout and the File's size would go
	// stale.
	//
	// Every File opened over the same mapper (the same pointer) shares one
	// size and one write gate.
	Mapper iomap.Mapper
	// Targets are targets 1..n (devices or files) for a mapper whose
	// mappings point at more than the opened file, such as an ExtentMap
	// over several devices. Target 0 is the opened file. The File does
	// not close them; they must stay open until the File is closed.
	Targets []*os.File
	// Size is a mapped file's size (a volume behind an ExtentMap) when
	// its mapper is first opened. Zero: the opened file's size (an empty
	// volume over a non-empty container is Open, then Truncate(0)). A
	// later Open over the same mapper shares the volume's size; one that
	// asks for another non-zero size fails with EINVAL. Open fails with
	// EINVAL if Size is set without Mapper: a kernel file's size is the
	// kernel's.
	Size int64
	// Policy is the completion policy requests get when they ask for
	// completion.Default.
	Policy completion.Policy
	// StrictAlignment makes requests that are not aligned to the file's
	// direct-I/O alignment (Capabilities) fail with ErrUnaligned, as the
	// kernel would, instead of going through bounce buffers: for a caller
	// that wants to know its I/O is zero-copy.
	StrictAlignment bool

	// Test hooks (export_test.go).
	submitHook func(r *Request, sqe *ring.SQE)
	endIO      func(r *Request, n int64, err error) (int64, error)
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

// config is what Open and NewEngine were asked for.
type config struct {
	engine     *Engine
	mapper     iomap.Mapper
	targets    []*os.File
	size       int64
	sizeSet    bool
	policy     completion.Policy
	strict     bool
	endIO      func(r *Request, n int64, err error) (int64, error)
	submitHook func(r *Request, sqe *ring.SQE)

	// engine settings
	entries     uint32
	ringFlags   ring.SetupFlags
	sqIdle      time.Duration
	fixedCount  int
	fixedSize   int
	regFiles    int
	maxInflight int
	workers     int
	wrapRing    func(ringhook.Ring) ringhook.Ring
	lostAfter   time.Duration
	bufMemory   int64

	engineSet bool // EngineOptions were given
}

// engineConfig is the configuration of an engine made with o (nil: the
// defaults).
func engineConfig(o *EngineOptions) config {
	c := config{entries: 256}
	if o == nil {
		return c
	}
	c.engineSet = true
	if o.QueueDepth > 0 {
		c.entries = uint32(o.QueueDepth)
	}
	c.ringFlags = o.RingFlags
	if o.SQPoll {
		c.ringFlags |= ring.SetupSQPoll
		c.sqIdle = o.SQPollIdle
	}
	if o.IOPoll {
		c.ringFlags |= ring.SetupIOPoll
	}
	c.fixedCount, c.fixedSize = o.FixedBuffers, o.FixedBufferSize
	c.regFiles = o.RegisteredFiles
	c.maxInflight = o.MaxInflight
	c.workers = o.Workers
	c.bufMemory = o.BufferMemory
	c.wrapRing = o.hooks.WrapRing
	c.lostAfter = max(o.hooks.LostAfter, 0)
	return c
}

// fileConfig is the configuration of a File opened with o (nil: the
// defaults).
func fileConfig(o *Options) config {
	if o == nil {
		return engineConfig(nil)
	}
	c := engineConfig(o.EngineOptions)
	c.engine = o.Engine
	c.mapper = o.Mapper
	c.targets = o.Targets
	c.size, c.sizeSet = o.Size, o.Size != 0
	c.policy = o.Policy
	c.strict = o.StrictAlignment
	c.submitHook = o.submitHook
	c.endIO = o.endIO
	return c
}
