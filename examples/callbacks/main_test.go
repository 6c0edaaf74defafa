//go:build linux

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	cfg := config{SizeMiB: 4, Inflight: 512, Reads: 3000, Depth: 128, Sample: 16}
	if err := run(context.Background(), cfg, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	s := out.String()
	inline, pool, ok := strings.Cut(s, "\npool:")
	if !ok {
		t.Fatal("no pool run in the output")
	}
	if !strings.Contains(inline, "inline: 3000 reads") || !strings.Contains(pool, " 3000 reads") {
		t.Error("a run did not finish its 3000 reads")
	}
	// Inline callbacks run where the CQEs are reaped, never on the pool;
	// Pool callbacks run on pool workers only.
	if strings.Contains(inline, "pool worker") || !strings.Contains(inline, "engine reaper") {
		t.Error("inline callbacks did not all run on the reaper")
	}
	for _, l := range strings.Split(pool, "\n") {
		if strings.Contains(l, "goroutine ") && strings.Contains(l, "%") && !strings.Contains(l, "pool worker") {
			t.Errorf("pool callback ran off the pool: %q", l)
		}
	}
}

// A cancelled context stops the resubmissions and still waits for every
// read in flight before the memory is freed.
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	err := run(ctx, config{SizeMiB: 1, Inflight: 64, Reads: 1 << 20, Depth: 32}, &out)
	if err != context.Canceled {
		t.Fatalf("run = %v, want context.Canceled", err)
	}
}
