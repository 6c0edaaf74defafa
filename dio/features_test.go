//go:build linux

package dio

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

func TestVectored(t *testing.T) {
	f, path := openTemp(t, nil)
	a, b, c := abuf(t, blk), abuf(t, 3*blk), abuf(t, 2*blk)
	fill(a, 1)
	fill(b, 2)
	fill(c, 3)
	w := &Request{Op: Write, Off: blk, Bufs: [][]byte{a, b, c}}
	if err := f.Submit(w); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Wait(context.Background()); n != 6*blk || err != nil {
		t.Fatalf("vectored write: %d, %v", n, err)
	}
	disk, _ := os.ReadFile(path)
	want := append(append(append(make([]byte, blk), a...), b...), c...)
	if !bytes.Equal(disk, want) {
		t.Fatal("vectored write landed wrong")
	}
	x, y := abuf(t, 5*blk), abuf(t, 2*blk)
	r := &Request{Op: Read, Off: 0, Bufs: [][]byte{x, y}}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Wait(context.Background()); n != 7*blk || err != nil {
		t.Fatalf("vectored read: %d, %v", n, err)
	}
	if !bytes.Equal(append(append([]byte(nil), x...), y...), want) {
		t.Fatal("vectored read returned wrong bytes")
	}
}

// TestRingMatrix runs writes and reads, sync and async, over {plain,
// SQPOLL} × {buffers, fixed buffers} × {fds, registered files}, checking
// every byte and that SQEs use the fixed opcodes and file slots.
func TestRingMatrix(t *testing.T) {
	for _, sqpoll := range []bool{false, true} {
		for _, fixed := range []bool{false, true} {
			for _, reg := range []bool{false, true} {
				name := map[bool]string{false: "plain", true: "sqpoll"}[sqpoll] + "/" +
					map[bool]string{false: "bufs", true: "fixedbufs"}[fixed] + "/" +
					map[bool]string{false: "fds", true: "regfiles"}[reg]
				t.Run(name, func(t *testing.T) {
					eo := &EngineOptions{}
					if sqpoll {
						eo.SQPoll, eo.SQPollIdle = true, 20*time.Millisecond
					}
					if fixed {
						eo.FixedBuffers, eo.FixedBufferSize = 4, 64<<10
					}
					if reg {
						eo.RegisteredFiles = 4
					}
					var sawFixed, sawRegFile, sqes atomic.Int32
					o := &Options{EngineOptions: eo, submitHook: func(r *Request, s *ring.SQE) {
						sqes.Add(1)
						if s.Opcode == ring.OpReadFixed || s.Opcode == ring.OpWriteFixed {
							sawFixed.Add(1)
						}
						if s.Flags&ring.SQEFixedFile != 0 {
							sawRegFile.Add(1)
						}
					}}
					f, path := openTemp(t, o)
					var w, r []byte
					if fixed {
						if bufs := f.Engine().FixedBuffers(); len(bufs) >= 2 {
							w, r = bufs[0], bufs[1]
						}
						if w == nil || r == nil {
							t.Fatal("no fixed buffer")
						}
					} else {
						w, r = abuf(t, 64<<10), abuf(t, 64<<10)
					}
					fill(w, 5)
					if n, err := f.WriteAt(w, 0); n != len(w) || err != nil {
						t.Fatal(n, err)
					}
					req := &Request{Op: Read, Buf: r, Policy: completion.Inline}
					if err := f.Submit(req); err != nil {
						t.Fatal(err)
					}
					if n, err := req.Wait(context.Background()); n != len(r) || err != nil {
						t.Fatal(n, err)
					}
					if !bytes.Equal(r, w) {
						t.Fatal("read back differs")
					}
					disk, _ := os.ReadFile(path)
					if !bytes.Equal(disk, w) {
						t.Fatal("file differs")
					}
					if fixed && sawFixed.Load() != sqes.Load() {
						t.Errorf("%d of %d SQEs used fixed buffers", sawFixed.Load(), sqes.Load())
					}
					if !fixed && sawFixed.Load() != 0 {
						t.Errorf("fixed opcodes without fixed buffers")
					}
					if reg && sawRegFile.Load() != sqes.Load() {
						t.Errorf("%d of %d SQEs used the registered file", sawRegFile.Load(), sqes.Load())
					}
				})
			}
		}
	}
}

func TestIOPollOnDeviceWithoutPolling(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, make([]byte, blk), 0o600)
	g, _ := os.Open(path)
	ok, _ := ring.PolledIOSupported(int(g.Fd()))
	g.Close()
	f, err := Open(path, os.O_RDWR, 0, &Options{EngineOptions: &EngineOptions{IOPoll: true}})
	if ok {
		if err != nil {
			t.Fatalf("IOPOLL on a polling device: %v", err)
		}
		f.Close()
		t.Skip("this device supports polled I/O")
	}
	if err == nil {
		f.Close()
		t.Fatal("Open with IOPOLL on a device without polling succeeded")
	}
	if !errors.Is(err, ring.ErrNoPolledIO) || !errors.Is(err, errors.ErrUnsupported) ||
		!strings.Contains(err.Error(), "device does not support polled I/O") {
		t.Fatalf("error %q does not say the device cannot poll", err)
	}
}

func TestEndIOHookChangesResult(t *testing.T) {
	boom := errors.New("checksum mismatch")
	var calls atomic.Int32
	f, _ := openTemp(t, &Options{endIO: func(r *Request, n int64, err error) (int64, error) {
		calls.Add(1)
		if r.Op == Read && r.Off == blk {
			return 0, boom
		}
		return n, err
	}})
	b := abuf(t, 2*blk)
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(b[:blk], 0); err != nil {
		t.Fatal(err)
	}
	n, err := f.ReadAt(b[:blk], blk)
	var oe *OpError
	if n != 0 || !errors.Is(err, boom) || !errors.As(err, &oe) || oe.Off != blk {
		t.Fatalf("hooked read = %d, %v", n, err)
	}
	if calls.Load() != 3 {
		t.Errorf("hook ran %d times, want 3", calls.Load())
	}
	// An async read with a hook defaults to the pool (the hook may block).
	r := &Request{Op: Read, Off: 0, Buf: b[:blk]}
	f.Submit(r)
	r.Wait(context.Background())
	if p, why := r.EffectivePolicy(); p != completion.Pool || why != completion.DowngradeEndIO {
		t.Errorf("read with an end-io hook ran under %v (%v)", p, why)
	}
}

func TestSubmitHookRedirects(t *testing.T) {
	f, _ := openTemp(t, &Options{submitHook: func(r *Request, s *ring.SQE) {
		if r.Tag == 1 {
			s.Off += 2 * blk // read the block two further on
		}
	}})
	b := abuf(t, 4*blk)
	fill(b, 3)
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	got := abuf(t, blk)
	r := &Request{Op: Read, Off: 0, Buf: got, Tag: 1}
	f.Submit(r)
	if n, err := r.Wait(context.Background()); n != blk || err != nil {
		t.Fatal(n, err)
	}
	if !bytes.Equal(got, b[2*blk:3*blk]) {
		t.Fatal("submit hook did not redirect the read")
	}
}

func TestNoWaitAndOverwriteOnly(t *testing.T) {
	f, path := openTemp(t, nil)
	b := abuf(t, 8*blk)
	fill(b, 4)
	if _, err := f.WriteAt(b[:4*blk], 0); err != nil {
		t.Fatal(err)
	}
	// On a kernel file only the file system knows whether a write
	// allocates: OverwriteOnly is refused before anything is submitted.
	_, err := f.WriteAtContext(context.Background(), b[:blk], 0, OverwriteOnly)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("OverwriteOnly on a kernel file: %v, want ErrUnsupported", err)
	}
	// Through an opted-in file mapper: writing into a hole (past EOF here)
	// is EAGAIN, and nothing is written.
	mf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	fm, err := iomap.NewFileMapper(int(mf.Fd()), iomap.FileMapperOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mapped, err := Open(path, os.O_RDWR, 0, &Options{Mapper: fm})
	if err != nil {
		t.Fatal(err)
	}
	defer mapped.Close()
	_, err = mapped.WriteAtContext(context.Background(), b[:blk], 8*blk, OverwriteOnly)
	if !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("OverwriteOnly into a hole: %v, want EAGAIN", err)
	}
	if st, _ := os.Stat(path); st.Size() != 4*blk {
		t.Fatalf("refused write changed the size to %d", st.Size())
	}
	// An overwrite is fine.
	if _, err := mapped.WriteAtContext(context.Background(), b[:blk], 0, OverwriteOnly); err != nil {
		t.Fatalf("OverwriteOnly overwrite: %v", err)
	}
	// A NoWait write that needs several SQEs is refused before submission.
	small := f.maxIO
	big := abuf(t, int(small)+blk)
	_, err = f.WriteAtContext(context.Background(), big, 0, NoWait)
	if !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("multi-SQE NoWait write: %v, want EAGAIN", err)
	}
	disk, _ := os.ReadFile(path)
	if !bytes.Equal(disk[:blk], b[:blk]) {
		t.Fatal("refused NoWait write changed data")
	}
	// With Partial it goes out, every SQE of it (it used to be refused
	// whatever the caller asked: a trap for anyone with several buffers),
	// and its result says how far it got.
	var sqes atomic.Int32
	counted, err := Open(path, os.O_RDWR, 0, &Options{submitHook: func(*Request, *ring.SQE) { sqes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer counted.Close()
	fill(big, 6)
	n, err := counted.WriteAtContext(context.Background(), big, 0, NoWait|Partial)
	if got := sqes.Load(); got < 2 {
		t.Fatalf("NoWait|Partial write of %d bytes (max I/O %d) sent %d SQEs, want every piece", len(big), small, got)
	}
	if err != nil && !errors.Is(err, syscall.EAGAIN) || n < 0 || n > len(big) || err == nil && n != len(big) {
		t.Fatalf("NoWait|Partial write = %d, %v; want all of it, or a prefix and EAGAIN", n, err)
	}
	disk, _ = os.ReadFile(path)
	if !bytes.Equal(disk[:n], big[:n]) {
		t.Fatal("the bytes a NoWait|Partial write reported written are not in the file")
	}
	// A NoWait read either succeeds or says EAGAIN (retryable), nothing else.
	r := abuf(t, blk)
	if _, err := f.ReadAtContext(context.Background(), r, 0, NoWait); err != nil && !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("NoWait read: %v", err)
	}
}

func TestPartialStopsAtMapperError(t *testing.T) {
	lm := &layoutMapper{segs: []seg{
		{off: 0, n: 2 * blk, typ: iomap.Mapped},
		{off: 2 * blk, n: 2 * blk, typ: iomap.Delalloc},
	}}
	f, path := openTemp(t, &Options{Mapper: lm})
	os.WriteFile(path, make([]byte, 4*blk), 0o600)
	f.Truncate(4 * blk)
	b := abuf(t, 4*blk)
	n, err := f.ReadAt(b, 0)
	if n != 0 || !errors.Is(err, errDelalloc) {
		t.Fatalf("without Partial: %d, %v; want nothing submitted and errDelalloc", n, err)
	}
	r := &Request{Op: Read, Off: 0, Buf: b, Flags: Partial, DoneBefore: 100}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	n, err = r.Wait(context.Background())
	if n != 100+2*blk || !errors.Is(err, errDelalloc) {
		t.Fatalf("with Partial: %d, %v; want DoneBefore + the mapped prefix and the error", n, err)
	}
}

// TestCancelRacesCompletion cancels reads and writes at random moments:
// every request has exactly one outcome, its callback runs once, and a
// request reported successful really transferred its bytes.
func TestCancelRacesCompletion(t *testing.T) {
	t.Run("in-flight", func(t *testing.T) { testCancelRaces(t, false, &EngineOptions{QueueDepth: 64}) })
	// With two SQEs in flight at most, most requests wait in the backlog,
	// where cancellation takes them out before they reach the kernel.
	t.Run("backlogged", func(t *testing.T) { testCancelRaces(t, true, &EngineOptions{MaxInflight: 2}) })
}

func testCancelRaces(t *testing.T, wantCancels bool, eo *EngineOptions) {
	f, _ := openTemp(t, &Options{EngineOptions: eo})
	const n = 256
	mem := abuf(t, n*blk)
	fill(mem, 6)
	if _, err := f.WriteAt(mem, 0); err != nil {
		t.Fatal(err)
	}
	var calls [n]atomic.Int32
	var wg sync.WaitGroup
	var ok, cancelled atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			buf := mem[i*blk : (i+1)*blk]
			op := Read
			if i%2 == 1 {
				op = Write
			}
			r := &Request{Op: op, Off: int64(i) * blk, Buf: buf, Policy: completion.Inline,
				Callback: func(*Request) { calls[i].Add(1) }}
			if err := f.Submit(r); err != nil {
				t.Error(err)
				return
			}
			if i%3 != 0 {
				// Only spreads when the cancel lands; no event is waited for.
				time.AfterFunc(time.Duration(i%7)*20*time.Microsecond, cancel)
			} else {
				cancel()
			}
			got, err := r.Wait(ctx)
			switch {
			case err == nil && got == blk:
				ok.Add(1)
			case errors.Is(err, syscall.ECANCELED):
				cancelled.Add(1)
			default:
				t.Errorf("request %d: %d, %v", i, got, err)
			}
			cancel()
		}()
	}
	wg.Wait()
	for i := range calls {
		if c := calls[i].Load(); c != 1 {
			t.Errorf("request %d: callback ran %d times", i, c)
		}
	}
	if o, c := ok.Load(), cancelled.Load(); o+c != n {
		t.Errorf("%d completed and %d cancelled of %d requests", o, c, n)
	}
	if wantCancels && cancelled.Load() == 0 {
		t.Error("no request was cancelled: the test did not exercise cancellation")
	}
	// Whatever happened, reads of the file still return the data: a
	// cancelled write either landed whole or not at all (same bytes here).
	back := abuf(t, n*blk)
	if _, err := f.ReadAt(back, 0); err != nil {
		t.Fatal(err)
	}
}

func TestClosedFileSubmitsNothing(t *testing.T) {
	f, _ := openTemp(t, &Options{Engine: mustEngine(t, nil)})
	b := abuf(t, blk)
	f.WriteAt(b, 0)
	before := f.Engine().Stats().Submitted
	f.Close()
	if err := f.Submit(&Request{Op: Read, Buf: b}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
	if _, err := f.WriteAt(b, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteAt after Close: %v", err)
	}
	if err := f.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if after := f.Engine().Stats().Submitted; after != before {
		t.Fatalf("%d SQEs submitted after Close", after-before)
	}
}

func mustEngine(t *testing.T, o *EngineOptions) *Engine {
	e, err := NewEngine(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestExtentMapVolume: a volume behind an ExtentMap with 16 KiB blocks on
// a 4 KiB-aligned device: a 4 KiB write into a hole zeroes the rest of its
// block on the device, converts at completion, a clone shares until
// written, and writes to the clone go to fresh space.
func TestExtentMapVolume(t *testing.T) {
	const bs = 16 << 10
	dev := filepath.Join(t.TempDir(), "dev")
	junk := make([]byte, 1<<20)
	for i := range junk {
		junk[i] = 0xEE // stale device contents that must never show through
	}
	os.WriteFile(dev, junk, 0o600)
	em, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: bs, Devices: []int64{1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	vol, err := Open(dev, os.O_RDWR, 0, &Options{Mapper: em, Size: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()
	w := abuf(t, blk)
	fill(w, 8)
	if n, err := vol.WriteAt(w, bs+blk); n != blk || err != nil {
		t.Fatal(n, err)
	}
	r := abuf(t, 2*bs)
	if _, err := vol.ReadAt(r, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 2*bs)
	copy(want[bs+blk:], w)
	if !bytes.Equal(r, want) {
		t.Fatal("volume read shows stale device bytes or misses the write")
	}
	// The device block holding the write is zeroed around it.
	var addr int64 = -1
	em.Extents(func(m iomap.Mapping) bool {
		if m.Offset <= bs && bs < m.End() {
			addr = m.AddrAt(bs)
		}
		return true
	})
	disk, _ := os.ReadFile(dev)
	blkOnDisk := disk[addr : addr+bs]
	if !bytes.Equal(blkOnDisk, want[bs:2*bs]) {
		t.Fatal("sub-block zeroing: the new block on the device holds stale bytes")
	}

	// Clone, then overwrite the clone's block: the original keeps its data.
	clone := em.Clone()
	vol2, err := Open(dev, os.O_RDWR, 0, &Options{Mapper: clone, Size: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer vol2.Close()
	nb := abuf(t, bs)
	fill(nb, 9)
	if _, err := vol2.WriteAt(nb, bs); err != nil {
		t.Fatal(err)
	}
	if _, err := vol.ReadAt(r, 0); err != nil || !bytes.Equal(r, want) {
		t.Fatalf("original changed after writing the clone (err %v)", err)
	}
	if _, err := vol2.ReadAt(r, 0); err != nil || !bytes.Equal(r[bs:], nb) {
		t.Fatalf("clone does not read its own write (err %v)", err)
	}
	st := em.Stats()
	if st.Allocated+st.Free != st.Total {
		t.Errorf("space leak: %+v", st)
	}
}

// TestOpenBlockDevice: a block device gets its size from the device and
// the identity mapping, without options.
func TestOpenBlockDevice(t *testing.T) {
	dev := "/dev/zram0"
	st, err := os.Stat(dev)
	if err != nil || st.Mode()&os.ModeDevice == 0 {
		t.Skip("no /dev/zram0")
	}
	f, err := Open(dev, os.O_RDONLY, 0, nil)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	defer f.Close()
	if SizeForTest(t, f) == 0 {
		t.Skip("zram0 has no disksize set")
	}
	b := abuf(t, blk)
	if n, err := f.ReadAt(b, SizeForTest(t, f)-blk); n != blk || err != nil {
		t.Fatalf("read of the last block: %d, %v", n, err)
	}
}

// TestDoneMeansCallbackReturned: Done turns true only after the callback
// has returned, and Result works inside the callback.
func TestDoneMeansCallbackReturned(t *testing.T) {
	f, _ := openTemp(t, nil)
	b := abuf(t, blk)
	f.WriteAt(b, 0)
	release := make(chan struct{})
	inCallback := make(chan struct{})
	var resErr error
	r := &Request{Op: Read, Buf: b, Policy: completion.Pool, Callback: func(r *Request) {
		_, resErr = r.Result()
		close(inCallback)
		<-release
	}}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	<-inCallback
	if r.done() {
		t.Error("Done is true while the callback is still running")
	}
	close(release)
	r.Wait(context.Background())
	if !r.done() || resErr != nil {
		t.Fatalf("Done %v, Result in callback: %v", r.done(), resErr)
	}
}

// TestResubmitFromCallback: a callback may resubmit the request it was
// handed (the asynchronous loop), and the request stays in flight.
func TestResubmitFromCallback(t *testing.T) {
	for _, p := range []completion.Policy{completion.Inline, completion.Pool} {
		t.Run(p.String(), func(t *testing.T) {
			f, _ := openTemp(t, nil)
			b := abuf(t, blk)
			f.WriteAt(b, 0)
			var rounds atomic.Int32
			done := make(chan error, 1)
			r := &Request{Op: Read, Buf: b, Policy: p}
			r.Callback = func(r *Request) {
				if _, err := r.Result(); err != nil {
					done <- err
					return
				}
				if rounds.Add(1) == 100 {
					done <- nil
					return
				}
				if err := f.Submit(r); err != nil {
					done <- err
				}
			}
			if err := f.Submit(r); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("after %d rounds: %v", rounds.Load(), err)
			}
		})
	}
}
