//go:build linux

package dio

import (
	"io"
	"strconv"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/internal/durability"
	"golang.org/x/sys/unix"
)

// The descriptor: references on it, and the calls every layer makes on
// it.

// acquire takes a reference on the descriptor for one operation; it fails
// if the File is closed. The reference is taken before the closed check:
// Close either sees it and waits, or acquire sees closed and backs out.
func (f *File) acquire() bool {
	f.refs.n.Add(1)
	if f.refs.closed.Load() {
		f.release()
		return false
	}
	return true
}

// release drops a reference taken by acquire or by a request. The last
// one closes the descriptor if a Close left that to it (deferClose), off
// the owner, so that closing can wait for it.
func (f *File) release() {
	if f.refs.n.Add(-1) == 0 && f.refs.deferClose.Load() && f.refs.closeDone.CompareAndSwap(false, true) {
		go f.closer()
	}
}

func (f *File) opErr(op string, off, n int64, err error) error {
	return &OpError{Op: op, Path: f.path, Off: off, Len: n, Err: err}
}

// syncFds fsyncs (or fdatasyncs) every target. The caller holds a
// reference.
func (f *File) syncFds(data bool) error {
	if durability.SkipSync.Load() {
		return nil // a power-loss test's counter-check: lie
	}
	for _, fd := range f.targets {
		err := ignoringEINTR(func() error {
			if data {
				return unix.Fdatasync(int(fd))
			}
			return unix.Fsync(int(fd))
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// kernelSize asks the kernel for the file's size. The caller holds a
// reference.
func (f *File) kernelSize() (int64, error) {
	if f.mode.blockDev {
		return unix.Seek(int(f.fd), 0, io.SeekEnd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.fd), &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != syscall.EINTR {
			return err
		}
	}
}

// waitUntil waits for cond, which the engine will make true (Close
// paths): it checks at growing intervals.
func waitUntil(cond func() bool) {
	for d := time.Microsecond; !cond(); d = min(2*d, time.Millisecond) {
		time.Sleep(d)
	}
}

func alignUp(v, a int64) int64 { return (v + a - 1) / a * a }

func itoa(v int) string { return strconv.Itoa(v) }
