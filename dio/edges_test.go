//go:build linux

package dio_test

// Inputs and edges (issue 20): the calls a database makes by mistake or at
// the limits get an error, never a panic, a false success or a hang.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
)

// TestRangesPastInt64FailLikeOSFile pins the overflow defect: off+len
// wrapped in the pieces loop and the bounce path, so a write at
// MaxInt64-100 returned 4096, nil having written nothing and a read at
// 0x7ffffffffffff000 reported 8 KiB of stale memory as data. Each range
// now fails (EINVAL where off+len overflows, EFBIG where the write's
// aligned end is past what an int64 holds) as os.File fails it, and
// moves no byte.
func TestRangesPastInt64FailLikeOSFile(t *testing.T) {
	dir := t.TempDir()
	f := openRW(t, filepath.Join(dir, "dio"), nil)
	of, err := os.OpenFile(filepath.Join(dir, "os"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	buf := relBuf(t, 8192)
	for _, c := range []struct {
		name  string
		write bool
		off   int64
		n     int
	}{
		{"aligned write wraps", true, math.MaxInt64 - 100, 4096},
		{"aligned read wraps", false, 0x7ffffffffffff000, 8192},
		{"unaligned write wraps", true, math.MaxInt64 - 5, 10},
		{"unaligned read wraps", false, math.MaxInt64 - 5, 10},
		{"write ends at MaxInt64", true, math.MaxInt64 - 4096, 4096},
		{"negative write", true, -4096, 4096},
		{"negative read", false, -1, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := buf[:c.n]
			for i := range p {
				p[i] = 0xa5
			}
			var n, on int
			var err, oerr error
			if c.write {
				n, err = f.WriteAt(p, c.off)
				on, oerr = of.WriteAt(p, c.off)
			} else {
				n, err = f.ReadAt(p, c.off)
				on, oerr = of.ReadAt(make([]byte, c.n), c.off)
			}
			if oerr == nil || oerr == io.EOF {
				t.Fatalf("os.File: %d, %v: the case does not fail for os.File", on, oerr)
			}
			if err == nil || n != 0 {
				t.Fatalf("dio = %d, %v; os.File = %d, %v", n, err, on, oerr)
			}
			if e := errnoOf(err); e != syscall.EINVAL && e != syscall.EFBIG {
				t.Fatalf("dio error %v, want EINVAL or EFBIG", err)
			}
			if s := fileSize(t, f.Name()); s != 0 {
				t.Fatalf("the file is %d bytes after a failed request", s)
			}
		})
	}
	// The same for asynchronous requests, a stream and the size calls.
	r := &dio.Request{Op: dio.Write, Off: math.MaxInt64 - 4095, Buf: buf[:4096]}
	if err := f.Submit(r); errnoOf(err) != syscall.EINVAL {
		t.Fatalf("Submit of a wrapping write: %v", err)
	}
	r = &dio.Request{Op: dio.Preallocate, Off: math.MaxInt64 - 10, Len: 4096}
	if err := f.Submit(r); errnoOf(err) != syscall.EFBIG {
		t.Fatalf("Submit of a wrapping Preallocate: %v", err)
	}
	if _, err := f.Appender(math.MaxInt64-4096, 0, 0); errnoOf(err) != syscall.EFBIG {
		t.Fatalf("Appender near MaxInt64: %v", err)
	}
	if err := f.Allocate(math.MaxInt64-10, 4096); errnoOf(err) != syscall.EFBIG {
		t.Fatalf("Allocate wrapping: %v", err)
	}
	if err := f.Punch(math.MaxInt64-10, 4096); errnoOf(err) != syscall.EFBIG {
		t.Fatalf("Punch wrapping: %v", err)
	}
	if err := f.Preallocate(-1, 4096); errnoOf(err) != syscall.EINVAL {
		t.Fatalf("Preallocate at -1: %v", err)
	}
	rd, err := f.ReadAhead(math.MaxInt64-4096, 0, 0)
	if err != nil {
		t.Fatalf("ReadAhead near MaxInt64: %v", err)
	}
	if n, err := rd.Read(buf[:100]); n != 0 || err != io.EOF {
		t.Fatalf("ReadAhead past the last block: %d, %v", n, err)
	}
	rd.Close()
}

// TestBadWriteLeavesBufferPoolUsable pins the panic that wedged the
// process: a 4 KiB WriteAt at MaxInt64-4096 asked the bounce pool for a
// size class past the last one and panicked holding its mutex, so every
// later bounced I/O hung. It fails now, and the pool serves the next
// unaligned read.
func TestBadWriteLeavesBufferPoolUsable(t *testing.T) {
	f := openRW(t, filepath.Join(t.TempDir(), "f"), nil)
	if _, err := f.WriteAt(make([]byte, 4096), math.MaxInt64-4096); err == nil {
		t.Fatal("WriteAt at MaxInt64-4096 succeeded")
	}
	if _, err := f.WriteAt([]byte("hello, world"), 3); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p := make([]byte, 5)
		if n, err := f.ReadAt(p, 3); n != 5 || err != nil || string(p) != "hello" {
			t.Errorf("unaligned ReadAt after the bad write = %d, %v, %q", n, err, p)
		}
	}()
	select {
	case <-done:
	case <-time.After(hangLimit()):
		t.Fatal("an unaligned ReadAt hangs after a bad WriteAt")
	}
}

// TestOpenRefusesAppend pins O_APPEND: Linux writes every write of such a
// file at its end, so WriteAt(p, 0) landed at the end with success.
func TestOpenRefusesAppend(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	_, err := dio.Open(p, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600, nil)
	if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "O_APPEND") {
		t.Fatalf("Open with O_APPEND: %v", err)
	}
}

// TestWriteOnlyFileTakesUnalignedWrites pins O_WRONLY: an unaligned
// WriteAt, or an Appender from an unaligned offset, failed with EBADF (the
// read-modify-write must read), where os.File succeeds. Reads of the
// write-only File still fail with EBADF.
func TestWriteOnlyFileTakesUnalignedWrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "wo")
	f, err := dio.Open(p, os.O_WRONLY|os.O_CREATE, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte("a"), 5000), 0); err != nil {
		t.Fatalf("unaligned WriteAt on O_WRONLY: %v", err)
	}
	if _, err := f.WriteAt([]byte("bcd"), 4095); err != nil {
		t.Fatalf("unaligned WriteAt inside on O_WRONLY: %v", err)
	}
	w, err := f.Appender(5000, 0, 0)
	if err != nil {
		t.Fatalf("Appender at an unaligned offset on O_WRONLY: %v", err)
	}
	w.Write([]byte("tail"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte("a"), 5000), "tail"...)
	copy(want[4095:], "bcd")
	if got := preadAll(t, p, 0, 6000); !bytes.Equal(got, want) {
		t.Fatalf("file holds %d bytes, not what was written", len(got))
	}
	if _, err := f.ReadAt(make([]byte, 10), 0); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("ReadAt on a write-only File: %v, want EBADF", err)
	}
	if err := f.Submit(&dio.Request{Op: dio.Read, Buf: relBuf(t, 4096)}); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("Submit of a read on a write-only File: %v, want EBADF", err)
	}
	if _, err := f.ReadAhead(0, 0, 0); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("ReadAhead on a write-only File: %v, want EBADF", err)
	}
}

// TestOpenAndCloseFromInlineCallback pins the hangs of Open and Close
// called on the engine's owner: with RegisteredFiles, registering or
// unregistering a file was a command for the owner, which was running the
// callback and waited for itself; and a callback that closed its file
// while other reads of it were in flight waited for reads only the owner
// could complete.
func TestOpenAndCloseFromInlineCallback(t *testing.T) {
	dir := t.TempDir()
	t.Run("registered files", func(t *testing.T) {
		e := mustEngineT(t, &dio.EngineOptions{RegisteredFiles: 4})
		f := openRW(t, filepath.Join(dir, "a"), &dio.Options{Engine: e})
		f.WriteAt(relBuf(t, 4096), 0)
		errc := make(chan error, 1)
		r := &dio.Request{Op: dio.Read, Buf: relBuf(t, 4096), Policy: completion.Inline, Callback: func(*dio.Request) {
			g, err := dio.Open(filepath.Join(dir, "b"), os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{Engine: e})
			if err == nil {
				err = g.Close()
			}
			errc <- err
		}}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Open and Close in an Inline callback: %v", err)
			}
		case <-time.After(hangLimit()):
			t.Fatal("Open from an Inline callback hangs")
		}
		r.Wait(context.Background())
	})
	t.Run("close with reads in flight", func(t *testing.T) {
		f, err := dio.Open(filepath.Join(dir, "c"), os.O_RDWR|os.O_CREATE, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(relBuf(t, 64<<10), 0)
		const n = 16
		var closed atomic.Bool
		reqs := make([]*dio.Request, n)
		for i := range reqs {
			reqs[i] = &dio.Request{Op: dio.Read, Off: int64(i%16) * 4096, Buf: relBuf(t, 4096), Policy: completion.Inline,
				Callback: func(*dio.Request) {
					if closed.CompareAndSwap(false, true) {
						if err := f.Close(); err != nil {
							t.Errorf("Close in the callback: %v", err)
						}
					}
				}}
		}
		for _, r := range reqs {
			if err := f.Submit(r); err != nil && !errors.Is(err, dio.ErrClosed) {
				t.Fatal(err)
			}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for _, r := range reqs {
				r.Wait(context.Background())
			}
		}()
		select {
		case <-done:
		case <-time.After(hangLimit()):
			t.Fatal("Close from an Inline callback with reads in flight hangs")
		}
		waitUntil(t, "the deferred close", func() bool { return dio.ClosedForTest(f) && dio.InflightForTest(f) == 0 })
		if _, err := f.ReadAt(make([]byte, 10), 0); !errors.Is(err, dio.ErrClosed) {
			t.Fatalf("ReadAt after the callback's Close: %v", err)
		}
	})
	t.Run("own engine closed from its owner", func(t *testing.T) {
		f, err := dio.Open(filepath.Join(dir, "d"), os.O_RDWR|os.O_CREATE, 0o600,
			&dio.Options{EngineOptions: &dio.EngineOptions{RegisteredFiles: 2}})
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(relBuf(t, 4096), 0)
		errc := make(chan error, 1)
		r := &dio.Request{Op: dio.Read, Buf: relBuf(t, 4096), Policy: completion.Inline,
			Callback: func(*dio.Request) { errc <- f.Close() }}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(hangLimit()):
			t.Fatal("closing a File with an engine of its own from its owner hangs")
		}
	})
}

// TestOwnEngineFallsBackToPread pins the engine of one's own that could
// not fall back: with io_uring refused, Open with EngineOptions failed
// with "ring: setup: operation not permitted" while the default engine
// served the same file through pread. Options that need a ring still fail,
// naming the option.
func TestOwnEngineFallsBackToPread(t *testing.T) {
	restore := dio.RefuseRingForTest(syscall.EPERM)
	defer restore()
	p := filepath.Join(t.TempDir(), "own")
	f, err := dio.Open(p, os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{EngineOptions: &dio.EngineOptions{Workers: 2}})
	if err != nil {
		t.Fatalf("Open with EngineOptions and io_uring refused: %v", err)
	}
	c, _ := f.Capabilities()
	if c.Backend != "pread" || !strings.Contains(c.BackendWhy, "no io_uring") {
		t.Fatalf("backend %q (%s)", c.Backend, c.BackendWhy)
	}
	exercise(t, f)
	f.Close()
	e, err := dio.NewEngine(nil)
	if err != nil {
		t.Fatalf("NewEngine(nil) with io_uring refused: %v", err)
	}
	e.Close()
	for opt, eo := range map[string]*dio.EngineOptions{
		"SQPoll":          {SQPoll: true},
		"FixedBuffers":    {FixedBuffers: 1},
		"RegisteredFiles": {RegisteredFiles: 4},
	} {
		_, err := dio.NewEngine(eo)
		if err == nil || !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "EngineOptions."+opt) {
			t.Errorf("NewEngine with %s and io_uring refused: %v, want an error naming it", opt, err)
		}
	}
}

func mustEngineT(t *testing.T, o *dio.EngineOptions) *dio.Engine {
	t.Helper()
	e, err := dio.NewEngine(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestPanickingCallbackHoldsNothing: a Caller callback runs on the
// caller's goroutine, which may recover from its panic; dio must hold
// none of its locks or references by then, so the next unaligned write
// (which takes the inode's lock alone) and Close go through.
func TestPanickingCallbackHoldsNothing(t *testing.T) {
	f, err := dio.Open(filepath.Join(t.TempDir(), "p"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := relBuf(t, 4096)
	for _, op := range []dio.Op{dio.Write, dio.Read} {
		r := &dio.Request{Op: op, Buf: buf, Policy: completion.Caller, Callback: func(*dio.Request) { panic("callback") }}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Error("the callback's panic did not reach Wait")
				}
			}()
			r.Wait(context.Background())
		}()
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.WriteAt([]byte("abc"), 1)
		if err == nil {
			err = f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangLimit()):
		t.Fatal("an unaligned write or Close hangs after a callback panicked")
	}
}
