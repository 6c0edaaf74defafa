//go:build linux

package faultring

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/uringdio/uringdio/ring"
)

// setup returns a wrapped ring and a file of 64 KiB to read from.
func setup(t *testing.T, cfg Config) (*Ring, *os.File) {
	t.Helper()
	in, err := ring.New(ring.Params{Entries: 16})
	if err != nil {
		t.Skipf("io_uring unavailable: %v", err)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r := New(in, cfg)
	t.Cleanup(func() { r.Close(); f.Close() })
	return r, f
}

// readN submits n reads of 4 KiB into buf with user_data 1..n.
func readN(t *testing.T, r *Ring, f *os.File, buf []byte, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		s := r.GetSQE()
		if s == nil {
			t.Fatal("SQ full")
		}
		b := buf[i*4096 : (i+1)*4096]
		s.PrepReadAddr(int32(f.Fd()), uintptr(unsafe.Pointer(&b[0])), 4096, uint64(i*4096))
		s.UserData = uint64(i + 1)
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
}

// reap collects CQEs until want have arrived (or the wrapper and kernel
// have nothing more after a wait).
func reap(t *testing.T, r *Ring, want int) []ring.CQE {
	t.Helper()
	var all []ring.CQE
	dst := make([]ring.CQE, 8)
	for tries := 0; len(all) < want && tries < 100; tries++ {
		n, err := r.Peek(dst)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, dst[:n]...)
		if n == 0 && len(all) < want {
			if _, err := r.WaitCQTimeout(1, 1e8); err != nil && !errors.Is(err, ring.ErrTimeout) {
				t.Fatal(err)
			}
		}
	}
	return all
}

func TestNthAndInFlight(t *testing.T) {
	r, f := setup(t, Config{Nth: 2, NthFault: EIO})
	buf, _ := ring.Alloc(4 * 4096)
	defer ring.Free(buf)
	readN(t, r, f, buf, 4)
	if !r.InFlight(uintptr(unsafe.Pointer(&buf[4096])), 1) {
		t.Fatal("submitted buffer not in flight")
	}
	cqes := reap(t, r, 4)
	if len(cqes) != 4 {
		t.Fatalf("got %d CQEs", len(cqes))
	}
	eio := 0
	for _, c := range cqes {
		if c.Res == -int32(syscall.EIO) {
			eio++
		} else if c.Res != 4096 {
			t.Errorf("res %d", c.Res)
		}
	}
	if eio != 1 {
		t.Errorf("%d EIO, want 1", eio)
	}
	if r.InFlight(uintptr(unsafe.Pointer(&buf[0])), len(buf)) || r.Outstanding() != 0 {
		t.Error("buffers still in flight after every CQE")
	}
}

func TestShortDuplicateDelayDrop(t *testing.T) {
	plan := map[uint64]Fault{1: Short, 2: Duplicate, 3: Delay, 4: Drop}
	r, f := setup(t, Config{Decide: func(c CQE) Fault { return plan[c.SQE.UserData] }})
	buf, _ := ring.Alloc(4 * 4096)
	defer ring.Free(buf)
	readN(t, r, f, buf, 4)
	cqes := reap(t, r, 4) // 1, 2, 2 again, 3; 4 is lost
	seen := map[uint64]int{}
	for _, c := range cqes {
		seen[c.UserData]++
		if c.UserData == 1 && (c.Res <= 0 || c.Res >= 4096 || c.Res%512 != 0) {
			t.Errorf("short result %d", c.Res)
		}
	}
	if seen[1] != 1 || seen[2] != 2 || seen[3] != 1 || seen[4] != 0 {
		t.Errorf("CQEs per user_data: %v", seen)
	}
	st := r.Stats()
	if st.Faults[Short] != 1 || st.Faults[Duplicate] != 1 || st.Faults[Delay] != 1 || st.Faults[Drop] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSubmitErrAndSQFull(t *testing.T) {
	fail := true
	full := true
	r, f := setup(t, Config{
		SubmitErr: func(uint64) error {
			if fail {
				return syscall.EBUSY
			}
			return nil
		},
		SQFull: func() bool { return full },
	})
	if r.GetSQE() != nil {
		t.Fatal("GetSQE should pretend the SQ is full")
	}
	full = false
	buf, _ := ring.Alloc(4096)
	defer ring.Free(buf)
	s := r.GetSQE()
	s.PrepReadAddr(int32(f.Fd()), uintptr(unsafe.Pointer(&buf[0])), 4096, 0)
	s.UserData = 7
	if _, err := r.Submit(); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("Submit: %v, want EBUSY", err)
	}
	if r.Pending() != 1 {
		t.Fatalf("pending %d after a refused submit", r.Pending())
	}
	fail = false
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	if c := reap(t, r, 1); len(c) != 1 || c[0].UserData != 7 || c[0].Res != 4096 {
		t.Fatalf("CQEs %+v", c)
	}
}
