//go:build linux

package crashfs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func mountFS(t *testing.T) *FS {
	t.Helper()
	c, err := Mount(t, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// alignedBuf returns n bytes of page-aligned memory holding b's bytes,
// for O_DIRECT.
func alignedBuf(t *testing.T, b []byte) []byte {
	t.Helper()
	m, err := unix.Mmap(-1, 0, len(b), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	copy(m, b)
	return m
}

func fill(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }

// writeSynced makes path hold b, durably (written and fsynced).
func writeSynced(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// describe says how got differs from want, briefly.
func describe(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("byte %d is %q, want %q", i, got[i], want[i])
		}
	}
	return "equal"
}

// A durable write: how each case writes new at off of an open file and
// makes it durable, with the open flags it needs.
var durableWrites = []struct {
	name  string
	flags int
	write func(t *testing.T, f *os.File, b []byte, off int64)
}{
	{"write+fsync", 0, func(t *testing.T, f *os.File, b []byte, off int64) {
		must(t, pwrite(f, b, off))
		must(t, f.Sync())
	}},
	{"write+fdatasync", 0, func(t *testing.T, f *os.File, b []byte, off int64) {
		must(t, pwrite(f, b, off))
		must(t, unix.Fdatasync(int(f.Fd())))
	}},
	{"O_DSYNC", syscall.O_DSYNC, func(t *testing.T, f *os.File, b []byte, off int64) {
		must(t, pwrite(f, b, off))
	}},
	{"RWF_DSYNC", 0, func(t *testing.T, f *os.File, b []byte, off int64) {
		_, err := unix.Pwritev2(int(f.Fd()), [][]byte{b}, off, unix.RWF_DSYNC)
		must(t, err)
	}},
	{"O_DIRECT+fdatasync", syscall.O_DIRECT, func(t *testing.T, f *os.File, b []byte, off int64) {
		must(t, pwrite(f, alignedBuf(t, b), off))
		must(t, unix.Fdatasync(int(f.Fd())))
	}},
	{"O_DIRECT+RWF_DSYNC", syscall.O_DIRECT, func(t *testing.T, f *os.File, b []byte, off int64) {
		_, err := unix.Pwritev2(int(f.Fd()), [][]byte{alignedBuf(t, b)}, off, unix.RWF_DSYNC)
		must(t, err)
	}},
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pwrite(f *os.File, b []byte, off int64) error {
	n, err := unix.Pwrite(int(f.Fd()), b, off)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write: %d of %d", n, len(b))
	}
	return err
}

// TestSyncedWriteSurvivesCrash writes over and past the end of a durable
// file, makes the write durable each way a program can (fsync,
// fdatasync, O_DSYNC, RWF_DSYNC, with and without O_DIRECT), crashes, and
// reads back the new content: in DropAll and in Torn mode, synced writes
// are never lost.
func TestSyncedWriteSurvivesCrash(t *testing.T) {
	c := mountFS(t)
	for _, mode := range []Mode{DropAll, Torn} {
		for i, dw := range durableWrites {
			t.Run(mode.String()+"/"+dw.name, func(t *testing.T) {
				path := filepath.Join(c.Dir(), fmt.Sprintf("%v-%d", mode, i))
				writeSynced(t, path, fill(8192, 'o'))
				f, err := os.OpenFile(path, os.O_RDWR|dw.flags, 0)
				must(t, err)
				defer f.Close()
				dw.write(t, f, fill(8192, 'n'), 4096)
				want := append(fill(4096, 'o'), fill(8192, 'n')...)
				if st := c.Stats(); st.PendingWrites != 0 {
					t.Fatalf("%d writes pending after the sync", st.PendingWrites)
				}
				st, err := c.Crash(uint64(i), mode)
				must(t, err)
				f.Close()
				if st.Writes != 0 {
					t.Errorf("the crash found %d writes pending", st.Writes)
				}
				if got := mustRead(t, path); !bytes.Equal(got, want) {
					t.Fatalf("after the crash: %s", describe(got, want))
				}
			})
		}
	}
}

// TestUnsyncedWriteIsLost changes a durable file without syncing it (a
// write, an O_DIRECT write, a write past the end, a truncate either way,
// an fsync of another file), checks that reads see the change before the
// crash, and that after a DropAll crash the file is as it was, with the
// counters telling what was dropped.
func TestUnsyncedWriteIsLost(t *testing.T) {
	c := mountFS(t)
	other := filepath.Join(c.Dir(), "other")
	writeSynced(t, other, []byte("x"))
	cases := []struct {
		name    string
		flags   int
		change  func(t *testing.T, f *os.File)
		writes  int
		bytes   int64
		latest  []byte
		trunces int
	}{
		{"write", 0, func(t *testing.T, f *os.File) { must(t, pwrite(f, fill(100, 'n'), 10)) },
			1, 100, append(append(fill(10, 'o'), fill(100, 'n')...), fill(8082, 'o')...), 0},
		{"O_DIRECT", syscall.O_DIRECT, func(t *testing.T, f *os.File) { must(t, pwrite(f, alignedBuf(t, fill(4096, 'n')), 4096)) },
			1, 4096, append(fill(4096, 'o'), fill(4096, 'n')...), 0},
		{"extend", 0, func(t *testing.T, f *os.File) { must(t, pwrite(f, fill(10, 'n'), 10000)) },
			1, 10, append(append(fill(8192, 'o'), make([]byte, 10000-8192)...), fill(10, 'n')...), 0},
		{"truncate down", 0, func(t *testing.T, f *os.File) { must(t, f.Truncate(100)) },
			0, 0, fill(100, 'o'), 1},
		{"truncate up", 0, func(t *testing.T, f *os.File) { must(t, f.Truncate(9000)) },
			0, 0, append(fill(8192, 'o'), make([]byte, 9000-8192)...), 1},
		{"down, write, up", 0, func(t *testing.T, f *os.File) {
			must(t, f.Truncate(5000))
			must(t, pwrite(f, fill(10, 'n'), 6000))
			must(t, f.Truncate(7000))
		}, 1, 10, append(append(append(fill(5000, 'o'), make([]byte, 1000)...), fill(10, 'n')...), make([]byte, 990)...), 2},
		{"fsync of another file", 0, func(t *testing.T, f *os.File) {
			must(t, pwrite(f, fill(1, 'n'), 0))
			g, err := os.OpenFile(other, os.O_RDWR, 0)
			must(t, err)
			defer g.Close()
			must(t, g.Sync())
		}, 1, 1, append(fill(1, 'n'), fill(8191, 'o')...), 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(c.Dir(), fmt.Sprint(i))
			old := fill(8192, 'o')
			writeSynced(t, path, old)
			f, err := os.OpenFile(path, os.O_RDWR|tc.flags, 0)
			must(t, err)
			defer f.Close()
			tc.change(t, f)
			if got := mustRead(t, path); !bytes.Equal(got, tc.latest) {
				t.Fatalf("before the crash: %s", describe(got, tc.latest))
			}
			if st := c.Stats(); st.PendingWrites != int64(tc.writes) || st.PendingBytes != tc.bytes {
				t.Errorf("pending: %d writes, %d bytes; want %d, %d", st.PendingWrites, st.PendingBytes, tc.writes, tc.bytes)
			}
			st, err := c.Crash(uint64(i), DropAll)
			must(t, err)
			want := CrashStats{Files: 1, Writes: tc.writes, WritesDropped: tc.writes, BytesDropped: tc.bytes, Truncates: tc.trunces, TruncatesDropped: tc.trunces}
			if st != want {
				t.Errorf("crash: %v; want %v", st, want)
			}
			if got := c.Stats().LastCrash; got != st {
				t.Errorf("Stats().LastCrash = %v, want %v", got, st)
			}
			if got := mustRead(t, path); !bytes.Equal(got, old) {
				t.Fatalf("after the crash: %s", describe(got, old))
			}
		})
	}
}

// TestNamespaceIsDurableAtOnce pins what the package doc promises: a file
// created (and a directory made, a file renamed) without any sync is
// still there after a crash, with the size it was last synced at.
func TestNamespaceIsDurableAtOnce(t *testing.T) {
	c := mountFS(t)
	d := filepath.Join(c.Dir(), "d")
	must(t, os.Mkdir(d, 0o755))
	f, err := os.Create(filepath.Join(d, "new"))
	must(t, err)
	_, err = f.Write([]byte("never synced"))
	must(t, err)
	f.Close()
	must(t, os.Rename(filepath.Join(d, "new"), filepath.Join(d, "renamed")))
	_, err = c.Crash(1, DropAll)
	must(t, err)
	fi, err := os.Stat(filepath.Join(d, "renamed"))
	must(t, err)
	if fi.Size() != 0 {
		t.Fatalf("created, written and renamed without a sync: %d bytes after the crash, want 0", fi.Size())
	}
}

// TestFilesOpenAcrossCrashFail: a file opened before a crash belongs to a
// process that lost power: reading, writing and syncing it fail with EIO;
// a file opened after the crash works.
func TestFilesOpenAcrossCrashFail(t *testing.T) {
	c := mountFS(t)
	path := filepath.Join(c.Dir(), "f")
	writeSynced(t, path, fill(4096, 'o'))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	_, err = c.Crash(0, DropAll)
	must(t, err)
	buf := make([]byte, 10)
	if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read after the crash: %v, want EIO", err)
	}
	if _, err := f.WriteAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("write after the crash: %v, want EIO", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync after the crash: %v, want EIO", err)
	}
	g, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	defer g.Close()
	if _, err := g.WriteAt(buf, 0); err != nil {
		t.Errorf("write to a file opened after the crash: %v", err)
	}
}

// TestCrashAfterCutsAtTheNthRequest arms a crash at the third request
// that changes the image: the first write and its fdatasync are durable,
// the second write finds the power cut and fails, and only the first
// survives. Restart without a crash is refused.
func TestCrashAfterCutsAtTheNthRequest(t *testing.T) {
	c := mountFS(t)
	path := filepath.Join(c.Dir(), "f")
	writeSynced(t, path, fill(100, 'o'))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	fired := c.CrashAfter(3, 0, DropAll)
	must(t, pwrite(f, []byte("A"), 0))                                  // 1
	must(t, unix.Fdatasync(int(f.Fd())))                                // 2
	if err := pwrite(f, []byte("B"), 1); !errors.Is(err, syscall.EIO) { // 3: the crash
		t.Fatalf("write at the crash: %v, want EIO", err)
	}
	st, ok := <-fired
	if !ok {
		t.Fatal("the armed crash did not report")
	}
	if st.Writes != 0 {
		t.Errorf("crash: %v; want nothing pending", st)
	}
	must(t, c.Restart())
	want := append([]byte("A"), fill(99, 'o')...)
	if got := mustRead(t, path); !bytes.Equal(got, want) {
		t.Fatalf("after the crash: %s", describe(got, want))
	}
	if err := c.Restart(); err == nil {
		t.Fatal("Restart without a crash succeeded")
	}
}

// TestTornCrashThroughTheMount is TestTornCrashLeavesWholeSectors end to
// end: sector-aligned writes through the mount, not synced, a Torn crash,
// and every sector read back whole, old or new.
func TestTornCrashThroughTheMount(t *testing.T) {
	c := mountFS(t)
	var total CrashStats
	for seed := range uint64(24) {
		rng := rand.New(rand.NewPCG(seed, 4))
		sc := newTornScenario(rng, 64, 2+rng.IntN(10))
		path := filepath.Join(c.Dir(), fmt.Sprint(seed))
		writeSynced(t, path, sc.initial())
		f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
		must(t, err)
		for _, w := range sc.writes {
			must(t, pwrite(f, alignedBuf(t, w.data()), int64(w.first*SectorSize)))
		}
		st, err := c.Crash(seed, Torn)
		must(t, err)
		f.Close()
		if err := sc.check(mustRead(t, path)); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		total.Writes += st.Writes
		total.WritesKept += st.WritesKept
		total.WritesTorn += st.WritesTorn
		total.WritesDropped += st.WritesDropped
	}
	if total.WritesKept == 0 || total.WritesTorn == 0 || total.WritesDropped == 0 {
		t.Fatalf("%v; want some writes kept, torn and dropped", total)
	}
}

// TestTruncateByPathAndOTruncArePending: truncate(2) by path and an open
// with O_TRUNC change the size like ftruncate, pending until a sync.
func TestTruncateByPathAndOTruncArePending(t *testing.T) {
	c := mountFS(t)
	old := fill(5000, 'o')
	a, b := filepath.Join(c.Dir(), "a"), filepath.Join(c.Dir(), "b")
	writeSynced(t, a, old)
	writeSynced(t, b, old)
	must(t, os.Truncate(a, 10))
	f, err := os.OpenFile(b, os.O_RDWR|os.O_TRUNC, 0)
	must(t, err)
	f.Close()
	if got := mustRead(t, a); !bytes.Equal(got, old[:10]) {
		t.Fatalf("a before the crash: %s", describe(got, old[:10]))
	}
	if got := mustRead(t, b); len(got) != 0 {
		t.Fatalf("b before the crash: %d bytes, want 0", len(got))
	}
	st, err := c.Crash(0, DropAll)
	must(t, err)
	if st.Truncates != 2 || st.TruncatesDropped != 2 {
		t.Errorf("crash: %v; want 2 truncates dropped", st)
	}
	for _, p := range []string{a, b} {
		if got := mustRead(t, p); !bytes.Equal(got, old) {
			t.Errorf("%s after the crash: %s", filepath.Base(p), describe(got, old))
		}
	}
	if _, err := os.OpenFile(a, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, os.ErrExist) {
		t.Errorf("O_EXCL create of an existing file: %v, want EEXIST", err)
	}
}
