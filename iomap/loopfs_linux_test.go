//go:build linux

package iomap

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// mountLoop makes a file system of type fstype in a 512 MiB sparse image
// under t.TempDir(), mounts it through a loop device and returns the mount
// point; cleanup unmounts and detaches. It skips when not root or when the
// kernel or mkfs lacks fstype.
func mountLoop(t *testing.T, fstype string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("loop-device file systems skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skipf("mounting %s through a loop device needs root", fstype)
	}
	mkfs, err := exec.LookPath("mkfs." + fstype)
	if err != nil {
		t.Skipf("mkfs.%s not installed", fstype)
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("losetup not installed")
	}
	if fss, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fss, []byte("\t"+fstype+"\n")) {
		t.Skipf("kernel does not list %s in /proc/filesystems", fstype)
	}
	img := filepath.Join(t.TempDir(), fstype+".img")
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(512<<20))
	must(t, f.Close())
	out, err := exec.Command(losetup, "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	if out, err := exec.Command(mkfs, "-q", "-f", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s %s: %v: %s", fstype, dev, err, out)
	}
	mnt := t.TempDir()
	if err := unix.Mount(dev, mnt, fstype, 0, ""); err != nil {
		t.Skipf("mount -t %s %s: %v", fstype, dev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("umount %s: %v", mnt, err)
		}
	})
	return mnt
}

func TestFileMapperXFS(t *testing.T) {
	mnt := mountLoop(t, "xfs")
	testFileMapperFS(t, mnt)
	t.Run("reflink", func(t *testing.T) { testReflink(t, mnt) })
}

func TestFileMapperBtrfs(t *testing.T) {
	mnt := mountLoop(t, "btrfs")
	testFileMapperFS(t, mnt)
	t.Run("reflink", func(t *testing.T) { testReflink(t, mnt) })
	t.Run("inline", func(t *testing.T) {
		f, err := os.Create(filepath.Join(mnt, "small"))
		must(t, err)
		defer f.Close()
		_, err = f.Write([]byte("tiny file kept in the metadata"))
		must(t, err)
		must(t, f.Sync())
		fm := newFileMapper(t, f, FileMapperOptions{})
		mp := begin(t, fm, 0, 30, OpDirect)
		if mp.Type != Inline || mp.Data != nil || mp.Addr != NoAddr {
			t.Fatalf("btrfs inline extent mapped as %v", mp)
		}
		sameLayout(t, "filefrag -v", filefragLayout(t, f.Name(), 30, 30), readLayout(t, fm, 30))
		if _, err := fm.Begin(0, 30, OpWrite|OpOverwriteOnly); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("overwrite-only write into inline data: %v", err)
		}
	})
}

// testReflink clones a file (FICLONE, what cp --reflink=always does) and
// checks that the clone maps as shared, agrees with filefrag, and stops
// being shared where it is written through the mapper.
func testReflink(t *testing.T, dir string) {
	src, err := os.Create(filepath.Join(dir, "src"))
	must(t, err)
	defer src.Close()
	_, err = src.Write(bytes.Repeat([]byte{5}, 256*k))
	must(t, err)
	must(t, src.Sync())
	dst, err := os.Create(filepath.Join(dir, "dst"))
	must(t, err)
	defer dst.Close()
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		t.Skipf("FICLONE: %v", err)
	}
	fm := newFileMapper(t, dst, FileMapperOptions{})
	want := []span{{0, 256 * k, Mapped, FlagShared}, {256 * k, 300 * k, Hole, 0}}
	sameLayout(t, "FileMapper", readLayout(t, fm, 300*k), want)
	sameLayout(t, "filefrag -v", filefragLayout(t, dst.Name(), 256*k, 300*k), want)

	mp := begin(t, fm, 64*k, 4*k, OpWrite)
	if mp.Type != Mapped || mp.Flags != FlagShared {
		t.Fatalf("write into reflinked range: %v", mp)
	}
	if _, err := fm.Begin(64*k, 4*k, OpWrite|OpOverwriteOnly); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("overwrite-only write into a shared extent: %v", err)
	}
	if _, err := unix.Pwrite(int(dst.Fd()), make([]byte, 4*k), 64*k); err != nil {
		t.Fatal(err)
	}
	must(t, fm.End(64*k, 4*k, 4*k, OpWrite, &mp))
	must(t, fm.IOComplete(64*k, 4*k, OpWrite, nil))
	want = []span{{0, 64 * k, Mapped, FlagShared}, {64 * k, 68 * k, Mapped, 0}, {68 * k, 256 * k, Mapped, FlagShared}, {256 * k, 300 * k, Hole, 0}}
	sameLayout(t, "FileMapper after a write", readLayout(t, fm, 300*k), want)
	sameLayout(t, "filefrag -v after a write", filefragLayout(t, dst.Name(), 256*k, 300*k), want)
}
