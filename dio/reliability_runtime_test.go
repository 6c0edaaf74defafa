//go:build linux

package dio_test

// Go runtime stress: the garbage collector at GOGC=1 with forced cycles
// and goroutine stacks growing and shrinking while I/O is in flight on
// Go-heap buffers held only by the engine; goroutines that lock their OS
// thread and exit while the I/O they submitted from it is in flight;
// profiling signals and a storm of signals at every thread while callers
// wait. No request may see corrupted data, and no EINTR may reach a caller.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// heapAligned returns n bytes of Go heap aligned to align: the slice
// points into the middle of a larger allocation, which only it keeps alive.
func heapAligned(n, align int) []byte {
	b := make([]byte, n+align)
	off := (align - int(addr(b)%uintptr(align))) % align
	return b[off : off+n : off+n]
}

// blockPattern fills b with the pattern of block blk of generation gen.
func blockPattern(b []byte, blk int64, gen int) {
	for i := range b {
		b[i] = byte(int64(i)*131 + blk*7 + int64(gen)*13 + int64(i>>9))
	}
}

// grow recurses deep enough to grow the goroutine's stack a few times,
// then calls fn, and returns through all of it (the stack may shrink at
// the next GC).
func grow(depth int, fn func()) int {
	var pad [256]byte
	pad[depth%256] = byte(depth)
	if depth == 0 {
		fn()
		return int(pad[0])
	}
	return grow(depth-1, fn) + int(pad[depth%256])
}

func stressFile(t *testing.T, blocks int) (*dio.File, string) {
	t.Helper()
	f, path := openRel(t, nil)
	t.Cleanup(func() { closeWithin(t, f, 20*time.Second) })
	b := relBuf(t, blocks*4096)
	for i := 0; i < blocks; i++ {
		blockPattern(b[i*4096:(i+1)*4096], int64(i), 0)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return f, path
}

func noEINTR(err error) error {
	if errors.Is(err, syscall.EINTR) {
		return fmt.Errorf("EINTR reached the caller: %w", err)
	}
	return nil
}

// TestGCStressHeapBuffers: GOGC=1, a goroutine forcing GC cycles, I/O on
// Go-heap buffers whose only reference during the I/O is the Request the
// engine holds (the submitter drops both), stacks growing around every
// call and inside Inline callbacks on the reaper.
func TestGCStressHeapBuffers(t *testing.T) {
	old := debug.SetGCPercent(1)
	defer debug.SetGCPercent(old)
	const blocks = 256
	f, _ := stressFile(t, blocks)
	align := int(dio.AlignForTest(f).Memory)
	stop := make(chan struct{})
	var gcs atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
				gcs.Add(1)
				_ = make([]byte, 1<<16) // garbage, so there is something to collect
			}
		}
	}()
	defer close(stop)
	iters := 300
	if longMode() {
		iters = 20000
	}
	var bad atomic.Pointer[string]
	report := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		bad.CompareAndSwap(nil, &s)
	}
	var ios atomic.Int64
	hang := watchHang(t, func() string {
		return fmt.Sprintf("%d of %d reads and writes done, %d forced GC cycles", ios.Load(), 4*iters+4*2*iters, gcs.Load())
	})
	progress := func() { ios.Add(1); hang.Progress() }
	var wg sync.WaitGroup
	// Asynchronous readers: the Request and its heap buffer are reachable
	// only through the engine until the callback hands them back.
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			back := make(chan *dio.Request, 8)
			inflight := 0
			for i := 0; i < iters; i++ {
				blk := int64((g*7919 + i*104729) % blocks)
				pol := []completion.Policy{completion.Inline, completion.Pool}[i%2]
				r := &dio.Request{Op: dio.Read, Off: blk * 4096, Buf: heapAligned(4096, align), Policy: pol, Tag: uint64(blk),
					Callback: func(r *dio.Request) {
						grow(64, func() {}) // grow the reaper's or worker's stack
						back <- r
					}}
				grow(32, func() {
					if err := f.Submit(r); err != nil {
						report("Submit: %v", err)
					}
				})
				r = nil // the engine holds the only reference now
				inflight++
				runtime.GC()
				for inflight >= 8 || (i == iters-1 && inflight > 0) {
					q := <-back
					progress()
					inflight--
					n, err := q.Result()
					if err != nil || n != 4096 {
						report("async read: %d, %v", n, err)
					}
					want := make([]byte, 4096)
					blockPattern(want, int64(q.Tag), 0)
					if string(q.Buf) != string(want) {
						report("async read of block %d into a heap buffer returned wrong data", q.Tag)
					}
				}
			}
		}()
	}
	// Synchronous readers and writers of their own blocks, on heap
	// buffers, from deep stacks.
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			blk := int64(blocks - 1 - g)
			for i := 0; i < iters; i++ {
				w := heapAligned(4096, align)
				blockPattern(w, blk, 0) // same content: readers elsewhere see no change
				grow(16+i%64, func() {
					if n, err := f.WriteAt(w, blk*4096); n != 4096 || err != nil {
						report("WriteAt: %d, %v", n, err)
					}
				})
				progress()
				w = nil
				r := heapAligned(4096, align)
				grow(16+i%64, func() {
					n, err := f.ReadAtContext(context.Background(), r, blk*4096, 0)
					if n != 4096 || err != nil {
						report("ReadAt: %d, %v", n, err)
					}
				})
				progress()
				want := make([]byte, 4096)
				blockPattern(want, blk, 0)
				if string(r) != string(want) {
					report("sync read of block %d returned wrong data", blk)
				}
			}
		}()
	}
	wg.Wait()
	if p := bad.Load(); p != nil {
		t.Fatal(*p)
	}
	if gcs.Load() == 0 {
		t.Fatal("no GC cycle was forced while the I/O ran")
	}
}

// TestLockedThreadExitsWithIOInFlight: goroutines lock their OS thread,
// submit I/O from it (the io_uring_enter runs on that thread, which owns
// the kernel's task context and io-wq workers for what it submitted) and
// exit while the I/O is in flight, so the runtime terminates the thread.
// Every request must still complete, with its data, and nothing but the
// request's own result may reach the caller (no ECANCELED from the
// thread's exit).
func TestLockedThreadExitsWithIOInFlight(t *testing.T) {
	const blocks = 512
	f, path := stressFile(t, blocks)
	rounds := 40
	if longMode() {
		rounds = 2000
	}
	var bad atomic.Pointer[string]
	report := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		bad.CompareAndSwap(nil, &s)
	}
	var cancelled atomic.Int64
	var wg sync.WaitGroup
	var round atomic.Int64
	hang := watchHang(t, func() string { return fmt.Sprintf("round %d of %d", round.Load(), rounds) })
	gen := 0
	for r := 0; r < rounds; r++ {
		round.Store(int64(r))
		round := r
		gen++
		// Writes extending the file punt to io-wq on most file systems
		// (they cannot be done without blocking), reads of the start do not.
		ext := int64(blocks + round*8)
		gen := gen
		wg.Add(4 * 8)
		for g := 0; g < 4; g++ {
			go func() {
				runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
				for i := 0; i < 8; i++ {
					blk := int64(g*8 + i)
					var r *dio.Request
					if i%2 == 0 {
						blk = ext + int64(g*2+i/2)
						b := relBufNoCleanup(4096)
						blockPattern(b, blk, gen)
						r = &dio.Request{Op: dio.Write, Off: blk * 4096, Buf: b, Policy: completion.Pool, Tag: uint64(blk)}
					} else {
						r = &dio.Request{Op: dio.Read, Off: blk * 4096, Buf: relBufNoCleanup(4096), Policy: completion.Inline, Tag: uint64(blk)}
					}
					r.Callback = func(r *dio.Request) {
						defer wg.Done()
						defer hang.Progress()
						defer freeLater(r.Buf)
						n, err := r.Result()
						if errors.Is(err, syscall.ECANCELED) {
							cancelled.Add(1)
						}
						if err != nil || n != 4096 {
							report("%s at block %d submitted from an exiting locked thread: %d, %v", r.Op, r.Tag, n, err)
							return
						}
						if r.Op == dio.Read {
							want := make([]byte, 4096)
							blockPattern(want, int64(r.Tag), 0)
							if string(r.Buf) != string(want) {
								report("read of block %d returned wrong data", r.Tag)
							}
						}
					}
					if err := f.Submit(r); err != nil {
						report("Submit: %v", err)
						wg.Done()
					}
				}
				// return with the thread locked: the runtime exits the thread
			}()
		}
		wg.Wait()
		if p := bad.Load(); p != nil {
			t.Fatalf("round %d: %s (%d ECANCELED so far)", round, *p, cancelled.Load())
		}
		for g := 0; g < 4; g++ {
			for i := 0; i < 8; i += 2 {
				blk := ext + int64(g*2+i/2)
				want := make([]byte, 4096)
				blockPattern(want, blk, gen)
				if got := preadAll(t, path, blk*4096, 4096); string(got) != string(want) {
					t.Fatalf("round %d: block %d written from an exiting thread is not on disk", round, blk)
				}
			}
		}
	}
}

var (
	lateMu   sync.Mutex
	lateBufs [][]byte
)

// relBufNoCleanup allocates off-heap memory that freeLater releases.
func relBufNoCleanup(n int) []byte {
	b, err := ring.Alloc(n)
	if err != nil {
		panic(err)
	}
	return b
}

// freeLater keeps b mapped until the test binary exits: these tests
// check data, not buffer lifetimes (the fault tests' canary does that).
func freeLater(b []byte) {
	lateMu.Lock()
	lateBufs = append(lateBufs, b)
	lateMu.Unlock()
}

// TestSignalsDuringWaits: with the CPU profiler running (SIGPROF) and a
// goroutine sending SIGURG to every thread of the process every few
// microseconds (interrupting io_uring_enter waits), synchronous calls and
// Request.Wait return correct data and never EINTR.
func TestSignalsDuringWaits(t *testing.T) {
	const blocks = 256
	f, _ := stressFile(t, blocks)
	if err := pprof.StartCPUProfile(io.Discard); err == nil {
		defer pprof.StopCPUProfile()
	} else {
		t.Logf("no CPU profile (%v); signals only", err)
	}
	stop := make(chan struct{})
	var sent atomic.Int64
	go func() {
		pid := os.Getpid()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ents, _ := os.ReadDir("/proc/self/task")
			for _, e := range ents {
				if tid, err := strconv.Atoi(e.Name()); err == nil {
					if unix.Tgkill(pid, tid, unix.SIGURG) == nil {
						sent.Add(1)
					}
				}
			}
			// Paces the storm (a signal every few microseconds at each
			// thread); the test waits for no event here.
			time.Sleep(20 * time.Microsecond)
		}
	}()
	defer close(stop)
	iters := 400
	if longMode() {
		iters = 50000
	}
	var bad atomic.Pointer[string]
	report := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		bad.CompareAndSwap(nil, &s)
	}
	var reads atomic.Int64
	hang := watchHang(t, func() string {
		return fmt.Sprintf("%d of %d reads done, %d signals sent", reads.Load(), 6*iters, sent.Load())
	})
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := relBufNoCleanup(8192)
			defer freeLater(b)
			want := make([]byte, 4096)
			for i := 0; i < iters; i++ {
				blk := int64((g*31 + i*17) % (blocks - 1))
				var n int
				var err error
				switch i % 3 {
				case 0:
					n, err = f.ReadAt(b, blk*4096)
				case 1:
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					n, err = f.ReadAtContext(ctx, b, blk*4096, 0)
					cancel()
				case 2:
					r := &dio.Request{Op: dio.Read, Off: blk * 4096, Buf: b, Policy: completion.Wait}
					if err = f.Submit(r); err == nil {
						n, err = r.Wait(context.Background())
					}
				}
				reads.Add(1)
				hang.Progress()
				if e := noEINTR(err); e != nil {
					report("%v", e)
					return
				}
				if err != nil || n != 8192 {
					report("read %d: %d, %v", i, n, err)
					return
				}
				blockPattern(want, blk, 0)
				if string(b[:4096]) != string(want) {
					report("read of block %d returned wrong data", blk)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := bad.Load(); p != nil {
		t.Fatal(*p)
	}
	if sent.Load() == 0 {
		t.Fatal("no signal was sent while the calls waited")
	}
}
