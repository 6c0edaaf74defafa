//go:build linux

package harness

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Run runs one measurement with cfg.Engine. An engine that cannot run here
// returns a *SkipError (see IsSkip) saying why.
func Run(ctx context.Context, cfg *Config, hooks *Hooks) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.IOPoll {
		if err := checkIOPoll(cfg.Path); err != nil {
			return nil, err
		}
	}
	switch cfg.Engine {
	case EngineUringdio:
		return RunJobs(ctx, cfg, openUringdio, hooks)
	case EnginePread:
		return RunJobs(ctx, cfg, openPread, hooks)
	case EngineIceber:
		res, err := runIceber(ctx, cfg)
		if err == nil && cfg.FixedBufs {
			res.Note = "iouring-go has no read_fixed/write_fixed: ran with plain buffers"
		}
		return res, err
	case EngineFio:
		return runFio(ctx, cfg)
	case EngineRing:
		return RunJobs(ctx, cfg, openRingLoop, hooks)
	}
	return nil, fmt.Errorf("harness: unknown engine %q (uringdio, pread, iceber, fio)", cfg.Engine)
}

// CheckIOPoll fails with the library's explanation when path's device
// cannot complete polled I/O.
func CheckIOPoll(path string) error { return checkIOPoll(path) }

// EngineSpec is one engine of a plan; Completion applies to uringdio.
type EngineSpec struct {
	Engine     string
	Completion string
}

func (e EngineSpec) String() string {
	if e.Engine == EngineUringdio && e.Completion != "" && e.Completion != CompInline {
		return e.Engine + "/" + e.Completion
	}
	return e.Engine
}

// ParseEngines parses -engine's comma list; uringdio runs with completion.
// "uringdio/wait" (any completion mode after a slash) is accepted too.
func ParseEngines(list, completion string) ([]EngineSpec, error) {
	var out []EngineSpec
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		e := EngineSpec{Engine: name}
		if n, c, ok := strings.Cut(name, "/"); ok {
			e.Engine, e.Completion = n, c
		}
		if !slices.Contains(Engines, e.Engine) && e.Engine != EngineRing {
			return nil, fmt.Errorf("unknown engine %q (uringdio, pread, iceber, fio; ring for diagnosis)", name)
		}
		if e.Engine == EngineUringdio && e.Completion == "" {
			e.Completion = completion
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no engine given")
	}
	return out, nil
}

// Shape is one workload on one target.
type Shape struct {
	Device string // label of the target for tables and targets ("vda", "zram0")
	Target *Target
	RW     string
	BS     int
	QD     int
	Jobs   int
}

func (s Shape) String() string {
	return fmt.Sprintf("%s %s %s qd%d", s.Device, s.RW, FormatSize(int64(s.BS)), s.QD) + jobsSuffix(s.Jobs) + filesSuffix(len(s.Target.Paths))
}

func jobsSuffix(j int) string {
	if j > 1 {
		return fmt.Sprintf(" jobs%d", j)
	}
	return ""
}

func filesSuffix(n int) string {
	if n > 1 {
		return fmt.Sprintf(" files%d", n)
	}
	return ""
}

// Progress follows a plan as it runs.
type Progress interface {
	// Begin announces the plan: runs of about per each.
	Begin(runs int, per time.Duration)
	// Step says a run starts.
	Step(desc string)
	// Done says the plan is over.
	Done()
}

// Plan is a list of shapes, each run with every engine.
type Plan struct {
	Base    Config // engine settings and duration shared by every run
	Shapes  []Shape
	Engines []EngineSpec
	// Rounds repeats every shape's engine set, alternating the engine order
	// (ABCD DCBA ...) so that drift on a shared machine hits every engine
	// alike; each engine's median run (by IOPS) is kept. 0 means 1.
	Rounds int
}

// Run runs the plan. Each finished line (after its rounds) goes to emit if
// not nil. Results come back in plan order with their ratios filled.
func (p *Plan) Run(ctx context.Context, prog Progress, emit func(*Result)) []*Result {
	rounds := max(p.Rounds, 1)
	if prog != nil {
		prog.Begin(len(p.Shapes)*len(p.Engines)*rounds, p.Base.Duration)
		defer prog.Done()
	}
	var all []*Result
	for _, s := range p.Shapes {
		runs := make([][]*Result, len(p.Engines))
		for r := range rounds {
			for k := range p.Engines {
				i := k
				if r%2 == 1 {
					i = len(p.Engines) - 1 - k
				}
				e := p.Engines[i]
				if ctx.Err() != nil {
					break
				}
				if len(runs[i]) > 0 && runs[i][0].Skipped != "" {
					continue // skipped once: skipped every round
				}
				if prog != nil {
					prog.Step(fmt.Sprintf("%-14s %s", e, s))
				}
				runs[i] = append(runs[i], p.runOne(ctx, s, e))
			}
		}
		var lines []*Result
		for i := range p.Engines {
			if len(runs[i]) == 0 {
				continue
			}
			res := median(runs[i])
			if len(runs[i]) > 1 {
				res.Rounds = len(runs[i])
			}
			lines = append(lines, res)
		}
		fillRatios(lines)
		for _, res := range lines {
			if emit != nil {
				emit(res)
			}
		}
		all = append(all, lines...)
	}
	return all
}

func (p *Plan) runOne(ctx context.Context, s Shape, e EngineSpec) *Result {
	cfg := p.Base
	cfg.Engine, cfg.Completion = e.Engine, e.Completion
	cfg.RW, cfg.BS, cfg.QD, cfg.Jobs = s.RW, s.BS, s.QD, s.Jobs
	s.Target.Apply(&cfg)
	res, err := Run(ctx, &cfg, nil)
	if err != nil {
		if reason, ok := IsSkip(err); ok {
			res = skipped(&cfg, reason)
		} else {
			res = baseResult(&cfg)
			res.Errors = 1
			res.FirstError = err.Error()
		}
	}
	res.Device = s.Device
	return res
}

// median returns the run with the median IOPS (the lower middle for an
// even count).
func median(runs []*Result) *Result {
	if len(runs) == 1 {
		return runs[0]
	}
	s := slices.Clone(runs)
	sort.SliceStable(s, func(a, b int) bool { return s[a].IOPS < s[b].IOPS })
	return s[(len(s)-1)/2]
}

// fillRatios sets each line's IOPS ratio to fio's and pread's lines of
// the same shape.
func fillRatios(lines []*Result) {
	var fio, pread *Result
	for _, r := range lines {
		if r.Skipped != "" || r.IOPS == 0 {
			continue
		}
		switch r.Engine {
		case EngineFio:
			fio = r
		case EnginePread:
			pread = r
		}
	}
	for _, r := range lines {
		if r.Skipped != "" || r.IOPS == 0 {
			continue
		}
		if fio != nil && r != fio {
			r.VsFio = r.IOPS / fio.IOPS
		}
		if pread != nil && r != pread {
			r.VsPread = r.IOPS / pread.IOPS
		}
	}
}
