//go:build linux

package dio

import (
	"os"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

// Option configures Open and NewEngine. The zero configuration is: a
// private engine per File with a 256-entry ring, a kernel file (no
// mapper), and the completion policy each request would get by default.
type Option func(*config)

type config struct {
	engine     *Engine
	mapper     iomap.Mapper
	targets    []*os.File
	size       int64
	sizeSet    bool
	policy     completion.Policy
	strict     bool
	endIO      EndIOFunc
	submitHook SubmitHookFunc

	// engine settings
	entries     uint32
	ringFlags   ring.SetupFlags
	sqIdle      time.Duration
	fixedCount  int
	fixedSize   int
	regFiles    int
	maxInflight int
	workers     int
	wrapRing    func(Ring) Ring
	lostAfter   time.Duration
	bufMemory   int64

	allowPread bool // a refused ring makes a pread-backend engine (the default engine)

	engineSet bool // an engine option was given
	fileSet   bool // a File option was given
}

// WithEngine shares an engine (its ring, reaper and pool) between Files.
// The File does not close a shared engine.
func WithEngine(e *Engine) Option { return fileOpt(func(c *config) { c.engine = e }) }

// WithMapper makes the File a mapped file: m maps its ranges to extents,
// and m's view is the truth. Without it the File is a kernel file, mapped
// by the kernel (the identity), which is what a file other handles or
// processes may change needs.
//
// Two kinds of mapper make sense. A volume mapper that owns its space
// (iomap.ExtentMap over devices or container files): the engine is the
// file system there. Or iomap.FileMapper over a kernel file, which reads
// holes and unwritten extents as zeroes without I/O: only for a caller
// that owns the file exclusively and promises that nothing else (no other
// handle, process or os.File) changes it while the File is open, since
// the mapper's cached layout and the File's size would go stale.
//
// Every File opened over the same mapper (the same pointer) shares one
// size and one write gate.
func WithMapper(m iomap.Mapper) Option { return fileOpt(func(c *config) { c.mapper = m }) }

// WithTargets adds targets 1..n (devices or files) for a mapper whose
// mappings point at more than the opened file, such as an ExtentMap over
// several devices. Target 0 is the opened file. The File does not close them.
func WithTargets(t ...*os.File) Option { return fileOpt(func(c *config) { c.targets = t }) }

// WithSize sets a mapped file's size (a volume behind an ExtentMap)
// instead of the opened file's. A later Open over the same mapper may leave
// it out (it shares the volume's size); one that asks for another size
// fails with EINVAL. Open fails with EINVAL if it is given without
// WithMapper: a kernel file's size is the kernel's.
func WithSize(n int64) Option { return fileOpt(func(c *config) { c.size, c.sizeSet = n, true }) }

// WithPolicy sets the completion policy requests get when they ask for
// completion.Default.
func WithPolicy(p completion.Policy) Option { return fileOpt(func(c *config) { c.policy = p }) }

// WithStrictAlignment makes requests that are not aligned to the file's
// direct-I/O alignment (Alignment) fail with ErrUnaligned, as the kernel
// would, instead of going through bounce buffers: for a caller that wants
// to know its I/O is zero-copy.
func WithStrictAlignment() Option { return fileOpt(func(c *config) { c.strict = true }) }

// WithEndIO installs an end-of-I/O hook (iomap_dio_ops.end_io).
func WithEndIO(f EndIOFunc) Option { return fileOpt(func(c *config) { c.endIO = f }) }

// WithSubmitHook installs a hook that sees (and may change) every SQE.
func WithSubmitHook(f SubmitHookFunc) Option { return fileOpt(func(c *config) { c.submitHook = f }) }

// WithQueueDepth sets the ring's SQ size (default 256).
func WithQueueDepth(n int) Option { return engineOpt(func(c *config) { c.entries = uint32(n) }) }

// WithSQPoll makes the ring use a kernel submission thread that spins for
// idle before it sleeps.
func WithSQPoll(idle time.Duration) Option {
	return engineOpt(func(c *config) { c.ringFlags |= ring.SetupSQPoll; c.sqIdle = idle })
}

// WithIOPoll makes the ring poll for completions (IORING_SETUP_IOPOLL). The
// device must support polled I/O: Open fails with ring.ErrNoPolledIO if it
// does not.
func WithIOPoll() Option { return engineOpt(func(c *config) { c.ringFlags |= ring.SetupIOPoll }) }

// WithLostCompletionCheck turns on audits for completions lost in user
// space (a wrapper's or the engine's own bug; the kernel's own drops are
// always detected, from its overflow counter). The engine's owner audits
// when SQEs have been in flight with no completion at all for d.
//
// An audit is a NOP with IOSQE_IO_DRAIN: the kernel posts its completion
// only after every SQE submitted before it has completed, so a request
// from before the audit still without a CQE when the audit's arrives lost
// its completion; it fails with ErrLostCompletion and the engine is
// declared broken (ErrRingBroken). An audit never accuses a slow request,
// but it waits for it, and until it completes the kernel holds back every
// later SQE of the engine, cancels included: one request stuck in a
// failing device then stalls all I/O on the engine for as long as the
// device takes to fail it. That is why audits are off by default. d <= 0
// turns them off.
func WithLostCompletionCheck(d time.Duration) Option {
	return engineOpt(func(c *config) {
		c.lostAfter = max(d, 0)
	})
}

// WithRingFlags adds raw setup flags.
func WithRingFlags(f ring.SetupFlags) Option { return engineOpt(func(c *config) { c.ringFlags |= f }) }

// WithFixedBuffers registers count buffers of size bytes with the ring;
// Engine.GetBuffer hands them out and I/O on them uses read_fixed and
// write_fixed.
func WithFixedBuffers(count, size int) Option {
	return engineOpt(func(c *config) { c.fixedCount, c.fixedSize = count, size })
}

// WithRegisteredFiles registers the engine's files with the ring (slots
// for n files), so SQEs carry a fixed-file index instead of an fd.
func WithRegisteredFiles(n int) Option { return engineOpt(func(c *config) { c.regFiles = n }) }

// WithMaxInflight bounds the SQEs in flight at once (default 8 × the SQ
// size). Requests beyond it wait in the engine's backlog.
func WithMaxInflight(n int) Option { return engineOpt(func(c *config) { c.maxInflight = n }) }

// WithWorkers sets how many worker goroutines the engine keeps for
// completion work that may block (the Pool policy) and for the pread
// backend's asynchronous requests (default 4 × GOMAXPROCS). Their queue
// has no bound: the engine's owner never waits to hand work over.
func WithWorkers(n int) Option { return engineOpt(func(c *config) { c.workers = n }) }

// WithBufferMemory bounds the memory the engine keeps for bounce buffers
// (unaligned ReadAt and WriteAt) at n bytes (default DefaultBufferMemory).
// A request that finds the bound reached waits for a buffer to come back.
func WithBufferMemory(n int64) Option { return engineOpt(func(c *config) { c.bufMemory = n }) }

// WithRingWrapper wraps the engine's ring, for fault injection in tests.
func WithRingWrapper(w func(Ring) Ring) Option { return engineOpt(func(c *config) { c.wrapRing = w }) }

// engineOpt marks an option that configures an engine; fileOpt one that
// configures a File.
func engineOpt(f func(*config)) Option { return func(c *config) { c.engineSet = true; f(c) } }
func fileOpt(f func(*config)) Option   { return func(c *config) { c.fileSet = true; f(c) } }

func newConfig(opts []Option) config {
	c := config{entries: 256}
	for _, o := range opts {
		o(&c)
	}
	return c
}
