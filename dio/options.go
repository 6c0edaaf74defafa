//go:build linux

package dio

import (
	"os"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/engine"
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

// config is what Open was asked for.
type config struct {
	engine    *Engine
	engineSet bool // EngineOptions were given: an engine of the File's own
	eng       engine.Config
	mapper    iomap.Mapper
	targets   []*os.File
	size      int64
	policy    completion.Policy
	strict    bool
	hooks     fileHooks
}

// fileConfig is the configuration of a File opened with o (nil: the
// defaults).
func fileConfig(o *Options) config {
	if o == nil {
		return config{}
	}
	c := config{engine: o.Engine, engineSet: o.EngineOptions != nil, eng: engineConfig(o.EngineOptions),
		mapper: o.Mapper, targets: o.Targets, size: o.Size, policy: o.Policy, strict: o.StrictAlignment}
	c.hooks.endIO = o.endIO
	if h := o.submitHook; h != nil {
		c.hooks.sqe = func(x *engine.Req, sqe *ring.SQE) { h((*Request)(x.Hooks.(*reqHooks)), sqe) }
	}
	return c
}
