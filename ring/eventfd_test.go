//go:build linux

package ring

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRegisteredEventfdSignalsCompletions pins that a registered eventfd
// counts posted completions, which is what lets a reaper wait for them in
// the netpoller.
func TestRegisteredEventfdSignalsCompletions(t *testing.T) {
	r, err := New(Params{Entries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := r.RegisterEventfd(efd); err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	if _, err := unix.Read(efd, b[:]); err != unix.EAGAIN {
		t.Fatalf("eventfd readable before any completion: %v", err)
	}
	for i := 0; i < 3; i++ {
		r.GetSQE().PrepNop()
	}
	r.Flush()
	if _, err := r.Enter(3, 3, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := unix.Read(efd, b[:])
		if err == nil && n == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("eventfd not signalled: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	if got := r.Ready(); got != 3 {
		t.Fatalf("Ready = %d, want 3", got)
	}
	if err := r.UnregisterEventfd(); err != nil {
		t.Fatal(err)
	}
}

func TestSetIOWQMaxWorkers(t *testing.T) {
	r, err := New(Params{Entries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.SetIOWQMaxWorkers(2, 0); err != nil {
		t.Fatal(err)
	}
	// Asking with zeroes reads the limits back without changing them.
	got, err := r.SetIOWQMaxWorkers(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 2 {
		t.Fatalf("bounded limit = %d, want 2", got[0])
	}
}

func TestEnterOnClosedRing(t *testing.T) {
	r, err := New(Params{Entries: 8})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := r.Enter(0, 0, true); err != ErrClosed {
		t.Fatalf("Enter on closed ring = %v, want ErrClosed", err)
	}
}
