//go:build linux

package dio

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

// benchFile opens the file the benchmarks read: $UIRINGDIO_BENCH_FILE (a
// file or block device, read only) or a 64 MiB scratch file.
func benchFile(b *testing.B, o Options) *File {
	if p := os.Getenv("UIRINGDIO_BENCH_FILE"); p != "" {
		st, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		size := st.Size()
		if st.Mode()&os.ModeDevice != 0 {
			fd, _ := os.Open(p)
			size, _ = fd.Seek(0, 2)
			fd.Close()
			o.Mapper, o.Size = iomap.NewWholeFile(size), size
		}
		f, err := Open(p, os.O_RDONLY, 0, &o)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return f
	}
	path := filepath.Join(b.TempDir(), "bench")
	f, err := Open(path, os.O_RDWR|os.O_CREATE, 0o600, &o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	buf, _ := ring.Alloc(1 << 20)
	defer ring.Free(buf)
	for off := int64(0); off < 64<<20; off += 1 << 20 {
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

func randOff(x *uint64, size int64) int64 {
	*x ^= *x << 13
	*x ^= *x >> 7
	*x ^= *x << 17
	return int64(*x%uint64(size/blk)) * blk
}

func BenchmarkReadAt4K(b *testing.B) {
	f := benchFile(b, Options{})
	buf, _ := ring.Alloc(blk)
	defer ring.Free(buf)
	x := uint64(88172645463325252)
	size := SizeForTest(b, f)
	b.SetBytes(blk)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.ReadAt(buf, randOff(&x, size)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteAt4K(b *testing.B) {
	if os.Getenv("UIRINGDIO_BENCH_FILE") != "" {
		b.Skip("never writes to a given file")
	}
	f := benchFile(b, Options{})
	buf, _ := ring.Alloc(blk)
	defer ring.Free(buf)
	x := uint64(88172645463325252)
	size := SizeForTest(b, f)
	b.SetBytes(blk)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.WriteAt(buf, randOff(&x, size)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadAt4KParallel: 32 goroutines calling ReadAt (the Wait policy,
// leader/follower reaping).
func BenchmarkReadAt4KParallel(b *testing.B) {
	f := benchFile(b, Options{})
	size := SizeForTest(b, f)
	var seed atomic.Uint64
	b.SetBytes(blk)
	b.ReportAllocs()
	b.SetParallelism(16) // × GOMAXPROCS goroutines
	b.RunParallel(func(pb *testing.PB) {
		buf, _ := ring.Alloc(blk)
		defer ring.Free(buf)
		x := seed.Add(0x9E3779B97F4A7C15)
		for pb.Next() {
			if _, err := f.ReadAt(buf, randOff(&x, size)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAsyncRead4KQD32: one goroutine keeps 32 reads in flight; Inline
// callbacks resubmit (the loop fio runs).
func BenchmarkAsyncRead4KQD32(b *testing.B) {
	f := benchFile(b, Options{})
	size := SizeForTest(b, f)
	const qd = 32
	mem, _ := ring.Alloc(qd * blk)
	defer ring.Free(mem)
	var remaining atomic.Int64
	var wg sync.WaitGroup
	x := uint64(88172645463325252)
	var cb func(*Request)
	cb = func(r *Request) {
		if _, err := r.Result(); err != nil {
			b.Error(err)
		}
		if remaining.Add(-1) < 0 {
			wg.Done()
			return
		}
		r.Off = randOff(&x, size)
		if err := f.Submit(r); err != nil {
			b.Error(err)
			wg.Done()
		}
	}
	reqs := make([]*Request, qd)
	for i := range reqs {
		reqs[i] = &Request{Op: Read, Buf: mem[i*blk : (i+1)*blk], Policy: completion.Inline, Callback: cb}
	}
	b.SetBytes(blk)
	b.ReportAllocs()
	b.ResetTimer()
	remaining.Store(int64(b.N))
	wg.Add(qd)
	for _, r := range reqs {
		r.Off = randOff(&x, size)
		if err := f.Submit(r); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}
