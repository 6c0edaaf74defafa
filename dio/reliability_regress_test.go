//go:build linux

package dio_test

// Regression tests for defects the reliability tests found, each named
// after its bug.

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
)

func openRel(t *testing.T, opts ...dio.Option) (*dio.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, opts...)
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
func TestNoIOReadLeaksInflightCount(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		off  int64
	}{{"zero-length", 0, 0}, {"past-EOF", 4096, 1 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := openRel(t)
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
func TestWaitOnPastEOFReadRunsCallbackTwice(t *testing.T) {
	f, _ := openRel(t)
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
func TestPastEOFCallerReadSkipsQueue(t *testing.T) {
	f, _ := openRel(t)
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
func TestWriteAcrossUnalignedEOFSplitsUnaligned(t *testing.T) {
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
			f, path := openRel(t)
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
			if f.Size() != tc.off+int64(tc.n) || fileSize(t, path) != tc.off+int64(tc.n) {
				t.Fatalf("Size %d, kernel %d; want %d", f.Size(), fileSize(t, path), tc.off+int64(tc.n))
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
func TestPutReadsRequestAfterWaiterReusedIt(t *testing.T) {
	f, _ := openRel(t)
	defer closeWithin(t, f, 5*time.Second)
	b := relBuf(t, 4096)
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	q1, q2 := completion.NewQueue(4), completion.NewQueue(4)
	r := dio.NewRequest()
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
