//go:build linux

package ring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestStructLayout(t *testing.T) {
	var s SQE
	var c CQE
	var p params
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(io_uring_sqe)", unsafe.Sizeof(s), 64},
		{"sqe.opcode", unsafe.Offsetof(s.Opcode), 0},
		{"sqe.flags", unsafe.Offsetof(s.Flags), 1},
		{"sqe.ioprio", unsafe.Offsetof(s.Ioprio), 2},
		{"sqe.fd", unsafe.Offsetof(s.Fd), 4},
		{"sqe.off", unsafe.Offsetof(s.Off), 8},
		{"sqe.addr", unsafe.Offsetof(s.Addr), 16},
		{"sqe.len", unsafe.Offsetof(s.Len), 24},
		{"sqe.rw_flags", unsafe.Offsetof(s.OpFlags), 28},
		{"sqe.user_data", unsafe.Offsetof(s.UserData), 32},
		{"sqe.buf_index", unsafe.Offsetof(s.BufIndex), 40},
		{"sqe.personality", unsafe.Offsetof(s.Personality), 42},
		{"sqe.splice_fd_in", unsafe.Offsetof(s.SpliceFdIn), 44},
		{"sqe.addr3", unsafe.Offsetof(s.Addr3), 48},
		{"sizeof(io_uring_cqe)", unsafe.Sizeof(c), 16},
		{"cqe.res", unsafe.Offsetof(c.Res), 8},
		{"cqe.flags", unsafe.Offsetof(c.Flags), 12},
		{"sizeof(io_uring_params)", unsafe.Sizeof(p), 120},
		{"params.sq_off", unsafe.Offsetof(p.SQOffset), 40},
		{"params.cq_off", unsafe.Offsetof(p.CQOffset), 80},
		{"sizeof(io_sqring_offsets)", unsafe.Sizeof(p.SQOffset), 40},
		{"sizeof(io_cqring_offsets)", unsafe.Sizeof(p.CQOffset), 40},
		{"sizeof(io_uring_getevents_arg)", unsafe.Sizeof(getEventsArg{}), 24},
		{"sizeof(io_uring_probe)", unsafe.Sizeof(probeHeader{}), 16},
		{"sizeof(io_uring_probe_op)", unsafe.Sizeof(probeOp{}), 8},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestSizing(t *testing.T) {
	for _, tc := range []struct {
		name           string
		p              Params
		wantSQ, wantCQ uint32
		wantErr        error
	}{
		{"default", Params{}, 128, 256, nil},
		{"one", Params{Entries: 1}, 1, 2, nil},
		{"round up", Params{Entries: 3}, 4, 8, nil},
		{"round up 100", Params{Entries: 100}, 128, 256, nil},
		{"cq size", Params{Entries: 8, CQEntries: 100}, 8, 128, nil},
		{"max", Params{Entries: MaxEntries}, MaxEntries, MaxCQEntries, nil},
		{"above max", Params{Entries: MaxEntries + 1}, 0, 0, syscall.EINVAL},
		{"above max clamped", Params{Entries: MaxEntries + 1, Flags: SetupClamp}, MaxEntries, MaxCQEntries, nil},
		{"cq below sq", Params{Entries: 16, CQEntries: 8}, 0, 0, syscall.EINVAL},
		{"cq above max", Params{Entries: 16, CQEntries: MaxCQEntries + 1}, 0, 0, syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.p)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("New(%+v) = %v, want %v", tc.p, err, tc.wantErr)
				}
				if err != nil && len(err.Error()) < 20 {
					t.Errorf("error %q does not explain itself", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.SQEntries() != tc.wantSQ || r.CQEntries() != tc.wantCQ {
				t.Errorf("sizes = %d/%d, want %d/%d", r.SQEntries(), r.CQEntries(), tc.wantSQ, tc.wantCQ)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	p, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe: %s", p)
	for f, err := range p.SetupErrors {
		t.Logf("setup flag %s refused: %v", f, err)
	}
	if err := p.Require(OpRead, OpWrite, OpReadFixed, OpWriteFixed, OpFsync, OpNop); err != nil {
		t.Fatal(err)
	}
	if p.Supports(255) {
		t.Error("opcode 255 reported supported")
	}
	if err := p.Require(Op(250)); !errors.Is(err, ErrUnsupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Require(250) = %v, want ErrUnsupported", err)
	}
	if p.Features&FeatNoDrop == 0 {
		t.Error("kernel without FEAT_NODROP: CQ overflow could lose completions")
	}
}

// ---- helpers ----

const blk = 4096

func directFile(t testing.TB, dir string) (*os.File, string) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "data")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_DIRECT, 0o600)
	if err != nil {
		t.Fatalf("open O_DIRECT: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

func alloc(t testing.TB, n int) []byte {
	t.Helper()
	b, err := Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Free(b) })
	return b
}

func pattern(b []byte, seed int) {
	for i := range b {
		b[i] = byte(i*7 + seed*13 + i/251)
	}
}

// reap collects exactly n CQEs, failing the test rather than hanging.
func reap(t testing.TB, r *Ring, n int) []CQE {
	t.Helper()
	var out []CQE
	buf := make([]CQE, 64)
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n {
		if time.Now().After(deadline) {
			t.Fatalf("reaped %d of %d CQEs before the deadline", len(out), n)
		}
		if _, err := r.WaitTimeout(1, 100*time.Millisecond); err != nil && !errors.Is(err, ErrTimeout) {
			t.Fatalf("wait: %v", err)
		}
		k, err := r.Peek(buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:k]...)
	}
	return out
}

func mustSQE(t testing.TB, r *Ring) *SQE {
	t.Helper()
	s := r.GetSQE()
	if s == nil {
		t.Fatal("SQ full")
	}
	return s
}

// submitOne submits what is prepared and returns the single CQE.
func submitOne(t testing.TB, r *Ring) CQE {
	t.Helper()
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	c := reap(t, r, 1)
	return c[0]
}

// ---- the opcode matrix ----

type matrixCase struct {
	sqpoll, fixedBufs, regFiles bool
}

func (m matrixCase) String() string {
	s := "plain"
	if m.sqpoll {
		s = "sqpoll"
	}
	if m.fixedBufs {
		s += "/fixedbufs"
	} else {
		s += "/bufs"
	}
	if m.regFiles {
		s += "/regfiles"
	} else {
		s += "/fds"
	}
	return s
}

func TestOpcodes(t *testing.T) {
	for _, sq := range []bool{false, true} {
		for _, fb := range []bool{false, true} {
			for _, rf := range []bool{false, true} {
				m := matrixCase{sq, fb, rf}
				t.Run(m.String(), func(t *testing.T) { testOpcodes(t, m) })
			}
		}
	}
}

func testOpcodes(t *testing.T, m matrixCase) {
	p := Params{Entries: 16}
	if m.sqpoll {
		p.Flags |= SetupSQPoll
		p.SQThreadIdle = 50 * time.Millisecond
	}
	r, err := New(p)
	if err != nil {
		if m.sqpoll {
			t.Skipf("SQPOLL ring not available here: %v", err)
		}
		t.Fatal(err)
	}
	defer r.Close()
	f, path := directFile(t, "")
	const size = 16 * blk
	const half = size / 2
	wbuf, rbuf := alloc(t, size), alloc(t, size)
	if m.fixedBufs {
		if err := r.RegisterBuffers([][]byte{wbuf, rbuf}); err != nil {
			t.Fatal(err)
		}
	}
	fd := int32(f.Fd())
	if m.regFiles {
		if err := r.RegisterFiles([]int32{-1, fd}); err != nil {
			t.Fatal(err)
		}
		fd = 1
	}
	prep := func(s *SQE) *SQE {
		if m.regFiles {
			s.SetFixedFile()
		}
		return s
	}
	check := func(what string, c CQE, want int32) {
		t.Helper()
		if c.Res != want {
			t.Fatalf("%s: res %d (%v), want %d", what, c.Res, r.Err(c.Res), want)
		}
	}

	// fallocate the file to its size first (mode 0 allocates and extends).
	s := mustSQE(t, r)
	s.PrepFallocate(fd, 0, 0, size)
	prep(s)
	check("fallocate", submitOne(t, r), 0)
	if st, _ := f.Stat(); st.Size() != size {
		t.Fatalf("size after fallocate = %d, want %d", st.Size(), size)
	}

	// write: half with write (or write_fixed), half with writev, then fdatasync.
	pattern(wbuf, 1)

	s = mustSQE(t, r)
	if m.fixedBufs {
		s.PrepWriteFixed(fd, wbuf[:half], 0, 0)
	} else {
		s.PrepWrite(fd, wbuf[:half], 0)
	}
	prep(s).UserData = 1
	check("write", submitOne(t, r), half)
	iov := make([]unix.Iovec, 2)
	iov[0].Base, iov[1].Base = &wbuf[half], &wbuf[half+blk]
	iov[0].SetLen(blk)
	iov[1].SetLen(half - blk)
	s = mustSQE(t, r)
	s.PrepWritev(fd, iov, uint64(half))
	prep(s)
	check("writev", submitOne(t, r), half)
	s = mustSQE(t, r)
	s.PrepFsync(fd, FsyncDatasync)
	prep(s)
	check("fdatasync", submitOne(t, r), 0)
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, wbuf) {
		t.Fatal("bytes on disk differ from what was written")
	}

	// read back: first half with read (or read_fixed), second with readv.
	s = mustSQE(t, r)
	if m.fixedBufs {
		s.PrepReadFixed(fd, rbuf[:half], 0, 1)
	} else {
		s.PrepRead(fd, rbuf[:half], 0)
	}
	prep(s)
	check("read", submitOne(t, r), half)
	iov[0].Base, iov[1].Base = &rbuf[half], &rbuf[half+3*blk]
	iov[0].SetLen(3 * blk)
	iov[1].SetLen(half - 3*blk)
	s = mustSQE(t, r)
	s.PrepReadv(fd, iov, uint64(half))
	prep(s)
	check("readv", submitOne(t, r), half)
	if !bytes.Equal(rbuf, wbuf) {
		t.Fatal("read back differs from what was written")
	}

	// nop, timeout, and a linked read guarded by a link_timeout that must
	// not fire.
	s = mustSQE(t, r)
	s.PrepNop()
	s.UserData = 77
	if c := submitOne(t, r); c.Res != 0 || c.UserData != 77 {
		t.Fatalf("nop: %+v", c)
	}
	ts := unix.NsecToTimespec(int64(time.Millisecond))
	s = mustSQE(t, r)
	s.PrepTimeout(&ts, 0, 0)
	check("timeout", submitOne(t, r), -int32(syscall.ETIME))
	long := unix.NsecToTimespec(int64(10 * time.Second))
	s = mustSQE(t, r)
	s.PrepRead(fd, rbuf[:blk], 0)
	prep(s).SetFlags(SQEIOLink)
	s.UserData = 10
	s = mustSQE(t, r)
	s.PrepLinkTimeout(&long, 0)
	s.UserData = 11
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	for _, c := range reap(t, r, 2) {
		switch c.UserData {
		case 10:
			check("linked read", c, blk)
		case 11:
			check("link_timeout of a read that finished", c, -int32(syscall.ECANCELED))
		default:
			t.Fatalf("unexpected CQE %+v", c)
		}
	}
	runtime.KeepAlive(&ts)
	runtime.KeepAlive(&long)
}

// ---- queue limits ----

func TestSQFullLosesNothing(t *testing.T) {
	r, err := New(Params{Entries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := 0; i < 8; i++ {
		s := r.GetSQE()
		if s == nil {
			t.Fatalf("SQ full after %d of 8", i)
		}
		s.PrepNop()
		s.UserData = uint64(i)
	}
	if r.GetSQE() != nil {
		t.Fatal("GetSQE returned a 9th SQE from an 8-entry ring")
	}
	if r.SQSpace() != 0 || r.Pending() != 8 {
		t.Fatalf("space %d pending %d, want 0 and 8", r.SQSpace(), r.Pending())
	}
	if n, err := r.Submit(); err != nil || n != 8 {
		t.Fatalf("Submit = %d, %v", n, err)
	}
	seen := map[uint64]bool{}
	for _, c := range reap(t, r, 8) {
		seen[c.UserData] = true
	}
	if len(seen) != 8 {
		t.Fatalf("got %d distinct completions, want 8", len(seen))
	}
	if r.GetSQE() == nil {
		t.Fatal("SQ still full after submit")
	}
}

func TestCQOverflowDeliversAll(t *testing.T) {
	r, err := New(Params{Entries: 4, CQEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const total = 100
	next := 0
	for next < total {
		for next < total {
			s := r.GetSQE()
			if s == nil {
				break
			}
			s.PrepNop()
			s.UserData = uint64(next)
			next++
		}
		if _, err := r.Submit(); err != nil {
			if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EAGAIN) {
				break // the kernel wants us to reap first: that is the point
			}
			t.Fatal(err)
		}
	}
	// More completions than CQ slots are now pending: the CQ is full and
	// the kernel holds the rest in its overflow list.
	if r.Ready() != r.CQEntries() || !r.needFlushCQ() {
		t.Fatalf("CQ did not overflow: ready %d of %d, overflow flag %v", r.Ready(), r.CQEntries(), r.needFlushCQ())
	}
	// Reap everything, submitting the rest as room appears.
	seen := make(map[uint64]int)
	buf := make([]CQE, 3)
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < total {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d completions delivered (overflow counter %d)", len(seen), total, r.Overflow())
		}
		for next < total {
			s := r.GetSQE()
			if s == nil {
				break
			}
			s.PrepNop()
			s.UserData = uint64(next)
			next++
		}
		if _, err := r.Submit(); err != nil && !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.EAGAIN) {
			t.Fatal(err)
		}
		n, err := r.Peek(buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range buf[:n] {
			seen[c.UserData]++
		}
	}
	for ud, k := range seen {
		if k != 1 || ud >= total {
			t.Fatalf("user_data %d delivered %d times", ud, k)
		}
	}
	if r.Overflow() != 0 {
		t.Errorf("kernel counted %d lost completions", r.Overflow())
	}
}

func TestLinkedWriteFsyncCancelled(t *testing.T) {
	r, err := New(Params{Entries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, _ := directFile(t, "")
	buf := alloc(t, 2*blk)
	s := mustSQE(t, r)
	s.PrepWrite(int32(f.Fd()), buf[1:blk+1], 0) // misaligned for O_DIRECT: EINVAL
	s.SetFlags(SQEIOLink)
	s.UserData = 1
	s = mustSQE(t, r)
	s.PrepFsync(int32(f.Fd()), FsyncDatasync)
	s.UserData = 2
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	for _, c := range reap(t, r, 2) {
		switch c.UserData {
		case 1:
			if !errors.Is(r.Err(c.Res), syscall.EINVAL) {
				t.Errorf("misaligned write: %v, want EINVAL", r.Err(c.Res))
			}
		case 2:
			if !errors.Is(r.Err(c.Res), syscall.ECANCELED) {
				t.Errorf("linked fdatasync: %v, want ECANCELED", r.Err(c.Res))
			}
		}
	}
}

func TestCancelInflightOneOutcome(t *testing.T) {
	r, err := New(Params{Entries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// A read from an empty pipe blocks until cancelled.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	buf := make([]byte, 64)
	long := unix.NsecToTimespec(int64(time.Hour))
	s := mustSQE(t, r)
	s.PrepRead(int32(p[0]), buf, 0)
	s.Off = ^uint64(0) // -1: current position, as pipes need
	s.UserData = 100
	s = mustSQE(t, r)
	s.PrepTimeout(&long, 0, 0)
	s.UserData = 200
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Peek(make([]CQE, 4)); n != 0 {
		t.Fatalf("%d completions before cancel", n)
	}
	for _, target := range []uint64{100, 200} {
		s = mustSQE(t, r)
		s.PrepCancel(target, 0)
		s.UserData = 1000 + target
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	count := map[uint64]int{}
	for _, c := range reap(t, r, 4) {
		count[c.UserData]++
		switch c.UserData {
		case 100, 200:
			if !errors.Is(r.Err(c.Res), syscall.ECANCELED) && !errors.Is(r.Err(c.Res), syscall.EINTR) {
				t.Errorf("cancelled op %d: %v, want ECANCELED", c.UserData, r.Err(c.Res))
			}
		case 1100, 1200:
			if c.Res != 0 && c.Res != -int32(syscall.EALREADY) {
				t.Errorf("cancel %d: %v", c.UserData, r.Err(c.Res))
			}
		}
	}
	for _, ud := range []uint64{100, 200, 1100, 1200} {
		if count[ud] != 1 {
			t.Errorf("user_data %d: %d outcomes, want exactly 1", ud, count[ud])
		}
	}
	// No stray completion later.
	if _, err := r.WaitTimeout(1, 50*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("extra completion after cancel: %v", err)
	}
	runtime.KeepAlive(&long)
	runtime.KeepAlive(buf)
}

// ---- IOPOLL on a device that cannot poll ----

func TestIOPollUnsupportedDevice(t *testing.T) {
	f, _ := directFile(t, "")
	buf := alloc(t, blk)
	if _, err := f.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	supported, why := PolledIOSupported(int(f.Fd()))
	t.Logf("polled I/O supported on %s: %v (%v)", filepath.Dir(f.Name()), supported, why)
	if !supported && !errors.Is(why, ErrUnsupported) {
		t.Errorf("PolledIOSupported's reason %v does not match ErrUnsupported", why)
	}
	r, err := New(Params{Entries: 4, Flags: SetupIOPoll})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := mustSQE(t, r)
	s.PrepRead(int32(f.Fd()), buf, 0)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	c := reap(t, r, 1)[0] // bounded: fails the test instead of hanging
	err = r.Err(c.Res)
	if supported {
		if err != nil {
			t.Fatalf("polled read on a polling device: %v", err)
		}
		return
	}
	if !errors.Is(err, ErrNoPolledIO) || !errors.Is(err, syscall.EOPNOTSUPP) || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("polled read on a device without io_poll: %v, want ErrNoPolledIO", err)
	}
	if want := "device does not support polled I/O"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

// ---- registered file slots ----

func TestUpdateFileSlot(t *testing.T) {
	r, err := New(Params{Entries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, _ := directFile(t, "")
	want := alloc(t, blk)
	pattern(want, 5)
	if _, err := f.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterFiles([]int32{-1, -1, -1}); err != nil {
		t.Fatal(err)
	}
	got := alloc(t, blk)
	s := mustSQE(t, r)
	s.PrepRead(2, got, 0)
	s.SetFixedFile()
	if c := submitOne(t, r); !errors.Is(r.Err(c.Res), syscall.EBADF) {
		t.Fatalf("read from an empty slot: %v, want EBADF", r.Err(c.Res))
	}
	if err := r.UpdateFiles(2, []int32{int32(f.Fd())}); err != nil {
		t.Fatal(err)
	}
	s = mustSQE(t, r)
	s.PrepRead(2, got, 0)
	s.SetFixedFile()
	if c := submitOne(t, r); c.Res != blk || !bytes.Equal(got, want) {
		t.Fatalf("read through updated slot: res %d, equal %v", c.Res, bytes.Equal(got, want))
	}
	if err := r.UnregisterFiles(); err != nil {
		t.Fatal(err)
	}
}

// ---- waits ----

func TestWaitTimeout(t *testing.T) {
	r, err := New(Params{Entries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := r.WaitTimeout(1, 20*time.Millisecond)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, syscall.ETIME) || n != 0 {
		t.Fatalf("WaitTimeout on an idle ring = %d, %v; want ErrTimeout", n, err)
	}
}

// TestWaitRetriesEINTR blocks a locked thread in io_uring_enter and signals
// that thread repeatedly: EINTR must never reach the caller.
func TestWaitRetriesEINTR(t *testing.T) {
	r, err := New(Params{Entries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tid := make(chan int)
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		ts := unix.NsecToTimespec(int64(300 * time.Millisecond))
		s := r.GetSQE()
		s.PrepTimeout(&ts, 0, 0)
		tid <- unix.Gettid()
		_, err := r.Wait(1)
		runtime.KeepAlive(&ts)
		done <- err
	}()
	id := <-tid
	pid := unix.Getpid()
	var sent int
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Wait returned %v after %d signals", err, sent)
			}
			if r.Ready() != 1 {
				t.Fatalf("Wait returned with %d ready, want 1", r.Ready())
			}
			if sent == 0 {
				t.Fatal("no signal was sent during the wait: the test did not exercise EINTR")
			}
			return
		case <-time.After(5 * time.Millisecond): // paces the signals; no event is waited for
			unix.Tgkill(pid, id, unix.SIGURG) // the Go runtime's own preemption signal
			sent++
		}
	}
}

func TestClosedRing(t *testing.T) {
	r, err := New(Params{Entries: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if r.GetSQE() != nil {
		t.Error("GetSQE on a closed ring")
	}
	for name, err := range map[string]error{
		"Submit":        func() error { _, err := r.Submit(); return err }(),
		"Peek":          func() error { _, err := r.Peek(make([]CQE, 1)); return err }(),
		"Wait":          func() error { _, err := r.Wait(1); return err }(),
		"RegisterFiles": r.RegisterFiles([]int32{0}),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a closed ring = %v, want ErrClosed", name, err)
		}
	}
}

func TestSetupFlagErrorsNameTheFlag(t *testing.T) {
	_, err := New(Params{Flags: SetupDeferTaskrun})
	if err == nil {
		t.Fatal("DEFER_TASKRUN without SINGLE_ISSUER accepted")
	}
	if !bytes.Contains([]byte(err.Error()), []byte("SINGLE_ISSUER")) {
		t.Errorf("error %q does not name SINGLE_ISSUER", err)
	}
}

func TestSetupFlagsWork(t *testing.T) {
	for _, f := range []SetupFlags{SetupCoopTaskrun, SetupCoopTaskrun | SetupTaskrunFlag,
		SetupSingleIssuer | SetupDeferTaskrun, SetupSubmitAll, SetupSQPoll} {
		t.Run(f.String(), func(t *testing.T) {
			runtime.LockOSThread() // SINGLE_ISSUER: submit and reap from one thread
			defer runtime.UnlockOSThread()
			r, err := New(Params{Entries: 8, Flags: f})
			if err != nil {
				t.Skipf("kernel refuses %s: %v", f, err)
			}
			defer r.Close()
			for i := 0; i < 20; i++ {
				s := mustSQE(t, r)
				s.PrepNop()
				s.UserData = uint64(i)
				if c := submitOne(t, r); c.UserData != uint64(i) {
					t.Fatalf("round %d: got %+v", i, c)
				}
			}
		})
	}
}

func TestAttachWQ(t *testing.T) {
	a, err := New(Params{Entries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Params{Entries: 4, AttachWQ: a})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Flags()&SetupAttachWQ == 0 {
		t.Error("ATTACH_WQ not set")
	}
	s := mustSQE(t, b)
	s.PrepNop()
	if c := submitOne(t, b); c.Res != 0 {
		t.Fatal(c)
	}
}

// ---- the hot path allocates nothing ----

func TestSteadyStateAllocs(t *testing.T) {
	r, err := New(Params{Entries: 32, Flags: SetupCoopTaskrun})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, _ := directFile(t, "")
	buf := alloc(t, 8*blk)
	if _, err := f.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	cqes := make([]CQE, 16)
	fd := int32(f.Fd())
	allocs := testing.AllocsPerRun(200, func() {
		for i := 0; i < 8; i++ {
			s := r.GetSQE()
			s.PrepRead(fd, buf[i*blk:(i+1)*blk], uint64(i*blk))
			s.UserData = uint64(i)
		}
		if _, err := r.SubmitAndWait(8); err != nil {
			panic(err)
		}
		got := 0
		for got < 8 {
			n, err := r.Peek(cqes)
			if err != nil {
				panic(err)
			}
			for _, c := range cqes[:n] {
				if c.Res != blk {
					panic(fmt.Sprint("short read ", c.Res))
				}
			}
			got += n
			if got < 8 {
				r.Wait(1)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("prepare+submit+reap allocates %.1f times per run, want 0", allocs)
	}
}

// TestOwnerHandoff shows the supported way to share a ring: a mutex hands
// ownership from goroutine to goroutine (the race detector checks it).
func TestOwnerHandoff(t *testing.T) {
	r, err := New(Params{Entries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]CQE, 1)
			for i := 0; i < 50; i++ {
				mu.Lock()
				s := r.GetSQE()
				s.PrepNop()
				s.UserData = uint64(g)
				r.SubmitAndWait(1)
				n, _ := r.Peek(buf)
				mu.Unlock()
				if n != 1 || buf[0].UserData != uint64(g) {
					t.Errorf("goroutine %d: got %d CQEs %+v", g, n, buf[0])
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkNop(b *testing.B) {
	r, err := New(Params{Entries: 64, Flags: SetupCoopTaskrun})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	cqes := make([]CQE, 32)
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < 32; i++ {
			r.GetSQE().PrepNop()
		}
		r.SubmitAndWait(32)
		for got := 0; got < 32; {
			n, _ := r.Peek(cqes)
			got += n
		}
	}
}

// TestFlushEnterWait: publishing and then submitting with the wait is one
// enter; the completion side may do it while another goroutine keeps
// preparing SQEs (the split ownership package dio relies on).
func TestFlushEnterWait(t *testing.T) {
	r, err := New(Params{Entries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := mustSQE(t, r)
	s.PrepNop()
	s.UserData = 7
	if p := r.Flush(); p != 1 {
		t.Fatalf("Flush = %d pending, want 1", p)
	}
	if n, err := r.EnterWait(1, 1); err != nil || n != 1 {
		t.Fatalf("EnterWait = %d, %v", n, err)
	}
	c := make([]CQE, 2)
	if n, _ := r.Peek(c); n != 1 || c[0].UserData != 7 {
		t.Fatalf("Peek = %d %+v", n, c[0])
	}

	var mu sync.Mutex
	const total = 2000
	go func() {
		for i := 0; i < total; i++ {
			for {
				mu.Lock()
				s := r.GetSQE()
				if s != nil {
					s.PrepNop()
					s.UserData = uint64(i)
					r.Flush()
				}
				mu.Unlock()
				if s != nil {
					break
				}
				runtime.Gosched()
			}
		}
	}()
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for got < total && time.Now().Before(deadline) {
		mu.Lock()
		p := r.Flush()
		mu.Unlock()
		if _, err := r.EnterWait(p, 0); err != nil {
			t.Fatal(err)
		}
		n, _ := r.Peek(c)
		got += n
	}
	if got != total {
		t.Fatalf("reaped %d of %d", got, total)
	}
}
