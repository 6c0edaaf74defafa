//go:build linux

package pebblevfs

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
)

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func kernelSize(t *testing.T, name string) int64 {
	t.Helper()
	st, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestStatReportsLogicalSizeWhileWriting: a synced file ends on disk in
// the padding of its last sync; Stat (of the handle and by name) must
// report the bytes written, which Pebble's footer read relies on, and
// Close must leave the file exactly that long.
func TestStatReportsLogicalSizeWhileWriting(t *testing.T) {
	fs := newFS(t)
	name := filepath.Join(t.TempDir(), "000001.sst")
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.(*file); !ok {
		t.Fatalf("an sstable was not opened through dio: %T", f)
	}
	data := randomBytes(5000, 1)
	for p := data; len(p) > 0; p = p[min(137, len(p)):] {
		if _, err := f.Write(p[:min(137, len(p))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.SyncData(); err != nil {
		t.Fatal(err)
	}
	if ks := kernelSize(t, name); ks <= 5000 {
		t.Fatalf("kernel size %d after a sync of 5000 bytes: the test expects the padded tail", ks)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 5000 {
		t.Errorf("File.Stat size %d, want 5000", st.Size())
	}
	if st, err := fs.Stat(name); err != nil || st.Size() != 5000 {
		t.Errorf("FS.Stat size %v (%v), want 5000", st, err)
	}
	// A file being written reads back what was written, buffered or not.
	more := randomBytes(100, 2)
	f.Write(more)
	got := make([]byte, 5100)
	if n, err := f.ReadAt(got, 0); n != 5100 || err != nil || !bytes.Equal(got, append(data, more...)) {
		t.Errorf("ReadAt of a file being written: %d, %v, equal=%v", n, err, bytes.Equal(got, append(data, more...)))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if ks := kernelSize(t, name); ks != 5100 {
		t.Errorf("kernel size %d after Close, want 5100", ks)
	}
	if st, err := fs.Stat(name); err != nil || st.Size() != 5100 {
		t.Errorf("FS.Stat after Close: %v (%v), want 5100", st, err)
	}
}

// TestReuseForWriteKeepsTheOldFile: a recycled WAL is renamed and written
// from its start without truncation; Preallocate keeps the size. Until it
// is closed the old log's bytes stay past the new one's (Pebble tells them
// apart by log number), except for the sector the last sync padded with
// zeroes, which reads as the end of the log.
func TestReuseForWriteKeepsTheOldFile(t *testing.T) {
	fs := newFS(t)
	dir := t.TempDir()
	old := randomBytes(64<<10, 3)
	if err := os.WriteFile(filepath.Join(dir, "000001.log"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := fs.ReuseForWrite(filepath.Join(dir, "000001.log"), filepath.Join(dir, "000002.log"), vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "000002.log")
	if err := f.Preallocate(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	rec := randomBytes(300, 4)
	f.Write(rec)
	if err := f.SyncData(); err != nil {
		t.Fatal(err)
	}
	if ks := kernelSize(t, name); ks != 64<<10 {
		t.Errorf("kernel size %d of a reused, preallocated file, want the old %d", ks, 64<<10)
	}
	if st, _ := f.Stat(); st.Size() != 300 {
		t.Errorf("Stat size %d, want 300", st.Size())
	}
	disk, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk[:300], rec) {
		t.Error("the record is not at the start of the reused file")
	}
	caps, err := f.(*file).f.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	a := int(caps.OffsetAlignment)
	if !bytes.Equal(disk[300:a], make([]byte, a-300)) {
		t.Errorf("the synced sector is not padded with zeroes past the record (alignment %d)", a)
	}
	if !bytes.Equal(disk[a:], old[a:]) {
		t.Error("the old log past the synced sector changed")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if ks := kernelSize(t, name); ks != 300 {
		t.Errorf("kernel size %d after Close, want 300", ks)
	}
}

// TestSequentialReadsGoThroughTheWindow: Read and ReadAt on a handle
// opened with vfs.SequentialReadsOption read the file in windows, not one
// I/O per call, and return exactly the file.
func TestSequentialReadsGoThroughTheWindow(t *testing.T) {
	fs := newFS(t, WithReadahead(256<<10))
	name := filepath.Join(t.TempDir(), "000003.sst")
	data := randomBytes(3<<20+123, 5)
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Open(name, vfs.SequentialReadsOption)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := fs.Engine().Stats().Submitted
	rng := rand.New(rand.NewPCG(6, 6))
	for off := int64(0); off < int64(len(data)); {
		n := 1 + rng.IntN(40<<10)
		p := make([]byte, n)
		got, err := f.ReadAt(p, off)
		want := min(n, len(data)-int(off))
		if got != want || !bytes.Equal(p[:got], data[off:off+int64(got)]) || (got < n) != (err == io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d bytes of the file", n, off, got, err, want)
		}
		off += int64(n)
	}
	sqes := fs.Engine().Stats().Submitted - before
	if max := uint64(len(data)/(256<<10) + 4); sqes > max {
		t.Errorf("%d SQEs for a sequential read of %d bytes through a 256 KiB window, want at most %d", sqes, len(data), max)
	}
	// Read: the stream from the start.
	var all bytes.Buffer
	if _, err := io.CopyBuffer(&all, struct{ io.Reader }{f}, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all.Bytes(), data) {
		t.Error("Read did not return the file")
	}
}

// TestOpenMissingIsNotExist: Pebble tells a missing file by
// oserror.IsNotExist; a dio open error must still say so.
func TestOpenMissingIsNotExist(t *testing.T) {
	fs := newFS(t)
	_, err := fs.Open(filepath.Join(t.TempDir(), "000009.sst"))
	if !oserror.IsNotExist(err) {
		t.Fatalf("open of a missing sstable: %v, not IsNotExist", err)
	}
}

// TestOtherFilesGoThroughDefault: OPTIONS, markers, LOCK and temporary
// files are vfs.Default's.
func TestOtherFilesGoThroughDefault(t *testing.T) {
	fs := newFS(t)
	dir := t.TempDir()
	for _, n := range []string{"OPTIONS-000003", "marker.manifest.000001.MANIFEST-000001", "CURRENT", "temporary.000004.dbtmp"} {
		f, err := fs.Create(filepath.Join(dir, n), vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := f.(*file); ok {
			t.Errorf("%s went through dio", n)
		}
		f.Close()
	}
	if st := fs.Stats(); st.Direct != 0 {
		t.Errorf("%d files through dio, want 0", st.Direct)
	}
}

// TestFallbackWhereODirectIsRefused: on a file system that refuses
// O_DIRECT (ramfs) a data file falls back to vfs.Default, is counted, and
// the log says so; it still works.
func TestFallbackWhereODirectIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting ramfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "ramfs", "ramfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount ramfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	var logged []string
	fs := newFS(t, WithLogf(func(format string, args ...any) { logged = append(logged, format) }))
	name := filepath.Join(dir, "000001.sst")
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.(*file); ok {
		t.Skip("this kernel's ramfs takes O_DIRECT")
	}
	if _, err := f.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if st := fs.Stats(); st.Fallbacks != 1 || st.Direct != 0 {
		t.Errorf("stats %+v, want one fallback", st)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "vfs.Default") {
		t.Errorf("log %q, want one line about the fallback", logged)
	}
	if b, _ := os.ReadFile(name); string(b) != "hello" {
		t.Errorf("the fallback file holds %q", b)
	}
}

// TestPrefetchServesReads: after Prefetch, ReadAts within its span wait
// for its read and are served from memory (no SQE of their own) and return
// the file; reads outside go to the file.
func TestPrefetchServesReads(t *testing.T) {
	fs := newFS(t)
	name := filepath.Join(t.TempDir(), "000004.sst")
	data := randomBytes(1<<20+77, 7)
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Prefetch(5000, 256<<10); err != nil {
		t.Fatal(err)
	}
	// The first read waits for the prefetch (started, not finished, when
	// Prefetch returned); the engine has counted its SQE by then. No read
	// after it may need one.
	first := make([]byte, 4000)
	if n, err := f.ReadAt(first, 5000); n != 4000 || err != nil || !bytes.Equal(first, data[5000:9000]) {
		t.Fatalf("ReadAt(4000, 5000), the first in the prefetched span: %d, %v", n, err)
	}
	before := fs.Engine().Stats().Submitted
	for off := int64(9000); off+4000 <= 5000+256<<10; off += 4000 {
		p := make([]byte, 4000)
		if n, err := f.ReadAt(p, off); n != 4000 || err != nil || !bytes.Equal(p, data[off:off+4000]) {
			t.Fatalf("ReadAt(4000, %d) in the prefetched span: %d, %v", off, n, err)
		}
	}
	if sqes := fs.Engine().Stats().Submitted - before; sqes != 0 {
		t.Errorf("%d SQEs for reads within the prefetched span", sqes)
	}
	// Past the span, and the tail of the file past its end.
	p := make([]byte, 200)
	if n, err := f.ReadAt(p, int64(len(data))-100); n != 100 || err != io.EOF || !bytes.Equal(p[:100], data[len(data)-100:]) {
		t.Errorf("ReadAt past the end: %d, %v", n, err)
	}
}

// TestPrefetchSpansAreBounded: Prefetch spans on many files are dropped
// past maxPrefetchSpans, so an FS with thousands of open files does not
// keep a span on each (a scan benchmark with 5000 open files was killed by
// its memory cgroup before this bound).
func TestPrefetchSpansAreBounded(t *testing.T) {
	fs := newFS(t)
	dir := t.TempDir()
	data := randomBytes(64<<10, 8)
	var files []vfs.File
	for i := range maxPrefetchSpans + 10 {
		name := filepath.Join(dir, fmt.Sprintf("%06d.sst", i))
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := fs.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Prefetch(0, 64<<10); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	held := 0
	for _, f := range files {
		if f.(*file).pf.Load() != nil {
			held++
		}
	}
	if held != maxPrefetchSpans {
		t.Errorf("%d files hold a prefetched span, want %d", held, maxPrefetchSpans)
	}
	if files[0].(*file).pf.Load() != nil || files[len(files)-1].(*file).pf.Load() == nil {
		t.Error("the oldest span was kept or the newest dropped")
	}
}
