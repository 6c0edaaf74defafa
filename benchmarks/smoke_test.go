//go:build linux

package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uringdio/uringdio/benchmarks/internal/harness"
)

// jsonFields are diobench's JSON contract (issue 5).
var jsonFields = []string{"engine", "rw", "bs", "qd", "jobs", "iops", "mbps", "lat_p50_us",
	"lat_p99_us", "lat_p999_us", "cpu_us_per_op", "sys_cpu_us_per_op", "errors"}

// TestSmoke runs diobench's suite code briefly on an 8 MiB file with every
// engine that can run here (a read and a verified write each) and checks
// the results are sane. Engines that cannot run are skipped with the
// reason; the iceber helper build is skipped in -short mode.
func TestSmoke(t *testing.T) {
	target, err := harness.CreateScratch(t.TempDir(), 8<<20, nil)
	if err != nil {
		t.Skipf("no O_DIRECT scratch file here: %v", err)
	}
	defer target.Close()

	engines := []string{"uringdio", "uringdio/caller", "uringdio/pool", "uringdio/wait", "pread", "ring", "fio"}
	if !testing.Short() {
		engines = append(engines, "iceber")
	} else {
		t.Log("iceber: skipped in -short mode (builds a helper binary)")
	}
	specs, err := harness.ParseEngines(strings.Join(engines, ","), harness.CompInline)
	if err != nil {
		t.Fatal(err)
	}
	plan := &harness.Plan{
		Base:    harness.Config{Duration: 60 * time.Millisecond, Verify: true, Seed: 7},
		Engines: specs,
		Shapes: []harness.Shape{
			{Device: "scratch", Target: target, RW: harness.RandRead, BS: 4096, QD: 4, Jobs: 1},
			{Device: "scratch", Target: target, RW: harness.RandWrite, BS: 4096, QD: 4, Jobs: 2},
		},
	}
	var lines [][]byte
	results := plan.Run(context.Background(), nil, func(r *harness.Result) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Error(err)
		}
		lines = append(lines, b)
	})
	if len(results) != len(specs)*len(plan.Shapes) {
		t.Fatalf("%d results, want %d", len(results), len(specs)*len(plan.Shapes))
	}
	ran := map[string]bool{}
	for i, r := range results {
		name := r.Label() + " " + r.RW
		if r.Skipped != "" {
			if r.Engine == harness.EngineUringdio || r.Engine == harness.EnginePread || (r.Engine == harness.EngineRing && r.RW == harness.RandRead) {
				t.Errorf("%s skipped: %s", name, r.Skipped)
			}
			t.Logf("%s: skipped: %s", name, r.Skipped)
			continue
		}
		ran[r.Label()] = true
		if r.Errors != 0 || r.FirstError != "" {
			t.Errorf("%s: %d errors, first: %s", name, r.Errors, r.FirstError)
		}
		if r.IOPS <= 0 || r.Ops <= 0 || r.MBps <= 0 {
			t.Errorf("%s: iops %v, ops %d, MB/s %v", name, r.IOPS, r.Ops, r.MBps)
		}
		if !(r.LatP50 > 0 && r.LatP50 <= r.LatP99 && r.LatP99 <= r.LatP999) {
			t.Errorf("%s: latency percentiles p50 %v p99 %v p99.9 %v", name, r.LatP50, r.LatP99, r.LatP999)
		}
		if r.CPUPerOp < 0 || r.SysCPUPerOp < 0 {
			t.Errorf("%s: negative CPU per op", name)
		}
		if r.RW == harness.RandWrite && r.Engine != harness.EngineFio && r.Engine != harness.EngineRing && r.Verified == 0 {
			t.Errorf("%s: -verify checked no block", name)
		}
		if r.Engine != harness.EngineFio && r.VsFio == 0 && ran["fio"] {
			t.Errorf("%s: no ratio to fio", name)
		}
		var m map[string]any
		if err := json.Unmarshal(lines[i], &m); err != nil {
			t.Fatalf("%s: JSON line does not parse: %v\n%s", name, err, lines[i])
		}
		for _, f := range jsonFields {
			if _, ok := m[f]; !ok {
				t.Errorf("%s: JSON lacks %q: %s", name, f, lines[i])
			}
		}
	}
	for _, e := range []string{"uringdio", "uringdio/caller", "uringdio/pool", "uringdio/wait", "pread"} {
		if !ran[e] {
			t.Errorf("%s did not run", e)
		}
	}

	// The outputs: table, plot, report.
	var tab bytes.Buffer
	if err := harness.WriteTable(&tab, results); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.String(), "×fio") || !strings.Contains(tab.String(), "uringdio/wait") {
		t.Errorf("table lacks columns or lines:\n%s", tab.String())
	}
	dir := t.TempDir()
	for _, name := range []string{"plot.png", "plot.svg"} {
		p := filepath.Join(dir, name)
		if err := harness.WritePlot(p, results); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st, err := os.Stat(p); err != nil || st.Size() < 1000 {
			t.Errorf("%s: %v, %d bytes", name, err, st.Size())
		}
	}
	report := filepath.Join(dir, "RESULTS.md")
	os.WriteFile(report, []byte("old\n<!-- analysis:begin (kept when the report is regenerated) -->\nkeep me\n<!-- analysis:end -->\n"), 0o644)
	info := harness.GatherInfo(time.Now(), harness.LoadAvg(), target, nil)
	info.Command, info.Plan = "go test", plan
	if err := harness.WriteReportFile(report, info, results); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(report)
	for _, want := range []string{"## Targets (issue 5", "| engine |", "keep me", "not measured"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestDescribeFile checks diobench -info on a file of the temp dir: the
// path, then one line per fact of the capability record, the backend
// included; and that a missing file is an error that says so.
func TestDescribeFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := harness.DescribeFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{p + "\nfile:", "\nfile system:", "\noffset alignment:", "\nuntorn writes:",
		"\ndevice:", "\nNOWAIT:", "\nmay be buffered:", "\nDSync write:", "\nbackend:"} {
		if !strings.Contains(s, want) {
			t.Errorf("-info output lacks %q:\n%s", want, s)
		}
	}
	if _, err := harness.DescribeFile(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v, want an error for a file that does not exist", err)
	}
}

// TestSmokeFiles runs diobench's many-files mode (-files) briefly: four
// scratch files, a read and a verified write per engine. uringdio (wait
// and the async loop) and pread must run cleanly and count their threads;
// fio runs if installed; iceber and ring refuse, saying why.
func TestSmokeFiles(t *testing.T) {
	target, err := harness.CreateScratchFiles(t.TempDir(), 4, 4<<20, nil)
	if err != nil {
		t.Skipf("no O_DIRECT scratch files here: %v", err)
	}
	defer target.Close()
	if len(target.Paths) != 4 || target.Size != 4<<20 {
		t.Fatalf("scratch files: %d files, %d bytes", len(target.Paths), target.Size)
	}
	for _, p := range target.Paths {
		if st, err := os.Stat(p); err != nil || st.Size() != 1<<20 {
			t.Fatalf("%s: %v", p, err)
		}
	}
	specs, err := harness.ParseEngines("uringdio/wait,uringdio,pread,fio,iceber,ring", harness.CompInline)
	if err != nil {
		t.Fatal(err)
	}
	plan := &harness.Plan{
		Base:    harness.Config{Duration: 60 * time.Millisecond, Verify: true, Seed: 7},
		Engines: specs,
		Shapes: []harness.Shape{
			{Device: "scratch", Target: target, RW: harness.RandRead, BS: 4096, QD: 8, Jobs: 1},
			{Device: "scratch", Target: target, RW: harness.RandWrite, BS: 4096, QD: 4, Jobs: 1},
		},
	}
	results := plan.Run(context.Background(), nil, nil)
	ran := map[string]bool{}
	for _, r := range results {
		name := r.Label() + " " + r.RW
		if r.Files != 4 {
			t.Errorf("%s: files %d, want 4", name, r.Files)
		}
		if r.Skipped != "" {
			switch r.Engine {
			case harness.EngineIceber, harness.EngineRing:
				if !strings.Contains(r.Skipped, "-files") {
					t.Errorf("%s skipped without saying -files is why: %s", name, r.Skipped)
				}
			case harness.EngineFio:
			default:
				t.Errorf("%s skipped: %s", name, r.Skipped)
			}
			t.Logf("%s: skipped: %s", name, r.Skipped)
			continue
		}
		if r.Engine == harness.EngineIceber || r.Engine == harness.EngineRing {
			t.Errorf("%s ran with -files", name)
		}
		ran[r.Label()] = true
		if r.Errors != 0 || r.FirstError != "" {
			t.Errorf("%s: %d errors, first: %s", name, r.Errors, r.FirstError)
		}
		if r.IOPS <= 0 || r.Ops <= 0 {
			t.Errorf("%s: iops %v, ops %d", name, r.IOPS, r.Ops)
		}
		if r.Threads <= 0 || r.PeakThreads <= 0 {
			t.Errorf("%s: threads %d, peak %d: not counted", name, r.Threads, r.PeakThreads)
		}
		if r.RW == harness.RandWrite && r.Engine != harness.EngineFio && r.Verified == 0 {
			t.Errorf("%s: -verify checked no block", name)
		}
	}
	for _, e := range []string{"uringdio/wait", "uringdio", "pread"} {
		if !ran[e] {
			t.Errorf("%s did not run", e)
		}
	}
	var tab bytes.Buffer
	if err := harness.WriteTable(&tab, results); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.String(), "threads") || !strings.Contains(tab.String(), "files") {
		t.Errorf("table lacks the files or threads column:\n%s", tab.String())
	}
	t.Logf("\n%s", tab.String())
	// The report's many-files targets find the lines.
	checks := harness.EvaluateTargets(results, "scratch", "")
	n := 0
	for _, c := range checks {
		if strings.HasPrefix(c.Target, "many files") {
			n++
			if c.Status != "met" && c.Status != "missed" {
				t.Errorf("target %q: %s (%s)", c.Target, c.Status, c.Measured)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d many-files targets, want 2", n)
	}
	var md bytes.Buffer
	info := harness.GatherInfo(time.Now(), harness.LoadAvg(), nil, nil)
	info.Command, info.Plan, info.FileDev = "go test", plan, "scratch"
	harness.WriteReport(&md, info, results, "")
	for _, want := range []string{"| uringdio/wait | scratch | randread | 4k | 8 | 1 | 4 |", "many files (issue 13), scratch randread 4k over 4 files, 8 goroutines: uringdio/wait uses ≤ 16 OS threads"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
