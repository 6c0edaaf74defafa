//go:build linux

package crashfs

import (
	"errors"
	"fmt"
	"io"
	"net/rpc"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// FS is the file-level crash file system: a FUSE mount over a backing
// directory that holds the durable image, served by a process of its own
// (the test binary run again; see serve.go for why). Its methods are safe
// for concurrent use, and with I/O on the mount.
type FS struct {
	backing, dir string

	cmd    *exec.Cmd
	stdin  io.Closer
	client *rpc.Client

	closeOnce sync.Once
	closeErr  error
}

// New mounts a crash file system at dir over the durable image in
// backing; both directories must exist. It needs root (or CAP_SYS_ADMIN)
// and /dev/fuse. The caller must call Unmount.
func New(backing, dir string) (*FS, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("crashfs: the server runs this executable again: %w", err)
	}
	cmd := exec.Command(exe)
	// Under the race detector, a process sleeps a second at exit (to let
	// racing goroutines report) unless told not to.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), serveEnv+"=1", serveBackingEnv+"="+backing, serveDirEnv+"="+dir, "GORACE="+gorace)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("crashfs: start the server: %w", err)
	}
	c := &FS{
		backing: backing,
		dir:     dir,
		cmd:     cmd,
		stdin:   stdin,
		client:  rpc.NewClient(stdio{Reader: stdout, WriteCloser: stdin}),
	}
	if err := c.call("Mount", 0, new(int)); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// call makes an RPC to the server.
func (c *FS) call(method string, arg, reply any) error {
	err := c.client.Call("crashfs."+method, arg, reply)
	var se rpc.ServerError
	if errors.As(err, &se) {
		return errors.New(string(se))
	}
	return err
}

// close ends the server process and waits for it.
func (c *FS) close() error {
	c.closeOnce.Do(func() {
		c.client.Close() // closes stdin: the server exits
		if err := c.cmd.Wait(); err != nil {
			c.closeErr = fmt.Errorf("crashfs: the server: %w", err)
		}
	})
	return c.closeErr
}

// Dir returns where the file system is mounted.
func (c *FS) Dir() string { return c.dir }

// Backing returns the directory that holds the durable image.
func (c *FS) Backing() string { return c.backing }

// Unmount unmounts the file system and ends its server, forgetting what
// was pending. If files on it are still open it fails, and the server
// detaches the mount and goes away anyway (the files then fail).
func (c *FS) Unmount() error {
	err := c.call("Unmount", 0, new(int))
	if cerr := c.close(); err == nil {
		err = cerr
	}
	return err
}

// Crash cuts the power now: the writes and size changes of each file
// since its last sync are dropped as mode says (seed drives Torn's
// choices), and every file opened before the crash fails with EIO from
// now on. Files opened afterwards see the durable image. An armed crash
// (CrashAfter) is disarmed. Crash returns what it dropped; an error means
// the survivors of a Torn crash could not all be written to the durable
// image.
func (c *FS) Crash(seed uint64, mode Mode) (CrashStats, error) {
	var st CrashStats
	err := c.call("Crash", [2]uint64{seed, uint64(mode)}, &st)
	return st, err
}

// CrashAfter arms a crash: the n-th request that would change the durable
// image from now on (a write, a size change, an fsync or fdatasync; n >= 1)
// finds the power already cut, as Crash(seed, mode) would have cut it just
// before, and fails like every later request of a file opened before the
// crash. It picks a crash point by I/O count rather than by time. The
// channel receives the crash's stats when it happens, then closes; it
// closes without a value if Crash, Unmount or another CrashAfter comes
// first.
func (c *FS) CrashAfter(n int64, seed uint64, mode Mode) <-chan CrashStats {
	ch := make(chan CrashStats, 1)
	var id uint64
	if err := c.call("CrashAfter", [3]uint64{uint64(max(n, 1)), seed, uint64(mode)}, &id); err != nil {
		close(ch)
		return ch
	}
	go func() {
		var st CrashStats
		if err := c.call("WaitArmed", id, &st); err == nil {
			ch <- st
		}
		close(ch)
	}()
	return ch
}

// Restart ends a crash. At the file level there is nothing to restart:
// files opened from now on see the durable image. It checks that the
// power was cut since the last Restart: if a crash is armed and has not
// happened, it happens now; if none was armed either, Restart fails.
func (c *FS) Restart() error {
	return c.call("Restart", 0, new(int))
}

// Stats returns the file system's counters.
func (c *FS) Stats() Stats {
	var st Stats
	c.call("Stats", 0, &st)
	return st
}

// addUpper tells the server that a file system is mounted at dir from a
// loop device over an image here (rpcServer.AddUpper).
func (c *FS) addUpper(dir string) error { return c.call("AddUpper", dir, new(int)) }

// removeUpper undoes addUpper.
func (c *FS) removeUpper(dir string) error { return c.call("RemoveUpper", dir, new(int)) }
