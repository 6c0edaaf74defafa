//go:build linux

package dio_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/faultring"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

func openRW(t *testing.T, path string, o *dio.Options) *dio.File {
	t.Helper()
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestWriterAppendsWritesOfAnySize: writes of 1 byte to several chunks,
// syncs at random points; before Close the file holds every byte and
// zeroes past them, after Close exactly the bytes.
func TestWriterAppendsWritesOfAnySize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f := openRW(t, path, nil)
	w, err := f.Appender(0, 64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	rnd := newRand(uint64(envInt("UIRINGDIO_SEED", 3)))
	var want []byte
	for i := range 600 {
		n := rnd.IntN(3000)
		if i%50 == 0 {
			n = 200000 // across chunks
		}
		p := make([]byte, n)
		fillRand(rnd, p)
		if got, err := w.Write(p); got != n || err != nil {
			t.Fatalf("Write %d = %d, %v", n, got, err)
		}
		want = append(want, p...)
		if w.Size() != int64(len(want)) {
			t.Fatalf("Size %d, want %d", w.Size(), len(want))
		}
		if rnd.IntN(10) == 0 {
			if err := w.SyncData(); err != nil {
				t.Fatal(err)
			}
			disk, _ := os.ReadFile(path)
			if len(disk) < len(want) || !bytes.Equal(disk[:len(want)], want) {
				t.Fatalf("after SyncData the file (%d bytes) lacks what was written (%d)", len(disk), len(want))
			}
			if !bytes.Equal(disk[len(want):], make([]byte, len(disk)-len(want))) {
				t.Fatal("past the logical size the file holds other than zero padding")
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	disk, _ := os.ReadFile(path)
	if !bytes.Equal(disk, want) {
		t.Fatalf("after Close the file is %d bytes, want exactly the %d written", len(disk), len(want))
	}
	if _, err := w.Write([]byte{1}); !errors.Is(err, dio.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}

// TestWriterOnReusedPreallocatedFile: a recycled, preallocated log is
// written from 0 without truncation: a sync leaves the old bytes past the
// padding and the preallocation in place; Close cuts the file to Size.
func TestWriterOnReusedPreallocatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal")
	old := bytes.Repeat([]byte{0xEE}, 1<<20)
	writeSynced(t, path, old)
	f := openRW(t, path, nil)
	if err := f.Preallocate(0, 4<<20); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Stat(path, &st)
	blocks := st.Blocks
	w, err := f.Appender(0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := bytes.Repeat([]byte("record "), 150)
	if _, err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.SyncData(); err != nil {
		t.Fatal(err)
	}
	disk, _ := os.ReadFile(path)
	a := int(dio.AlignForTest(f).Offset)
	pad := (len(rec) + a - 1) / a * a
	if len(disk) != len(old) || !bytes.Equal(disk[:len(rec)], rec) || !bytes.Equal(disk[len(rec):pad], make([]byte, pad-len(rec))) ||
		!bytes.Equal(disk[pad:], old[pad:]) {
		t.Fatalf("after a sync of a reused file: %d bytes (want %d), record, zero padding to %d, the old bytes after", len(disk), len(old), pad)
	}
	unix.Stat(path, &st)
	if st.Blocks < blocks {
		t.Fatalf("the sync freed preallocated space: %d blocks, was %d", st.Blocks, blocks)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if disk, _ := os.ReadFile(path); !bytes.Equal(disk, rec) {
		t.Fatalf("after Close the file is %d bytes, want the %d of the record", len(disk), len(rec))
	}
}

// TestWriterAppendsFromAnUnalignedEnd: a Writer that starts at an
// unaligned size keeps the bytes before it.
func TestWriterAppendsFromAnUnalignedEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "append")
	head := bytes.Repeat([]byte("head"), 250) // 1000 bytes
	writeSynced(t, path, head)
	f := openRW(t, path, nil)
	w, err := f.Appender(int64(len(head)), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tail := bytes.Repeat([]byte("tail"), 3000)
	w.Write(tail)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if disk, _ := os.ReadFile(path); !bytes.Equal(disk, append(head, tail...)) {
		t.Fatal("appending from an unaligned end lost bytes")
	}
}

// TestWriterGroupCommit: concurrent SyncData calls share syncs: far fewer
// fdatasyncs than calls, and each caller's bytes are in the file when its
// call returns.
func TestWriterGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "group")
	f := openRW(t, path, nil)
	w, err := f.Appender(0, 16<<10, 0)
	if err != nil {
		t.Fatal(err)
	}
	syncs0 := f.Engine().Stats().Syncs // the engine is shared
	const writers, each = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := bytes.Repeat([]byte{byte(g + 1)}, 300+g*37)
			for range each {
				if _, err := w.Write(rec); err != nil {
					errs <- err
					return
				}
				end := w.Size()
				if err := w.SyncData(); err != nil {
					errs <- err
					return
				}
				if st, err := os.Stat(path); err != nil || st.Size() < end {
					errs <- errors.New("SyncData returned before the bytes were in the file")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := f.Engine().Stats().Syncs - syncs0
	if syncs >= writers*each {
		t.Fatalf("%d syncs for %d SyncData calls: no group commit", syncs, writers*each)
	}
	t.Logf("%d SyncData calls, %d fdatasyncs", writers*each, syncs)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWriterErrorsAreSticky: a chunk whose write fails makes every later
// Write, Sync and Close fail with that error.
func TestWriterErrorsAreSticky(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sticky")
	var fail bool
	var mu sync.Mutex
	f := openRW(t, path, wrapped(func(r ringhook.Ring) ringhook.Ring {
		return faultring.New(r, faultring.Config{Decide: func(c faultring.CQE) faultring.Fault {
			mu.Lock()
			defer mu.Unlock()
			if fail && c.SQE.Op == ring.OpWrite {
				return faultring.EIO
			}
			return faultring.None
		}})
	}))
	w, err := f.Appender(0, 4096, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{7}, 5000)
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.SyncData(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	w.Write(p) // the chunk's write fails behind
	if err := w.SyncData(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("SyncData after a failed chunk: %v, want EIO", err)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if _, err := w.Write(p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Write after the failure: %v, want the sticky EIO", err)
	}
	if err := w.SyncData(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("SyncData after the failure: %v, want the sticky EIO", err)
	}
	if err := w.Close(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Close after the failure: %v, want the sticky EIO", err)
	}
}

// TestWriterENOSPC: appending until the file system is full fails with
// ENOSPC, stickily, and what earlier syncs acknowledged is intact.
func TestWriterENOSPC(t *testing.T) {
	fs := mountLoop(t, "ext4", 16<<20, 4096)
	path := filepath.Join(fs.Dir, "full")
	f := openRW(t, path, nil)
	w, err := f.Appender(0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rnd := newRand(5)
	var acked []byte
	var all []byte
	var werr error
	for werr == nil {
		p := make([]byte, 500000)
		fillRand(rnd, p)
		if _, werr = w.Write(p); werr != nil {
			break
		}
		all = append(all, p...)
		if werr = w.SyncData(); werr == nil {
			acked = append(acked[:0], all...)
		}
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("appending to a full file system: %v, want ENOSPC", werr)
	}
	if _, err := w.Write([]byte{1}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write after ENOSPC: %v, want the sticky ENOSPC", err)
	}
	w.Close()
	disk, _ := os.ReadFile(path)
	if len(disk) < len(acked) || !bytes.Equal(disk[:len(acked)], acked) {
		t.Fatalf("after ENOSPC the file (%d bytes) lost synced bytes (%d acknowledged)", len(disk), len(acked))
	}
}

// TestAsyncSyncAndPreallocate: Fsync, Fdatasync and Preallocate go through
// the engine as requests, under each completion policy, on the ring and on
// the pread backend (tmpfs).
func TestAsyncSyncAndPreallocate(t *testing.T) {
	for _, dir := range []string{t.TempDir(), fsDirs(t)["tmpfs"](t)} {
		path := filepath.Join(dir, "ctl")
		f := openRW(t, path, nil)
		if _, err := f.WriteAt(relBuf(t, 8192), 0); err != nil {
			t.Fatal(err)
		}
		q := &completion.Queue{}
		for _, p := range []completion.Policy{completion.Inline, completion.Pool, completion.Caller, completion.Wait} {
			for _, op := range []dio.Op{dio.Fsync, dio.Fdatasync} {
				r := &dio.Request{Op: op, Policy: p, Queue: q}
				if err := f.Submit(r); err != nil {
					t.Fatalf("%v %v: Submit: %v", op, p, err)
				}
				if n, err := r.Wait(context.Background()); n != 0 || err != nil {
					t.Fatalf("%v %v: %d, %v", op, p, n, err)
				}
			}
		}
		var before unix.Stat_t
		unix.Stat(path, &before)
		r := &dio.Request{Op: dio.Preallocate, Off: 1 << 20, Len: 4 << 20, Policy: completion.Pool}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		var after unix.Stat_t
		unix.Stat(path, &after)
		if after.Size != before.Size || after.Blocks < before.Blocks+(4<<20)/512 {
			t.Fatalf("Preallocate: size %d -> %d, blocks %d -> %d", before.Size, after.Size, before.Blocks, after.Blocks)
		}
		if err := f.Submit(&dio.Request{Op: dio.Preallocate, Off: 0, Len: 0}); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("Preallocate of nothing: %v, want EINVAL", err)
		}
	}
}

// TestAppenderWritesWhileSyncing: a sync held the Appender's lock across
// its device round trip, so every Write waited for the flush. Now a round
// copies the tail and lets go: here the round's write is held in flight
// (sent to a full pipe) and Writes still return.
func TestAppenderWritesWhileSyncing(t *testing.T) {
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
	var hold atomic.Bool
	held := make(chan struct{}, 1)
	o := dio.Options{EngineOptions: &dio.EngineOptions{RegisteredFiles: 2}} // a ring: no direct pread
	dio.SetSubmitHook(&o, func(r *dio.Request, sqe *ring.SQE) {
		if hold.CompareAndSwap(true, false) {
			sqe.Fd, sqe.Off = int32(p[1]), 0
			sqe.Flags &^= ring.SQEFixedFile
			held <- struct{}{}
		}
	})
	f := openRW(t, filepath.Join(t.TempDir(), "log"), &o)
	w, err := f.Appender(0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("first record"))
	hold.Store(true)
	synced := make(chan error, 1)
	go func() { synced <- w.SyncData() }()
	<-held // the round's write is in flight, held
	wrote := make(chan error, 1)
	go func() {
		for range 100 {
			if _, err := w.Write([]byte("during the sync")); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangLimit()):
		t.Fatal("Write waits for a sync's device round trip")
	}
	drain := make([]byte, 1<<20)
	for {
		if _, err := syscall.Read(p[0], drain); err != nil {
			break
		}
	}
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
