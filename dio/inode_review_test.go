//go:build linux

package dio_test

// Regression tests from the review of the inode's lock model (issue 21).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
)

// TestCloseWaitsForUnalignedWrite: an unaligned write held no reference on
// its File, so a Close ran under it, the descriptors were reused by an
// unrelated file, and the write's bytes landed there with success.
func TestCloseWaitsForUnalignedWrite(t *testing.T) {
	dir := t.TempDir()
	f, err := dio.Open(filepath.Join(dir, "f"), os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{'d'}, 100), 0)
	entered, release := holdPatch(t, f)
	werr := make(chan error, 1)
	go func() {
		_, err := f.WriteAt([]byte("0123456789"), 100)
		werr <- err
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	waitUntil(t, "Close to wait for the write's reference", func() bool { return dio.FdForTest(f) == ^uintptr(0) })
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) under an unaligned write in progress", err)
	default:
	}
	release()
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if got := preadAll(t, filepath.Join(dir, "f"), 100, 10); string(got) != "0123456789" {
		t.Fatalf("the file holds %q", got)
	}
}

// TestSyncFileKeepsSyncOnItsBufferedTail: a File opened O_DSYNC or O_SYNC
// wrote the partial sector past its end through a buffered descriptor
// opened without them: a WAL record acknowledged with no journal commit
// and no cache flush.
func TestSyncFileKeepsSyncOnItsBufferedTail(t *testing.T) {
	for _, fl := range []int{os.O_SYNC, syscall.O_DSYNC} {
		p := filepath.Join(t.TempDir(), "wal")
		f, err := dio.Open(p, os.O_RDWR|os.O_CREATE|fl, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte("record-1"), 0); err != nil { // past the end: buffered
			t.Fatal(err)
		}
		fd := dio.BufferedFdForTest(f)
		if fd <= 0 {
			t.Fatal("the write did not go through the buffered descriptor")
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
		if err != nil {
			t.Fatal(err)
		}
		var flags int64
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			}
		}
		if int(flags)&fl != fl {
			t.Errorf("opened with %#o: the buffered descriptor's flags are %#o", fl, flags)
		}
	}
}

// TestVolumeBouncedIOOnTinyPoolProgresses: on a volume every request takes
// the lock, reads too; an unaligned write took a bounce buffer per chunk
// while it held the lock exclusive, and unaligned readers held buffers
// while queued for the lock: on a 2 MiB pool the writer and readers
// stopped for good.
func TestVolumeBouncedIOOnTinyPoolProgresses(t *testing.T) {
	e := mustEngineT(t, &dio.EngineOptions{BufferMemory: 2 << 20})
	f := openVolume(t, 16<<10, 1024, dio.Options{Engine: e})
	defer f.Close()
	big := bytes.Repeat([]byte{'w'}, 6<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Add(4)
	go func() {
		defer wg.Done()
		for range 3 {
			if _, err := f.WriteAt(big, 1); err != nil {
				errs <- err
			}
		}
	}()
	for i := range 3 {
		go func() {
			defer wg.Done()
			p := make([]byte, 1<<20)
			for range 6 {
				if _, err := f.ReadAt(p, int64(1+i*4096)); err != nil && err != io.EOF {
					errs <- err
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(hangLimit()):
		t.Fatal("unaligned writes and reads of a volume on a 2 MiB pool stopped")
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestSpaceChangeFromInlineCallbackFailsFast: Truncate, Allocate,
// Preallocate and Punch take the lock exclusive; from an Inline callback
// (on the engine's owner) with a write of the file in flight they waited
// for a write only that owner could complete. They fail with EDEADLK now.
func TestSpaceChangeFromInlineCallbackFailsFast(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	for { // fill the pipe: a write to it stays in flight until it is read
		if _, err := syscall.Write(p[1], make([]byte, 4096)); err != nil {
			break
		}
	}
	o := dio.Options{EngineOptions: &dio.EngineOptions{RegisteredFiles: 2}} // a ring, whatever the device
	dio.SetSubmitHook(&o, func(r *dio.Request, sqe *ring.SQE) {
		if r.Tag == 1 {
			sqe.Fd, sqe.Off = int32(p[1]), 0
			sqe.Flags &^= ring.SQEFixedFile
		}
	})
	f := openRW(t, filepath.Join(t.TempDir(), "k"), &o)
	stuck := &dio.Request{Op: dio.Write, Buf: relBuf(t, 4096), Policy: completion.Pool, Tag: 1}
	if err := f.Submit(stuck); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	r := &dio.Request{Op: dio.Write, Off: 8192, Buf: relBuf(t, 4096), Policy: completion.Inline,
		Callback: func(*dio.Request) { got <- f.Preallocate(0, 1<<20) }}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, syscall.EDEADLK) {
			t.Fatalf("Preallocate from an Inline callback with a write in flight: %v, want EDEADLK", err)
		}
	case <-time.After(hangLimit()):
		t.Fatal("Preallocate from an Inline callback waits for the owner that runs it")
	}
	drain := make([]byte, 1<<20)
	for {
		if _, err := syscall.Read(p[0], drain); err != nil {
			break
		}
	}
	stuck.Wait(context.Background())
	r.Wait(context.Background())
}

// TestNewStreamNeverWaitsForRoom: a stream waited for room in the buffer
// memory, so a goroutine holding an Appender that opened a ReadAhead on a
// full pool (or a merge opening its 64th input on the default one) waited
// for itself. A stream now takes what there is: a smaller window, or none
// (synchronous reads, a chunk in Go memory).
func TestNewStreamNeverWaitsForRoom(t *testing.T) {
	e := mustEngineT(t, &dio.EngineOptions{BufferMemory: 2 << 20})
	dir := t.TempDir()
	src := openRW(t, filepath.Join(dir, "src"), &dio.Options{Engine: e})
	want := relBuf(t, 1<<20)
	fillRand(newRand(3), want)
	src.WriteAt(want, 0)
	log := openRW(t, filepath.Join(dir, "log"), &dio.Options{Engine: e})
	w, err := log.Appender(0, 1<<20, 4)
	if err != nil {
		t.Fatal(err)
	}
	var held []io.ReadCloser
	for i := range 8 { // far more than 2 MiB of windows
		rd, err := src.ReadAhead(int64(i)*100, 1<<20, 4)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, rd)
	}
	w2, err := log.Appender(0, 1<<20, 4) // no room left: a chunk in Go memory
	if err != nil {
		t.Fatal(err)
	}
	for i, rd := range held {
		got, err := io.ReadAll(rd)
		if err != nil || !bytes.Equal(got, want[i*100:]) {
			t.Fatalf("reader %d: %d bytes, %v", i, len(got), err)
		}
		rd.Close()
	}
	w.Close()
	w2.Write([]byte("second appender"))
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := preadAll(t, log.Name(), 0, 100); string(got) != "second appender" {
		t.Fatalf("the log holds %q", got)
	}
}

// TestCloseFromInlineCallbackOnPreadEngine: on the pread backend an Inline
// callback runs on a worker, and a Close there waited for reads queued
// behind that worker.
func TestCloseFromInlineCallbackOnPreadEngine(t *testing.T) {
	restore := dio.RefuseRingForTest(syscall.EPERM)
	f, err := dio.Open(filepath.Join(t.TempDir(), "c"), os.O_RDWR|os.O_CREATE, 0o600,
		&dio.Options{EngineOptions: &dio.EngineOptions{Workers: 1}})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(relBuf(t, 64<<10), 0)
	var once atomic.Bool
	reqs := make([]*dio.Request, 8)
	for i := range reqs {
		reqs[i] = &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: relBuf(t, 4096), Policy: completion.Inline,
			Callback: func(*dio.Request) {
				if once.CompareAndSwap(false, true) {
					f.Close()
				}
			}}
		if err := f.Submit(reqs[i]); err != nil && !errors.Is(err, dio.ErrClosed) {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		for _, r := range reqs {
			r.Wait(context.Background())
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(hangLimit()):
		t.Fatal("Close from an Inline callback on a pread engine waits for itself")
	}
	waitUntil(t, "the deferred close", func() bool { return dio.ClosedForTest(f) })
}
