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
	poolQueue   int
	wrapRing    func(Ring) Ring
	coop        bool
	noReaper    bool
	lostAfter   time.Duration
}

// WithEngine shares an engine (its ring, reaper and pool) between Files.
// The File does not close a shared engine.
func WithEngine(e *Engine) Option { return func(c *config) { c.engine = e } }

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
func WithMapper(m iomap.Mapper) Option { return func(c *config) { c.mapper = m } }

// WithTargets adds targets 1..n (devices or files) for a mapper whose
// mappings point at more than the opened file, such as an ExtentMap over
// several devices. Target 0 is the opened file. The File does not close them.
func WithTargets(t ...*os.File) Option { return func(c *config) { c.targets = t } }

// WithSize sets a mapped file's size (a volume behind an ExtentMap)
// instead of the opened file's. A later Open over the same mapper may leave
// it out (it shares the volume's size); one that asks for another size
// fails with EINVAL. Open fails with EINVAL if it is given without
// WithMapper: a kernel file's size is the kernel's.
func WithSize(n int64) Option { return func(c *config) { c.size, c.sizeSet = n, true } }

// WithPolicy sets the completion policy requests get when they ask for
// completion.Default.
func WithPolicy(p completion.Policy) Option { return func(c *config) { c.policy = p } }

// WithEndIO installs an end-of-I/O hook (iomap_dio_ops.end_io).
func WithEndIO(f EndIOFunc) Option { return func(c *config) { c.endIO = f } }

// WithSubmitHook installs a hook that sees (and may change) every SQE.
func WithSubmitHook(f SubmitHookFunc) Option { return func(c *config) { c.submitHook = f } }

// WithQueueDepth sets the ring's SQ size (default 256).
func WithQueueDepth(n int) Option { return func(c *config) { c.entries = uint32(n) } }

// WithSQPoll makes the ring use a kernel submission thread that spins for
// idle before it sleeps.
func WithSQPoll(idle time.Duration) Option {
	return func(c *config) { c.ringFlags |= ring.SetupSQPoll; c.sqIdle = idle }
}

// WithIOPoll makes the ring poll for completions (IORING_SETUP_IOPOLL). The
// device must support polled I/O: Open fails with ring.ErrNoPolledIO if it
// does not.
func WithIOPoll() Option { return func(c *config) { c.ringFlags |= ring.SetupIOPoll } }

// WithCoopTaskrun sets IORING_SETUP_COOP_TASKRUN (and TASKRUN_FLAG) when
// the kernel has them: a completion that needs its submitting thread does
// not interrupt that thread, but waits until it next enters the kernel.
// That matters on CPU-bound devices such as zram, whose reads all come
// back as task work (benchmarks/RESULTS.md has the measurements). Only
// for programs whose submitting threads keep entering the kernel:
// callbacks that resubmit on the engine's reaper, or a goroutine that
// locks its OS thread and polls. A goroutine that submits and then
// sleeps (Submit followed by Request.Wait on another thread's reaping) can
// leave its completion waiting until the Go runtime runs that thread again.
func WithCoopTaskrun() Option { return func(c *config) { c.coop = true } }

// WithoutReaper starts no background reaper: completions are reaped only
// by goroutines that wait (ReadAt, WriteAt, Request.Wait) or call
// Engine.Poll. For an owner that spins on the completion queue and wants
// every completion to itself; asynchronous requests nobody waits for or
// polls never complete.
func WithoutReaper() Option { return func(c *config) { c.noReaper = true } }

// WithLostCompletionCheck turns on audits for completions lost in user
// space (a wrapper's or the engine's own bug; the kernel's own drops are
// always detected, from its overflow counter). The background reaper
// audits when SQEs have been in flight with no completion at all for d,
// and a Wait or ReadAtContext whose context ended audits 100ms after its
// cancel if the request is still in flight (then at growing intervals).
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
	return func(c *config) {
		c.lostAfter = max(d, 0)
	}
}

// WithRingFlags adds raw setup flags.
func WithRingFlags(f ring.SetupFlags) Option { return func(c *config) { c.ringFlags |= f } }

// WithFixedBuffers registers count buffers of size bytes with the ring;
// Engine.GetBuffer hands them out and I/O on them uses read_fixed and
// write_fixed.
func WithFixedBuffers(count, size int) Option {
	return func(c *config) { c.fixedCount, c.fixedSize = count, size }
}

// WithRegisteredFiles registers the engine's files with the ring (slots
// for n files), so SQEs carry a fixed-file index instead of an fd.
func WithRegisteredFiles(n int) Option { return func(c *config) { c.regFiles = n } }

// WithMaxInflight bounds the SQEs in flight at once (default 8 × the SQ
// size). Requests beyond it wait in the engine's backlog.
func WithMaxInflight(n int) Option { return func(c *config) { c.maxInflight = n } }

// WithPool sizes the completion worker pool: workers goroutines and a
// queue of queue completions. A completion that finds the queue full waits
// for room off the reaper (Stats.PoolOverflow), rather than make the reaper
// wait: a Pool callback may block on I/O of the same engine, and that I/O
// needs a reaper.
func WithPool(workers, queue int) Option {
	return func(c *config) { c.workers, c.poolQueue = workers, queue }
}

// WithRingWrapper wraps the engine's ring, for fault injection in tests.
func WithRingWrapper(w func(Ring) Ring) Option { return func(c *config) { c.wrapRing = w } }

func newConfig(opts []Option) config {
	c := config{entries: 256}
	for _, o := range opts {
		o(&c)
	}
	return c
}
