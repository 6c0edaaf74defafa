//go:build linux

package crashfs

import (
	"errors"
	"fmt"
	"io"
	"net/rpc"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The server process. FS starts it by running the test binary again with
// serveEnv set; init below turns that process into the server before any
// test (or TestMain) runs. It speaks net/rpc on its stdin and stdout.
//
// Why a process of its own: a FUSE request already read by the server is
// waited for without end, fatal signals or not. With the server in the
// test process, a test that dies while I/O is in flight (a panic, a
// timeout) would hang in exit: its threads wait for answers from server
// threads that died with it. Here the server outlives the test process,
// answers until it is gone, then takes everything down.
const (
	serveEnv        = "CRASHFS_SERVE"
	serveBackingEnv = "CRASHFS_SERVE_BACKING"
	serveDirEnv     = "CRASHFS_SERVE_DIR"
)

func init() {
	if os.Getenv(serveEnv) == "" {
		return
	}
	os.Exit(serveMain(os.Getenv(serveBackingEnv), os.Getenv(serveDirEnv)))
}

// serveMain runs the server process: RPCs on stdin and stdout until the
// client unmounts, or goes away.
func serveMain(backing, dir string) int {
	r := &rpcServer{backing: backing, dir: dir}
	srv := rpc.NewServer()
	if err := srv.RegisterName("crashfs", r); err != nil {
		fmt.Fprintln(os.Stderr, "crashfs server:", err)
		return 2
	}
	// The client's end of stdin closes when it unmounts, or dies: then
	// everything comes down, which also ends the waits of WaitArmed calls
	// (net/rpc waits for the calls in flight before it returns).
	conn := stdio{Reader: eofReader{r: os.Stdin, eof: r.teardown}, WriteCloser: os.Stdout}
	srv.ServeConn(conn)
	return r.teardown()
}

type stdio struct {
	io.Reader
	io.WriteCloser
}

// eofReader calls eof (once, in a goroutine) when its reader fails.
type eofReader struct {
	r   io.Reader
	eof func() int
}

func (e eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		go e.eof()
	}
	return n, err
}

// rpcServer is the server process's RPC interface.
type rpcServer struct {
	backing, dir string

	mu       sync.Mutex
	s        *server
	connID   uint64   // the FUSE connection's number under fusectl
	uppers   []string // mounts on loop devices over images here
	down     bool
	exitCode int
}

func (r *rpcServer) get() (*server, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil {
		return nil, errors.New("crashfs: not mounted")
	}
	return r.s, nil
}

// Mount mounts the file system.
func (r *rpcServer) Mount(_ int, _ *int) error {
	s, err := newServer(r.backing, r.dir)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(r.dir, &st); err == nil {
		// fusectl names a connection by its device number, an
		// anonymous one (major 0): the minor.
		r.connID = uint64(unix.Minor(st.Dev))
	}
	r.mu.Lock()
	r.s = s
	r.mu.Unlock()
	return nil
}

// Crash is FS.Crash; arg is the seed and the mode.
func (r *rpcServer) Crash(arg [2]uint64, st *CrashStats) error {
	s, err := r.get()
	if err != nil {
		return err
	}
	*st, err = s.crashNow(arg[0], Mode(arg[1]))
	return err
}

// CrashAfter is FS.CrashAfter; arg is n, the seed and the mode; id is
// the arm's id for WaitArmed.
func (r *rpcServer) CrashAfter(arg [3]uint64, id *uint64) error {
	s, err := r.get()
	if err != nil {
		return err
	}
	*id = s.crashAfter(int64(arg[0]), arg[1], Mode(arg[2]))
	return nil
}

// errNotFired answers WaitArmed for an arm that was replaced or disarmed.
const errNotFired = "crashfs: the armed crash did not happen"

// WaitArmed waits for arm id to fire.
func (r *rpcServer) WaitArmed(id uint64, st *CrashStats) error {
	s, err := r.get()
	if err != nil {
		return err
	}
	var fired bool
	if *st, fired = s.waitArmed(id); !fired {
		return errors.New(errNotFired)
	}
	return nil
}

// Restart is FS.Restart.
func (r *rpcServer) Restart(_ int, _ *int) error {
	s, err := r.get()
	if err != nil {
		return err
	}
	return s.restart()
}

// Stats is FS.Stats.
func (r *rpcServer) Stats(_ int, st *Stats) error {
	s, err := r.get()
	if err != nil {
		return err
	}
	*st = s.stats()
	return nil
}

// AddUpper says that dir is a file system mounted from a loop device over
// an image here: if the client goes away without unmounting it, the
// server shuts it down and unmounts it before it unmounts itself.
func (r *rpcServer) AddUpper(dir string, _ *int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.uppers = append(r.uppers, dir)
	return nil
}

// RemoveUpper undoes AddUpper.
func (r *rpcServer) RemoveUpper(dir string, _ *int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, u := range r.uppers {
		if u == dir {
			r.uppers = append(r.uppers[:i], r.uppers[i+1:]...)
			break
		}
	}
	return nil
}

// Unmount unmounts the file system; it fails while files on it are open.
func (r *rpcServer) Unmount(_ int, _ *int) error {
	s, err := r.get()
	if err != nil {
		return err
	}
	s.disarm() // ends a WaitArmed in flight
	if err := s.unmount(); err != nil {
		return err
	}
	r.mu.Lock()
	r.s = nil
	r.mu.Unlock()
	return nil
}

// teardown takes down what the client left mounted (once) and returns the
// process's exit code: 0 if the client had unmounted, 1 if the server had
// to.
func (r *rpcServer) teardown() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return r.exitCode
	}
	r.down = true
	if r.s == nil {
		return 0
	}
	r.exitCode = 1
	s := r.s
	s.disarm()
	for _, u := range r.uppers {
		shutdownUpper(u)
		if err := unix.Unmount(u, 0); err != nil {
			unix.Unmount(u, unix.MNT_DETACH)
		}
	}
	if s.unmount() == nil {
		return r.exitCode
	}
	// Still busy (a loop device lets go of its image asynchronously):
	// detach the mount, and abort the connection if it does not end.
	unix.Unmount(r.dir, unix.MNT_DETACH)
	done := make(chan struct{})
	go func() { s.fuse.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		abortConn(r.connID)
	}
	return r.exitCode
}

// abortConn aborts FUSE connection id through fusectl, mounting it if
// needed: every request waiting on it fails.
func abortConn(id uint64) {
	const ctl = "/sys/fs/fuse/connections"
	p := filepath.Join(ctl, strconv.FormatUint(id, 10), "abort")
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		unix.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		fmt.Fprintln(os.Stderr, "crashfs server: abort the FUSE connection:", err)
	}
}

// shutdownUpper shuts the file system mounted at dir down without
// flushing its log (the ext4 and xfs shutdown ioctl).
func shutdownUpper(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return ignoringEINTR(func() error {
		return unix.IoctlSetPointerInt(int(d.Fd()), shutdownIoctl, shutdownNoLogFlush)
	})
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// shutdownIoctl is EXT4_IOC_SHUTDOWN, which is also XFS_IOC_GOINGDOWN:
// _IOR('X', 125, __u32), in the asm-generic ioctl encoding (x86, arm64,
// riscv: direction in bits 30-31, size in 16-29, type in 8-15, number
// in 0-7). golang.org/x/sys/unix does not define it.
const shutdownIoctl = 2<<30 | 4<<16 | 'X'<<8 | 125

// shutdownNoLogFlush is EXT4_GOING_FLAGS_NOLOGFLUSH and
// XFS_FSOP_GOING_FLAGS_NOLOGFLUSH: stop now, write nothing more.
const shutdownNoLogFlush = 0x2
