//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/uringdio/uringdio/benchmarks/internal/harness"
)

// runCommit runs the commit benchmark (-commit): every shape (goroutines ×
// record size × log) with each engine that has it, in alternating order
// for -rounds rounds, and prints each engine's median with the spread.
func runCommit(ctx context.Context, o *options) error {
	dir := os.TempDir()
	if o.file != "" {
		dir = o.file
	}
	d := o.duration
	if d == 0 {
		d = 3 * time.Second
	}
	rounds := max(o.rounds, 1)
	engines := strings.Split(o.engines, ",")
	if o.engines == "uringdio,pread,iceber,fio" { // the flag's default: the commit engines
		engines = []string{"uringdio", "osfile", "fio-dsync", "fio-fdatasync"}
	}
	fmt.Printf("%8s %7s %6s %-13s %10s %9s %9s %9s %8s  %s\n", "writers", "record", "log", "engine", "commits/s", "p50 µs", "p99 µs", "CPU µs/c", "×osfile", "spread, load")
	for _, ws := range strings.Split(o.commit, ",") {
		writers, err := strconv.Atoi(ws)
		if err != nil {
			return fmt.Errorf("-commit %q: %w", ws, err)
		}
		for _, rs := range strings.Split(o.record, ",") {
			rec, err := harness.ParseSize(rs)
			if err != nil {
				return err
			}
			for _, log := range strings.Split(o.logs, ",") {
				if err := commitShape(ctx, dir, engines, writers, int(rec), log == "reused", d, rounds); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func commitShape(ctx context.Context, dir string, engines []string, writers, rec int, reused bool, d time.Duration, rounds int) error {
	runs := map[string][]harness.CommitResult{}
	for r := range rounds {
		for i := range engines {
			e := engines[(i+r)%len(engines)] // alternate who goes first
			if strings.HasPrefix(e, "fio") && (writers != 1 || (e == "fio-dsync" && (!reused || rec%512 != 0))) {
				continue // fio has one committer; its O_DSYNC run is a direct overwrite of whole sectors
			}
			res, err := harness.RunCommit(ctx, harness.CommitConfig{Dir: dir, Engine: e, Writers: writers, Record: rec, Reused: reused, Duration: d})
			if err != nil {
				return fmt.Errorf("%s: %w", e, err)
			}
			runs[e] = append(runs[e], res)
		}
	}
	log := "new"
	if reused {
		log = "reused"
	}
	ref := median(runs["osfile"])
	for _, e := range engines {
		rs := runs[e]
		if len(rs) == 0 {
			continue
		}
		m := median(rs)
		ratio := ""
		if ref.PerSec > 0 && e != "osfile" {
			ratio = fmt.Sprintf("%.2f", m.PerSec/ref.PerSec)
		}
		lo, hi := rs[0].PerSec, rs[0].PerSec
		for _, r := range rs {
			lo, hi = min(lo, r.PerSec), max(hi, r.PerSec)
		}
		fmt.Printf("%8d %7d %6s %-13s %10.0f %9.0f %9.0f %9.1f %8s  %.0f–%.0f, %s\n", writers, rec, log, e, m.PerSec,
			float64(m.P50)/1e3, float64(m.P99)/1e3, float64(m.CPUPerOp)/1e3, ratio, lo, hi, m.Load)
	}
	return nil
}

// median returns the run with the median commits/s.
func median(rs []harness.CommitResult) harness.CommitResult {
	if len(rs) == 0 {
		return harness.CommitResult{}
	}
	s := append([]harness.CommitResult(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].PerSec < s[j].PerSec })
	return s[len(s)/2]
}
