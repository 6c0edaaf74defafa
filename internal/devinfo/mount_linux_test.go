//go:build linux

package devinfo

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// loopFS is a file system on a loop device, mounted under a temp dir.
type loopFS struct {
	Dir string // mount point
	Dev string // /dev/loopN
	Img string // the image file behind the loop device
}

// run runs a tool, with the sbin directories on PATH, and says what went
// wrong with its output.
func run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func haveTool(name string) bool {
	if _, err := exec.LookPath(name); err == nil {
		return true
	}
	for _, dir := range []string{"/usr/sbin/", "/sbin/"} {
		if _, err := os.Stat(dir + name); err == nil {
			return true
		}
	}
	return false
}

// mountLoop makes a 300 MiB file system of type fstype with mkfs options
// mkfsArgs in a sparse image under t.TempDir(), on a loop device that
// does direct I/O to the image (so the image's page cache stays out of
// the page-dirtying counts of the btrfs test), mounts it, and undoes it
// all at t's cleanup. It returns why when it cannot (not root, no losetup
// or mkfs, no kernel support), for the caller to skip with.
func mountLoop(t *testing.T, fstype string, mkfsArgs ...string) (*loopFS, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%s on a loop device needs root", fstype)
	}
	for _, tool := range []string{"losetup", "mkfs." + fstype} {
		if !haveTool(tool) {
			return nil, fmt.Errorf("%s is not installed", tool)
		}
	}
	if fss, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fss, []byte("\t"+fstype+"\n")) {
		return nil, fmt.Errorf("the kernel has no %s", fstype)
	}
	dir := t.TempDir()
	l := &loopFS{Dir: filepath.Join(dir, "mnt"), Img: filepath.Join(dir, fstype+".img")}
	if err := os.WriteFile(l.Img, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(l.Img, 300<<20); err != nil {
		return nil, err
	}
	out, err := exec.Command("losetup", "--find", "--show", "--direct-io=on", l.Img).Output()
	if err != nil {
		return nil, fmt.Errorf("no loop device: losetup: %v", err)
	}
	l.Dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if err := run("losetup", "-d", l.Dev); err != nil {
			t.Error(err)
		}
	})
	if err := run("mkfs."+fstype, append(mkfsArgs, l.Dev)...); err != nil {
		return nil, err
	}
	if err := os.Mkdir(l.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount(l.Dev, l.Dir, fstype, 0, ""); err != nil {
		return nil, fmt.Errorf("mount -t %s %s: %v", fstype, l.Dev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(l.Dir, 0); err != nil {
			t.Errorf("umount %s: %v", l.Dir, err)
		}
	})
	return l, nil
}

// mountTmpfs mounts a tmpfs of its own (t.TempDir() may be on any file
// system) and unmounts it at cleanup; it skips without root.
func mountTmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	return dir
}

// mountOverlay mounts an overlay of two directories of the temp dir.
func mountOverlay(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting an overlay needs root")
	}
	dir := t.TempDir()
	for _, d := range []string{"lower", "upper", "work", "mnt"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt := filepath.Join(dir, "mnt")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", dir, dir, dir)
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Skipf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("umount %s: %v", mnt, err)
		}
	})
	return mnt
}

// mountFUSE mounts a directory of the temp dir again through bindfs, a
// FUSE file system, when bindfs is installed.
func mountFUSE(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE here needs root")
	}
	if !haveTool("bindfs") {
		t.Skip("bindfs (a FUSE file system) is not installed")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	src, mnt := t.TempDir(), t.TempDir()
	if err := run("bindfs", src, mnt); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("umount %s: %v", mnt, err)
		}
	})
	return mnt
}
