//go:build linux

package engine

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/ring"
)

// testReq is a request's owner for the engine's own tests: it records the
// result at IODone.
type testReq struct {
	x     Req
	err   error
	n     int64
	ended bool
}

func (t *testReq) IODone() { t.err, t.n = t.x.Err, t.x.StopAt-t.x.Base }
func (t *testReq) Complete() {
	t.x.SetResult()
}
func (t *testReq) ReadEnded(off int64, zero bool) bool { t.ended = true; return true }
func (t *testReq) Dequeue() bool                       { return false }

func (t *testReq) launch(e *Engine, p Piece) {
	t.x.Begin(p.LogOff + int64(p.N))
	t.x.Base, t.x.Hooks, t.x.Policy = p.LogOff, t, completion.Wait
	t.x.Pieces = append(t.x.Pieces, p)
	e.Launch(&t.x, false)
}

// TestCancelOfEarlierUseMissesNextUse: a request's identity is its use
// (Gen), so a cancel aimed at an earlier use of a recycled request cannot
// reach the next one: it finds another Gen, on the caller's side and on
// the owner's.
func TestCancelOfEarlierUseMissesNextUse(t *testing.T) {
	e, err := New(Config{Entries: 8, RegFiles: 1}) // a ring, whatever the device
	if err != nil {
		t.Skipf("no ring: %v", err)
	}
	defer e.Close()
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	buf, _ := ring.Alloc(4096)
	defer ring.Free(buf)
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(make([]byte, 4096))

	var r testReq
	// The first use: a read that completes.
	r.launch(e, Piece{Fd: int32(f.Fd()), Addr: unsafe.Pointer(&buf[0]), N: 4096, Off: 0, LogOff: 0})
	first := r.x.Gen()
	e.Await(&r.x, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The next use: a read of an empty pipe, in flight until written.
	r.launch(e, Piece{Fd: int32(p[0]), Addr: unsafe.Pointer(&buf[0]), N: 8, Off: 0, LogOff: 0})
	if r.x.Gen() == first {
		t.Fatal("the next use has the first one's Gen")
	}
	e.Cancel(&r.x, first) // late: aimed at the use that completed
	e.requestCancel(&r.x, first)
	// Two turns of the owner: the second command runs after the turn that
	// took the cancel (takeQueues runs commands, then cancels).
	e.onOwner(func() {})
	e.onOwner(func() {})
	syscall.Write(p[1], []byte("12345678"))
	e.Await(&r.x, nil)
	if r.err != nil || r.n != 8 {
		t.Fatalf("the next use = %d, %v: a cancel of the earlier use reached it", r.n, r.err)
	}
	// A cancel of the use in flight does reach it.
	r.launch(e, Piece{Fd: int32(p[0]), Addr: unsafe.Pointer(&buf[0]), N: 8, Off: 0, LogOff: 0})
	e.Cancel(&r.x, r.x.Gen())
	e.Await(&r.x, nil)
	if !errors.Is(r.err, syscall.ECANCELED) {
		t.Fatalf("a cancel of the use in flight: %v, want ECANCELED", r.err)
	}
}
