//go:build linux

package benchmarks

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/uringdio/uringdio/benchmarks/internal/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchTarget.t != nil {
		benchTarget.t.Close()
	}
	harness.IceberCleanup()
	os.Exit(code)
}

var benchTarget struct {
	once sync.Once
	t    *harness.Target
	err  error
}

// target returns the benchmarks' file: DIOBENCH_FILE, or a 256 MiB scratch
// file of random data made once per test binary.
func target(b *testing.B) *harness.Target {
	benchTarget.once.Do(func() {
		if p := os.Getenv("DIOBENCH_FILE"); p != "" {
			benchTarget.t, benchTarget.err = harness.OpenTarget(p, 0, false, false)
			return
		}
		benchTarget.t, benchTarget.err = harness.CreateScratch("", 256<<20, nil)
	})
	if benchTarget.err != nil {
		b.Skipf("no benchmark file: %v", benchTarget.err)
	}
	return benchTarget.t
}

// bench runs b.N I/Os of one shape with one engine ("uringdio-wait" is
// uringdio with the wait completion) and reports what diobench reports.
func bench(b *testing.B, engine, rw string, bs, qd int) {
	t := target(b)
	cfg := harness.Config{Engine: engine, RW: rw, BS: bs, QD: qd, Jobs: 1, Ops: int64(b.N), Completion: harness.CompInline}
	if e, c, ok := strings.Cut(engine, "-"); ok {
		cfg.Engine, cfg.Completion = e, c
	}
	if cfg.Writes() && (t.Block || os.Getenv("DIOBENCH_FILE") != "") {
		b.Skip("write benchmarks run only on the scratch file")
	}
	t.Apply(&cfg)
	b.SetBytes(int64(bs))
	b.ReportAllocs()
	res, err := harness.Run(context.Background(), &cfg, &harness.Hooks{OnStart: b.ResetTimer, OnStop: b.StopTimer})
	if reason, ok := harness.IsSkip(err); ok {
		b.Skip(reason)
	}
	if err != nil {
		b.Fatal(err)
	}
	if res.Errors > 0 {
		b.Fatalf("%d errors, first: %s", res.Errors, res.FirstError)
	}
	b.ReportMetric(res.LatP50, "p50-µs")
	b.ReportMetric(res.LatP99, "p99-µs")
	b.ReportMetric(res.CPUPerOp, "cpu-µs/op")
	b.ReportMetric(res.SysCPUPerOp, "machine-cpu-µs/op")
}

func BenchmarkRandRead4K(b *testing.B) {
	for _, e := range []string{"uringdio", "uringdio-wait", "pread"} {
		for _, qd := range []int{1, 32, 128} {
			b.Run(fmt.Sprintf("%s/qd=%d", e, qd), func(b *testing.B) { bench(b, e, harness.RandRead, 4<<10, qd) })
		}
	}
}

func BenchmarkSeqRead1M(b *testing.B) {
	for _, e := range []string{"uringdio", "pread"} {
		b.Run(e+"/qd=8", func(b *testing.B) { bench(b, e, harness.SeqRead, 1<<20, 8) })
	}
}

func BenchmarkRandWrite4K(b *testing.B) {
	for _, e := range []string{"uringdio", "pread"} {
		b.Run(e+"/qd=32", func(b *testing.B) { bench(b, e, harness.RandWrite, 4<<10, 32) })
	}
}

func BenchmarkSeqWrite1M(b *testing.B) {
	for _, e := range []string{"uringdio", "pread"} {
		b.Run(e+"/qd=8", func(b *testing.B) { bench(b, e, harness.SeqWrite, 1<<20, 8) })
	}
}

// BenchmarkCompletion compares uringdio's completion policies on one shape.
func BenchmarkCompletion(b *testing.B) {
	for _, c := range []string{harness.CompInline, harness.CompCaller, harness.CompPool, harness.CompWait} {
		b.Run(c+"/qd=32", func(b *testing.B) { bench(b, "uringdio-"+c, harness.RandRead, 4<<10, 32) })
	}
}
