//go:build linux

// Package harness is diobench's measurement code: the workload shapes, the
// engines compared (uringdio, pread, iceber/iouring-go, fio), the per-I/O
// latency histograms, CPU accounting, and the table, JSON, report and plot
// outputs. The diobench command, the Go benchmarks and the smoke test all
// run through it, so what CI checks is what users run.
package harness

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Engine names.
const (
	EngineUringdio = "uringdio"
	EnginePread    = "pread"
	EngineIceber   = "iceber"
	EngineFio      = "fio"
)

// Engines lists every engine in the order tables show them.
var Engines = []string{EngineUringdio, EnginePread, EngineIceber, EngineFio}

// Read/write modes (fio's names).
const (
	RandRead  = "randread"
	RandWrite = "randwrite"
	SeqRead   = "read"
	SeqWrite  = "write"
	RandRW    = "randrw"
)

// Completion modes of the uringdio engine.
const (
	CompInline = "inline" // async loop, callbacks resubmit on the reaper
	CompCaller = "caller" // async loop, callbacks run by the job's goroutine from its Queue
	CompPool   = "pool"   // async loop, callbacks run on the engine's worker pool
	CompWait   = "wait"   // qd goroutines calling ReadAt/WriteAt
)

// Config is one measurement: a workload shape on a target and the engine
// settings. It is also what diobench sends the iceber helper (as JSON).
type Config struct {
	Engine string `json:"engine"`
	Path   string `json:"path"`
	// Files, when not empty, are the files of a many-files run (-files):
	// Size is split evenly between them (see PerFile) and each I/O goes to
	// a uniformly random one of them. Path is then their directory.
	Files []string `json:"files,omitempty"`
	// Size is how many bytes of the target, from offset 0, the I/O covers
	// (over all Files together).
	Size  int64  `json:"size"`
	Block bool   `json:"block,omitempty"` // Path is a block device
	RW    string `json:"rw"`
	BS    int    `json:"bs"`
	QD    int    `json:"qd"`
	Jobs  int    `json:"jobs"`
	// Duration bounds the run; Ops, when set, stops each job after that
	// many I/Os instead (Go benchmarks use b.N).
	Duration   time.Duration `json:"duration"`
	Ops        int64         `json:"ops,omitempty"`
	Completion string        `json:"completion,omitempty"`
	SQPoll     bool          `json:"sqpoll,omitempty"`
	FixedBufs  bool          `json:"fixedbufs,omitempty"`
	IOPoll     bool          `json:"iopoll,omitempty"`
	Verify     bool          `json:"verify,omitempty"`
	// RingFlags adds io_uring setup flags to uringdio's ring (comma list of
	// coop, taskrun, single, defer, submitall): for experiments with what
	// the library's defaults should be.
	RingFlags string `json:"ringflags,omitempty"`
	// SubmitBatch is the ring engine's submission batch (see EngineRing).
	SubmitBatch int    `json:"submit_batch,omitempty"`
	Seed        uint64 `json:"seed,omitempty"`
}

// Validate checks a config and fills defaults (jobs 1, completion inline).
func (c *Config) Validate() error {
	switch c.RW {
	case RandRead, RandWrite, SeqRead, SeqWrite, RandRW:
	default:
		return fmt.Errorf("harness: unknown -rw %q (randread, randwrite, read, write, randrw)", c.RW)
	}
	if c.Jobs <= 0 {
		c.Jobs = 1
	}
	if c.Completion == "" {
		c.Completion = CompInline
	}
	switch c.Completion {
	case CompInline, CompCaller, CompPool, CompWait:
	default:
		return fmt.Errorf("harness: unknown -completion %q (inline, caller, pool, wait)", c.Completion)
	}
	if c.BS <= 0 || c.BS%512 != 0 {
		return fmt.Errorf("harness: block size %d is not a positive multiple of 512", c.BS)
	}
	if c.QD <= 0 {
		return fmt.Errorf("harness: queue depth %d must be positive", c.QD)
	}
	if c.Size < int64(c.BS) {
		return fmt.Errorf("harness: size %d is smaller than the block size %d", c.Size, c.BS)
	}
	if len(c.Files) > 0 && c.PerFile() < int64(c.BS) {
		return fmt.Errorf("harness: %d files of %d bytes each are smaller than the block size %d", len(c.Files), c.Size/int64(len(c.Files)), c.BS)
	}
	if c.Duration <= 0 && c.Ops <= 0 {
		return errors.New("harness: neither a duration nor an op count")
	}
	return nil
}

// Writes reports whether the mode writes.
func (c *Config) Writes() bool { return c.RW == RandWrite || c.RW == SeqWrite || c.RW == RandRW }

// PerFile is the bytes of each file a many-files run covers: an even
// share of Size rounded down to the block size, so a block never straddles
// two files. It is 0 for a one-file run.
func (c *Config) PerFile() int64 {
	if len(c.Files) == 0 {
		return 0
	}
	return c.Size / int64(len(c.Files)) / int64(c.BS) * int64(c.BS)
}

// Random reports whether offsets are random.
func (c *Config) Random() bool { return strings.HasPrefix(c.RW, "rand") }

// Options returns the ring options that are on, comma separated.
func (c *Config) Options() string {
	var o []string
	if c.SQPoll {
		o = append(o, "sqpoll")
	}
	if c.FixedBufs {
		o = append(o, "fixedbufs")
	}
	if c.IOPoll {
		o = append(o, "iopoll")
	}
	if c.RingFlags != "" && (c.Engine == EngineUringdio || c.Engine == EngineRing) {
		o = append(o, c.RingFlags)
	}
	return strings.Join(o, ",")
}

// ParseSize parses a byte count with an optional binary suffix: 4k, 128K,
// 1m, 1g, 512 (k, m, g, t are powers of 1024; a trailing "b"/"ib" is allowed).
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "b"), "i")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		case 't':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("harness: bad size %q (want e.g. 4k, 1m, 1g)", s)
	}
	if v > (1<<62)/mult {
		return 0, fmt.Errorf("harness: size %q too large", s)
	}
	return v * mult, nil
}

// FormatSize is ParseSize's inverse for whole units: 4096 → "4k".
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		if n >= u.v && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}
