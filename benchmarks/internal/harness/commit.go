//go:build linux

package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/uringdio/uringdio/dio"
)

// The commit benchmark (issue 24): N goroutines each append a record of S
// bytes to one log and wait until it is durable, as a database's commit
// path does, on a new log and on a reused one (written and synced before:
// every commit a pure overwrite). Engines: the Appender with SyncData; a
// buffered os.File with a leader/follower group commit around fdatasync
// (the reference a Go database would write, commitOSFile); fio, for one
// committer, with O_DSYNC direct overwrites and buffered writes with an
// fdatasync each.

// CommitConfig is one commit run.
type CommitConfig struct {
	Dir      string // where the log goes
	Engine   string // "uringdio", "osfile", "fio-dsync", "fio-fdatasync"
	Writers  int
	Record   int
	Reused   bool
	Duration time.Duration
}

// CommitResult is one run's figures.
type CommitResult struct {
	Config   CommitConfig
	Commits  int64
	PerSec   float64
	P50, P99 time.Duration
	CPUPerOp time.Duration // process CPU per commit (fio: its own usr+sys)
	Load     string        // the load averages when the run began
}

// reuseSize is how much of a reused log is written before the run: more
// than any run appends.
const reuseSize = 1 << 30

// RunCommit runs one commit benchmark.
func RunCommit(ctx context.Context, c CommitConfig) (CommitResult, error) {
	path := filepath.Join(c.Dir, fmt.Sprintf("commit-%d.log", os.Getpid()))
	defer os.Remove(path)
	if err := prepareLog(path, c.Reused); err != nil {
		return CommitResult{}, err
	}
	res := CommitResult{Config: c, Load: loadAvg()}
	if strings.HasPrefix(c.Engine, "fio") {
		return runFioCommit(ctx, path, c, res)
	}
	var commit func([]byte) error
	var closeFn func() error
	switch c.Engine {
	case "uringdio":
		f, err := dio.Open(path, os.O_RDWR, 0, nil)
		if err != nil {
			return res, err
		}
		w, err := f.Appender(0, 0, 0)
		if err != nil {
			f.Close()
			return res, err
		}
		commit = func(rec []byte) error {
			if _, err := w.Write(rec); err != nil {
				return err
			}
			return w.SyncData()
		}
		closeFn = func() error { w.Close(); return f.Close() }
	case "osfile":
		g, err := newGroupCommit(path)
		if err != nil {
			return res, err
		}
		commit, closeFn = g.commit, g.f.Close
	default:
		return res, fmt.Errorf("harness: commit engine %q", c.Engine)
	}
	defer closeFn()
	hist := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
	var mu sync.Mutex
	var commits atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(c.Duration)
	cpu0 := snapCPU()
	var wg sync.WaitGroup
	for g := range c.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := bytes.Repeat([]byte{byte('a' + g%26)}, c.Record)
			local := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if err := commit(rec); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				local.RecordValue(int64(time.Since(t0) / time.Microsecond))
				commits.Add(1)
			}
			mu.Lock()
			hist.Merge(local)
			mu.Unlock()
		}()
	}
	wg.Wait()
	cpu1 := snapCPU()
	if err, _ := firstErr.Load().(error); err != nil {
		return res, err
	}
	res.Commits = commits.Load()
	el := cpu1.at.Sub(cpu0.at)
	res.PerSec = float64(res.Commits) / el.Seconds()
	res.P50 = time.Duration(hist.ValueAtQuantile(50)) * time.Microsecond
	res.P99 = time.Duration(hist.ValueAtQuantile(99)) * time.Microsecond
	if res.Commits > 0 {
		res.CPUPerOp = (cpu1.proc - cpu0.proc) / time.Duration(res.Commits)
	}
	return res, nil
}

// prepareLog makes the log: empty, or written to reuseSize and synced.
func prepareLog(path string, reused bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if !reused {
		return f.Sync()
	}
	buf := bytes.Repeat([]byte{0x5a}, 1<<20)
	for off := int64(0); off < reuseSize; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// groupCommit is the reference a Go database would write on a buffered
// os.File: appends under a mutex, and a leader/follower fdatasync: one
// waiter syncs everything written so far while the others wait for it, and
// those who arrive meanwhile wait for the next.
type groupCommit struct {
	f       *os.File
	mu      sync.Mutex
	cond    sync.Cond
	off     int64
	synced  int64
	syncing bool
	err     error
}

func newGroupCommit(path string) (*groupCommit, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	g := &groupCommit{f: f}
	g.cond.L = &g.mu
	return g, nil
}

func (g *groupCommit) commit(rec []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.f.WriteAt(rec, g.off); err != nil {
		return err
	}
	g.off += int64(len(rec))
	target := g.off
	for g.synced < target && g.err == nil {
		if g.syncing {
			g.cond.Wait()
			continue
		}
		g.syncing = true
		end := g.off
		g.mu.Unlock()
		err := g.f.Sync() // fdatasync would do; Go's os.File has only Sync
		g.mu.Lock()
		g.syncing = false
		if err != nil {
			g.err = err
		} else {
			g.synced = max(g.synced, end)
		}
		g.cond.Broadcast()
	}
	return g.err
}

// runFioCommit runs fio's single committer: sequential writes of the
// record size, each durable before the next (O_DSYNC direct overwrites of
// a reused log, or buffered writes with an fdatasync each).
func runFioCommit(ctx context.Context, path string, c CommitConfig, res CommitResult) (CommitResult, error) {
	if c.Writers != 1 {
		return res, fmt.Errorf("harness: fio commits with one writer only")
	}
	args := []string{"--name=commit", "--filename=" + fioEscape(path), "--rw=write", "--ioengine=psync",
		fmt.Sprintf("--bs=%d", c.Record), fmt.Sprintf("--size=%d", reuseSize/2), "--time_based",
		fmt.Sprintf("--runtime=%dms", c.Duration.Milliseconds()), "--output-format=json", "--lat_percentiles=1"}
	switch c.Engine {
	case "fio-dsync":
		args = append(args, "--direct=1", "--sync=dsync")
	case "fio-fdatasync":
		args = append(args, "--fdatasync=1")
	default:
		return res, fmt.Errorf("harness: commit engine %q", c.Engine)
	}
	out, err := exec.CommandContext(ctx, "fio", args...).Output()
	if err != nil {
		return res, fmt.Errorf("fio %s: %w", strings.Join(args, " "), err)
	}
	var j struct {
		Jobs []struct {
			Write struct {
				TotalIOs int64   `json:"total_ios"`
				IOPS     float64 `json:"iops"`
				Lat      struct {
					Percentile map[string]int64 `json:"percentile"`
				} `json:"lat_ns"`
			} `json:"write"`
			Sync struct {
				TotalIOs int64 `json:"total_ios"`
			} `json:"sync"`
			UsrCPU  float64 `json:"usr_cpu"`
			SysCPU  float64 `json:"sys_cpu"`
			Runtime int64   `json:"job_runtime"`
		} `json:"jobs"`
	}
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &j); err != nil || len(j.Jobs) == 0 {
		return res, fmt.Errorf("fio output: %v", err)
	}
	w := j.Jobs[0]
	res.Commits, res.PerSec = w.Write.TotalIOs, w.Write.IOPS
	res.P50 = time.Duration(w.Write.Lat.Percentile["50.000000"])
	res.P99 = time.Duration(w.Write.Lat.Percentile["99.000000"])
	if res.Commits > 0 {
		cpu := (w.UsrCPU + w.SysCPU) / 100 * float64(w.Runtime) * float64(time.Millisecond)
		res.CPUPerOp = time.Duration(cpu / float64(res.Commits))
	}
	return res, nil
}
