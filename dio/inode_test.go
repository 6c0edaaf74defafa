//go:build linux

package dio_test

// One owner for each inode's state (issue 21): several handles, engines
// and streams on one file at once, each write landing where it was aimed.

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
)

// holdPatch makes the next unaligned write of f stop inside its
// read-modify-write, the inode's lock held exclusive and the size read:
// entered is closed when it gets there, and it goes on once release is
// called.
func holdPatch(t *testing.T, f *dio.File) (entered <-chan struct{}, release func()) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	var once sync.Once
	dio.SetPatchHookForTest(func(g *dio.File) {
		if g == f {
			once.Do(func() {
				close(in)
				<-out
			})
		}
	})
	var rel sync.Once
	release = func() { rel.Do(func() { close(out) }) }
	t.Cleanup(func() {
		release()
		dio.SetPatchHookForTest(nil)
	})
	return in, release
}

// TestQueuedWriteLaunchesThroughItsOwnFile pins the misplaced write: a
// write queued at the shared lock was launched by the handle that released
// it, with that handle's descriptor and engine, holding only its own
// File's reference; once the releasing handle closed and its descriptor
// number was reused, the write landed in another file. Now the queued
// write goes out through its own File (its descriptor, on its engine),
// and its File's reference is held while it waits.
func TestQueuedWriteLaunchesThroughItsOwnFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shared")
	f := openRW(t, p, nil) // the default engine
	if _, err := f.WriteAt(relBuf(t, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	var gFd atomic.Uintptr
	var wrongFd atomic.Int64
	var o dio.Options
	o.EngineOptions = &dio.EngineOptions{QueueDepth: 8}
	dio.SetSubmitHook(&o, func(r *dio.Request, sqe *ring.SQE) {
		if sqe.Fd != int32(gFd.Load()) {
			wrongFd.Store(int64(sqe.Fd))
		}
	})
	g := openRW(t, p, &o) // an engine of its own
	gFd.Store(dio.FdForTest(g))

	entered, release := holdPatch(t, f)
	werr := make(chan error, 1)
	go func() {
		_, err := f.WriteAt([]byte("unaligned"), 100) // holds the lock alone
		werr <- err
	}()
	<-entered
	buf := relBuf(t, 4096)
	copy(buf, "g's write")
	r := &dio.Request{Op: dio.Write, Off: 8192, Buf: buf, Policy: completion.Pool}
	if err := g.Submit(r); err != nil {
		t.Fatal(err)
	}
	if dio.GateWaitedForTest(g) != 1 {
		t.Fatalf("g's write did not queue for the lock (waited %d)", dio.GateWaitedForTest(g))
	}
	if n := dio.InflightForTest(g); n != 1 {
		t.Fatalf("g holds %d references while its write is queued, want 1 (its Close must wait for it)", n)
	}
	before := g.Engine().Stats().Submitted
	release()
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil { // the releasing handle goes away
		t.Fatal(err)
	}
	if n, err := r.Wait(context.Background()); n != 4096 || err != nil {
		t.Fatalf("g's queued write = %d, %v", n, err)
	}
	if fd := wrongFd.Load(); fd != 0 {
		t.Fatalf("g's write went out with descriptor %d, not g's %d", fd, gFd.Load())
	}
	if g.Engine().Stats().Submitted == before {
		t.Fatal("g's write did not go through g's engine")
	}
	if got := preadAll(t, p, 8192, 9); string(got) != "g's write" {
		t.Fatalf("the file holds %q at 8192", got)
	}
	if got := preadAll(t, p, 100, 9); string(got) != "unaligned" {
		t.Fatalf("the file holds %q at 100", got)
	}
}

// TestExtendingUnalignedWriteKeepsOtherSizeChanges pins the undone size
// change: an extending unaligned write read the size once, wrote whole
// sectors past the end and truncated the file back to that size plus its
// own bytes, so a Truncate(1 MiB) of another handle in between left a
// 110-byte file, and an os.File's acknowledged 4 KiB at 8192 was cut
// away. Another dio handle's Truncate now waits for the lock; an
// os.File's write survives, because nothing truncates.
func TestExtendingUnalignedWriteKeepsOtherSizeChanges(t *testing.T) {
	data := bytes.Repeat([]byte{'d'}, 100)
	t.Run("dio handle", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		f := openRW(t, p, nil)
		f.WriteAt(data, 0)
		g := openRW(t, p, &dio.Options{EngineOptions: &dio.EngineOptions{QueueDepth: 8}})
		entered, release := holdPatch(t, f)
		werr := make(chan error, 1)
		go func() {
			_, err := f.WriteAt([]byte("0123456789"), 100)
			werr <- err
		}()
		<-entered
		terr := make(chan error, 1)
		go func() { terr <- g.Truncate(1 << 20) }()
		waitUntil(t, "the Truncate to queue for the lock", func() bool { return dio.GateWaitedForTest(g) == 1 })
		release()
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if err := <-terr; err != nil {
			t.Fatal(err)
		}
		if s := fileSize(t, p); s != 1<<20 {
			t.Fatalf("size %d after Truncate(1 MiB) and an extending write to 110, want 1 MiB", s)
		}
		if got := preadAll(t, p, 0, 110); !bytes.Equal(got, append(data, "0123456789"...)) {
			t.Fatalf("the file's first 110 bytes are %q", got)
		}
	})
	t.Run("os.File", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		f := openRW(t, p, nil)
		f.WriteAt(data, 0)
		of, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer of.Close()
		theirs := bytes.Repeat([]byte{'o'}, 4096)
		entered, release := holdPatch(t, f)
		werr := make(chan error, 1)
		go func() {
			_, err := f.WriteAt([]byte("0123456789"), 100)
			werr <- err
		}()
		<-entered
		if _, err := of.WriteAt(theirs, 8192); err != nil {
			t.Fatal(err)
		}
		release()
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if s := fileSize(t, p); s != 8192+4096 {
			t.Fatalf("size %d, want %d: the os.File's write was cut", s, 8192+4096)
		}
		if got := preadAll(t, p, 8192, 4096); !bytes.Equal(got, theirs) {
			t.Fatal("the os.File's acknowledged 4 KiB are gone")
		}
		if got := preadAll(t, p, 100, 10); string(got) != "0123456789" {
			t.Fatalf("the dio write holds %q", got)
		}
	})
}

// TestStreamsOnTinyBufferMemoryAllComplete pins the buffer-pool deadlock:
// ReadAhead took its window's buffers one at a time and waited holding
// them, so 32 readers of ReadAhead(0, 1 MiB, 4) stopped for good at 17 (two
// on a 1 MiB pool did), and every bounced I/O with them. Streams now
// reserve their buffers in one step (a smaller window where there is no
// room), and the bounced calls keep a share of their own.
func TestStreamsOnTinyBufferMemoryAllComplete(t *testing.T) {
	e := mustEngineT(t, &dio.EngineOptions{BufferMemory: 2 << 20})
	dir := t.TempDir()
	src := openRW(t, filepath.Join(dir, "src"), &dio.Options{Engine: e})
	want := relBuf(t, 4<<20)
	fillRand(newRand(21), want)
	if _, err := src.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd, err := src.ReadAhead(int64(i)*1000, 1<<20, 4)
			if err != nil {
				errs <- err
				return
			}
			defer rd.Close()
			got, err := io.ReadAll(rd)
			if err != nil || !bytes.Equal(got, want[i*1000:]) {
				errs <- err
			}
		}()
	}
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := openRW(t, filepath.Join(dir, "log"+string(rune('a'+i))), &dio.Options{Engine: e})
			w, err := f.Appender(0, 1<<20, 4)
			if err != nil {
				errs <- err
				return
			}
			for j := range 3 {
				w.Write(want[j<<20 : (j+1)<<20])
				if err := w.SyncData(); err != nil {
					errs <- err
				}
			}
			if err := w.Close(); err != nil {
				errs <- err
			}
		}()
	}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 5000)
			for j := range 20 {
				off := int64(i*20+j) * 777
				if _, err := src.ReadAt(p, off); err != nil || !bytes.Equal(p, want[off:off+5000]) {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(hangLimit()):
		t.Fatal("streams on a 2 MiB BufferMemory stopped for good")
	}
	close(errs)
	for err := range errs {
		t.Fatalf("a stream failed or read wrong bytes: %v", err)
	}
}
