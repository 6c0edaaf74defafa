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

// Attach attaches a free loop device to the served file and returns its
// path. The device has Config.BlockSize logical blocks and the loop
// driver's direct-I/O mode (LO_FLAGS_DIRECT_IO: its requests reach the
// FUSE file as asynchronous direct I/O, several in flight, rather than one
// at a time from its worker), and detaches itself when its last user
// closes it after Close. The target holds it open until Close.
func (t *Target) Attach() (string, error) {
	// Not under mu: opening the served file is a FUSE request that this
	// process answers, and its Open takes mu.
	t.loopMu.Lock()
	defer t.loopMu.Unlock()
	if t.loop != nil {
		return "", fmt.Errorf("target: already attached to %s", t.dev)
	}
	t.mu.Lock()
	closing := t.closing
	t.mu.Unlock()
	if closing {
		return "", fmt.Errorf("target: closed")
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoLoop, err)
	}
	defer ctl.Close()
	// The loop device takes its own reference to the open file; ours
	// closes below (a FLUSH the server answers).
	back, err := os.OpenFile(t.File(), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("target: open the served file: %w", err)
	}
	defer back.Close()
	// Another process may take the free device first (EBUSY): ask again.
	for range 64 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("%w: LOOP_CTL_GET_FREE: %w", ErrNoLoop, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrNoLoop, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(back.Fd()), Size: uint32(t.cfg.BlockSize)}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], t.cfg.Image)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if err == nil {
			t.loop, t.dev = lf, dev
			return dev, nil
		}
		lf.Close()
		if !errors.Is(err, unix.EBUSY) {
			return "", fmt.Errorf("%w: LOOP_CONFIGURE %s on %s: %w", ErrNoLoop, dev, t.File(), err)
		}
	}
	return "", fmt.Errorf("%w: no free loop device after 64 tries", ErrNoLoop)
}

// LoopDirectIO reports whether the loop driver kept its direct-I/O mode
// on the attached device (it drops it silently where the served file
// cannot take direct I/O at the device's block size).
func (t *Target) LoopDirectIO() bool {
	dev := t.Device()
	if dev == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/dio"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// detach asks the loop driver to detach the device (LOOP_CLR_FD: at once
// if nobody else has it open, else when its last user closes it) and
// closes the target's descriptor of it.
func (t *Target) detach() error {
	t.loopMu.Lock()
	defer t.loopMu.Unlock()
	if t.loop == nil {
		return nil
	}
	err := unix.IoctlSetInt(int(t.loop.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) {
		err = nil // already detached
	}
	if cerr := t.loop.Close(); err == nil {
		err = cerr
	}
	t.loop = nil
	if err != nil {
		return fmt.Errorf("target: detach %s: %w", t.dev, err)
	}
	return nil
}

// lazyUnmount detaches the mount at dir (MNT_DETACH): it goes away once
// nothing uses it.
func lazyUnmount(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("target: unmount %s: %w", dir, err)
	}
	return nil
}
