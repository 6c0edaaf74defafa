//go:build linux

package dio_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
)

// Open a file for direct I/O, write a page and read it back.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, err := dio.Open(filepath.Join(dir, "pages"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()

	page, _ := ring.Alloc(8192) // page aligned, off-heap
	defer ring.Free(page)
	copy(page, "hello, direct I/O")
	if _, err := f.WriteAtContext(context.Background(), page, 8192, dio.DSync); err != nil {
		fmt.Println(err)
		return
	}
	clear(page)
	n, err := f.ReadAt(page, 8192)
	size, _ := f.Size() // the kernel's size, whoever wrote the file
	fmt.Println(n, err, string(page[:17]), size)
	// Output: 8192 <nil> hello, direct I/O 16384
}

// ReadAt and WriteAt take any offset, length and memory, as os.File's do:
// what is not aligned for direct I/O goes through the engine's bounce
// buffers. The slices are the caller's again when the call returns.
func ExampleFile_ReadAt() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, err := dio.Open(filepath.Join(dir, "log"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("a record at byte 100"), 100); err != nil {
		fmt.Println(err)
		return
	}
	p := make([]byte, 6) // Go heap memory, unaligned offset and length
	n, err := f.ReadAt(p, 102)
	fmt.Println(n, err, string(p))
	// Output: 6 <nil> record
}

// Submit reads that complete through a callback on the reaper (Inline):
// the callback must not block. Each buffer is the engine's from Submit
// until its callback runs.
func ExampleFile_Submit() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, _ := dio.Open(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	defer f.Close()
	mem, _ := ring.Alloc(4 * 4096)
	defer ring.Free(mem)
	f.WriteAt(mem, 0)

	done := make(chan int, 4)
	for i := 0; i < 4; i++ {
		r := &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: mem[i*4096 : (i+1)*4096],
			Policy: completion.Inline,
			Callback: func(r *dio.Request) {
				n, _ := r.Result()
				done <- n
			}}
		if err := f.Submit(r); err != nil {
			fmt.Println(err)
			return
		}
	}
	total := 0
	for i := 0; i < 4; i++ {
		total += <-done
	}
	fmt.Println(total)
	// Output: 16384
}

// With Options.StrictAlignment, misaligned input fails before anything is
// submitted, saying what is wrong (without it, it goes through bounce
// buffers).
func ExampleOptions_strictAlignment() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, _ := dio.Open(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{StrictAlignment: true})
	defer f.Close()
	buf, _ := ring.Alloc(8192)
	defer ring.Free(buf)
	_, err := f.ReadAt(buf[:4096], 1)
	fmt.Println(errors.Is(err, dio.ErrUnaligned), errors.Is(err, syscall.EINVAL), strings.Contains(err.Error(), "offset 0x1"))
	// Output: true true true
}

// Caller completion: the engine only queues the finished request, and the
// goroutine that owns the Queue runs its callback in Queue.Poll or
// Queue.Wait. No locks are needed in the callback.
func ExampleFile_Submit_caller() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, _ := dio.Open(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	defer f.Close()
	mem, _ := ring.Alloc(4 * 4096)
	defer ring.Free(mem)
	f.WriteAt(mem, 0)

	var q completion.Queue
	total := 0 // touched only by this goroutine, in the callbacks Wait runs
	for i := 0; i < 4; i++ {
		r := &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: mem[i*4096 : (i+1)*4096],
			Policy: completion.Caller, Queue: &q,
			Callback: func(r *dio.Request) {
				n, _ := r.Result()
				total += n
			}}
		if err := f.Submit(r); err != nil {
			fmt.Println(err)
			return
		}
		if p, _ := r.EffectivePolicy(); p != completion.Caller {
			fmt.Println("not deferred to the caller:", p) // its callback runs elsewhere
		}
	}
	ran, err := q.Wait(context.Background(), 4)
	fmt.Println(ran, err, total)
	// Output: 4 <nil> 16384
}

// Wait completion: submit several requests, then wait for each; the
// completion work runs in Wait, on the caller's goroutine. Until Wait
// returns, the buffer is the engine's.
func ExampleFile_Submit_wait() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, _ := dio.Open(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	defer f.Close()
	mem, _ := ring.Alloc(2 * 4096)
	defer ring.Free(mem)

	reqs := []*dio.Request{
		{Op: dio.Write, Off: 0, Buf: mem[:4096], Policy: completion.Wait},
		{Op: dio.Write, Off: 4096, Buf: mem[4096:], Policy: completion.Wait},
	}
	for _, r := range reqs {
		if err := f.Submit(r); err != nil {
			fmt.Println(err)
			return
		}
	}
	for _, r := range reqs {
		n, err := r.Wait(context.Background())
		fmt.Println(n, err)
	}
	// The requests are the caller's again: reuse one for an fdatasync.
	sync := reqs[0]
	sync.Op, sync.Buf = dio.Fdatasync, nil
	f.Submit(sync)
	_, err := sync.Wait(context.Background())
	fmt.Println(err)
	// Output:
	// 4096 <nil>
	// 4096 <nil>
	// <nil>
}

// Pool completion: the callback runs on one of the engine's worker
// goroutines, where it may block (here, on a channel). A write whose
// completion must do I/O (fill a hole, extend a mapped file, fdatasync)
// goes there even when it asked for Caller; EffectivePolicy says so as
// soon as Submit returns.
func ExampleFile_Submit_pool() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, _ := dio.Open(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	defer f.Close()
	mem, _ := ring.Alloc(4096)
	defer ring.Free(mem)

	results := make(chan error) // unbuffered: the callback blocks until read
	r := &dio.Request{Op: dio.Write, Off: 0, Buf: mem, Flags: dio.DSync, Policy: completion.Pool,
		Callback: func(r *dio.Request) {
			_, err := r.Result()
			results <- err
		}}
	if err := f.Submit(r); err != nil {
		fmt.Println(err)
		return
	}
	p, why := r.EffectivePolicy()
	fmt.Println(p, why, <-results)
	// Output: pool none <nil>
}

// An Appender gathers writes of any size into aligned chunks written
// behind; SyncData makes everything written so far durable (concurrent
// syncs share one), and Close trims the padding and syncs.
func ExampleFile_Appender() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "wal")
	f, _ := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, nil)
	defer f.Close()

	w, err := f.Appender(0, 0, 0) // from offset 0, default chunk and depth
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := 0; i < 3; i++ {
		fmt.Fprintf(w, "record %d\n", i) // Write copies: the slice is the caller's again
		if err := w.SyncData(); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println(w.Size(), w.Close())
	b, _ := os.ReadFile(path)
	fmt.Print(string(b))
	// Output:
	// 27 <nil>
	// record 0
	// record 1
	// record 2
}

// ReadAhead reads a file sequentially with a window of direct reads in
// flight ahead of it, for scans: the kernel's read-ahead does nothing for
// O_DIRECT.
func ExampleFile_ReadAhead() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "table")
	os.WriteFile(path, make([]byte, 3<<20+123), 0o600)
	f, _ := dio.Open(path, os.O_RDONLY, 0, nil)
	defer f.Close()

	r, err := f.ReadAhead(0, 256<<10, 4) // 256 KiB reads, 4 in flight
	if err != nil {
		fmt.Println(err)
		return
	}
	n, err := io.Copy(io.Discard, r)
	fmt.Println(n, err, r.Close())
	// Output: 3145851 <nil> <nil>
}

// Capabilities says what direct I/O on the file needs and costs: the
// alignment that makes I/O zero-copy, untorn-write limits, the device and
// its cache, and which backend serves the file.
func ExampleFile_Capabilities() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	f, _ := dio.Open(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	defer f.Close()

	c, err := f.Capabilities()
	if err != nil {
		fmt.Println(err)
		return
	}
	// The numbers depend on the machine; c.String() prints them all.
	zeroCopy := c.OffsetAlignment > 0 && c.MemAlignment > 0 && c.MaxIOSize >= c.OffsetAlignment
	fmt.Println(zeroCopy, c.Backend != "")
	// Output: true true
}

// Files opened with one Engine share its ring, owner goroutine and
// workers; the engine's options are its own type, so a File option cannot
// be given to it. Close the engine after its files.
func ExampleNewEngine() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	eng, err := dio.NewEngine(&dio.EngineOptions{QueueDepth: 64})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer eng.Close()
	for _, name := range []string{"a", "b"} {
		f, err := dio.Open(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{Engine: eng})
		if err != nil {
			fmt.Println(err)
			return
		}
		buf, _ := ring.Alloc(4096) // aligned: the write goes through the engine's ring
		copy(buf, name)
		f.WriteAt(buf, 0)
		ring.Free(buf)
		f.Close() // does not close the shared engine
	}
	st := eng.Stats() // a snapshot
	fmt.Println(st.Submitted > 0, st.Inflight)
	// Output: true 0
}
