//go:build linux

package dio_test

// Regression tests for defects the reliability tests found, each named
// after the behaviour it guarantees, its comment saying which bug it pins.

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/faultring"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

func openRel(t *testing.T, o *dio.Options) (*dio.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, o)
	if err != nil {
		t.Fatal(err)
	}
	return f, path
}

// closeWithin closes f and fails the test if Close does not return in d.
func closeWithin(t *testing.T, f *dio.File, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(d):
		t.Fatalf("Close did not return in %v: the file's in-flight count leaked", d)
	}
}

// A read that needs no I/O (zero length, or entirely past EOF) completes in
// start without taking the file's in-flight reference, but the synchronous
// caller then ran the completion, which drops one: the count went
// negative and File.Close waited for ever.
func TestNoIOReadKeepsInflightCount(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		off  int64
	}{{"zero-length", 0, 0}, {"past-EOF", 4096, 1 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := openRel(t, nil)
			b := relBuf(t, 4096)
			if _, err := f.WriteAt(b, 0); err != nil {
				t.Fatal(err)
			}
			n, err := f.ReadAt(b[:tc.n], tc.off)
			if n != 0 || (tc.n > 0 && err != io.EOF) || (tc.n == 0 && err != nil) {
				t.Fatalf("ReadAt = %d, %v", n, err)
			}
			closeWithin(t, f, 5*time.Second)
		})
	}
}

// Waiting on an asynchronous read entirely past EOF (completed in Submit,
// its callback already run) ran the completion a second time: the
// callback ran twice.
func TestWaitOnPastEOFReadRunsCallbackOnce(t *testing.T) {
	f, _ := openRel(t, nil)
	defer closeWithin(t, f, 5*time.Second)
	var calls atomic.Int32
	r := &dio.Request{Op: dio.Read, Off: 1 << 20, Buf: relBuf(t, 4096), Policy: completion.Inline,
		Callback: func(*dio.Request) { calls.Add(1) }}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := r.Wait(ctx); n != 0 || err != io.EOF {
		t.Fatalf("Wait = %d, %v; want 0, io.EOF", n, err)
	}
	if c := calls.Load(); c != 1 {
		t.Fatalf("callback ran %d times, want once", c)
	}
}

// An asynchronous Caller-policy read entirely past EOF completes inside
// Submit and runs its callback there; it must still reach its Queue, or a
// caller that counts completions through Queue.Wait waits for ever.
func TestPastEOFCallerReadReachesQueue(t *testing.T) {
	f, _ := openRel(t, nil)
	defer closeWithin(t, f, 5*time.Second)
	q := completion.NewQueue(4)
	r := &dio.Request{Op: dio.Read, Off: 1 << 20, Buf: relBuf(t, 4096), Policy: completion.Caller, Queue: q}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n, err := q.Wait(ctx, 1); n != 1 {
		t.Fatalf("a past-EOF Caller read never reached its Queue (Queue.Wait = %d, %v)", n, err)
	}
}

// A write across an end of file that is not a multiple of the alignment
// (a file truncated to 5000 bytes, say) was split at EOF, where the
// mapper's extent ends, into two SQEs of unaligned length and offset: the
// kernel refused them with EINVAL (after the first part may have landed),
// where pwrite takes the same write whole.
func TestWriteAcrossUnalignedEOFIsWrittenWhole(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size, off int64
		n         int
		bufs      int
	}{
		{"one-buffer", 5000, 4096, 8192, 1},
		{"two-buffers", 5000, 0, 16384, 2},
		{"from-start", 100, 0, 4096, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, path := openRel(t, nil)
			defer closeWithin(t, f, 5*time.Second)
			if err := f.Truncate(tc.size); err != nil {
				t.Fatal(err)
			}
			b := relBuf(t, tc.n)
			for i := range b {
				b[i] = byte(i*7 + 1)
			}
			r := &dio.Request{Op: dio.Write, Off: tc.off, Policy: completion.Wait}
			if tc.bufs == 1 {
				r.Buf = b
			} else {
				r.Bufs = [][]byte{b[:tc.n/2], b[tc.n/2:]}
			}
			if err := f.Submit(r); err != nil {
				t.Fatal(err)
			}
			n, err := r.Wait(context.Background())
			if n != tc.n || err != nil {
				t.Fatalf("write of %d at %d over EOF %d = %d, %v; pwrite writes it whole", tc.n, tc.off, tc.size, n, err)
			}
			disk := preadAll(t, path, tc.off, int64(tc.n))
			if string(disk) != string(b) {
				t.Fatal("bytes on disk differ")
			}
			if dio.SizeForTest(t, f) != tc.off+int64(tc.n) || fileSize(t, path) != tc.off+int64(tc.n) {
				t.Fatalf("Size %d, kernel %d; want %d", dio.SizeForTest(t, f), fileSize(t, path), tc.off+int64(tc.n))
			}
		})
	}
}

// put published stateIODone and only then read the request's policy (and,
// for Caller, its Queue and file): a waiter that saw IODone ran the
// completion and the caller reused the Request (new Policy, new Queue)
// while the reaper was still reading those fields. The race detector
// catches it; without it, a completion could go to the wrong Queue or
// drop the wrong file's in-flight count.
func TestRequestReusableOnceWaitReturns(t *testing.T) {
	f, _ := openRel(t, nil)
	defer closeWithin(t, f, 5*time.Second)
	b := relBuf(t, 4096)
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	q1, q2 := completion.NewQueue(4), completion.NewQueue(4)
	r := new(dio.Request)
	ctx := context.Background()
	for i := 0; i < 3000; i++ {
		r.Op, r.Off, r.Buf = dio.Read, 0, b
		switch i % 3 {
		case 0:
			r.Policy, r.Queue = completion.Wait, nil
		case 1:
			r.Policy, r.Queue = completion.Caller, q1
		case 2:
			r.Policy, r.Queue = completion.Caller, q2
		}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Wait(ctx); n != 4096 || err != nil {
			t.Fatalf("Wait = %d, %v", n, err)
		}
		q1.Poll()
		q2.Poll()
	}
}

// A write that failed reported 0 bytes, so RunCompletion called the
// mapper's IOComplete over nothing; the FileMapper then kept whatever it
// had cached for the range, even a hole cached (by a read elsewhere in
// the file) after the write was mapped but before the kernel allocated
// for it. The kernel wrote (some of) the data, pread returns it, and reads
// through the engine returned zeroes from the stale cache until the file
// was reopened.
func TestFailedWriteInvalidatesFileMapperCache(t *testing.T) {
	f, path := openRel(t, nil)
	f.Close()
	data := make([]byte, 4096)
	for i := range data {
		data[i] = 0xAB
	}
	pf, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	pf.WriteAt(data, 0)
	pf.WriteAt(data, 1<<20) // a hole over [4K, 1M)
	pf.Close()
	var gate atomic.Bool
	var fr *faultring.Ring
	mf, err := os.Open(path) // the descriptor the opted-in FileMapper asks FIEMAP on
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	fm, err := iomap.NewFileMapper(int(mf.Fd()), iomap.FileMapperOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := wrapped(func(r ringhook.Ring) ringhook.Ring {
		fr = faultring.New(r, faultring.Config{SQFull: gate.Load, Decide: func(c faultring.CQE) faultring.Fault {
			if c.SQE.Op == ring.OpWrite {
				return faultring.EIO // the kernel wrote it; the engine hears EIO
			}
			return faultring.None
		}})
		return fr
	})
	o.Mapper = fm
	f, err = dio.Open(path, os.O_RDWR, 0, o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeWithin(t, f, 5*time.Second)
	w := relBuf(t, 64<<10)
	for i := range w {
		w[i] = 0xCD
	}
	gate.Store(true) // the write is mapped now but reaches the kernel later
	wr := &dio.Request{Op: dio.Write, Off: 64 << 10, Buf: w, Policy: completion.Pool}
	if err := f.Submit(wr); err != nil {
		t.Fatal(err)
	}
	// Any read that makes the mapper learn the layout again now (here: a
	// range it was told to forget, so uncached) caches the write's range
	// as a hole. (Not a Punch: that waits for the writes in flight now.)
	fm.Invalidate(8<<10, 4096)
	r := relBuf(t, 4096)
	if _, err := f.ReadAt(r, 8<<10); err != nil {
		t.Fatal(err)
	}
	gate.Store(false)
	if _, err := wr.Wait(context.Background()); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write: %v, want the injected EIO", err)
	}
	disk := preadAll(t, path, 64<<10, 4096)
	if n, err := f.ReadAt(r, 64<<10); n != 4096 || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if string(r) != string(disk) {
		t.Fatalf("after a failed write the engine reads %x... where the file holds %x... "+
			"(IOComplete is called over the 0 bytes reported, so the mapper keeps a stale hole)", r[:4], disk[:4])
	}
}

// A write on an ExtentMap that fails part way reports the bytes before the
// failed piece as written (n > 0, with Partial a caller resumes from
// there), but IOComplete got err != nil and the ExtentMap converted
// nothing: the bytes reported written still read as zeroes (Unwritten),
// and a caller that resumes after n never gets them back.
func TestPartialWriteConvertsBytesWrittenOnExtentMap(t *testing.T) {
	const bs = 16 << 10
	dev := filepath.Join(t.TempDir(), "dev")
	os.WriteFile(dev, make([]byte, 1<<20), 0o600)
	em, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: bs, Devices: []int64{1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	b1, b2 := relBuf(t, bs), relBuf(t, bs)
	for i := range b1 {
		b1[i], b2[i] = 0x11, 0x22
	}
	o := wrapped(func(r ringhook.Ring) ringhook.Ring {
		return faultring.New(r, faultring.Config{Decide: func(c faultring.CQE) faultring.Fault {
			if c.SQE.Addr == addr(b2) {
				return faultring.EIO
			}
			return faultring.None
		}})
	})
	o.Mapper, o.Size = em, 256<<10
	vol, err := dio.Open(dev, os.O_RDWR, 0, o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeWithin(t, vol, 5*time.Second)
	wr := &dio.Request{Op: dio.Write, Off: 0, Bufs: [][]byte{b1, b2}, Policy: completion.Wait, Flags: dio.Partial}
	if err := vol.Submit(wr); err != nil {
		t.Fatal(err)
	}
	n, err := wr.Wait(context.Background())
	if n != bs || !errors.Is(err, syscall.EIO) {
		t.Fatalf("write = %d, %v; want %d, EIO", n, err, bs)
	}
	r := relBuf(t, bs)
	if _, err := vol.ReadAt(r, 0); err != nil {
		t.Fatal(err)
	}
	if r[0] != 0x11 || r[bs-1] != 0x11 {
		t.Fatalf("the %d bytes a failed write reported written read back as %#x (still Unwritten): "+
			"IOComplete with err != nil converts nothing", n, r[0])
	}
}

// An asynchronous request under the Wait policy completes only when
// someone calls its Wait: Close, which waits for the File's I/O, waited
// for ever for one nobody waited on, though its I/O was long done.
func TestCloseReturnsBesideUnwaitedWaitRequest(t *testing.T) {
	f, path := openRel(t, &dio.Options{EngineOptions: &dio.EngineOptions{QueueDepth: 8}}) // an engine of its own: its counters are this test's
	os.WriteFile(path, make([]byte, 4096), 0o600)
	f.Truncate(4096)
	r := &dio.Request{Op: dio.Read, Off: 0, Buf: relBuf(t, 4096), Policy: completion.Wait}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	// The engine reaps its CQE; its completion waits for a Wait nobody
	// makes.
	waitUntil(t, "the read's CQE", func() bool { return f.Engine().Stats().Completed > 0 })
	done := make(chan error, 1)
	go func() { done <- f.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		r.Wait(context.Background()) // let Close finish
		<-done
		t.Fatal("Close waits for ever for an asynchronous Wait-policy request nobody waits on")
	}
}

// Two writes into different halves of the same new (or unwritten) block
// of an ExtentMap with blocks larger than the I/O alignment each zero the
// part of the block they do not cover. In flight together, one's zeroing
// lands over the other's data: both succeed, and one's data is gone. The
// kernel serializes such sub-block direct writes (xfs and ext4 take their
// I/O lock exclusively for unaligned DIO and wait for DIO in flight); the
// engine did not. Fixed by the File's write gate (gate.go).
func TestConcurrentSubBlockWritesKeepBothHalves(t *testing.T) {
	const bs = 16 << 10
	const blocks = 64
	dev := filepath.Join(t.TempDir(), "dev")
	os.WriteFile(dev, make([]byte, 2*blocks*bs), 0o600)
	em, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: bs, Devices: []int64{2 * blocks * bs}})
	if err != nil {
		t.Fatal(err)
	}
	vol, err := dio.Open(dev, os.O_RDWR, 0, &dio.Options{Mapper: em, Size: blocks * bs})
	if err != nil {
		t.Fatal(err)
	}
	defer closeWithin(t, vol, 10*time.Second)
	lost := 0
	for b := 0; b < blocks; b++ {
		lo, hi := relBuf(t, bs/2), relBuf(t, bs/2)
		for i := range lo {
			lo[i], hi[i] = 0x10+byte(b), 0x80+byte(b)
		}
		r1 := &dio.Request{Op: dio.Write, Off: int64(b) * bs, Buf: lo, Policy: completion.Pool}
		r2 := &dio.Request{Op: dio.Write, Off: int64(b)*bs + bs/2, Buf: hi, Policy: completion.Pool}
		if err := vol.Submit(r1); err != nil {
			t.Fatal(err)
		}
		if err := vol.Submit(r2); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*dio.Request{r1, r2} {
			if n, err := r.Wait(context.Background()); n != bs/2 || err != nil {
				t.Fatalf("block %d: write = %d, %v", b, n, err)
			}
		}
		got := relBuf(t, bs)
		if _, err := vol.ReadAt(got, int64(b)*bs); err != nil {
			t.Fatal(err)
		}
		if got[0] != lo[0] || got[bs-1] != hi[0] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("in %d of %d blocks, one of two concurrent sub-block writes into a new block was zeroed by the other's sub-block zeroing", lost, blocks)
	}
}

// A Pool callback that waits for I/O of its own engine (a synchronous
// ReadAt; Pool callbacks may block) while the pool's queue is full: the
// reaper, holding the reap token, waited for room in the queue that only
// that callback's return could make, and the callback's read needed the
// token. With one worker and a queue of one, for ever.
func TestPoolCallbackIOWithFullPoolCompletes(t *testing.T) {
	const n = 16
	var cqes atomic.Int32
	othersReaped := make(chan struct{}) // the CQEs of the n-1 other reads reached the engine
	f := openNumbered(t, n, hooked(dio.EngineOptions{Workers: 1}, ringhook.Hooks{WrapRing: func(r ringhook.Ring) ringhook.Ring {
		return faultring.New(r, faultring.Config{Decide: func(faultring.CQE) faultring.Fault {
			if cqes.Add(1) == n {
				close(othersReaped)
			}
			return faultring.None
		}})
	}}))
	started := make(chan struct{})
	done := make(chan error, 1)
	rb := relBuf(t, 4096)
	a := &dio.Request{Op: dio.Read, Off: 0, Buf: relBuf(t, 4096), Policy: completion.Pool,
		Callback: func(*dio.Request) {
			close(started) // the pool's one worker is busy from now on
			<-othersReaped // their completions fill the queue, and overflow it
			_, err := f.ReadAt(rb, 4096)
			done <- err
		}}
	if err := f.Submit(a); err != nil {
		t.Fatal(err)
	}
	<-started
	var others []*dio.Request
	for i := 1; i < n; i++ {
		r := &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: relBuf(t, 4096), Policy: completion.Pool}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
		others = append(others, r)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Pool callback's ReadAt never returned: the reaper waits for pool room holding the reap token")
	}
	for _, r := range others {
		if n, err := r.Wait(context.Background()); n != 4096 || err != nil || r.Buf[0] != byte(r.Off/4096) {
			t.Fatalf("read at %d = %d, %v", r.Off, n, err)
		}
	}
	closeWithin(t, f, 5*time.Second)
}

// Completions that found the pool's queue full ran on goroutines of their
// own (the fix for the test above, first version): nobody waited for them,
// so Close returned while callbacks still ran, and one worker no longer
// meant one callback at a time. The workers' queue now takes every
// completion; they run on the workers, one at a time with one worker, and
// Close waits for them.
func TestPoolOverflowCallbacksRunOnPoolBeforeClose(t *testing.T) {
	const n = 16
	f := openNumbered(t, n, &dio.Options{EngineOptions: &dio.EngineOptions{Workers: 1}})
	var running, most, done atomic.Int32
	release := make(chan struct{}) // callbacks return only once Close has begun
	cb := func(r *dio.Request) {
		c := running.Add(1)
		for m := most.Load(); c > m && !most.CompareAndSwap(m, c); m = most.Load() {
		}
		<-release
		if r.Buf[0] != byte(r.Off/4096) {
			t.Errorf("read at %d: %#x", r.Off, r.Buf[0])
		}
		running.Add(-1)
		done.Add(1)
	}
	for i := 0; i < n; i++ {
		r := &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: relBuf(t, 4096), Policy: completion.Pool, Callback: cb}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
	}
	// The first callback holds the one worker; the others wait in its
	// queue once their CQEs are in.
	waitUntil(t, "every read's completion to reach the workers", func() bool { return f.Engine().Stats().Completed >= n })
	closed := make(chan int32, 1)
	go func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		closed <- done.Load()
	}()
	waitUntil(t, "Close to begin", func() bool { return dio.FdForTest(f) == ^uintptr(0) })
	close(release)
	select {
	case d := <-closed:
		if d != n {
			t.Fatalf("Close returned with %d of %d Pool callbacks done", d, n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the callbacks were released")
	}
	if m := most.Load(); m != 1 {
		t.Fatalf("%d callbacks ran at once on a pool of one worker", m)
	}
}

// TestUnalignedWriteErrorSaysWrite: a WriteAt whose read-modify-write read
// of a partly covered sector failed returned an OpError whose Op was
// "read" (TestFSX's qd32-mixed-faults caught one, ECANCELED on the read of
// a write that started past the end of file). The error is the write's.
func TestUnalignedWriteErrorSaysWrite(t *testing.T) {
	f, path := openRel(t, nil)
	if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err := dio.Open(path, os.O_RDWR, 0, wrapped(func(r ringhook.Ring) ringhook.Ring {
		return faultring.New(r, faultring.Config{Decide: func(c faultring.CQE) faultring.Fault {
			if c.SQE.Op == ring.OpRead {
				return faultring.EIO // the read of the sector the write covers in part
			}
			return faultring.None
		}})
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer closeWithin(t, f, 5*time.Second)
	n, err := f.WriteAt([]byte("not a whole sector"), 100)
	var oe *dio.OpError
	if n != 0 || !errors.Is(err, syscall.EIO) || !errors.As(err, &oe) || oe.Op != "write" || oe.Off != 100 || oe.Len != 18 {
		t.Fatalf("WriteAt with its read failing = %d, %v; want 0 and the write's EIO at offset 100 length 18", n, err)
	}
}
