//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// The command under test is this test binary run again with mainEnv set
// to its arguments (JSON): TestMain runs main with them. The command
// serves in its own process, as it would from a shell; the tests do I/O to
// its device from theirs.
const mainEnv = "DIOLOOP_TEST_MAIN"

func TestMain(m *testing.M) {
	if a := os.Getenv(mainEnv); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Args = append([]string{"dioloop"}, args...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"4096", 4096, true},
		{"64K", 64 << 10, true},
		{"16m", 16 << 20, true},
		{"2G", 2 << 30, true},
		{"1T", 1 << 40, true},
		{"-1", 0, false},
		{"G", 0, false},
		{"1.5G", 0, false},
		{"99999999999T", 0, false},
	} {
		got, err := parseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

// TestFioRuntimeKeepsSubSecondBenchtime pins -benchtime's conversion to
// fio's --runtime: in whole seconds, 500ms was 0s, which fio takes for no
// limit.
func TestFioRuntimeKeepsSubSecondBenchtime(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{time.Millisecond, "1ms"},
		{500 * time.Millisecond, "500ms"},
		{1500 * time.Millisecond, "1500ms"},
		{5 * time.Second, "5000ms"},
	} {
		if got := fioRuntime(c.d); got != c.want {
			t.Errorf("fioRuntime(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}

// TestBenchAlternatesWhichDeviceRunsFirst pins the ABBA order: dioloop's
// device first in every other job, the kernel's in the others, not
// dioloop first in all.
func TestBenchAlternatesWhichDeviceRunsFirst(t *testing.T) {
	for i, want := range []bool{true, false, true, false} {
		if got := dioloopFirst(i); got != want {
			t.Errorf("dioloopFirst(%d) = %v, want %v", i, got, want)
		}
	}
}

// TestBenchRefusesAnImageThatExists checks that -bench, which writes over
// its image, refuses one that exists unless -overwrite says so, and
// refuses a -benchtime under a millisecond, before it touches anything.
func TestBenchRefusesAnImageThatExists(t *testing.T) {
	image := filepath.Join(t.TempDir(), "precious.img")
	data := []byte("a disk someone cares about")
	if err := os.WriteFile(image, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := bench(config{Image: image, Size: 1 << 20, BlockSize: 4096, Bench: true, BenchTime: time.Second}, &out)
	if err == nil || !strings.Contains(err.Error(), "-overwrite") {
		t.Errorf("-bench on an image that exists: %v, want a refusal that names -overwrite", err)
	}
	err = bench(config{Image: filepath.Join(t.TempDir(), "new.img"), Size: 1 << 20, BlockSize: 4096, Bench: true, BenchTime: time.Microsecond}, &out)
	if err == nil || !strings.Contains(err.Error(), "benchtime") {
		t.Errorf("-benchtime 1µs: %v, want a refusal", err)
	}
	if got, err := os.ReadFile(image); err != nil || !bytes.Equal(got, data) {
		t.Errorf("the image after the refusal: %q, %v; want it untouched", got, err)
	}
	if out.Len() != 0 {
		t.Errorf("-bench printed before refusing:\n%s", out.String())
	}
}

// command is the command running in a child process.
type command struct {
	cmd   *exec.Cmd
	lines chan string // its output, line by line; closed after done
	out   bytes.Buffer
	dir   string        // where it mounts its FUSE file system
	done  chan struct{} // closed once it has exited and been waited for
	err   error         // Wait's, once done is closed
}

// runCommand runs the command with args and -dir, a new directory it
// mounts its FUSE file system on.
func runCommand(t *testing.T, args ...string) *command {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dioloop: mounting FUSE and attaching loop devices needs root")
	}
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("dioloop: %v", err)
		}
	}
	c := &command{lines: make(chan string, 16), dir: filepath.Join(t.TempDir(), "mnt"), done: make(chan struct{})}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(append(args, "-dir", c.dir))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(exe)
	// Under the race detector a process sleeps a second at exit unless
	// told not to.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	c.cmd.Env = append(os.Environ(), mainEnv+"="+string(a), "GORACE="+gorace)
	c.cmd.Stderr = &c.out
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.stop(10 * time.Second) })
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		// Its output is all read: it has exited.
		c.err = c.cmd.Wait()
		close(c.done)
		close(c.lines)
	}()
	return c
}

// stop ends the command, however the test left it: SIGTERM, and a wait
// for it to stop cleanly (flush, detach, unmount); if it has not exited
// after grace, SIGKILL, and a lazy unmount of its FUSE mount, which
// nothing else takes down once its server is dead. It does nothing to a
// command that has exited but the unmount.
func (c *command) stop(grace time.Duration) {
	select {
	case <-c.done:
	default:
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	lines := c.lines
	for waiting := true; waiting; {
		select {
		case <-c.done:
			waiting = false
		case _, ok := <-lines: // what the test left unread
			if !ok {
				lines = nil
			}
		case <-timer.C:
			c.cmd.Process.Kill()
		}
	}
	if isMountPoint(c.dir) {
		unix.Unmount(c.dir, unix.MNT_DETACH)
	}
}

// startCommand runs the command on a new image of 16 MiB and waits for the
// device it prints.
func startCommand(t *testing.T, image string) (*command, string) {
	t.Helper()
	c := runCommand(t, "-image", image, "-size", "16M")
	dev, ok := <-c.lines
	if !ok || !strings.HasPrefix(dev, "/dev/loop") {
		c.stop(10 * time.Second)
		t.Fatalf("the command's first line is %q, want a loop device; stderr:\n%s", dev, c.out.String())
	}
	return c, dev
}

// waitFor reads the command's output up to a line that contains s.
func (c *command) waitFor(t *testing.T, s string) {
	t.Helper()
	for l := range c.lines {
		if strings.Contains(l, s) {
			return
		}
	}
	t.Fatalf("the command ended without printing %q; stderr:\n%s", s, c.out.String())
}

// exit waits for the command's end and returns its exit code and its
// remaining output.
func (c *command) exit() (int, string) {
	var rest strings.Builder
	for l := range c.lines {
		rest.WriteString(l + "\n")
	}
	<-c.done
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return ee.ExitCode(), rest.String() + c.out.String()
	}
	return 0, rest.String() + c.out.String()
}

// attachedTo returns the backing file of loop device dev, or "".
func attachedTo(dev string) string {
	b, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file"))
	return strings.TrimSpace(string(b))
}

// loopsOn returns the loop devices attached to a file whose path begins
// with one of prefixes.
func loopsOn(prefixes ...string) []string {
	var devs []string
	bfs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, bf := range bfs {
		b, _ := os.ReadFile(bf)
		for _, p := range prefixes {
			if strings.HasPrefix(strings.TrimSpace(string(b)), p) {
				devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(bf))))
			}
		}
	}
	return devs
}

// isMountPoint reports whether dir is mounted on: whether it is a mount
// point in /proc/self/mountinfo (a stat would fail on a FUSE mount whose
// server died, and say no).
func isMountPoint(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for l := range strings.Lines(string(b)) {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestSIGTERMFlushesDetachesAndUnmounts runs the command, writes through
// its device, sends SIGTERM and checks that it exits 0 with the loop
// device detached from its file, its FUSE file system unmounted and the
// data on the image.
func TestSIGTERMFlushesDetachesAndUnmounts(t *testing.T) {
	image := filepath.Join(t.TempDir(), "disk.img")
	c, dev := startCommand(t, image)
	served := filepath.Join(c.dir, "disk.img")
	if got := attachedTo(dev); got != served {
		t.Fatalf("%s is attached to %q, want %q", dev, got, served)
	}
	buf, err := ring.Alloc(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Free(buf)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	c.cmd.Process.Signal(syscall.SIGTERM)
	code, out := c.exit()
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, out)
	}
	if !strings.Contains(out, "dioloop: stopped") {
		t.Errorf("output lacks \"dioloop: stopped\":\n%s", out)
	}
	if got := attachedTo(dev); got == served {
		t.Errorf("%s is still attached to %s", dev, served)
	}
	if isMountPoint(c.dir) {
		t.Errorf("%s is still mounted", c.dir)
	}
	img, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, len(buf))
	if _, err := io.ReadFull(io.NewSectionReader(img, 1<<20, int64(len(buf))), got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf) {
		t.Error("the image does not hold what was written to the device")
	}
}

// TestSecondSignalStopsWhileTheDeviceIsInUse holds the command's device
// open, as a mounted file system would: the first SIGTERM waits for it,
// the second stops the command anyway, with an error that says the device
// was in use, and its FUSE file system unmounted.
func TestSecondSignalStopsWhileTheDeviceIsInUse(t *testing.T) {
	c, dev := startCommand(t, filepath.Join(t.TempDir(), "disk.img"))
	holder, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.waitFor(t, "flush, detach")
	c.cmd.Process.Signal(syscall.SIGTERM)
	code, out := c.exit()
	if code != 1 || !strings.Contains(out, "still in use") {
		t.Fatalf("exit code %d after a second SIGTERM, want 1 with \"still in use\":\n%s", code, out)
	}
	if isMountPoint(c.dir) {
		t.Errorf("%s is still mounted", c.dir)
	}
}

// TestInterruptedBenchLeavesNoDevices interrupts -bench (SIGINT, as Ctrl-C
// sends) while fio runs and checks that it stops with an error and leaves
// neither loop device attached, its own nor the kernel's, nor its FUSE
// mount: it used to die at once and leak all three.
func TestInterruptedBenchLeavesNoDevices(t *testing.T) {
	if _, err := exec.LookPath("fio"); err != nil {
		t.Skip("dioloop: -bench needs fio")
	}
	image := filepath.Join(t.TempDir(), "bench.img")
	c := runCommand(t, "-bench", "-image", image, "-size", "16M", "-benchtime", "1m")
	c.waitFor(t, "|---|")
	c.cmd.Process.Signal(os.Interrupt)
	code, out := c.exit()
	if code != 1 || !strings.Contains(out, "interrupted") {
		t.Errorf("exit code %d after SIGINT, want 1 with \"interrupted\":\n%s", code, out)
	}
	if devs := loopsOn(image, c.dir); len(devs) != 0 {
		t.Errorf("loop devices left attached to %s or under %s: %v", image, c.dir, devs)
	}
	if isMountPoint(c.dir) {
		t.Errorf("%s is still mounted", c.dir)
	}
}

// TestCleanupUnmountsAfterAKill stops a command that cannot stop cleanly
// (SIGSTOPped: its SIGTERM waits) the way a failed test's cleanup does,
// and checks that it is killed and its FUSE mount and loop device are
// gone: the cleanup used to SIGKILL the command at once and leave the
// mount of the dead server behind.
func TestCleanupUnmountsAfterAKill(t *testing.T) {
	c, _ := startCommand(t, filepath.Join(t.TempDir(), "disk.img"))
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// A stopped process cannot exit: the grace runs out, whatever its
	// length.
	c.stop(time.Millisecond)
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the stopped command ended with %v, want SIGKILL", c.err)
	}
	if isMountPoint(c.dir) {
		t.Errorf("%s is still mounted after the kill", c.dir)
	}
	if devs := loopsOn(c.dir); len(devs) != 0 {
		t.Errorf("loop devices left attached under %s: %v", c.dir, devs)
	}
}
