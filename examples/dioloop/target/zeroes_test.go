//go:build linux

package target

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// TestWriteZeroesReadsZeroesOnEveryImage writes data to the loop device,
// then zeroes part of it through the device, both ways the block layer
// sends a write-zeroes (fallocate ZERO_RANGE of the device: REQ_NOUNMAP,
// which the loop driver passes on as ZERO_RANGE; PUNCH_HOLE: a
// write-zeroes that may unmap, passed on as PUNCH_HOLE), on an image that
// is a regular file and on one that is a block device. Each must reach
// the target as one fallocate that succeeds, and the range must read as
// zeroes from the device and on the image. It pins the write-zeroes that
// was a Punch and a KEEP_SIZE Preallocate, which a block device always
// refuses: the range was zeroed and the request failed.
func TestWriteZeroesReadsZeroesOnEveryImage(t *testing.T) {
	skipUnlessLoopOverFUSE(t)
	for _, c := range []struct {
		name  string
		image func(t *testing.T) string
	}{
		{"file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "disk.img") }},
		{"block device", func(t *testing.T) string {
			// The image is the kernel's own loop device over a
			// file; registered before serve, its cleanup runs
			// after the server's.
			f := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(f, 4<<20); err != nil {
				t.Fatal(err)
			}
			l, err := AttachLoop(f, 4096)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return l.Device()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			image := c.image(t)
			cc := childConfig{Image: image}
			if !strings.HasPrefix(image, "/dev/") {
				cc.Size = 4 << 20
			}
			s := serve(t, cc)
			if b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(s.Dev()), "queue/write_zeroes_max_bytes")); err != nil || strings.TrimSpace(string(b)) == "0" {
				t.Skipf("%s offers no write-zeroes (%q, %v)", s.Dev(), b, err)
			}
			dev, err := os.OpenFile(s.Dev(), os.O_RDWR|unix.O_DIRECT, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			buf, err := ring.Alloc(1 << 20)
			if err != nil {
				t.Fatal(err)
			}
			defer ring.Free(buf)
			for _, z := range []struct {
				mode uint32
				name string
			}{
				{unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE, "ZERO_RANGE"},
				{unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, "PUNCH_HOLE"},
			} {
				for i := range buf {
					buf[i] = byte(i*13 + 7)
				}
				if _, err := dev.WriteAt(buf, 1<<20); err != nil {
					t.Fatal(err)
				}
				before := s.Stats()
				const off, n = 1<<20 + 64<<10, 256 << 10
				if err := unix.Fallocate(int(dev.Fd()), z.mode, off, n); err != nil {
					t.Fatalf("fallocate %s of %s: %v", z.name, s.Dev(), err)
				}
				st := s.Stats()
				if st.Errors != before.Errors || st.Punches != before.Punches+1 {
					t.Errorf("fallocate %s of %s: the target answered %d fallocates and %d errors, want 1 and 0",
						z.name, s.Dev(), st.Punches-before.Punches, st.Errors-before.Errors)
				}
				want := bytes.Clone(buf)
				clear(want[off-1<<20:][:n])
				if _, err := dev.ReadAt(buf, 1<<20); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf, want) {
					t.Errorf("after fallocate %s of %s, the device does not read zeroes in the range and the data around it", z.name, s.Dev())
				}
				img, err := os.Open(image)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(want))
				_, err = img.ReadAt(got, 1<<20)
				img.Close()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("after fallocate %s of %s, the image does not hold zeroes in the range and the data around it", z.name, s.Dev())
				}
			}
		})
	}
}
