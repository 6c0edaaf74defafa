//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	cfg := config{SizeMiB: 8, QD: 4, Duration: 200 * time.Millisecond, Mode: "auto", Baseline: true}
	if err := run(context.Background(), cfg, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	s := out.String()
	switch {
	case strings.Contains(s, "IOPOLL, spinning on the CQ"):
	case strings.Contains(s, "IOPOLL is not available") && strings.Contains(s, "SQPOLL, spinning on the CQ"):
		// The fallback must say why, in the library's words.
		if !strings.Contains(s, "polled I/O") {
			t.Error("the fallback does not say why IOPOLL is not available")
		}
	default:
		t.Error("neither an IOPOLL run nor the SQPOLL fallback")
	}
	if strings.Count(s, " IOPS") != 2 || !strings.Contains(s, "p99.9") {
		t.Error("missing IOPS or latency percentiles")
	}
	if strings.Contains(s, "no reads completed") {
		t.Error("a run completed no reads")
	}
}

// On a device that cannot poll, asking for IOPOLL fails at Open with an
// error that says so (and matches ring.ErrNoPolledIO).
func TestIOPollRefusedWithReason(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ring.PolledIOSupported(fdOf(t, path)); ok {
		t.Skip("the test directory's device supports polled I/O")
	}
	f, err := dio.Open(path, os.O_RDONLY, 0, &dio.Options{EngineOptions: &dio.EngineOptions{IOPoll: true}})
	if err == nil {
		f.Close()
		t.Fatal("Open with IOPOLL succeeded on a device that cannot poll")
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("error %v does not match errors.ErrUnsupported", err)
	}
	var out bytes.Buffer
	err = run(context.Background(), config{Path: path, QD: 1, Duration: time.Millisecond, Mode: "iopoll"}, &out)
	if err == nil || !strings.Contains(err.Error(), "polled I/O") {
		t.Errorf("-mode iopoll: err = %v, want the reason", err)
	}
}

func fdOf(t *testing.T, path string) int {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}
