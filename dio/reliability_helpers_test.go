//go:build linux

package dio_test

// Helpers shared by the reliability tests (reliability_*_test.go): the
// model checker, the differential run, fault injection, real file systems,
// runtime stress and crash tests.

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// longMode reports whether the long runs were asked for (UIRINGDIO_LONG=1).
func longMode() bool { return os.Getenv("UIRINGDIO_LONG") != "" && os.Getenv("UIRINGDIO_LONG") != "0" }

// envInt returns the integer in the environment variable name, or def.
func envInt(name string, def int64) int64 {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.ParseInt(v, 0, 64); err == nil {
			return n
		}
	}
	return def
}

// relBuf returns n bytes of aligned off-heap memory, freed at cleanup.
func relBuf(t testing.TB, n int) []byte {
	t.Helper()
	b, err := ring.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ring.Free(b) })
	return b
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// checkOpError describes what is wrong with err as the error of an
// operation op on path at off of length n, or returns "".
func checkOpError(err error, op, path string, off, n int64) string {
	var oe *dio.OpError
	if !errors.As(err, &oe) {
		return fmt.Sprintf("error %v (%T) is not a *dio.OpError", err, err)
	}
	if oe.Op != op || oe.Path != path || oe.Off != off || oe.Len != n {
		return fmt.Sprintf("OpError{Op:%q Path:%q Off:%d Len:%d}, want {%q %q %d %d}: %v",
			oe.Op, oe.Path, oe.Off, oe.Len, op, path, off, n, err)
	}
	return ""
}

// errnoOf returns the errno err wraps, or 0.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// preadAll reads [off, off+n) of path with buffered pread (bypassing the
// engine): what the kernel has.
func preadAll(t testing.TB, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := f.ReadAt(b, off)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b[:m]
}

// fileSize returns the size fstat reports for path.
func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// ---- loop-mounted file systems ----

// loopFS is a file system on a loop device, mounted in a temporary
// directory; it is unmounted and detached at cleanup.
type loopFS struct {
	Dir    string
	Dev    string
	FSType string
	Sector int
}

func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// mountLoop makes a file system of type fstype (ext4, xfs, btrfs) of size
// bytes on a loop device with the given logical sector size, mounts it and
// returns it. It skips the test if that cannot be done here.
func mountLoop(t testing.TB, fstype string, size int64, sector int) *loopFS {
	t.Helper()
	l, err := mountLoopErr(t, fstype, size, sector)
	if err != nil {
		t.Skip(err)
	}
	return l
}

// mountLoopErr is mountLoop that says why instead of skipping.
func mountLoopErr(t testing.TB, fstype string, size int64, sector int) (*loopFS, error) {
	t.Helper()
	mkfs := "mkfs." + fstype
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("needs root (loop devices and mount)")
	}
	for _, tool := range []string{"losetup", "mount", "umount", mkfs} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + tool); err2 != nil {
				if _, err3 := os.Stat("/sbin/" + tool); err3 != nil {
					return nil, fmt.Errorf("needs %s: %v", tool, err)
				}
			}
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(img, size); err != nil {
		return nil, err
	}
	out, err := run("losetup", "--find", "--show", "--sector-size", strconv.Itoa(sector), "--direct-io=on", img)
	if err != nil {
		// Older losetup or a backing file system without O_DIRECT.
		out, err = run("losetup", "--find", "--show", "--sector-size", strconv.Itoa(sector), img)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot attach a loop device: %v", err)
	}
	dev := strings.TrimSpace(out)
	t.Cleanup(func() { run("losetup", "-d", dev) })
	var args []string
	switch fstype {
	case "ext4":
		args = []string{"-q", "-F", "-b", "4096", dev}
	case "xfs", "btrfs":
		args = []string{"-q", "-f", dev}
	default:
		return nil, fmt.Errorf("unknown file system %s", fstype)
	}
	if _, err := run(mkfs, args...); err != nil {
		return nil, fmt.Errorf("%s on %s with %d-byte sectors: %v", mkfs, dev, sector, err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return nil, err
	}
	if _, err := run("mount", "-t", fstype, dev, mnt); err != nil {
		return nil, fmt.Errorf("cannot mount %s: %v", fstype, err)
	}
	t.Cleanup(func() {
		if _, err := run("umount", mnt); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	// If the hang watchdog ends the binary, no cleanup runs, and mounts
	// and loop devices outlive the process: detach both (the kernel lets
	// them go once the process's descriptors close).
	onHang(t, func() {
		unix.Unmount(mnt, unix.MNT_DETACH)
		run("losetup", "-d", dev)
	})
	return &loopFS{Dir: mnt, Dev: dev, FSType: fstype, Sector: sector}, nil
}

// newRand returns a seeded generator.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)) }

// runChild runs the test binary again with only the tests matching run,
// and env added, and returns its combined output.
func runChild(t testing.TB, run string, env ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1", "-test.timeout=60s", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

// waitUntil yields until cond holds, for a state the engine shows only
// in a counter or flag; it fails the test if cond does not hold within
// the hang limit.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangLimit())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", hangLimit(), what)
		}
		runtime.Gosched()
	}
}

// runPattern returns the -test.run pattern that selects exactly the test
// or subtest named name: "TestFSX/qd16-wait" gives "^TestFSX$/^qd16-wait$".
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// kernelStacks describes where the process's threads are in the kernel
// (comm, state and stack of each thread that is not plainly idle), for a
// report when I/O stops completing.
func kernelStacks() string {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range ents {
		dir := "/proc/self/task/" + e.Name() + "/"
		comm, _ := os.ReadFile(dir + "comm")
		stat, _ := os.ReadFile(dir + "stat")
		stack, _ := os.ReadFile(dir + "stack")
		s := string(stack)
		if strings.Contains(s, "futex_wait") && !strings.Contains(s, "io_") {
			continue // an idle Go thread
		}
		state := ""
		if f := strings.Fields(string(stat)); len(f) > 2 {
			state = f[2]
		}
		fmt.Fprintf(&b, "thread %s %s state %s\n%s", e.Name(), strings.TrimSpace(string(comm)), state, s)
	}
	return b.String()
}

// writeSynced writes data to path (created or truncated) and fsyncs it, so
// that no dirty page cache is left for direct I/O to trip on.
func writeSynced(t testing.TB, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// fileMapper returns an opted-in FIEMAP mapper over path, on a descriptor
// of its own that the test closes at its end.
func fileMapper(t testing.TB, path string) *iomap.FileMapper {
	t.Helper()
	mf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mf.Close() })
	fm, err := iomap.NewFileMapper(int(mf.Fd()), iomap.FileMapperOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return fm
}

// hooked returns the options of a File with an engine of its own, made
// with eo and the test hooks h.
func hooked(eo dio.EngineOptions, h ringhook.Hooks) *dio.Options {
	ringhook.Attach(&eo, h)
	return &dio.Options{EngineOptions: &eo}
}

// wrapped returns the options of a File with an engine of its own whose
// ring w wraps.
func wrapped(w func(ringhook.Ring) ringhook.Ring) *dio.Options {
	return hooked(dio.EngineOptions{}, ringhook.Hooks{WrapRing: w})
}
