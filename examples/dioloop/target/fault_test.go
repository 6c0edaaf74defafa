//go:build linux

package target

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// TestEIOReachesTheFileSystemAsAnIOError fails, with EIO from the
// fault ring under the target's engine, every read of the image that
// touches one 4 KiB block of a file on the ext4 above. Read through the
// file system with an empty page cache, that block must fail with EIO and
// every other block must read right or fail, never come back with other
// data; an O_DIRECT read of the block from the loop device fails with
// EIO too. With the fault gone the whole file reads right: nothing wrong
// was cached. Last, with every write to the image failing, an fsync of
// new data on the ext4 fails with EIO.
func TestEIOReachesTheFileSystemAsAnIOError(t *testing.T) {
	image := filepath.Join(t.TempDir(), "disk.img")
	s := serve(t, childConfig{Image: image, Size: 64 << 20, Faults: true})
	mkfsExt4(t, s.Dev())
	dir := t.TempDir()
	s.mountExt4(t, dir, "")
	rng := rand.New(rand.NewPCG(3, 4))
	const blocks, badBlock = 64, 17
	victim, other := randomBytes(rng, blocks*4096), randomBytes(rng, blocks*4096)
	for name, data := range map[string][]byte{"victim": victim, "other": other} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	s.umount(t, dir)

	// Where the block is on the device: where its content is on the
	// image (random bytes: nowhere else).
	bad := findBlock(t, image, victim[badBlock*4096:][:4096])
	s.call("FailReads", [2]int64{bad, 4096}, new(int))
	s.mountExt4(t, dir, "")

	if got, err := os.ReadFile(filepath.Join(dir, "other")); err != nil || !bytes.Equal(got, other) {
		t.Fatalf("a file without a faulty block: %d bytes, %v; want its %d bytes", len(got), err, len(other))
	}
	f, err := os.Open(filepath.Join(dir, "victim"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	failed := 0
	for b := range blocks {
		got := make([]byte, 4096)
		_, err := f.ReadAt(got, int64(b)*4096)
		switch {
		case errors.Is(err, unix.EIO):
			failed++
		case err != nil:
			t.Fatalf("block %d: %v, want the data or EIO", b, err)
		case b == badBlock:
			t.Fatalf("block %d: its reads fail with EIO below, and it read without an error", b)
		case !bytes.Equal(got, victim[b*4096:][:4096]):
			t.Fatalf("block %d: read without an error, and not the data written", b)
		}
	}
	if failed == 0 {
		t.Fatalf("no read of the victim failed")
	}

	dev, err := os.OpenFile(s.Dev(), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	buf, err := ring.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Free(buf)
	if _, err := dev.ReadAt(buf, bad); !errors.Is(err, unix.EIO) {
		t.Errorf("an O_DIRECT read of the faulty block from %s: %v, want EIO", s.Dev(), err)
	}

	st := s.Stats()
	if st.InjectedEIO == 0 {
		t.Fatal("the fault ring injected no EIO")
	}
	s.call("FailReads", [2]int64{0, 0}, new(int))
	if got, err := os.ReadFile(filepath.Join(dir, "victim")); err != nil || !bytes.Equal(got, victim) {
		t.Fatalf("with the fault gone: %d bytes, %v; want the victim's %d bytes", len(got), err, len(victim))
	}

	// Writes: with every write to the image failing, an fsync of new
	// data must report the error rather than succeed.
	s.call("FailWrites", [2]int64{0, 1 << 62}, new(int))
	late, err := os.Create(filepath.Join(dir, "late"))
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if _, err := late.Write(other); err != nil {
		t.Fatal(err)
	}
	if err := late.Sync(); !errors.Is(err, unix.EIO) {
		t.Errorf("fsync of new data while every write to the image fails with EIO: %v, want EIO", err)
	}
	s.call("FailWrites", [2]int64{0, 0}, new(int))
	st2 := s.Stats()
	t.Logf("%d of %d blocks of the victim failed with EIO; %d EIOs injected below in all, %d requests answered with an error", failed, blocks, st2.InjectedEIO, st2.Errors)
}

// findBlock returns the offset of the 4 KiB-aligned block of the image
// that holds want.
func findBlock(t *testing.T, image string, want []byte) int64 {
	t.Helper()
	img, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off+len(want) <= len(img); off += 4096 {
		if bytes.Equal(img[off:off+len(want)], want) {
			return int64(off)
		}
	}
	t.Fatal("the block is nowhere on the image")
	return 0
}
