//go:build linux

package dio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/uringdio/uringdio/dio"
)

// TestCapabilitiesRecord: the record names the backend and the facts the
// kernel gives, and reads as one fact per line.
func TestCapabilitiesRecord(t *testing.T) {
	f := openRW(t, filepath.Join(t.TempDir(), "caps"), nil)
	c, err := f.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend != "io_uring" || c.BackendWhy == "" {
		t.Fatalf("backend %q (%q)", c.Backend, c.BackendWhy)
	}
	if !c.OffsetAlign.Known || int64(c.OffsetAlign.Value) != dio.AlignForTest(f).Offset {
		t.Fatalf("offset alignment %+v, the File uses %d", c.OffsetAlign, dio.AlignForTest(f).Offset)
	}
	s := c.String()
	for _, want := range []string{"file system:", "offset alignment:", "untorn writes:", "backend:"} {
		if !strings.Contains(s, want) {
			t.Errorf("record lacks %q:\n%s", want, s)
		}
	}
	f.Close()
	if _, err := f.Capabilities(); !errors.Is(err, dio.ErrClosed) {
		t.Fatalf("Capabilities after Close: %v", err)
	}
}

// TestAtomicWritesWithinTheUntornUnit: on xfs with untorn writes, writes
// at the smallest and largest unit go through with RWF_ATOMIC; lengths and
// offsets the kernel would refuse or tear are refused before submission.
func TestAtomicWritesWithinTheUntornUnit(t *testing.T) {
	fs := mountLoop(t, "xfs", 512<<20, 4096)
	f := openRW(t, filepath.Join(fs.Dir, "untorn"), nil)
	c, err := f.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	u := c.Untorn.Value
	if !u.Supported() {
		t.Skipf("this xfs reports no untorn writes (%s)", c.Untorn.From)
	}
	ctx := context.Background()
	for _, n := range []int64{int64(u.Min), int64(u.Max)} {
		b := relBuf(t, int(n))
		fillRand(newRand(uint64(n)), b)
		if got, err := f.WriteAtContext(ctx, b, 2*n, dio.Atomic); got != int(n) || err != nil {
			t.Fatalf("untorn write of %d at %d: %d, %v", n, 2*n, got, err)
		}
		back := relBuf(t, int(n))
		if _, err := f.ReadAt(back, 2*n); err != nil || !bytes.Equal(back, b) {
			t.Fatalf("read back after an untorn write of %d: %v", n, err)
		}
	}
	big := relBuf(t, int(2*u.Max))
	for _, c := range []struct {
		name string
		p    []byte
		off  int64
	}{
		{"twice the maximum", big, 0},
		{"not a power of two", big[:3*u.Min], 0},
		{"offset not aligned to the length", big[:2*u.Min], int64(u.Min)},
	} {
		_, err := f.WriteAtContext(ctx, c.p, c.off, dio.Atomic)
		if !strings.Contains(fmt.Sprint(err), "untorn write refused") || !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: %v, want an untorn write refused with EINVAL", c.name, err)
		}
	}
	r := &dio.Request{Op: dio.Write, Off: 0, Bufs: [][]byte{big[:u.Min], big[u.Min : 2*u.Min]}, Flags: dio.Atomic}
	if err := f.Submit(r); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("untorn write of two buffers: %v, want refused", err)
	}
}

// TestAtomicWriteRefusedWithoutUntornUnit: where the file system reports
// no untorn writes, an Atomic write is ErrUnsupported, and nothing is
// written.
func TestAtomicWriteRefusedWithoutUntornUnit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "torn")
	f := openRW(t, path, nil)
	c, _ := f.Capabilities()
	if c.Untorn.Value.Supported() {
		t.Skip("the temp dir's file system has untorn writes")
	}
	b := relBuf(t, 4096)
	if _, err := f.WriteAtContext(context.Background(), b, 0, dio.Atomic); !errors.Is(err, dio.ErrUnsupported) {
		t.Fatalf("Atomic write: %v, want ErrUnsupported", err)
	}
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Fatal("a refused untorn write wrote")
	}
}
