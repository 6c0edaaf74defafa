//go:build linux

package harness

import (
	"errors"
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is one result line. The first thirteen fields, and their JSON
// names, are diobench's contract with scripts (issue 5); the rest say how
// the line was obtained.
type Result struct {
	Engine      string  `json:"engine"`
	RW          string  `json:"rw"`
	BS          int     `json:"bs"`
	QD          int     `json:"qd"`
	Jobs        int     `json:"jobs"`
	IOPS        float64 `json:"iops"`
	MBps        float64 `json:"mbps"` // 10^6 bytes per second
	LatP50      float64 `json:"lat_p50_us"`
	LatP99      float64 `json:"lat_p99_us"`
	LatP999     float64 `json:"lat_p999_us"`
	CPUPerOp    float64 `json:"cpu_us_per_op"`     // the engine's process (user+system)
	SysCPUPerOp float64 `json:"sys_cpu_us_per_op"` // the whole machine (/proc/stat, all CPUs)
	Errors      int64   `json:"errors"`

	Completion string  `json:"completion,omitempty"` // uringdio only
	Files      int     `json:"files,omitempty"`      // files of a many-files run (-files)
	Options    string  `json:"options,omitempty"`    // sqpoll,fixedbufs,iopoll
	Path       string  `json:"path,omitempty"`
	Device     string  `json:"device,omitempty"` // the target's label in a suite (vda, zram0)
	Ops        int64   `json:"ops"`
	Seconds    float64 `json:"seconds"`
	Verified   int64   `json:"verified_blocks,omitempty"`
	FirstError string  `json:"first_error,omitempty"`
	Skipped    string  `json:"skipped,omitempty"` // why the engine did not run
	Note       string  `json:"note,omitempty"`
	Rounds     int     `json:"rounds,omitempty"` // runs of which this is the median
	// Threads is how many OS threads the engine's process used: for the
	// in-process engines the threads created or scheduled from the start of
	// the jobs' opens to the end of the run (see threads.go: a Go process
	// keeps the idle threads of earlier runs, which do not count); for fio
	// the peak of its processes' Threads:.
	Threads int `json:"threads,omitempty"`
	// PeakThreads is the peak of Threads: in /proc/self/status sampled
	// during the run, idle threads left by earlier runs included.
	PeakThreads int `json:"peak_threads,omitempty"`
	// FioThreadCPU is fio's own usr+sys per op, which counts its job
	// thread only (not its io-wq workers); CPUPerOp counts every thread.
	FioThreadCPU float64 `json:"fio_thread_cpu_us_per_op,omitempty"`
	VsFio        float64 `json:"vs_fio,omitempty"`   // IOPS ratio to fio's line of the same shape
	VsPread      float64 `json:"vs_pread,omitempty"` // IOPS ratio to pread's line
}

// Label is the engine's name as tables show it (uringdio with its
// completion mode when that is not inline).
func (r *Result) Label() string {
	if r.Engine == EngineUringdio && r.Completion != "" && r.Completion != CompInline {
		return r.Engine + "/" + r.Completion
	}
	return r.Engine
}

// SkipError says an engine cannot run here, and why. It is not a failure.
type SkipError struct{ Reason string }

func (e *SkipError) Error() string { return "skipped: " + e.Reason }

func skipf(format string, a ...any) error { return &SkipError{Reason: fmt.Sprintf(format, a...)} }

// IsSkip reports whether err is a SkipError and returns its reason.
func IsSkip(err error) (string, bool) {
	var s *SkipError
	if errors.As(err, &s) {
		return s.Reason, true
	}
	return "", false
}

// Histogram range: 1 ns .. 60 s at three significant digits, in ns
// (about 200 KiB per histogram; one per worker, allocated before the clock
// starts, so recording never allocates).
const (
	histLow  = 1
	histHigh = int64(60 * time.Second)
	histSig  = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histLow, histHigh, histSig) }

// fillLatency sets the latency percentiles from h (values in ns).
func (r *Result) fillLatency(h *hdrhistogram.Histogram) {
	if h.TotalCount() == 0 {
		return
	}
	us := func(q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1e3 }
	r.LatP50, r.LatP99, r.LatP999 = us(50), us(99), us(99.9)
}

// skipped returns the result line of an engine that did not run.
func skipped(cfg *Config, reason string) *Result {
	r := baseResult(cfg)
	r.Skipped = reason
	return r
}

func baseResult(cfg *Config) *Result {
	r := &Result{Engine: cfg.Engine, RW: cfg.RW, BS: cfg.BS, QD: cfg.QD, Jobs: cfg.Jobs,
		Files: len(cfg.Files), Options: cfg.Options(), Path: cfg.Path}
	if cfg.Engine == EngineUringdio {
		r.Completion = cfg.Completion
	}
	return r
}
