//go:build linux

package target

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// TestUnsupportedNeverReachesTheKernelAsENOSYS pins the errno mapping of
// every FUSE reply: an error that says "unsupported" (ENOSYS itself, or
// anything matching errors.ErrUnsupported, as ring.ErrUnsupported and
// dio.ErrUnsupported do) becomes EIO, or EOPNOTSUPP where the request
// asks for it (fallocate), and never ENOSYS, which the kernel's FUSE takes
// for "FSYNC is not implemented": it answered a failed flush with 0.
func TestUnsupportedNeverReachesTheKernelAsENOSYS(t *testing.T) {
	op := func(err error) error { return &dio.OpError{Op: "datasync", Path: "disk.img", Err: err} }
	for _, c := range []struct {
		err  error
		want syscall.Errno // with EIO for what is unsupported
	}{
		{op(syscall.ENOSYS), syscall.EIO},
		{op(syscall.EOPNOTSUPP), syscall.EIO},
		{op(dio.ErrUnsupported), syscall.EIO},
		{op(fmt.Errorf("ring: IORING_OP_FSYNC: %w", ring.ErrUnsupported)), syscall.EIO},
		{ring.ErrNoPolledIO, syscall.EIO},
		{errors.ErrUnsupported, syscall.EIO},
		{op(syscall.EIO), syscall.EIO},
		{op(syscall.ENOSPC), syscall.ENOSPC},
		{op(dio.ErrClosed), syscall.EIO},
		{errors.New("no errno"), syscall.EIO},
	} {
		if got := errnoOf(c.err, syscall.EIO); got != fuse.Status(c.want) {
			t.Errorf("errnoOf(%v, EIO) = %v, want %v", c.err, got, c.want)
		}
		want := c.want
		if want == syscall.EIO && errors.Is(c.err, errors.ErrUnsupported) {
			want = syscall.EOPNOTSUPP
		}
		if got := errnoOf(c.err, syscall.EOPNOTSUPP); got != fuse.Status(want) {
			t.Errorf("errnoOf(%v, EOPNOTSUPP) = %v, want %v", c.err, got, want)
		}
	}
}

// TestUnsupportedFlushFailsTheDeviceFlush makes the image's Datasync fail
// with each kind of "unsupported" error dio can return (and with EIO) and
// checks that fsync of the loop device and close(2) of the served file
// fail with EIO, each time: the kernel keeps sending the flushes to the
// target (it counts them as errors) instead of having taken an ENOSYS for
// "not implemented" and answering 0 ever after.
func TestUnsupportedFlushFailsTheDeviceFlush(t *testing.T) {
	for _, kind := range []string{"ENOSYS", "EOPNOTSUPP", "dio.ErrUnsupported", "ring.ErrUnsupported", "EIO"} {
		t.Run(kind, func(t *testing.T) {
			s := serve(t, childConfig{Image: filepath.Join(t.TempDir(), "disk.img"), Size: 1 << 20})
			s.call("FailSync", kind, new(int))
			dev, err := os.OpenFile(s.Dev(), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			for i := range 2 {
				before := s.Stats().Errors
				if err := dev.Sync(); !errors.Is(err, syscall.EIO) {
					t.Fatalf("fsync %s #%d, Datasync failing with %s: %v, want EIO", s.Dev(), i+1, kind, err)
				}
				if got := s.Stats().Errors; got != before+1 {
					t.Fatalf("fsync %s #%d: the target answered %d requests with an error, want 1", s.Dev(), i+1, got-before)
				}
			}
			for i := range 2 {
				f, err := os.OpenFile(s.info.File, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); !errors.Is(err, syscall.EIO) {
					t.Fatalf("close of the served file #%d (FLUSH), Datasync failing with %s: %v, want EIO", i+1, kind, err)
				}
			}
			dev.Close()
			if err := s.stop(); err == nil {
				t.Fatal("Close after the failed flushes: no error, want the flush's")
			}
		})
	}
}

// TestAFailedFlushFailsEveryLaterFlush fails one Datasync of the image
// with EIO and checks that every later flush of the device (fsync of the
// device, close(2) of the served file, Close) fails with it, though the
// image's Datasync works again: the writes the failed flush was to make
// durable may be lost, and a flush that succeeded would tell the file
// system above they are safe (fsyncgate). Writes and reads go on.
func TestAFailedFlushFailsEveryLaterFlush(t *testing.T) {
	s := serve(t, childConfig{Image: filepath.Join(t.TempDir(), "disk.img"), Size: 1 << 20})
	dev, err := os.OpenFile(s.Dev(), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	buf, err := ring.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Free(buf)
	copy(buf, "written before the failed flush")
	if _, err := dev.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	s.call("FailSync", "EIO", new(int))
	if err := dev.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync %s, Datasync failing with EIO: %v, want EIO", s.Dev(), err)
	}
	s.call("FailSync", "", new(int))
	for i := range 3 {
		if err := dev.Sync(); !errors.Is(err, syscall.EIO) {
			t.Fatalf("fsync %s #%d after a failed flush, Datasync working again: %v, want EIO", s.Dev(), i+2, err)
		}
	}
	f, err := os.OpenFile(s.info.File, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("close of the served file (FLUSH) after a failed flush: %v, want EIO", err)
	}
	copy(buf, "written after the failed flush")
	if _, err := dev.WriteAt(buf, 4096); err != nil {
		t.Fatalf("a write after a failed flush: %v, want it to go on", err)
	}
	back, err := ring.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Free(back)
	if _, err := dev.ReadAt(back, 4096); err != nil || !bytes.Equal(back, buf) {
		t.Fatalf("a read after a failed flush: %v, or not what was written", err)
	}
	if st := s.Stats(); st.Datasyncs != before.Datasyncs {
		t.Errorf("%d flushes succeeded after the failed one", st.Datasyncs-before.Datasyncs)
	}
	dev.Close()
	if err := s.stop(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Close after a failed flush: %v, want its EIO", err)
	}
}
