//go:build linux

package dio_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
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
// Options.Engine share the process's engine: opening and closing thousands of
// them (and holding hundreds open) costs no ring, thread or goroutine
// each, and leaks nothing.
func TestFilesOpenedByTheThousandShareOneEngine(t *testing.T) {
	dir := t.TempDir()
	e, err := dio.DefaultEngineForTest()
	if err != nil {
		t.Fatal(err)
	}
	b := relBuf(t, 4096)
	open := func(i int) *dio.File {
		f, err := dio.Open(filepath.Join(dir, fmt.Sprint(i%50)), os.O_RDWR|os.O_CREATE, 0o600, nil)
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

// TestEngineAndFileOptionsDoNotMix: engine options given with a shared
// engine are an error, not ignored. (File options given to NewEngine cannot
// be written: they are another type.)
func TestEngineAndFileOptionsDoNotMix(t *testing.T) {
	e := sharedEngine(t)
	path := filepath.Join(t.TempDir(), "opts")
	if _, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{Engine: e, EngineOptions: &dio.EngineOptions{QueueDepth: 8}}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Open with Engine and EngineOptions: %v, want EINVAL", err)
	}
	// Setup flags the owner cannot honour are refused, saying which.
	for _, fl := range []ring.SetupFlags{ring.SetupRDisabled, ring.SetupCoopTaskrun, ring.SetupAttachWQ} {
		if _, err := dio.NewEngine(&dio.EngineOptions{RingFlags: fl}); !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), fl.String()) {
			t.Fatalf("NewEngine with %v: %v, want EINVAL naming it", fl, err)
		}
	}
}

// TestCallbackPanicOnOwnerCrashesTheProgram: an Inline callback runs on
// the engine's owner goroutine; a panic there is a panic in a goroutine,
// which ends the program with the callback's panic and stack, as Go does
// everywhere, rather than leaving the engine without its owner and every
// waiter hanging. Run in a child process.
func TestCallbackPanicOnOwnerCrashesTheProgram(t *testing.T) {
	if os.Getenv("UIRINGDIO_CHILD") == "panic" {
		f, err := dio.Open(filepath.Join(os.Getenv("UIRINGDIO_DIR"), "p"), os.O_RDWR|os.O_CREATE, 0o600, nil)
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		b := relBuf(t, 4096)
		f.WriteAt(b, 0)
		r := &dio.Request{Op: dio.Read, Buf: b, Policy: completion.Inline,
			Callback: func(*dio.Request) { panic("callback panics on the owner") }}
		f.Submit(r)
		r.Wait(context.Background()) // never returns: the program ends first
		fmt.Println("the program survived the panic")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCallbackPanicOnOwnerCrashesTheProgram$")
	cmd.Env = append(os.Environ(), "UIRINGDIO_CHILD=panic", "UIRINGDIO_DIR="+t.TempDir())
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the child hung after its callback panicked:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "panic: callback panics on the owner") || !strings.Contains(string(out), "ownerMain") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestOpenErrorIsWrappedOnce: an Open whose engine could not be made read
// "dio: engine /path at offset 0 length 0: dio: engine  at offset 0
// length 0: ring: setup: ..." (the engine's OpError wrapped in Open's, and
// an empty range printed). Each error now names its op and path once, and
// a range only where there is one.
func TestOpenErrorIsWrappedOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	for _, tc := range []struct {
		name string
		open func() error
		want string // the whole message after the path
	}{
		{"ring setup fails", func() error {
			_, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{EngineOptions: &dio.EngineOptions{QueueDepth: 1 << 20}})
			return err
		}, "dio: engine " + path + ": ring: setup: "},
		{"flags refused", func() error {
			_, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{EngineOptions: &dio.EngineOptions{RingFlags: ring.SetupRDisabled}})
			return err
		}, "dio: engine " + path + ": setup flags R_DISABLED: "},
		{"no such file", func() error {
			_, err := dio.Open(path+".missing", os.O_RDWR, 0, nil)
			return err
		}, "dio: open " + path + ".missing: no such file or directory"},
		{"NewEngine", func() error {
			_, err := dio.NewEngine(&dio.EngineOptions{QueueDepth: 1 << 20})
			return err
		}, "dio: engine: ring: setup: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.open()
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			var oe *dio.OpError
			if !errors.As(err, &oe) || errors.As(oe.Err, new(*dio.OpError)) {
				t.Errorf("%q: want one *OpError, not nested", msg)
			}
			if !strings.HasPrefix(msg, tc.want) || strings.Count(msg, "dio: ") != 1 || strings.Contains(msg, "at offset") {
				t.Errorf("error %q, want it to start %q, say dio: once and print no range", msg, tc.want)
			}
		})
	}
}
