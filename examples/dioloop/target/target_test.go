//go:build linux

package target

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// TestWritesReachTheImageWithoutACache writes to the loop device with
// O_DIRECT and finds the data on the image as soon as the write returns
// (no cache holds it on the way), reads it back through the device, and
// checks that the device's flush (fsync of the device) and a write to a
// device opened O_DSYNC became fdatasyncs of the image, and that an
// O_DSYNC write to the served file went with DSync. The loop device must
// be in direct-I/O mode, and no request may have needed a bounce buffer
// (the 8 KiB O_DSYNC write at 1 MiB is aligned too).
func TestWritesReachTheImageWithoutACache(t *testing.T) {
	image := filepath.Join(t.TempDir(), "disk.img")
	s := serve(t, childConfig{Image: image, Size: 16 << 20})
	if !s.info.DirectIO {
		t.Errorf("the loop driver refused direct I/O on %s: its requests reach the served file one at a time, from its worker", s.Dev())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf, err := ring.Alloc(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Free(buf)
	copy(buf, randomBytes(rng, len(buf)))

	dev, err := os.OpenFile(s.Dev(), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	const off = 5 << 20
	if _, err := dev.WriteAt(buf, off); err != nil {
		t.Fatalf("write %s: %v", s.Dev(), err)
	}
	onImage := make([]byte, len(buf))
	img, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := img.ReadAt(onImage, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onImage, buf) {
		t.Fatal("an O_DIRECT write to the device returned, and the image does not hold it")
	}
	back, err := ring.Alloc(len(buf))
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Free(back)
	if _, err := dev.ReadAt(back, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, buf) {
		t.Fatal("the device reads back other data than was written")
	}

	before := s.Stats()
	if err := dev.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", s.Dev(), err)
	}
	if st := s.Stats(); st.Datasyncs <= before.Datasyncs {
		t.Errorf("fsync of the device: %d fdatasyncs of the image before, %d after", before.Datasyncs, st.Datasyncs)
	}

	// A device opened O_DSYNC marks its writes FUA; the loop device has
	// no FUA, so the block layer adds a flush: an fdatasync.
	ddev, err := os.OpenFile(s.Dev(), os.O_RDWR|unix.O_DIRECT|unix.O_DSYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ddev.Close()
	before = s.Stats()
	if _, err := ddev.WriteAt(buf[:4096], 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Datasyncs <= before.Datasyncs {
		t.Errorf("an O_DSYNC write to the device: %d fdatasyncs of the image before, %d after", before.Datasyncs, st.Datasyncs)
	}

	// The served file opened O_DSYNC: FUSE passes the flag with each
	// write, which the target writes with DSync.
	f, err := os.OpenFile(s.info.File, os.O_RDWR|unix.O_DSYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	before = s.Stats()
	if _, err := f.WriteAt(buf[:8192], 1<<20); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.DSyncWrites <= before.DSyncWrites {
		t.Errorf("an O_DSYNC write to the served file: %d DSync writes before, %d after", before.DSyncWrites, st.DSyncWrites)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Errors != 0 {
		t.Errorf("%d requests failed", st.Errors)
	}
	// Every request of a 4 KiB-block loop device is 4 KiB-aligned, and
	// go-fuse's buffers are page-aligned: nothing needs a copy.
	if st := s.Stats(); st.Engine.Bounced != 0 {
		t.Errorf("%d requests went through bounce buffers, want none", st.Engine.Bounced)
	}
}

// TestCloseWaitsForTheDeviceToBeReleased checks that Close gives up with
// ErrBusy, rather than hanging or unmounting under the device, while a
// user holds the loop device open. It runs the target in this process:
// nothing here waits on the device's I/O.
func TestCloseWaitsForTheDeviceToBeReleased(t *testing.T) {
	skipUnlessLoopOverFUSE(t)
	tg, err := Start(Config{Image: filepath.Join(t.TempDir(), "disk.img"), Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := tg.Attach()
	if err != nil {
		tg.Close(context.Background())
		if errors.Is(err, ErrNoLoop) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	holder, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Close must not wait at all
	err = tg.Close(ctx)
	holder.Close()
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Close with %s held open: %v, want ErrBusy", dev, err)
	}
}

// TestOnlyMissingLoopDevicesAreErrNoLoop attaches a loop device to what
// the kernel refuses (a directory: LOOP_CONFIGURE fails with EINVAL) and
// checks that the error is not ErrNoLoop, which the tests take for "no loop
// devices here" and skip on: every attach failure was ErrNoLoop, so a
// broken attach skipped the tests instead of failing them.
func TestOnlyMissingLoopDevicesAreErrNoLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dioloop: attaching loop devices needs root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("dioloop: no loop devices: %v", err)
	}
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	l, err := attachLoop(dir, 4096)
	if err == nil {
		l.Close()
		t.Fatalf("a loop device attached to a directory (%s)", l.Device())
	}
	if errors.Is(err, ErrNoLoop) || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("attach a loop device to a directory: %v; want EINVAL, not ErrNoLoop", err)
	}
}

// TestSizeSmallerThanTheImageIsAnError checks that Start refuses a Size
// smaller than the image, and leaves the image as it was: it used to serve
// the whole image, whatever Size said.
func TestSizeSmallerThanTheImageIsAnError(t *testing.T) {
	image := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(image, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(image, 2<<20); err != nil {
		t.Fatal(err)
	}
	tg, err := Start(Config{Image: image, Size: 1 << 20, Dir: t.TempDir()})
	if err == nil {
		tg.Close(context.Background())
		t.Fatal("Start with a Size of 1 MiB on an image of 2 MiB: no error")
	}
	if fi, err := os.Stat(image); err != nil || fi.Size() != 2<<20 {
		t.Fatalf("the image after the refusal: %v, %v; want its 2 MiB", fi, err)
	}
}
