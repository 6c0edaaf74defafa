//go:build linux

package dio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/uringdio/uringdio/dio"
)

// TestUnalignedIOLikeOSFile: reads and writes at any offset, of any length,
// from any memory, give what os.File gives: the same bytes, the same
// counts, io.EOF at the same places, and a write past the end leaves the
// file exactly as long as its end.
func TestUnalignedIOLikeOSFile(t *testing.T) {
	for name, mk := range fsDirs(t) {
		t.Run(name, func(t *testing.T) {
			dir := mk(t)
			path := filepath.Join(dir, "unaligned")
			f, err := dio.Open(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ref, err := os.OpenFile(filepath.Join(dir, "reference"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			rnd := newRand(uint64(envInt("UIRINGDIO_SEED", 11)))
			mem := make([]byte, 3<<20) // Go heap: any address
			want := make([]byte, 3<<20)
			steps := 400
			if longMode() {
				steps = 20000
			}
			for i := range steps {
				var off int64
				switch rnd.IntN(3) {
				case 0:
					off = rnd.Int64N(2 << 20)
				case 1: // around the end
					s, _ := f.Size()
					off = max(0, s-5000+rnd.Int64N(10000))
				default:
					off = rnd.Int64N(8192)
				}
				n := rnd.Int64N(300000)
				if rnd.IntN(3) == 0 {
					n = rnd.Int64N(600)
				}
				boff := rnd.Int64N(4096)
				p, q := mem[boff:boff+n], want[boff:boff+n]
				what := fmt.Sprintf("step %d: off %d len %d mem+%d", i, off, n, boff)
				if rnd.IntN(2) == 0 {
					fillRand(rnd, p)
					copy(q, p)
					got, err := f.WriteAt(p, off)
					if got != int(n) || err != nil {
						t.Fatalf("%s: WriteAt = %d, %v", what, got, err)
					}
					if _, err := ref.WriteAt(q, off); err != nil {
						t.Fatal(err)
					}
				} else {
					got, err := f.ReadAt(p, off)
					wn, werr := ref.ReadAt(q, off)
					if got != wn || (err == io.EOF) != (werr == io.EOF) || (err != nil && err != io.EOF) {
						t.Fatalf("%s: ReadAt = %d, %v; os.File %d, %v", what, got, err, wn, werr)
					}
					if !bytes.Equal(p[:got], q[:wn]) {
						t.Fatalf("%s: ReadAt bytes differ from os.File: %s", what, firstDiff(p[:got], q[:wn]))
					}
				}
				st, _ := ref.Stat()
				if s, err := f.Size(); s != st.Size() || err != nil {
					t.Fatalf("%s: size %d, %v; os.File's file is %d", what, s, err, st.Size())
				}
			}
			if f.Engine().Stats().Bounced == 0 {
				t.Fatal("no request was counted as bounced")
			}
		})
	}
}

// TestConcurrentUnalignedWritesToOneSectorBothSurvive: writes to different
// bytes of one sector, from many goroutines and two Files, each read the
// sector, patch it and write it back; the inode's gate makes every one
// land.
func TestConcurrentUnalignedWritesToOneSectorBothSurvive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sector")
	var files []*dio.File
	for range 2 {
		f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	const writers, rounds = 16, 40
	for round := range rounds {
		base := int64(round) * 4096 // a new sector each round, also past the end
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := []byte{byte(round), byte(w + 1), byte(w + 2)}
				if _, err := files[w%2].WriteAt(b, base+int64(w)*3+1); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		got := make([]byte, writers*3+1)
		if _, err := files[round%2].ReadAt(got, base); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for w := range writers {
			if b := got[w*3+1 : w*3+4]; b[0] != byte(round) || b[1] != byte(w+1) || b[2] != byte(w+2) {
				t.Fatalf("round %d: writer %d's bytes read %v: another write's read-modify-write lost them", round, w, b)
			}
		}
		if s, _ := files[0].Size(); s != base+writers*3+1 {
			t.Fatalf("round %d: size %d, want %d", round, s, base+writers*3+1)
		}
	}
}

// TestStrictAlignmentRefusesUnaligned: with Options.StrictAlignment, a request
// off the alignment fails with ErrUnaligned and does nothing.
func TestStrictAlignmentRefusesUnaligned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strict")
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{StrictAlignment: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bounced := f.Engine().Stats().Bounced // the engine is shared
	b := relBuf(t, 8192)
	for _, c := range []struct {
		p   []byte
		off int64
	}{{b[:100], 0}, {b[:4096], 1}, {b[1:4097], 0}} {
		if _, err := f.WriteAt(c.p, c.off); !errors.Is(err, dio.ErrUnaligned) || !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("WriteAt(len %d, off %d) = %v, want ErrUnaligned", len(c.p), c.off, err)
		}
		if _, err := f.ReadAt(c.p, c.off); !errors.Is(err, dio.ErrUnaligned) {
			t.Fatalf("ReadAt(len %d, off %d) = %v, want ErrUnaligned", len(c.p), c.off, err)
		}
	}
	if s, _ := f.Size(); s != 0 {
		t.Fatalf("refused writes left the file %d bytes long", s)
	}
	if n := f.Engine().Stats().Bounced - bounced; n != 0 {
		t.Fatalf("%d requests bounced under WithStrictAlignment", n)
	}
}

// TestUnalignedIOAllocatesNothing: the bounce path, like the aligned one,
// allocates nothing in steady state.
func TestUnalignedIOAllocatesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "allocs")
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 4093)
	if _, err := f.WriteAt(p, 12345); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		name string
		fn   func()
	}{
		{"ReadAt", func() { f.ReadAt(p, 12345) }},
		{"WriteAt", func() { f.WriteAt(p, 12345) }},
		{"WriteAtContext", func() { f.WriteAtContext(ctx, p, 777, 0) }},
	} {
		c.fn()
		if a := testing.AllocsPerRun(200, c.fn); a != 0 {
			t.Errorf("unaligned %s: %v allocations per call, want 0", c.name, a)
		}
	}
}
