//go:build linux

package dio_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/uringdio/uringdio/dio"
)

// threads returns the process's OS thread count.
func threads(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads: in /proc/self/status")
	return 0
}

// TestFilesOpenedByTheThousandShareOneEngine: Files opened without
// WithEngine share the process's engine: opening and closing thousands of
// them (and holding hundreds open) costs no ring, thread or goroutine
// each, and leaks nothing.
func TestFilesOpenedByTheThousandShareOneEngine(t *testing.T) {
	dir := t.TempDir()
	e, err := dio.DefaultEngine()
	if err != nil {
		t.Fatal(err)
	}
	b := relBuf(t, 4096)
	open := func(i int) *dio.File {
		f, err := dio.Open(filepath.Join(dir, fmt.Sprint(i%50)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if f.Engine() != e {
			t.Fatal("a File opened without options did not get the default engine")
		}
		return f
	}
	f := open(0) // the engine exists now
	f.Close()
	runtime.GC()
	g0, th0 := runtime.NumGoroutine(), threads(t)
	var held []*dio.File
	for i := range 3000 {
		f := open(i)
		if _, err := f.WriteAt(b, 0); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			held = append(held, f) // hundreds open at once
			continue
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if g, th := runtime.NumGoroutine(), threads(t); g > g0+5 || th > th0+runtime.GOMAXPROCS(0)+4 {
		t.Fatalf("with %d Files open: %d goroutines (were %d), %d threads (were %d)", len(held), g, g0, th, th0)
	}
	for _, f := range held {
		f.Close()
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close of the default engine: %v", err)
	}
	f = open(1) // still there
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatalf("the default engine stopped after Close: %v", err)
	}
	f.Close()
}

// TestEngineAndFileOptionsDoNotMix: engine options given with WithEngine,
// and File options given to NewEngine, are errors, not ignored.
func TestEngineAndFileOptionsDoNotMix(t *testing.T) {
	e := sharedEngine(t)
	path := filepath.Join(t.TempDir(), "opts")
	if _, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, dio.WithEngine(e), dio.WithQueueDepth(8)); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Open with WithEngine and WithQueueDepth: %v, want EINVAL", err)
	}
	if _, err := dio.NewEngine(dio.WithStrictAlignment()); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("NewEngine with a File option: %v, want EINVAL", err)
	}
}
