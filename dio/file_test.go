//go:build linux

package dio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/ring"
)

const blk = 4096

func abuf(t testing.TB, n int) []byte {
	t.Helper()
	b, err := ring.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ring.Free(b) })
	return b
}

func fill(b []byte, seed int) {
	for i := range b {
		b[i] = byte(i*31 + seed*7 + i>>12)
	}
}

func openTemp(t testing.TB, o *Options) (*File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	f, err := Open(path, os.O_RDWR|os.O_CREATE, 0o600, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

func TestReadWriteRoundTrip(t *testing.T) {
	f, path := openTemp(t, nil)
	w := abuf(t, 64*blk)
	fill(w, 1)
	n, err := f.WriteAt(w, 0)
	if err != nil || n != len(w) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	if SizeForTest(t, f) != int64(len(w)) {
		t.Fatalf("Size = %d after writing %d", SizeForTest(t, f), len(w))
	}
	r := abuf(t, 64*blk)
	n, err = f.ReadAt(r, 0)
	if err != nil || n != len(r) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(r, w) {
		t.Fatal("read back differs")
	}
	disk, _ := os.ReadFile(path)
	if !bytes.Equal(disk, w) {
		t.Fatal("bytes on disk differ")
	}
}

func TestShortReadAtEOF(t *testing.T) {
	f, path := openTemp(t, nil)
	data := make([]byte, 5000)
	fill(data, 2)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f.Truncate(5000) // tell the File: the size moved behind its back
	r := abuf(t, 4*blk)
	n, err := f.ReadAt(r, 0)
	if n != 5000 || err != io.EOF {
		t.Fatalf("ReadAt across EOF = %d, %v; want 5000, io.EOF", n, err)
	}
	if !bytes.Equal(r[:n], data) {
		t.Fatal("bytes before EOF differ")
	}
	n, err = f.ReadAt(r[:blk], 8192)
	if n != 0 || err != io.EOF {
		t.Fatalf("ReadAt past EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestBadInput(t *testing.T) {
	f, path := openTemp(t, &Options{StrictAlignment: true})
	b := abuf(t, 2*blk)
	a := f.align
	if a.Offset == 0 || a.Memory == 0 {
		t.Fatalf("alignment %+v", a)
	}
	for _, tc := range []struct {
		name string
		buf  []byte
		off  int64
		what string
	}{
		{"buffer", b[1 : 1+blk], 0, "buffer address"},
		{"offset", b[:blk], 1, "offset"},
		{"length", b[:blk-1], 0, "length"},
	} {
		_, err := f.ReadAt(tc.buf, tc.off)
		var ae *alignError
		if !errors.Is(err, ErrUnaligned) || !errors.Is(err, syscall.EINVAL) || !errors.As(err, &ae) || ae.What != tc.what {
			t.Errorf("%s: %v, want ErrUnaligned naming %q", tc.name, err, tc.what)
		}
	}
	if n, err := f.ReadAt(nil, 0); n != 0 || err != nil {
		t.Errorf("zero-length ReadAt = %d, %v", n, err)
	}
	if err := f.Submit(&Request{Op: Read}); !errors.Is(err, errEmpty) {
		t.Errorf("zero-length Submit: %v, want errEmpty", err)
	}
	ro, err := Open(path, os.O_RDONLY, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.WriteAt(b[:blk], 0); !errors.Is(err, ErrReadOnly) || !errors.Is(err, syscall.EBADF) {
		t.Errorf("write to read-only: %v", err)
	}
	f.Close()
	if _, err := f.ReadAt(b[:blk], 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v, want ErrClosed", err)
	}
}

func TestConcurrentReadAt(t *testing.T) {
	f, _ := openTemp(t, &Options{EngineOptions: &EngineOptions{QueueDepth: 8}})
	const size = 256 * blk
	w := abuf(t, size)
	fill(w, 3)
	if _, err := f.WriteAt(w, 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _ := ring.Alloc(blk)
			defer ring.Free(r)
			for i := 0; i < 200; i++ {
				off := int64((g*7919+i*104729)%256) * blk
				n, err := f.ReadAt(r, off)
				if err != nil || n != blk || !bytes.Equal(r, w[off:off+blk]) {
					t.Errorf("read %d at %d: n=%d err=%v equal=%v", i, off, n, err, bytes.Equal(r, w[off:off+blk]))
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestAsyncCallbacks(t *testing.T) {
	for _, p := range []completion.Policy{completion.Inline, completion.Pool, completion.Caller, completion.Default} {
		t.Run(p.String(), func(t *testing.T) {
			f, _ := openTemp(t, nil)
			const size = 64 * blk
			w := abuf(t, size)
			fill(w, 4)
			if _, err := f.WriteAt(w, 0); err != nil {
				t.Fatal(err)
			}
			rb := abuf(t, size)
			var wg sync.WaitGroup
			reqs := make([]*Request, 64)
			q := &completion.Queue{}
			for i := range reqs {
				wg.Add(1)
				reqs[i] = &Request{Op: Read, Off: int64(i) * blk, Buf: rb[i*blk : (i+1)*blk], Policy: p,
					Callback: func(*Request) { wg.Done() }}
				if p == completion.Caller {
					reqs[i].Queue = q
				}
				if err := f.Submit(reqs[i]); err != nil {
					t.Fatal(err)
				}
			}
			if p == completion.Caller {
				ran := 0
				for ran < len(reqs) {
					n, err := q.Wait(context.Background(), 1)
					if err != nil {
						t.Fatal(err)
					}
					ran += n
				}
			}
			wg.Wait()
			for i, r := range reqs {
				n, err := r.Result()
				if n != blk || err != nil {
					t.Fatalf("req %d: %d, %v", i, n, err)
				}
				got, _ := r.EffectivePolicy()
				want := p
				if p == completion.Default {
					want = completion.Inline
				}
				if got != want {
					t.Errorf("req %d ran under %v, want %v", i, got, want)
				}
			}
			if !bytes.Equal(rb, w) {
				t.Fatal("async reads differ")
			}
		})
	}
}

func TestReadAtAllocs(t *testing.T) {
	f, _ := openTemp(t, nil)
	b := abuf(t, blk)
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(500, func() { f.ReadAt(b, 0) }); a != 0 {
		t.Errorf("ReadAt allocates %.1f per call", a)
	}
	if a := testing.AllocsPerRun(500, func() { f.WriteAt(b, 0) }); a != 0 {
		t.Errorf("WriteAt allocates %.1f per call", a)
	}
	// The asynchronous path with a reused request, under each policy.
	ctx := context.Background()
	q := &completion.Queue{}
	for _, p := range []completion.Policy{completion.Inline, completion.Caller, completion.Pool} {
		r := &Request{}
		r.Op, r.Buf, r.Policy, r.Queue = Read, b, p, q
		f.Submit(r)
		r.Wait(ctx)
		if a := testing.AllocsPerRun(500, func() {
			if err := f.Submit(r); err != nil {
				panic(err)
			}
			r.Wait(ctx)
		}); a != 0 {
			t.Errorf("Submit+Wait under %v allocates %.1f per request", p, a)
		}
	}
}
