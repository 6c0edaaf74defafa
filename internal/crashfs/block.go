//go:build linux

package crashfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// BlockOptions configure MountBlock. The zero value is the default.
type BlockOptions struct {
	// FS is the upper file system: "ext4" (default) or "xfs".
	FS string
	// Size is the image's size in bytes (default 256 MiB for ext4; xfs
	// gets at least 320 MiB, as mkfs.xfs refuses less than 300 MB).
	Size int64
	// MountOptions are appended to the defaults (ext4:
	// "commit=3600,noauto_da_alloc"; xfs: "nouuid").
	MountOptions string
}

// BlockMount is the block-level crash file system: a real ext4 or xfs,
// mounted on a loop device whose backing file is an image on a
// file-level crash file system (FS). The loop driver turns the upper
// file system's cache flushes (and the flush that emulates FUA: the loop
// device has a volatile write cache and no FUA) into fsyncs of the image,
// so a crash keeps exactly what the upper file system flushed.
//
// Its methods are not safe for concurrent use with each other (Crash and
// Restart remount), but Crash, CrashAfter and Stats may run while other
// goroutines do I/O on Dir.
type BlockMount struct {
	t      testing.TB
	fstype string
	opts   string
	img    *FS
	image  string // the image file, on img
	dir    string // where the upper file system is mounted

	mu      sync.Mutex
	dev     string // the loop device of the current mount
	mounted bool
}

// MountBlock makes a file system of type opt.FS in an image on a new
// file-level crash file system, attaches a loop device to the image and
// mounts it in a new directory under t.TempDir(); cleanup unmounts and
// detaches everything (files on it must be closed by then).
//
// It skips the test when the process is not root or has no /dev/fuse. It
// returns an error wrapping ErrUnavailable when the machine lacks loop
// devices, mkfs for the file system, or kernel support, or when the
// kernel refuses a loop device over a FUSE file; the caller may fall back
// to Mount or skip.
func MountBlock(t testing.TB, opt BlockOptions) (*BlockMount, error) {
	t.Helper()
	skipUnlessFUSE(t)
	m := &BlockMount{t: t, fstype: opt.FS}
	if m.fstype == "" {
		m.fstype = "ext4"
	}
	size := opt.Size
	var mkfsArgs []string
	switch m.fstype {
	case "ext4":
		if size == 0 {
			size = 256 << 20
		}
		// No discard (FS refuses fallocate), and inode tables and
		// journal written now: no lazy-init thread writing later.
		mkfsArgs = []string{"-q", "-F", "-b", "4096", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"}
		// commit=3600: no periodic journal commit masks a missing sync;
		// noauto_da_alloc: nor does the flush ext4 adds on
		// replace-by-rename and truncate.
		m.opts = "commit=3600,noauto_da_alloc"
	case "xfs":
		size = max(size, 320<<20)
		mkfsArgs = []string{"-q", "-f", "-K"}
		// nouuid: after a crash the old mount may linger, lazily
		// unmounted, while the image is mounted again.
		m.opts = "nouuid"
	default:
		return nil, fmt.Errorf("crashfs: unknown file system %q", m.fstype)
	}
	if opt.MountOptions != "" {
		m.opts += "," + opt.MountOptions
	}
	if err := haveFS(m.fstype); err != nil {
		return nil, err
	}
	mkfs, err := lookTool("mkfs." + m.fstype)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return nil, unavailable("no loop devices: %v", err)
	}

	// The image is made on the backing directory, before the crash file
	// system sees it: a freshly formatted disk, all of it durable.
	base := t.TempDir()
	backing := filepath.Join(base, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		return nil, err
	}
	raw := filepath.Join(backing, "disk.img")
	if err := os.WriteFile(raw, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(raw, size); err != nil {
		return nil, err
	}
	if out, err := exec.Command(mkfs, append(mkfsArgs, raw)...).CombinedOutput(); err != nil {
		return nil, unavailable("%s: %v: %s", mkfs, err, bytes.TrimSpace(out))
	}
	m.img, err = Mount(t, Options{Backing: backing})
	if err != nil {
		return nil, err
	}
	m.image = filepath.Join(m.img.Dir(), "disk.img")
	m.dir = filepath.Join(base, "upper")
	if err := os.Mkdir(m.dir, 0o755); err != nil {
		return nil, err
	}
	// Registered after Mount's cleanup, so it runs before it.
	t.Cleanup(func() {
		if err := m.unmount(); err != nil {
			t.Error(err)
		}
		m.img.removeUpper(m.dir)
	})
	if err := m.attachAndMount(); err != nil {
		return nil, err
	}
	// Should the test process die, the image's server takes the upper
	// file system down before itself.
	if err := m.img.addUpper(m.dir); err != nil {
		return nil, err
	}
	return m, nil
}

// haveFS reports whether the kernel knows file system fstype.
func haveFS(fstype string) error {
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return unavailable("%v", err)
	}
	if !bytes.Contains(fss, []byte("\t"+fstype+"\n")) {
		return unavailable("the kernel does not list %s in /proc/filesystems", fstype)
	}
	return nil
}

// lookTool finds a system tool in PATH or the sbin directories.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", unavailable("%s not installed", name)
}

// Dir returns where the upper file system is mounted.
func (m *BlockMount) Dir() string { return m.dir }

// FSType returns the upper file system's type.
func (m *BlockMount) FSType() string { return m.fstype }

// Device returns the loop device the upper file system is mounted from.
func (m *BlockMount) Device() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dev
}

// Image returns the file-level crash file system that holds the image.
func (m *BlockMount) Image() *FS { return m.img }

// Stats returns the image's counters: its pending writes are the upper
// file system's writes to the device since its last flush.
func (m *BlockMount) Stats() Stats { return m.img.Stats() }

// Crash cuts the power now (the image drops what the upper file system
// did not flush, as mode and seed say) and restarts (Restart). Files open
// on Dir from before fail with EIO; the caller stops using them, and
// closes them, before using Dir again.
func (m *BlockMount) Crash(seed uint64, mode Mode) (CrashStats, error) {
	st, err := m.img.Crash(seed, mode)
	if err != nil {
		return st, err
	}
	return st, m.Restart()
}

// CrashAfter arms a crash of the image after n more requests that would
// change it (FS.CrashAfter): a crash at a point chosen by I/O count, not
// by time. Call Restart once the workload has stopped (it fails with EIO
// from the crash on).
func (m *BlockMount) CrashAfter(n int64, seed uint64, mode Mode) <-chan CrashStats {
	return m.img.CrashAfter(n, seed, mode)
}

// Restart brings the upper file system back after a crash (or makes an
// armed crash happen now): it shuts the upper file system down without
// flushing its log, so nothing it cached is written anywhere, unmounts it
// (lazily if files are still open on it), attaches a new loop device to
// the image and mounts it again, which replays the journal.
//
// The power is cut before the shutdown, not after: from the cut on, the
// image fails every request of the old loop device with EIO, so nothing
// the old mount does while it goes down (a log write at shutdown, a
// flush at unmount) can reach the durable image.
func (m *BlockMount) Restart() error {
	if err := m.img.Restart(); err != nil {
		return err
	}
	if err := m.unmount(); err != nil {
		return err
	}
	return m.attachAndMount()
}

// unmount shuts the upper file system down and unmounts it, lazily if it
// is busy.
func (m *BlockMount) unmount() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.mounted {
		return nil
	}
	// A file system that already shut itself down (xfs does on a log
	// write error) may refuse: it is down either way.
	shutdownUpper(m.dir)
	err := unix.Unmount(m.dir, 0)
	if errors.Is(err, unix.EBUSY) {
		// Files from before the crash are still open: they fail with
		// EIO until closed; the mount goes away then.
		err = unix.Unmount(m.dir, unix.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("crashfs: unmount %s: %w", m.dir, err)
	}
	m.mounted = false
	return nil
}

// attachAndMount attaches a loop device to the image and mounts the upper
// file system from it.
func (m *BlockMount) attachAndMount() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dev, loop, err := attachLoop(m.image)
	if err != nil {
		return err
	}
	// The loop device is set to clear itself when its last user closes
	// it: after this mount's unmount, once loop is closed below.
	defer loop.Close()
	if err := unix.Mount(dev, m.dir, m.fstype, 0, m.opts); err != nil {
		return fmt.Errorf("crashfs: mount -t %s -o %s %s %s: %w", m.fstype, m.opts, dev, m.dir, err)
	}
	m.dev, m.mounted = dev, true
	return nil
}

// attachLoop attaches a free loop device to the file at path, set to
// detach itself when its last user closes it, and returns its path and
// an open descriptor of it.
func attachLoop(path string) (string, *os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, unavailable("no loop devices: %v", err)
	}
	defer ctl.Close()
	back, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("crashfs: open the image: %w", err)
	}
	// The loop device takes its own reference to the file.
	defer back.Close()
	// Another process may take the free device first (EBUSY): try the
	// next one.
	for range 64 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, unavailable("LOOP_CTL_GET_FREE: %v", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", nil, unavailable("open %s: %v", dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(back.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], path)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if err == nil {
			return dev, lf, nil
		}
		lf.Close()
		if !errors.Is(err, unix.EBUSY) {
			return "", nil, unavailable("the kernel refuses a loop device over a file of the crash file system: LOOP_CONFIGURE %s: %v", dev, err)
		}
	}
	return "", nil, fmt.Errorf("crashfs: no free loop device after 64 tries")
}
