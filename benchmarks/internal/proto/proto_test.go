//go:build linux

package proto

import (
	"bytes"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// engines is the feature matrix the tests run over.
func engines() []struct {
	name string
	new  func() (Engine, error)
} {
	type ent = struct {
		name string
		new  func() (Engine, error)
	}
	small := uint32(16) // smaller than the goroutine count: exercises SQ-full paths
	return []ent{
		{"owner-defer", func() (Engine, error) {
			return NewOwner(Config{Flags: ring.SetupSingleIssuer | ring.SetupDeferTaskrun})
		}},
		{"owner-coop", func() (Engine, error) {
			return NewOwner(Config{Flags: ring.SetupCoopTaskrun | ring.SetupTaskrunFlag})
		}},
		{"owner-async", func() (Engine, error) {
			return NewOwner(Config{ForceAsync: true, IOWQMax: 2, Flags: ring.SetupSingleIssuer | ring.SetupDeferTaskrun})
		}},
		{"owner-small", func() (Engine, error) {
			return NewOwner(Config{Entries: small, Flags: ring.SetupSingleIssuer | ring.SetupDeferTaskrun})
		}},
		{"evfd", func() (Engine, error) { return NewEvfd(Config{}) }},
		{"evfd-percall", func() (Engine, error) { return NewEvfd(Config{PerCallEnter: true}) }},
		{"evfd-small", func() (Engine, error) { return NewEvfd(Config{Entries: small}) }},
		{"sqpoll", func() (Engine, error) { return NewEvfd(Config{Flags: ring.SetupSQPoll}) }},
		{"lf", func() (Engine, error) { return NewLF(Config{}) }},
		{"lf-small", func() (Engine, error) { return NewLF(Config{Entries: small}) }},
		{"pread", func() (Engine, error) { return &Pread{}, nil }},
	}
}

// scratch writes size random bytes to a file that supports O_DIRECT (not
// tmpfs on older kernels: /var/tmp) and opens it with O_DIRECT.
func scratch(t testing.TB, size int) (*os.File, []byte) {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "proto-test")
	if err != nil {
		t.Skip("no scratch directory:", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := make([]byte, size)
	rand.Read(data)
	path := dir + "/data"
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Skip("O_DIRECT unsupported here:", err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data
}

// TestEnginesReturnTheRightBytes runs many goroutines of random 4K reads
// through every engine and compares each read with the file's contents.
func TestEnginesReturnTheRightBytes(t *testing.T) {
	const size, bs = 8 << 20, 4096
	f, data := scratch(t, size)
	goroutines, reads := 64, 200
	if testing.Short() {
		reads = 50
	}
	for _, tc := range engines() {
		t.Run(tc.name, func(t *testing.T) {
			e, err := tc.new()
			if err != nil {
				t.Skip("engine unavailable:", err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, goroutines)
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf, err := ring.Alloc(bs)
					if err != nil {
						errs <- err
						return
					}
					defer ring.Free(buf)
					for i := 0; i < reads; i++ {
						off := int64(mrand.IntN(size/bs)) * bs
						clear(buf)
						n, err := e.ReadAt(int32(f.Fd()), buf, off)
						if err != nil || n != bs {
							errs <- fmt.Errorf("ReadAt(%d) = %d, %v", off, n, err)
							return
						}
						if !bytes.Equal(buf, data[off:off+bs]) {
							errs <- fmt.Errorf("ReadAt(%d): wrong bytes", off)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := e.Counters().Reads; tc.name != "pread" && got != uint64(goroutines*reads) {
				t.Errorf("Counters().Reads = %d, want %d", got, goroutines*reads)
			}
			if err := e.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestReadErrorIsTheErrno pins that a failed read returns the kernel's
// errno: an unaligned O_DIRECT read fails with EINVAL.
func TestReadErrorIsTheErrno(t *testing.T) {
	f, _ := scratch(t, 1<<20)
	buf, _ := ring.Alloc(8192)
	defer ring.Free(buf)
	for _, tc := range engines() {
		t.Run(tc.name, func(t *testing.T) {
			e, err := tc.new()
			if err != nil {
				t.Skip("engine unavailable:", err)
			}
			defer e.Close()
			if _, err := e.ReadAt(int32(f.Fd()), buf[1:4097], 0); err != unix.EINVAL {
				t.Fatalf("unaligned read: %v, want EINVAL", err)
			}
		})
	}
}

func TestOwnerSteadyStateAllocatesNothing(t *testing.T) {
	f, _ := scratch(t, 1<<20)
	buf, _ := ring.Alloc(4096)
	defer ring.Free(buf)
	for _, tc := range engines() {
		t.Run(tc.name, func(t *testing.T) {
			e, err := tc.new()
			if err != nil {
				t.Skip("engine unavailable:", err)
			}
			defer e.Close()
			e.ReadAt(int32(f.Fd()), buf, 0)
			if a := testing.AllocsPerRun(200, func() { e.ReadAt(int32(f.Fd()), buf, 4096) }); a > 0 {
				t.Errorf("%.1f allocations per read", a)
			}
		})
	}
}
