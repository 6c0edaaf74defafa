//go:build linux

package target

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Loop is a loop device attached to a file and held open. The device
// detaches itself (LO_FLAGS_AUTOCLEAR) when its last user closes it, so it
// goes away with the process that attached it, however that process ends;
// Close detaches it at once, or when its other users have closed it.
type Loop struct {
	f   *os.File // the device, open until Close
	dev string
}

// AttachLoop attaches a free loop device to the file (or block device) at
// path, opened read-write, with blockSize-byte logical blocks (512, 1024,
// 2048 or 4096) and the loop driver's direct-I/O mode (LO_FLAGS_DIRECT_IO:
// what losetup --direct-io=on asks for; Loop.DirectIO says whether the
// driver kept it). An error wraps ErrNoLoop only where the machine has no
// loop devices.
func AttachLoop(path string, blockSize int) (*Loop, error) {
	back, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("target: attach a loop device: %w", err)
	}
	// The loop device takes its own reference to the open file.
	defer back.Close()
	return attachLoop(back, blockSize)
}

// attachLoop attaches a free loop device to back (LOOP_CONFIGURE). Another
// process may take the free device first (EBUSY): it asks again.
func attachLoop(back *os.File, blockSize int) (*Loop, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, loopErr(err, absent(err))
	}
	defer ctl.Close()
	for range 64 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, loopErr(fmt.Errorf("LOOP_CTL_GET_FREE: %w", err), absent(err))
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			// No node for the device the driver has: /dev is not
			// devtmpfs (a container's).
			return nil, loopErr(err, errors.Is(err, unix.ENOENT))
		}
		cfg := unix.LoopConfig{Fd: uint32(back.Fd()), Size: uint32(blockSize)}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], back.Name())
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if err == nil {
			return &Loop{f: lf, dev: dev}, nil
		}
		lf.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, loopErr(fmt.Errorf("LOOP_CONFIGURE %s on %s: %w", dev, back.Name(), err), false)
		}
	}
	return nil, loopErr(errors.New("no free loop device after 64 tries"), false)
}

// absent reports whether err, from opening /dev/loop-control or from
// LOOP_CTL_GET_FREE, says the machine has no loop devices: no such file
// (no node) or no such device (no loop driver).
func absent(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)
}

// loopErr is the error of attaching a loop device: it wraps ErrNoLoop if
// none are there, so that a caller (a test) may take it for a missing
// feature, and is an error like any other otherwise.
func loopErr(err error, none bool) error {
	if none {
		return fmt.Errorf("%w: %w", ErrNoLoop, err)
	}
	return fmt.Errorf("target: attach a loop device: %w", err)
}

// Device returns the loop device's path, /dev/loopN.
func (l *Loop) Device() string { return l.dev }

// DirectIO reports whether the loop driver kept its direct-I/O mode on the
// device (it drops it silently where the file cannot take direct I/O at
// the device's block size).
func (l *Loop) DirectIO() bool {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(l.dev), "loop/dio"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// Close asks the loop driver to detach the device (LOOP_CLR_FD: at once if
// nobody else has it open, else when its last user closes it) and closes
// the descriptor of it.
func (l *Loop) Close() error {
	err := unix.IoctlSetInt(int(l.f.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) {
		err = nil // already detached
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("target: detach %s: %w", l.dev, err)
	}
	return nil
}

// Attach attaches a free loop device to the served file and returns its
// path (AttachLoop): Config.BlockSize logical blocks and the loop driver's
// direct-I/O mode (its requests reach the FUSE file as asynchronous direct
// I/O, several in flight, rather than one at a time from its worker). The
// target holds it open until Close, which detaches it. An error wraps
// ErrNoLoop only where the machine has no loop devices.
func (t *Target) Attach() (string, error) {
	// Not under mu: opening the served file is a FUSE request that this
	// process answers, and its Open takes mu.
	t.loopMu.Lock()
	defer t.loopMu.Unlock()
	if t.loop != nil {
		return "", fmt.Errorf("target: already attached to %s", t.loop.dev)
	}
	t.mu.Lock()
	closing := t.closing
	t.mu.Unlock()
	if closing {
		return "", fmt.Errorf("target: closed")
	}
	// The loop device takes its own reference to the open file; ours
	// closes in AttachLoop (a FLUSH the server answers).
	l, err := AttachLoop(t.File(), t.cfg.BlockSize)
	if err != nil {
		return "", err
	}
	t.loop, t.dev = l, l.dev
	return l.dev, nil
}

// LoopDirectIO reports whether the loop driver kept its direct-I/O mode
// on the attached device (Loop.DirectIO).
func (t *Target) LoopDirectIO() bool {
	t.loopMu.Lock()
	defer t.loopMu.Unlock()
	return t.loop != nil && t.loop.DirectIO()
}

// detach detaches the loop device (Loop.Close).
func (t *Target) detach() error {
	t.loopMu.Lock()
	defer t.loopMu.Unlock()
	if t.loop == nil {
		return nil
	}
	err := t.loop.Close()
	t.loop = nil
	return err
}

// lazyUnmount detaches the mount at dir (MNT_DETACH): it goes away once
// nothing uses it.
func lazyUnmount(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("target: unmount %s: %w", dir, err)
	}
	return nil
}
