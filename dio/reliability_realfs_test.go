//go:build linux

package dio_test

// Real conditions: a file system that fills up, a file-size limit, NOWAIT
// writes that would block, and the model checker on ext4, xfs and btrfs
// over loop devices with 512- and 4096-byte sectors (holes, unwritten
// extents, sub-block EOF). They need root, losetup and mkfs; without them
// they skip, saying why.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"golang.org/x/sys/unix"
)

// TestFSXOnLoopFileSystems runs the model checker (mixed policies, QD 32)
// on ext4, xfs and btrfs, each on loop devices with 512- and 4096-byte
// logical sectors.
func TestFSXOnLoopFileSystems(t *testing.T) {
	ops := int(envInt("UIRINGDIO_FSX_OPS", 2000))
	if longMode() && os.Getenv("UIRINGDIO_FSX_OPS") == "" {
		ops = 200000
	}
	seed := uint64(envInt("UIRINGDIO_FSX_SEED", time.Now().UnixNano()))
	for _, fs := range []string{"ext4", "xfs", "btrfs"} {
		for _, sector := range []int{512, 4096} {
			t.Run(fmt.Sprintf("%s-%d", fs, sector), func(t *testing.T) {
				l := mountLoop(t, fs, 320<<20, sector)
				c := fsxConfig{name: "loop-" + fs, qd: 32, mixed: true, ops: ops, dir: l.Dir, maxSize: 16 << 20}
				runFSX(t, c, seed)
			})
		}
	}
}

// On a full file system, writes at QD32 each end whole, short with a
// count and ENOSPC, or with ENOSPC and nothing; every byte reported
// written reads back, through the engine and through pread.
func TestENOSPCLoopExt4(t *testing.T) {
	l := mountLoop(t, "ext4", 64<<20, 512)
	path := filepath.Join(l.Dir, "fill")
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeWithin(t, f, 20*time.Second)
	const qd = 32
	type wr struct {
		req  *dio.Request
		seed int
	}
	rnd := newRand(11)
	var mu sync.Mutex
	var done []*wr
	var wg sync.WaitGroup
	off := int64(0)
	enospc := 0
	var written []*wr
	sem := make(chan struct{}, qd)
	for i := 0; enospc < 3*qd && i < 10000; i++ {
		n := 4096 * (16 + rnd.IntN(240)) // 64K .. ~1M
		b := relBuf(t, n)
		for j := range b {
			b[j] = byte(i*7 + j>>9)
		}
		w := &wr{seed: i}
		w.req = &dio.Request{Op: dio.Write, Off: off, Buf: b, Policy: completion.Pool,
			Callback: func(*dio.Request) {
				mu.Lock()
				done = append(done, w)
				mu.Unlock()
				<-sem
				wg.Done()
			}}
		off += int64(n)
		sem <- struct{}{}
		wg.Add(1)
		if err := f.Submit(w.req); err != nil {
			t.Fatal(err)
		}
		written = append(written, w)
		mu.Lock()
		for _, d := range done {
			if _, err := d.req.Result(); errors.Is(err, syscall.ENOSPC) {
				enospc++
			}
		}
		done = done[:0]
		mu.Unlock()
	}
	waitGroupWithin(t, &wg, 60*time.Second, func() string { return "ENOSPC writes" })
	if enospc == 0 {
		t.Fatalf("no ENOSPC after %d bytes on a 64 MiB file system", off)
	}
	full, short, failed := 0, 0, 0
	for _, w := range written {
		r := w.req
		n, err := r.Result()
		switch {
		case err == nil && n == len(r.Buf):
			full++
		case errors.Is(err, syscall.ENOSPC) && n == 0:
			failed++
		case errors.Is(err, syscall.ENOSPC) && n > 0 && n < len(r.Buf):
			short++
		default:
			t.Fatalf("write at %d of %d: %d, %v; want whole, or ENOSPC with a count", r.Off, len(r.Buf), n, err)
		}
		if err != nil {
			if s := checkOpError(err, "write", path, r.Off, int64(len(r.Buf))); s != "" {
				t.Fatal(s)
			}
		}
	}
	if full == 0 || short+failed == 0 {
		t.Fatalf("%d writes: %d whole, %d short with ENOSPC, %d ENOSPC; want both whole writes and ENOSPC", len(written), full, short, failed)
	}
	// Everything reported written is there.
	for _, w := range written {
		r := w.req
		n, _ := r.Result()
		if n == 0 {
			continue
		}
		got := relBuf(t, len(r.Buf))
		m, err := f.ReadAt(got[:n/512*512], r.Off)
		if m != n/512*512 || (err != nil && err != io.EOF) {
			t.Fatalf("read back %d at %d: %d, %v", n, r.Off, m, err)
		}
		if string(got[:m]) != string(r.Buf[:m]) {
			t.Fatalf("write at %d: the %d bytes reported written read back differently", r.Off, n)
		}
		if disk := preadAll(t, path, r.Off, int64(n)); string(disk) != string(r.Buf[:n]) {
			t.Fatalf("write at %d: pread differs from the %d bytes reported written", r.Off, n)
		}
	}
}

// TestEFBIGFileSizeLimit runs in a child process with RLIMIT_FSIZE at
// 1 MiB: a write across the limit is short at the limit and then fails
// with EFBIG (the engine resubmits the rest, which the kernel refuses);
// one past it fails with EFBIG; the Go runtime ignores SIGXFSZ, so the
// process lives.
func TestEFBIGFileSizeLimit(t *testing.T) {
	if os.Getenv("UIRINGDIO_CHILD") == "efbig" {
		efbigChild(t)
		return
	}
	out, err := runChild(t, "^TestEFBIGFileSizeLimit$", "UIRINGDIO_CHILD=efbig", "UIRINGDIO_DIR="+t.TempDir())
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "efbig ok") {
		t.Fatalf("child did not finish:\n%s", out)
	}
}

func efbigChild(t *testing.T) {
	const limit = 1 << 20
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	path := filepath.Join(os.Getenv("UIRINGDIO_DIR"), "big")
	f, err := dio.Open(path, os.O_RDWR|os.O_CREATE, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := relBuf(t, 256<<10)
	for i := range b {
		b[i] = byte(i >> 9)
	}
	n, err := f.WriteAt(b, limit-128<<10)
	if n != 128<<10 || !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("write across RLIMIT_FSIZE = %d, %v; want %d, EFBIG", n, err, 128<<10)
	}
	if s := checkOpError(err, "write", path, limit-128<<10, 256<<10); s != "" {
		t.Fatal(s)
	}
	if n, err := f.WriteAt(b[:4096], limit); n != 0 || !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("write past RLIMIT_FSIZE = %d, %v; want 0, EFBIG", n, err)
	}
	// Asynchronously too, on the pool.
	r := &dio.Request{Op: dio.Write, Off: limit + 8192, Buf: b[:8192], Policy: completion.Pool}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Wait(context.Background()); n != 0 || !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("async write past RLIMIT_FSIZE = %d, %v", n, err)
	}
	if dio.SizeForTest(t, f) != limit {
		t.Fatalf("Size %d, want %d", dio.SizeForTest(t, f), limit)
	}
	fmt.Println("efbig ok")
}

// A NOWAIT write that would have to allocate fails with EAGAIN, having
// written nothing; the same write without NOWAIT then succeeds. A NOWAIT
// write that needs more than one SQE is refused up front with EAGAIN.
func TestNoWaitEAGAINRetryable(t *testing.T) {
	dirs := []string{t.TempDir()}
	if os.Geteuid() == 0 {
		if l, err := mountLoopErr(t, "xfs", 320<<20, 512); err == nil {
			dirs = append(dirs, l.Dir)
		} else {
			t.Logf("xfs: %v", err)
		}
	}
	for _, dir := range dirs {
		t.Run(dirFS(dir), func(t *testing.T) {
			path := filepath.Join(dir, "nowait")
			f, err := dio.Open(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer closeWithin(t, f, 10*time.Second)
			b := relBuf(t, 64<<10)
			for i := range b {
				b[i] = 0x5A
			}
			ctx := context.Background()
			if _, err := f.WriteAt(b[:4096], 0); err != nil {
				t.Fatal(err)
			}
			eagain := 0
			for _, off := range []int64{1 << 20, 8192, 4 << 20} { // past EOF, into holes
				n, err := f.WriteAtContext(ctx, b[:4096], off, dio.NoWait)
				if err == nil {
					continue // the file system did not need to block
				}
				eagain++
				if n != 0 || !errors.Is(err, syscall.EAGAIN) {
					t.Fatalf("NOWAIT write at %d = %d, %v; want 0, EAGAIN", off, n, err)
				}
				if s := checkOpError(err, "write", path, off, 4096); s != "" {
					t.Fatal(s)
				}
				if got := preadAll(t, path, off, 4096); len(got) > 0 && got[0] == 0x5A {
					t.Fatalf("NOWAIT write at %d failed with EAGAIN but its data landed", off)
				}
				if n, err := f.WriteAtContext(ctx, b[:4096], off, 0); n != 4096 || err != nil {
					t.Fatalf("retry without NOWAIT at %d = %d, %v", off, n, err)
				}
			}
			r := &dio.Request{Op: dio.Write, Off: 0, Bufs: [][]byte{b[:4096], b[8192:12288]}, Flags: dio.NoWait, Policy: completion.Wait}
			if err := f.Submit(r); !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("NOWAIT write of two SQEs: %v, want EAGAIN up front", err)
			}
			if eagain == 0 {
				t.Skipf("%s took all 3 NOWAIT writes that had to allocate: no refusal to check", dirFS(dir))
			}
		})
	}
}

func dirFS(dir string) string {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return "unknown"
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	}
	return "fs-" + strconv.FormatInt(st.Type, 16)
}
