//go:build linux

package faultring

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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

// prepReads prepares n reads of 4 KiB into buf, user_data 1..n, without
// submitting them.
func prepReads(t *testing.T, r *Ring, f *os.File, buf []byte, n int) {
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
}

// heldCount returns how many CQEs the wrapper holds back (delays,
// duplicates' copies) or has ready.
func (r *Ring) heldCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held) + len(r.out)
}

// reapCombined collects CQEs the way the engine's combined path waits for
// them (EnterWait with nothing to submit) until want have arrived or
// nothing more can come: no recorded SQE is outstanding and the wrapper
// holds nothing back.
func reapCombined(t *testing.T, r *Ring, want int) []ring.CQE {
	t.Helper()
	var all []ring.CQE
	dst := make([]ring.CQE, 8)
	for len(all) < want {
		n, err := r.Peek(dst)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, dst[:n]...)
		if n > 0 || len(all) >= want {
			continue
		}
		if r.Outstanding() == 0 && r.heldCount() == 0 {
			break
		}
		if _, err := r.EnterWait(0, 1); err != nil {
			t.Fatal(err)
		}
	}
	return all
}

// The wrapper once had Flush and EnterWait only in a variant most of the
// fault suite did not use, so the engine's one-system-call path (every
// synchronous call, every reaper with nothing ready) ran without faults.
// A plain New wrapper has them, and a refused enter through EnterWait
// leaves the published SQEs queued for the next one.
func TestEnterWaitRefusesLikeSubmit(t *testing.T) {
	var refuse []error
	r, f := setup(t, Config{SubmitErr: func(n uint64) error {
		if int(n) <= len(refuse) {
			return refuse[n-1]
		}
		return nil
	}})
	refuse = []error{syscall.EBUSY, syscall.EAGAIN}
	buf, _ := ring.Alloc(4096)
	defer ring.Free(buf)
	prepReads(t, r, f, buf, 1)
	if p := r.Flush(); p != 1 {
		t.Fatalf("Flush = %d, want 1", p)
	}
	if !r.InFlight(uintptr(unsafe.Pointer(&buf[0])), 1) {
		t.Fatal("Flush did not record the SQE: the canary check is blind on the combined path")
	}
	for _, want := range refuse {
		if _, err := r.EnterWait(1, 1); !errors.Is(err, want) {
			t.Fatalf("EnterWait = %v, want %v", err, want)
		}
		if p := r.Pending(); p != 1 {
			t.Fatalf("%d SQEs pending after a refused EnterWait, want 1 (still queued)", p)
		}
	}
	if _, err := r.EnterWait(1, 1); err != nil {
		t.Fatal(err)
	}
	if c := reapCombined(t, r, 1); len(c) != 1 || c[0].UserData != 1 || c[0].Res != 4096 {
		t.Fatalf("CQEs %+v", c)
	}
	if st := r.Stats(); st.SubmitErrs != 2 {
		t.Fatalf("%d refusals counted, want 2", st.SubmitErrs)
	}
}

// SubmitErrRate refuses enters at random on the combined path too, and
// every SQE still completes once it is let through.
func TestEnterWaitRandomRefusals(t *testing.T) {
	r, f := setup(t, Config{Seed: 1, SubmitErrRate: 0.5})
	buf, _ := ring.Alloc(4096)
	defer ring.Free(buf)
	refused := 0
	for i := 0; i < 32; i++ {
		prepReads(t, r, f, buf, 1)
		r.Flush()
		for {
			_, err := r.EnterWait(1, 1)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("EnterWait: %v", err)
			}
			refused++
		}
		if c := reapCombined(t, r, 1); len(c) != 1 || c[0].Res != 4096 {
			t.Fatalf("round %d: CQEs %+v", i, c)
		}
	}
	if st := r.Stats(); refused == 0 || st.SubmitErrs != uint64(refused) {
		t.Fatalf("%d enters refused, stats say %d", refused, st.SubmitErrs)
	}
}

// SQ-full answers come from GetSQE, which both paths share: a caller told
// the SQ is full prepares later, and Flush and EnterWait take the SQE then.
func TestSQFullOnCombinedPath(t *testing.T) {
	full := true
	r, f := setup(t, Config{SQFull: func() bool { return full }})
	buf, _ := ring.Alloc(4096)
	defer ring.Free(buf)
	if r.GetSQE() != nil {
		t.Fatal("GetSQE should pretend the SQ is full")
	}
	if p := r.Flush(); p != 0 {
		t.Fatalf("Flush = %d with nothing prepared", p)
	}
	full = false
	prepReads(t, r, f, buf, 1)
	if _, err := r.EnterWait(r.Flush(), 1); err != nil {
		t.Fatal(err)
	}
	if c := reapCombined(t, r, 1); len(c) != 1 || c[0].Res != 4096 {
		t.Fatalf("CQEs %+v", c)
	}
	if st := r.Stats(); st.SQFull != 1 {
		t.Fatalf("%d SQ-full answers counted, want 1", st.SQFull)
	}
}

// Every CQE fault applies to completions of SQEs submitted with Flush and
// EnterWait, as to those submitted with Submit.
func TestCQEFaultsOnCombinedPath(t *testing.T) {
	for f := EIO; f < numFaults; f++ {
		t.Run(f.String(), func(t *testing.T) {
			r, file := setup(t, Config{Seed: uint64(f), MaxDelay: 3, Decide: func(c CQE) Fault {
				if c.SQE.UserData == 2 {
					return f
				}
				return None
			}})
			buf, _ := ring.Alloc(4 * 4096)
			defer ring.Free(buf)
			prepReads(t, r, file, buf, 4)
			if p := r.Flush(); p != 4 {
				t.Fatalf("Flush = %d, want 4", p)
			}
			if _, err := r.EnterWait(4, 4); err != nil {
				t.Fatal(err)
			}
			want := 4
			switch f {
			case Duplicate:
				want = 5
			case Drop:
				want = 3
			}
			cqes := reapCombined(t, r, want)
			seen := map[uint64]int{}
			var res int32
			for _, c := range cqes {
				seen[c.UserData]++
				if c.UserData == 2 {
					res = c.Res
				} else if c.Res != 4096 {
					t.Errorf("user_data %d: res %d, want 4096 (no fault)", c.UserData, c.Res)
				}
			}
			if len(cqes) != want || seen[1] != 1 || seen[3] != 1 || seen[4] != 1 {
				t.Fatalf("CQEs per user_data %v, want %d in all", seen, want)
			}
			switch {
			case f.Errno() != 0:
				if res != -int32(f.Errno()) {
					t.Fatalf("res %d, want -%v", res, f.Errno())
				}
			case f == Short:
				if res <= 0 || res >= 4096 || res%512 != 0 {
					t.Fatalf("short res %d", res)
				}
			case f == ShortUnaligned:
				if res <= 0 || res >= 4096 {
					t.Fatalf("short res %d", res)
				}
			case f == Zero:
				if res != 0 {
					t.Fatalf("res %d, want 0", res)
				}
			case f == Duplicate:
				if seen[2] != 2 {
					t.Fatalf("user_data 2 delivered %d times, want twice", seen[2])
				}
			case f == Delay:
				if seen[2] != 1 || res != 4096 {
					t.Fatalf("delayed CQE delivered %d times, res %d", seen[2], res)
				}
			case f == Drop:
				if seen[2] != 0 {
					t.Fatal("the dropped CQE was delivered")
				}
			}
			if st := r.Stats(); st.Faults[f] != 1 || st.Injected() != 1 {
				t.Fatalf("stats %+v, want one %v", st, f)
			}
			if r.Outstanding() != 0 {
				t.Fatalf("%d SQEs outstanding after every CQE", r.Outstanding())
			}
		})
	}
}

// EnterWait must not wait in the kernel while the wrapper holds delayed
// CQEs back: with nothing else in flight, the kernel would never wake it.
func TestEnterWaitReturnsForHeldCQEs(t *testing.T) {
	r, f := setup(t, Config{MaxDelay: 4, Decide: func(CQE) Fault { return Delay }})
	buf, _ := ring.Alloc(4096)
	defer ring.Free(buf)
	prepReads(t, r, f, buf, 1)
	if _, err := r.EnterWait(r.Flush(), 1); err != nil {
		t.Fatal(err)
	}
	dst := make([]ring.CQE, 1)
	if n, err := r.Peek(dst); n != 0 || err != nil {
		t.Fatalf("Peek = %d, %v; want the CQE held back", n, err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.EnterWait(0, 1); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("EnterWait waits in the kernel for a CQE the wrapper holds")
	}
	if n, err := r.Peek(dst); n != 1 || err != nil || dst[0].Res != 4096 {
		t.Fatalf("Peek after EnterWait = %d, %v, %+v; want the held CQE", n, err, dst[0])
	}
}

// TwoCall makes the combined call of two (Submit, WaitCQ) and keeps the
// rest: the fault plan, Overflow, and Of.
func TestTwoCallHidesCombinedPath(t *testing.T) {
	r, f := setup(t, Config{Nth: 1, NthFault: Drop, DropsCounted: true})
	w := TwoCall(r)
	if Of(w) != r || Of(r) != r {
		t.Fatal("Of does not find the *Ring")
	}
	buf, _ := ring.Alloc(4096)
	defer ring.Free(buf)
	s := w.GetSQE()
	s.PrepReadAddr(int32(f.Fd()), uintptr(unsafe.Pointer(&buf[0])), 4096, 0)
	s.UserData = 1
	if _, err := w.Submit(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitCQ(1); err != nil {
		t.Fatal(err)
	}
	if n, _ := w.Peek(make([]ring.CQE, 1)); n != 0 {
		t.Fatal("the dropped CQE was delivered")
	}
	o, ok := w.(interface{ Overflow() uint32 })
	if !ok || o.Overflow() != 1 {
		t.Fatal("TwoCall hides the counted drop (Overflow)")
	}
}
