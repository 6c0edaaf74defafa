//go:build linux

package dio_test

// The differential run: the same operations through uringdio and through
// plain pread/pwrite (O_DIRECT, with ReadAt's loop) on a twin file, with
// identical results, errors and final bytes expected.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/fsx"
	"golang.org/x/sys/unix"
)

// twin is the reference: a file opened with O_DIRECT and driven by
// pread/pwrite the way os.File.ReadAt and WriteAt drive them.
type twin struct {
	fd    int
	align int64
}

// readAt is io.ReaderAt over pread: loop until full, 0 is EOF. An O_DIRECT
// pread stops short only at EOF, and the rest of the loop would be
// unaligned, so a short count that leaves an unaligned offset is EOF too.
func (w *twin) readAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(w.fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
		if (off+int64(n))%w.align != 0 && n < len(p) {
			return n, io.EOF
		}
	}
	return n, nil
}

func (w *twin) writeAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pwrite(w.fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.ErrShortWrite
		}
		n += m
	}
	return n, nil
}

// errClass reduces an error to what both sides must agree on.
func errClass(err error) string {
	switch {
	case err == nil:
		return "nil"
	case err == io.EOF:
		return "EOF"
	case errors.Is(err, syscall.EINVAL):
		return "EINVAL"
	}
	if e := errnoOf(err); e != 0 {
		return e.Error()
	}
	return err.Error()
}

func TestDifferentialPread(t *testing.T) {
	ops := int(envInt("UIRINGDIO_DIFF_OPS", 3000))
	if longMode() && os.Getenv("UIRINGDIO_DIFF_OPS") == "" {
		ops = 1000000
	}
	seed := uint64(envInt("UIRINGDIO_DIFF_SEED", time.Now().UnixNano()))
	rnd := newRand(seed)
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "uringdio"), filepath.Join(dir, "pread")
	f, err := dio.Open(pa, os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { closeWithin(t, f, 10*time.Second) }()
	fd, err := unix.Open(pb, unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// Unaligned requests go to the twin through the page cache, as an
	// os.File would take them.
	fdb, err := unix.Open(pb, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fdb)
	a := dio.AlignForTest(f).Offset
	w := &twin{fd: fd, align: a}
	wb := &twin{fd: fdb, align: 1}
	const maxSize, maxLen = 4 << 20, 128 << 10
	ba, bb := relBuf(t, maxLen+int(a)), relBuf(t, maxLen+int(a))
	log := fsx.NewLog(200)
	replay := fmt.Sprintf("UIRINGDIO_DIFF_SEED=%d UIRINGDIO_DIFF_OPS=%d go test -race -run '^TestDifferentialPread$' ./dio/", seed, ops)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: "+format+"\nreplay: %s\nlast operations:\n%s", append(append([]any{seed}, args...), replay, log)...)
	}
	hang := watchHang(t, func() string {
		return fmt.Sprintf("seed %d\nreplay: %s\nlast operations:\n%s", seed, replay, log)
	})
	size := int64(0)
	for i := 0; i < ops; i++ {
		hang.Progress()
		n := a * (1 + rnd.Int64N(maxLen/a))
		if rnd.IntN(4) == 0 {
			n = a * (1 + rnd.Int64N(8))
		}
		off := a * rnd.Int64N(maxSize/a)
		if rnd.IntN(4) == 0 { // around the end of file
			off = max(0, size-n+a*(rnd.Int64N(2*n/a+1)-n/a/2)) / a * a
		}
		boff := int64(0) // buffer offset
		switch rnd.IntN(40) {
		case 0: // unaligned offset, but not past EOF (pread says 0 there first)
			if size > a {
				off = min(off, size-a) + 1 + rnd.Int64N(a-1)
			}
		case 1:
			n = 1 + rnd.Int64N(a-1)
		case 2:
			boff = 1 + rnd.Int64N(a-1)
		case 3:
			n = 0
		}
		xa, xb := ba[boff:boff+n], bb[boff:boff+n]
		tw := w
		if n > 0 && (off%a != 0 || boff != 0 || n%a != 0) {
			// Unaligned: through the engine's bounce buffers, against
			// pread/pwrite through the twin's page cache.
			tw = wb
		}
		switch op := rnd.IntN(20); {
		case op < 9:
			na, ea := f.ReadAt(xa, off)
			nb, eb := tw.readAt(xb, off)
			log.Add("read off=%d len=%d buf+%d -> %d,%v | %d,%v", off, n, boff, na, ea, nb, eb)
			if na != nb || errClass(ea) != errClass(eb) {
				fail("read off=%d len=%d: uringdio %d, %v; pread %d, %v", off, n, na, ea, nb, eb)
			}
			if ea != nil && ea != io.EOF {
				if s := checkOpError(ea, "read", f.Name(), off, n); s != "" {
					fail("%s", s)
				}
			}
			if d := fsx.Diff(off, xa[:na], xb[:nb]); d != "" {
				fail("read off=%d len=%d: bytes differ: %s", off, n, d)
			}
		case op < 17:
			fillRand(rnd, xa)
			copy(xb, xa)
			na, ea := f.WriteAt(xa, off)
			nb, eb := tw.writeAt(xb, off)
			log.Add("write off=%d len=%d buf+%d -> %d,%v | %d,%v", off, n, boff, na, ea, nb, eb)
			if na != nb || errClass(ea) != errClass(eb) {
				fail("write off=%d len=%d: uringdio %d, %v; pwrite %d, %v", off, n, na, ea, nb, eb)
			}
			if ea == nil && n > 0 && off+n > size {
				size = off + n
			}
		case op == 17:
			s := rnd.Int64N(maxSize)
			log.Add("truncate %d", s)
			if err := f.Truncate(s); err != nil {
				fail("Truncate: %v", err)
			}
			if err := unix.Ftruncate(fd, s); err != nil {
				fail("ftruncate: %v", err)
			}
			size = s
		case op == 18:
			po, pn := rnd.Int64N(maxSize), 1+rnd.Int64N(maxLen)
			log.Add("punch %d %d", po, pn)
			if err := f.Punch(po, pn); err != nil {
				fail("Punch: %v", err)
			}
			if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, po, pn); err != nil {
				fail("fallocate: %v", err)
			}
		default:
			po, pn := rnd.Int64N(maxSize), 1+rnd.Int64N(maxLen)
			log.Add("allocate %d %d", po, pn)
			if err := f.Allocate(po, pn); err != nil {
				fail("Allocate: %v", err)
			}
			if err := unix.Fallocate(fd, 0, po, pn); err != nil {
				fail("fallocate: %v", err)
			}
			size = max(size, po+pn)
		}
		if dio.SizeForTest(t, f) != size {
			fail("File.Size %d, twin %d", dio.SizeForTest(t, f), size)
		}
	}
	da, db := preadAll(t, pa, 0, 1<<30), preadAll(t, pb, 0, 1<<30)
	if d := fsx.Diff(0, da, db); d != "" || len(da) != len(db) {
		fail("final files differ (%d and %d bytes): %s", len(da), len(db), d)
	}
}
