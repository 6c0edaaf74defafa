//go:build linux

package dio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"golang.org/x/sys/unix"
)

// exercise reads and writes f every way the engine offers (aligned and
// not, synchronous, and asynchronous under each policy) and checks every
// byte against what it wrote.
func exercise(t *testing.T, f *dio.File) {
	t.Helper()
	ctx := context.Background()
	w := relBuf(t, 256<<10)
	fillRand(newRand(77), w)
	if _, err := f.WriteAt(w, 0); err != nil {
		t.Fatal(err)
	}
	r := relBuf(t, 256<<10)
	if n, err := f.ReadAt(r, 0); n != len(r) || err != nil || !bytes.Equal(r, w) {
		t.Fatalf("aligned ReadAt = %d, %v", n, err)
	}
	odd := make([]byte, 1000)
	if n, err := f.ReadAt(odd, 4097); n != 1000 || err != nil || !bytes.Equal(odd, w[4097:5097]) {
		t.Fatalf("unaligned ReadAt = %d, %v", n, err)
	}
	if _, err := f.WriteAt([]byte("hello"), 256<<10); err != nil {
		t.Fatal(err)
	}
	if n, err := f.ReadAt(r[:8192], 256<<10); n != 5 || err != io.EOF || string(r[:5]) != "hello" {
		t.Fatalf("read at the end = %d, %v", n, err)
	}
	q := &completion.Queue{}
	for _, p := range []completion.Policy{completion.Inline, completion.Pool, completion.Caller, completion.Wait} {
		done := make(chan struct{})
		req := &dio.Request{Op: dio.Read, Off: 64 << 10, Buf: r[:64<<10], Policy: p, Queue: q,
			Callback: func(*dio.Request) { close(done) }}
		if err := f.Submit(req); err != nil {
			t.Fatal(err)
		}
		if n, err := req.Wait(ctx); n != 64<<10 || err != nil || !bytes.Equal(r[:64<<10], w[64<<10:128<<10]) {
			t.Fatalf("%v: Submit+Wait = %d, %v", p, n, err)
		}
		<-done
	}
	// A chain of callbacks, each submitting the next read, in constant
	// stack wherever the callbacks run.
	var count int
	chain := make(chan error, 1)
	req := &dio.Request{Op: dio.Read, Off: 0, Buf: r[:4096], Policy: completion.Inline}
	req.Callback = func(req *dio.Request) {
		if _, err := req.Result(); err != nil {
			chain <- err
			return
		}
		if count++; count == 2000 {
			chain <- nil
			return
		}
		req.Off = int64(count%64) * 4096
		if err := f.Submit(req); err != nil {
			chain <- err
		}
	}
	if err := f.Submit(req); err != nil {
		t.Fatal(err)
	}
	if err := <-chain; err != nil {
		t.Fatal(err)
	}
}

// TestSynchronousDeviceUsesPread: a file on tmpfs (whose files take no
// RWF_NOWAIT: io_uring would hand each request to an io-wq thread) is
// served by the pread backend, and everything works there; a file on the
// disk is served by the ring.
func TestSynchronousDeviceUsesPread(t *testing.T) {
	dir := fsDirs(t)["tmpfs"](t)
	f := openRW(t, filepath.Join(dir, "sync-device"), nil)
	c, err := f.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, f) // the file holds data now; a new File probes it
	g := openRW(t, filepath.Join(dir, "sync-device"), nil)
	if c, _ = g.Capabilities(); c.Backend != "pread" {
		t.Fatalf("a tmpfs file is served by %q (%s), want pread", c.Backend, c.BackendWhy)
	}
	exercise(t, g)
	h := openRW(t, filepath.Join(t.TempDir(), "disk"), nil)
	h.WriteAt(relBuf(t, 4096), 0)
	h2 := openRW(t, filepath.Join(filepath.Dir(h.Name()), "disk"), nil)
	if c, _ := h2.Capabilities(); c.Backend != "io_uring" {
		t.Fatalf("a file on the disk is served by %q (%s), want io_uring", c.Backend, c.BackendWhy)
	}
}

// TestRefusedRingFallsBackToPread: where a ring cannot be created (the
// constructor fails with EPERM, as under a seccomp profile or
// kernel.io_uring_disabled), the engine serves every file with pread and
// says why.
func TestRefusedRingFallsBackToPread(t *testing.T) {
	e, err := dio.NewEngineWithoutRingForTest(syscall.EPERM)
	if err != nil {
		t.Fatalf("engine without a ring: %v", err)
	}
	defer e.Close()
	f := openRW(t, filepath.Join(t.TempDir(), "no-ring"), &dio.Options{Engine: e})
	c, _ := f.Capabilities()
	if c.Backend != "pread" || !strings.Contains(c.BackendWhy, "no io_uring") {
		t.Fatalf("backend %q (%s)", c.Backend, c.BackendWhy)
	}
	exercise(t, f)
	if _, err := dio.NewEngineWithoutRingForTest(syscall.ENOMEM); err == nil {
		t.Fatal("a ring that fails for another reason (ENOMEM) made an engine anyway")
	}
}

// TestSeccompBlockedIOUringFallsBackToPread runs a child process with a
// seccomp filter that refuses io_uring_setup with EPERM (Docker's and
// containerd's default profiles do); its default engine works on pread.
func TestSeccompBlockedIOUringFallsBackToPread(t *testing.T) {
	if os.Getenv("UIRINGDIO_CHILD") == "seccomp" {
		if err := blockIOUring(); err != nil {
			fmt.Println("seccomp:", err)
			os.Exit(3)
		}
		f, err := dio.Open(filepath.Join(os.Getenv("UIRINGDIO_DIR"), "blocked"), os.O_RDWR|os.O_CREATE, 0o600, nil)
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(1)
		}
		c, _ := f.Capabilities()
		fmt.Printf("backend=%s why=%s\n", c.Backend, c.BackendWhy)
		exercise(t, f)
		// An engine of the File's own falls back the same way.
		g, err := dio.Open(filepath.Join(os.Getenv("UIRINGDIO_DIR"), "own"), os.O_RDWR|os.O_CREATE, 0o600,
			&dio.Options{EngineOptions: &dio.EngineOptions{}})
		if err != nil {
			fmt.Println("open with EngineOptions:", err)
			os.Exit(1)
		}
		c, _ = g.Capabilities()
		fmt.Printf("own engine backend=%s\n", c.Backend)
		exercise(t, g)
		g.Close()
		fmt.Println("child ok")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSeccompBlockedIOUringFallsBackToPread$", "-test.v")
	cmd.Env = append(os.Environ(), "UIRINGDIO_CHILD=seccomp", "UIRINGDIO_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.ExitCode() == 3 {
		t.Skipf("cannot install a seccomp filter here: %s", out)
	}
	if err != nil || !strings.Contains(string(out), "child ok") || !strings.Contains(string(out), "own engine backend=pread") {
		t.Fatalf("child under seccomp: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "operation not permitted") {
		t.Fatalf("the child's record does not say io_uring was refused:\n%s", out)
	}
}

// blockIOUring installs a seccomp filter on every thread of the process
// that makes io_uring_setup fail with EPERM.
func blockIOUring() error {
	const (
		ldW    = 0x20 // BPF_LD|BPF_W|BPF_ABS
		jeqK   = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
		retK   = 0x06 // BPF_RET|BPF_K
		nrOff  = 0    // offsetof(struct seccomp_data, nr)
		archOf = 4    // offsetof(struct seccomp_data, arch)
	)
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return fmt.Errorf("no audit arch for %s in this test", runtime.GOARCH)
	}
	prog := []unix.SockFilter{
		{Code: ldW, K: archOf},
		{Code: jeqK, Jt: 1, Jf: 0, K: arch},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW}, // another arch: leave it
		{Code: ldW, K: nrOff},
		{Code: jeqK, Jt: 0, Jf: 1, K: unix.SYS_IO_URING_SETUP},
		{Code: retK, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return e
	}
	return nil
}
