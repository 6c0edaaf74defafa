//go:build linux

package dio_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"golang.org/x/sys/unix"
)

// fsDirs returns the directories to run real-filesystem tests in: the test
// temp dir (ext4 here), tmpfs, and xfs and btrfs on loop devices when root.
func fsDirs(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"tempdir": func(t *testing.T) string { return t.TempDir() },
		"tmpfs": func(t *testing.T) string {
			var st unix.Statfs_t
			if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
				t.Skip("no tmpfs at /dev/shm")
			}
			d, err := os.MkdirTemp("/dev/shm", "uringdio")
			if err != nil {
				t.Skip(err)
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		},
		"xfs":   func(t *testing.T) string { return mountLoop(t, "xfs", 512<<20, 4096).Dir },
		"btrfs": func(t *testing.T) string { return mountLoop(t, "btrfs", 512<<20, 4096).Dir },
	}
}

const rng = 64 << 10

// TestPoliciesOnFilesystems drives reads and writes of written, hole and
// unwritten ranges through every completion policy on each filesystem,
// verifying every byte and the policy: on the kernel file (the kernel maps
// and finishes every write before its completion, so nothing is
// downgraded) and through the opted-in FIEMAP file mapper (writes into
// holes and unwritten space need the mapper told: Pool).
func TestPoliciesOnFilesystems(t *testing.T) {
	for name, mk := range fsDirs(t) {
		t.Run(name, func(t *testing.T) {
			dir := mk(t)
			for _, mapped := range []bool{false, true} {
				for _, p := range []completion.Policy{completion.Wait, completion.Inline, completion.Caller, completion.Pool, completion.Default} {
					t.Run(fmt.Sprintf("%s/filemapper=%v", p, mapped), func(t *testing.T) { testPolicyOnFS(t, dir, p, mapped) })
				}
			}
		})
	}
}

func testPolicyOnFS(t *testing.T, dir string, p completion.Policy, mapped bool) {
	path := filepath.Join(dir, fmt.Sprintf("layout-%s-%v", p, mapped))
	// [0,64K) data, [64K,128K) hole, [128K,192K) unwritten, [192K,256K) data.
	data := make([]byte, 4*rng)
	for i := range data {
		data[i] = byte(i*13 + i>>9)
	}
	g, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	g.WriteAt(data[:rng], 0)
	g.WriteAt(data[3*rng:], 3*rng)
	if err := unix.Fallocate(int(g.Fd()), unix.FALLOC_FL_KEEP_SIZE, 2*rng, rng); err != nil {
		t.Logf("fallocate: %v (range stays a hole)", err)
	}
	g.Sync()
	g.Close()
	want := append([]byte(nil), data...)
	clear(want[rng : 3*rng])

	var o dio.Options
	if mapped {
		o.Mapper = fileMapper(t, path)
	}
	f, err := dio.Open(path, os.O_RDWR, 0, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := relBuf(t, 8192)
	q := &completion.Queue{}
	do := func(op dio.Op, off int64) (int, completion.Policy, error) {
		if p == completion.Wait {
			if op == dio.Read {
				n, err := f.ReadAt(buf, off)
				return n, completion.Wait, err
			}
			n, err := f.WriteAt(buf, off)
			return n, completion.Wait, err
		}
		r := &dio.Request{Op: op, Off: off, Buf: buf, Policy: p, Queue: q}
		if err := f.Submit(r); err != nil {
			return 0, 0, err
		}
		n, err := r.Wait(context.Background())
		got, _ := r.EffectivePolicy()
		return n, got, err
	}
	for i, region := range []string{"data", "hole", "unwritten", "data"} {
		off := int64(i)*rng + 8192
		n, got, err := do(dio.Read, off)
		if err != nil || n != len(buf) {
			t.Fatalf("read %s: %d, %v", region, n, err)
		}
		if !bytes.Equal(buf, want[off:off+8192]) {
			t.Fatalf("read of %s region returned wrong bytes", region)
		}
		if wantP := map[completion.Policy]completion.Policy{completion.Default: completion.Inline}[p]; wantP != 0 && got != wantP {
			t.Errorf("read ran under %v, want %v", got, wantP)
		}
		for j := range buf {
			buf[j] = byte(j + i*31 + int(p))
		}
		copy(want[off:], buf)
		n, got, err = do(dio.Write, off)
		if err != nil || n != len(buf) {
			t.Fatalf("write %s: %d, %v", region, n, err)
		}
		switch {
		case p == completion.Wait:
		case !mapped && p != completion.Default && got != p:
			t.Errorf("write into a %s of a kernel file ran under %v, want %v", region, got, p)
		case mapped && region != "data" && got != completion.Pool:
			t.Errorf("write into a %s ran under %v, want Pool (not a pure overwrite)", region, got)
		case region == "data" && p == completion.Caller && got != completion.Caller:
			t.Errorf("pure overwrite ran under %v, want Caller", got)
		}
	}
	disk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, want) {
		t.Fatal("file contents differ after the writes")
	}
	// The file mapper saw the writes: reading back through dio agrees.
	big := relBuf(t, len(want))
	if n, err := f.ReadAt(big, 0); n != len(want) || err != nil {
		t.Fatalf("read back: %d, %v", n, err)
	}
	if !bytes.Equal(big, want) {
		t.Fatal("read back through dio differs from the file")
	}
}
