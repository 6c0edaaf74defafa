//go:build linux

package target

// The server under test runs in a child process: the test binary run
// again with serveEnv set, which TestMain turns into a server before any
// test runs, as internal/crashfs does for its own server. A FUSE request
// the server has read is waited for without end; with the server inside
// the test process, a test that died (a panic, a timeout) while the file
// system above the loop device had I/O in flight would hang in exit. The
// child speaks net/rpc on its stdin and stdout; when its stdin closes (the
// test is done, or dead) it shuts down the file systems the test mounted
// on its loop device, stops serving and exits.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/rpc"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/durability"
	"github.com/uringdio/uringdio/internal/faultring"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

const serveEnv = "DIOLOOP_TEST_SERVE"

func TestMain(m *testing.M) {
	if c := os.Getenv(serveEnv); c != "" {
		os.Exit(serveChild(c))
	}
	os.Exit(m.Run())
}

// longMode reports whether the long runs were asked for (UIRINGDIO_LONG=1).
func longMode() bool {
	return os.Getenv("UIRINGDIO_LONG") != "" && os.Getenv("UIRINGDIO_LONG") != "0"
}

// childConfig is what a child serves, and how.
type childConfig struct {
	Image string
	Size  int64
	// AckBeforeSync is the counter-check's lie: the child's dio skips
	// every fdatasync and leaves RWF_DSYNC off its writes
	// (durability.SkipSync), so the device's flushes are answered with
	// nothing made durable.
	AckBeforeSync bool
	// Faults gives the image an engine of its own whose ring is wrapped
	// by faultring, failing the reads FailReads names with EIO.
	Faults bool
}

// ChildInfo is what a child tells about its target.
type ChildInfo struct {
	Dev, File string
	DirectIO  bool // the loop driver kept its direct-I/O mode
}

// ChildStats are the target's counters and the faults injected.
type ChildStats struct {
	Stats
	InjectedEIO uint64
}

// child is the child's RPC interface.
type child struct {
	t *Target

	failing      atomic.Pointer[[2]int64] // reads overlapping [off, end) fail
	failingWrite atomic.Pointer[[2]int64] // writes overlapping [off, end) fail
	fr           atomic.Pointer[faultring.Ring]

	mu      sync.Mutex
	uppers  []string // file systems mounted on the device, for teardown
	stopped bool     // Stop has closed the target
}

func (c *child) Info(_ int, out *ChildInfo) error {
	*out = ChildInfo{Dev: c.t.Device(), File: c.t.File(), DirectIO: c.t.LoopDirectIO()}
	return nil
}

func (c *child) Stats(_ int, out *ChildStats) error {
	out.Stats = c.t.Stats()
	if fr := c.fr.Load(); fr != nil {
		out.InjectedEIO = fr.Stats().Faults[faultring.EIO]
	}
	return nil
}

// FailReads makes reads of the image that overlap [r[0], r[0]+r[1]) fail
// with EIO; a length of 0 ends that.
func (c *child) FailReads(r [2]int64, _ *int) error {
	c.failing.Store(&[2]int64{r[0], r[0] + r[1]})
	return nil
}

// FailWrites is FailReads for writes.
func (c *child) FailWrites(r [2]int64, _ *int) error {
	c.failingWrite.Store(&[2]int64{r[0], r[0] + r[1]})
	return nil
}

func (c *child) AddUpper(dir string, _ *int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uppers = append(c.uppers, dir)
	return nil
}

func (c *child) RemoveUpper(dir string, _ *int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, u := range c.uppers {
		if u == dir {
			c.uppers = append(c.uppers[:i], c.uppers[i+1:]...)
			break
		}
	}
	return nil
}

// FailSync makes the image's Datasync fail with the error kind names
// (syncFaults); "" ends that.
func (c *child) FailSync(kind string, _ *int) error {
	if kind == "" {
		c.t.syncFault.Store(nil)
		return nil
	}
	err, ok := syncFaults[kind]
	if !ok {
		return fmt.Errorf("no sync fault %q", kind)
	}
	err = &dio.OpError{Op: "datasync", Path: c.t.cfg.Image, Err: err}
	c.t.syncFault.Store(&err)
	return nil
}

// syncFaults are the errors FailSync can make Datasync fail with: an
// errno, and dio's and ring's sentinels for what is not supported (which
// wrap errors.ErrUnsupported).
var syncFaults = map[string]error{
	"EIO":                 syscall.EIO,
	"ENOSYS":              syscall.ENOSYS,
	"EOPNOTSUPP":          syscall.EOPNOTSUPP,
	"dio.ErrUnsupported":  dio.ErrUnsupported,
	"ring.ErrUnsupported": fmt.Errorf("ring: IORING_OP_FSYNC: %w", ring.ErrUnsupported),
}

// ChildErr is an error the child reports to the test: its message, and
// the errno it wraps (0 if none), so that the test can match it with
// errors.Is.
type ChildErr struct {
	Msg   string
	Errno syscall.Errno
}

func (e *ChildErr) Error() string { return "dioloop child: " + e.Msg }

func (e *ChildErr) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// Stop closes the target, what the command does on SIGTERM, and reports
// Close's error in out.
func (c *child) Stop(_ int, out *ChildErr) error {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.t.Close(ctx); err != nil {
		out.Msg = err.Error()
		errors.As(err, &out.Errno)
	}
	return nil
}

// decide is the fault ring's choice for one CQE: EIO for a read or a
// write that overlaps its failing range.
func (c *child) decide(q faultring.CQE) faultring.Fault {
	var r *[2]int64
	switch q.SQE.Op {
	case ring.OpRead, ring.OpReadv, ring.OpReadFixed:
		r = c.failing.Load()
	case ring.OpWrite, ring.OpWritev, ring.OpWriteFixed:
		r = c.failingWrite.Load()
	}
	if r == nil || r[1] <= r[0] {
		return faultring.None
	}
	off := int64(q.SQE.Off)
	if off < r[1] && off+int64(q.SQE.Len) > r[0] {
		return faultring.EIO
	}
	return faultring.None
}

type stdio struct {
	io.Reader
	io.WriteCloser
}

// serveChild is the child process: it serves the image its config names
// until its stdin closes.
func serveChild(conf string) int {
	var cc childConfig
	if err := json.Unmarshal([]byte(conf), &cc); err != nil {
		fmt.Fprintln(os.Stderr, "dioloop child:", err)
		return 2
	}
	c := &child{}
	cfg := Config{Image: cc.Image, Size: cc.Size}
	durability.SkipSync.Store(cc.AckBeforeSync)
	if cc.Faults {
		// Registered files shape the ring, so every file of the engine
		// is served through it (and its faults), whatever the device.
		eo := dio.EngineOptions{RegisteredFiles: 4}
		ringhook.Attach(&eo, ringhook.Hooks{WrapRing: func(r ringhook.Ring) ringhook.Ring {
			fr := faultring.New(r, faultring.Config{Decide: c.decide})
			c.fr.Store(fr)
			return fr
		}})
		cfg.Options = &dio.Options{EngineOptions: &eo}
	}
	t, err := Start(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dioloop child:", err)
		return 3
	}
	c.t = t
	if _, err := t.Attach(); err != nil {
		fmt.Fprintln(os.Stderr, "dioloop child:", err)
		t.Close(context.Background())
		if errors.Is(err, ErrNoLoop) {
			return 4 // the test skips; on any other error it fails
		}
		return 3
	}
	srv := rpc.NewServer()
	if err := srv.RegisterName("child", c); err != nil {
		fmt.Fprintln(os.Stderr, "dioloop child:", err)
		return 2
	}
	// Until the test closes our stdin (it is done, or dead).
	srv.ServeConn(stdio{Reader: os.Stdin, WriteCloser: os.Stdout})
	c.mu.Lock()
	uppers, stopped := c.uppers, c.stopped
	c.mu.Unlock()
	if stopped {
		return 0
	}
	for _, u := range uppers {
		shutdownFS(u)
		if unix.Unmount(u, 0) != nil {
			unix.Unmount(u, unix.MNT_DETACH)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := t.Close(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dioloop child: close:", err)
	}
	return 0
}

// server is a child serving an image, seen from the test.
type server struct {
	t      testing.TB
	cmd    *exec.Cmd
	client *rpc.Client
	info   ChildInfo
	done   bool
}

// skipUnlessLoopOverFUSE skips the test where a loop device over a FUSE
// file cannot run: not root, no /dev/fuse, no loop devices.
func skipUnlessLoopOverFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dioloop: mounting FUSE and attaching loop devices needs root")
	}
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		t.Skipf("dioloop: /dev/fuse: %v", err)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("dioloop: no loop devices: %v", err)
	}
}

// serve starts a child serving cfg's image and waits until its loop
// device is attached; cleanup stops it.
func serve(t testing.TB, cc childConfig) *server {
	t.Helper()
	skipUnlessLoopOverFUSE(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := json.Marshal(cc)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	// Under the race detector a process sleeps a second at exit unless
	// told not to.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), serveEnv+"="+string(conf), "GORACE="+gorace)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, client: rpc.NewClient(stdio{Reader: stdout, WriteCloser: stdin})}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	})
	// The first call waits until the child serves: it answers RPCs
	// once the loop device is attached, or exits.
	if err := s.client.Call("child.Info", 0, &s.info); err != nil {
		s.client.Close()
		werr := cmd.Wait()
		s.done = true
		var ee *exec.ExitError
		if errors.As(werr, &ee) && ee.ExitCode() == 4 {
			t.Skipf("dioloop: no loop devices (%v)", werr)
		}
		t.Fatalf("dioloop child: %v (%v)", err, werr)
	}
	return s
}

// Dev returns the loop device.
func (s *server) Dev() string { return s.info.Dev }

func (s *server) call(method string, arg, reply any) {
	s.t.Helper()
	if err := s.client.Call("child."+method, arg, reply); err != nil {
		s.t.Fatalf("dioloop child: %s: %v", method, err)
	}
}

// Stats returns the child's counters.
func (s *server) Stats() ChildStats {
	s.t.Helper()
	var st ChildStats
	s.call("Stats", 0, &st)
	return st
}

// stop closes the target (flush, detach, unmount) and ends the child. It
// returns Close's error (a *ChildErr), or the child's.
func (s *server) stop() error {
	if s.done {
		return nil
	}
	s.done = true
	var cerr ChildErr
	err := s.client.Call("child.Stop", 0, &cerr)
	if err == nil && cerr.Msg != "" {
		err = &cerr
	}
	s.client.Close() // closes its stdin: it exits
	if werr := s.cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("dioloop child: %w", werr)
	}
	return err
}

// lookTool finds a system tool in PATH or the sbin directories, or skips
// the test.
func lookTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skipf("dioloop: %s not installed", name)
	return ""
}

// mkfsArgs make an ext4 that writes nothing later by itself (no lazy
// initialisation) and issues no discards.
var mkfsArgs = []string{"-q", "-F", "-b", "4096", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"}

// mkfsExt4 makes an ext4 on path (a device or an image file).
func mkfsExt4(t testing.TB, path string) {
	t.Helper()
	mkfs := lookTool(t, "mkfs.ext4")
	if fss, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fss, []byte("\text4\n")) {
		t.Skip("dioloop: the kernel has no ext4")
	}
	if out, err := exec.Command(mkfs, append(mkfsArgs, path)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", path, err, bytes.TrimSpace(out))
	}
}

// fsck runs fsck.ext4 -fn on dev and returns an error with its output if
// it found anything.
func fsck(t testing.TB, dev string) error {
	t.Helper()
	out, err := exec.Command(lookTool(t, "fsck.ext4"), "-fn", dev).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fsck.ext4 -fn %s: %v:\n%s", dev, err, out)
	}
	return nil
}

// mountExt4 mounts ext4 from dev on dir, tells the child (so that it can
// take the mount down should the test die), and unmounts it at cleanup
// unless umount came first.
func (s *server) mountExt4(t testing.TB, dir, opts string) {
	t.Helper()
	if err := unix.Mount(s.Dev(), dir, "ext4", 0, opts); err != nil {
		t.Fatalf("mount -t ext4 -o %q %s %s: %v", opts, s.Dev(), dir, err)
	}
	s.call("AddUpper", dir, new(int))
	t.Cleanup(func() {
		if isMountPoint(dir) {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

// umount unmounts the file system on dir.
func (s *server) umount(t testing.TB, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatalf("umount %s: %v", dir, err)
	}
	s.call("RemoveUpper", dir, new(int))
}

// isMountPoint reports whether dir is mounted on.
func isMountPoint(dir string) bool {
	var a, b unix.Stat_t
	if unix.Stat(dir, &a) != nil || unix.Stat(filepath.Dir(dir), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// shutdownFS shuts the ext4 mounted on dir down without flushing its log
// (EXT4_IOC_SHUTDOWN with EXT4_GOING_FLAGS_NOLOGFLUSH): nothing it cached
// reaches the device afterwards.
func shutdownFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.IoctlSetPointerInt(int(d.Fd()), ext4Shutdown, ext4NoLogFlush)
}

// ext4Shutdown is EXT4_IOC_SHUTDOWN, _IOR('X', 125, __u32), in the
// asm-generic ioctl encoding (x86, arm64, riscv: direction in bits 30-31,
// size in 16-29, type in 8-15, number in 0-7); golang.org/x/sys/unix does
// not define it. ext4NoLogFlush is EXT4_GOING_FLAGS_NOLOGFLUSH.
const (
	ext4Shutdown   = 2<<30 | 4<<16 | 'X'<<8 | 125
	ext4NoLogFlush = 0x2
)

// randomBytes returns n bytes drawn from rng (through a ChaCha8 it
// seeds, which fills them a block at a time).
func randomBytes(rng *rand.Rand, n int) []byte {
	var seed [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(seed[8*i:], rng.Uint64())
	}
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return b
}
