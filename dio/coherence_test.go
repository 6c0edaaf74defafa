//go:build linux

package dio_test

// Coherence: every handle on one file sees what the kernel holds. A
// database has several handles on a file at once (a writer and a reader on
// a new sstable, a WAL reader beside its writer, a backup tool), plain
// os.File ones among them. Each check here runs at a quiescent point: after
// the write, truncate or fallocate before it has returned.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/iomap"
	"golang.org/x/sys/unix"
)

// coherentFile is one file with two dio handles and a buffered os.File.
type coherentFile struct {
	t     *testing.T
	path  string
	a, b  *dio.File
	o     *os.File
	align int64
}

func newCoherentFile(t *testing.T, dir string) *coherentFile {
	c := &coherentFile{t: t, path: filepath.Join(dir, "coherent")}
	var err error
	if c.o, err = os.OpenFile(c.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.o.Close() })
	for _, h := range []**dio.File{&c.a, &c.b} {
		f, err := dio.Open(c.path, os.O_RDWR, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		*h = f
	}
	c.align = dio.AlignForTest(c.a).Offset
	return c
}

// verify reads the whole file through each dio handle, and a random range,
// and compares with what os.File reads.
func (c *coherentFile) verify(rnd *rand.Rand, what string) {
	t := c.t
	t.Helper()
	st, err := c.o.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	want := make([]byte, size)
	if n, err := c.o.ReadAt(want, 0); int64(n) != size || (err != nil && err != io.EOF) {
		t.Fatalf("%s: os.File read %d of %d: %v", what, n, size, err)
	}
	for i, f := range []*dio.File{c.a, c.b} {
		if got, err := f.Size(); got != size || err != nil {
			t.Fatalf("%s: handle %d: Size = %d, %v; the kernel says %d", what, i, got, err, size)
		}
		buf := relBuf(t, int((size/c.align+1)*c.align))
		n, err := f.ReadAt(buf, 0)
		if int64(n) != size || err != io.EOF {
			t.Fatalf("%s: handle %d: ReadAt of the whole file = %d, %v; want %d, io.EOF", what, i, n, err, size)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("%s: handle %d reads other bytes than os.File: %s", what, i, firstDiff(buf[:n], want))
		}
		// A random aligned range, which may run past the end.
		off := rnd.Int64N(size/c.align+2) * c.align
		l := (1 + rnd.Int64N(32)) * c.align
		part := relBuf(t, int(l))
		n, err = f.ReadAt(part, off)
		wantN := max(min(size-off, l), 0)
		if int64(n) != wantN || (wantN < l) != (err == io.EOF) || (err != nil && err != io.EOF) {
			t.Fatalf("%s: handle %d: ReadAt(%d, %d) = %d, %v; want %d (file size %d)", what, i, l, off, n, err, wantN, size)
		}
		if n > 0 && !bytes.Equal(part[:n], want[off:off+int64(n)]) {
			t.Fatalf("%s: handle %d: ReadAt(%d, %d) differs from os.File: %s", what, i, l, off, firstDiff(part[:n], want[off:off+int64(n)]))
		}
	}
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at %d: %#x, want %#x", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// TestReaderSeesFileGrownByAnotherHandle: a reader opened before another
// handle grew the file got 0, io.EOF for data that was there (Size() was
// taken at Open and clipped every read).
func TestReaderSeesFileGrownByAnotherHandle(t *testing.T) {
	c := newCoherentFile(t, t.TempDir())
	data := bytes.Repeat([]byte("grown by another handle. "), 4096)
	for _, w := range []func(p []byte, off int64) (int, error){c.o.WriteAt, c.b.WriteAt} {
		off, _ := c.a.Size()
		p := relBuf(t, 64<<10)
		copy(p, data)
		if _, err := w(p, off); err != nil {
			t.Fatal(err)
		}
		got := relBuf(t, 64<<10)
		if n, err := c.a.ReadAt(got, off); n != len(got) || err != nil {
			t.Fatalf("ReadAt of what another handle appended = %d, %v", n, err)
		}
		if !bytes.Equal(got, p) {
			t.Fatal("reader returned other bytes than another handle appended")
		}
	}
	c.verify(rand.New(rand.NewPCG(1, 1)), "grown")
}

// TestReaderSeesDataWrittenOverFallocatedRange: a reader that once read a
// fallocated (unwritten) range kept returning zeroes after another handle
// wrote there (each handle's FIEMAP cache said "unwritten" for ever).
func TestReaderSeesDataWrittenOverFallocatedRange(t *testing.T) {
	c := newCoherentFile(t, t.TempDir())
	if err := unix.Fallocate(int(c.o.Fd()), 0, 0, 1<<20); err != nil {
		t.Skipf("fallocate: %v", err)
	}
	got := relBuf(t, 64<<10)
	if n, err := c.a.ReadAt(got, 128<<10); n != len(got) || err != nil || !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatalf("read of fallocated space = %d, %v (want zeroes)", n, err)
	}
	for i, w := range []func(p []byte, off int64) (int, error){c.o.WriteAt, c.b.WriteAt} {
		p := relBuf(t, 64<<10)
		fillRand(newRand(uint64(10+i)), p)
		if _, err := w(p, 128<<10); err != nil {
			t.Fatal(err)
		}
		if n, err := c.a.ReadAt(got, 128<<10); n != len(got) || err != nil {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("writer %d: reader still sees the fallocated range as it was: %s", i, firstDiff(got, p))
		}
	}
	c.verify(rand.New(rand.NewPCG(2, 2)), "fallocated then written")
}

// TestReadOfBufferedWriteElsewhere: data written through the page cache by
// another handle and not yet written back (a delalloc extent on ext4, xfs
// and btrfs) reads back through dio; the default mapper refused it.
func TestReadOfBufferedWriteElsewhere(t *testing.T) {
	for name, mk := range fsDirs(t) {
		t.Run(name, func(t *testing.T) {
			c := newCoherentFile(t, mk(t))
			p := bytes.Repeat([]byte("buffered, not yet written back "), 8192)
			if _, err := c.o.WriteAt(p, 12345); err != nil {
				t.Fatal(err)
			}
			c.verify(rand.New(rand.NewPCG(3, 3)), "buffered write "+name)
		})
	}
}

// TestReaderSeesTruncateByAnotherHandle: a file shrunk by another handle
// ends where the kernel says, for every handle.
func TestReaderSeesTruncateByAnotherHandle(t *testing.T) {
	c := newCoherentFile(t, t.TempDir())
	p := relBuf(t, 256<<10)
	fillRand(newRand(3), p)
	if _, err := c.a.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	c.verify(rand.New(rand.NewPCG(4, 4)), "written")
	if err := c.o.Truncate(100000); err != nil {
		t.Fatal(err)
	}
	got := relBuf(t, 256<<10)
	n, err := c.a.ReadAt(got, 0)
	if n != 100000 || err != io.EOF {
		t.Fatalf("ReadAt after another handle truncated to 100000 = %d, %v", n, err)
	}
	if n, err := c.a.ReadAt(got[:4096], 200<<10); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt past the new end = %d, %v; want 0, io.EOF", n, err)
	}
	if err := c.b.Truncate(50000); err != nil {
		t.Fatal(err)
	}
	c.verify(rand.New(rand.NewPCG(5, 5)), "truncated twice")
}

// TestHandlesAgreeUnderRandomChanges mixes writes, truncates, fallocate and
// hole punching through two dio handles and an os.File, checking after
// each that every handle reads what os.File reads.
func TestHandlesAgreeUnderRandomChanges(t *testing.T) {
	seed := uint64(envInt("UIRINGDIO_SEED", 7))
	rnd := rand.New(rand.NewPCG(seed, seed+1))
	c := newCoherentFile(t, t.TempDir())
	a := c.align
	const maxSize = 1 << 20
	steps := 200
	if longMode() {
		steps = 20000
	}
	buf := relBuf(t, 256<<10)
	var step atomic.Int64
	hang := watchHang(t, func() string {
		return fmt.Sprintf("seed %d, at step %d of %d\nreplay: UIRINGDIO_SEED=%d go test -race -run '^TestHandlesAgreeUnderRandomChanges$' ./dio/",
			seed, step.Load(), steps, seed)
	})
	for i := range steps {
		step.Store(int64(i))
		hang.Progress()
		dioHandle := []*dio.File{c.a, c.b}[rnd.IntN(2)]
		var what string
		switch rnd.IntN(9) {
		case 0, 1, 2: // dio write
			n := (1 + rnd.Int64N(64)) * a
			off := rnd.Int64N(maxSize/a) * a
			fillRand(rnd, buf[:n])
			if _, err := dioHandle.WriteAt(buf[:n], off); err != nil {
				t.Fatalf("step %d: dio write: %v", i, err)
			}
			what = fmt.Sprintf("dio write %d at %d", n, off)
		case 3, 4: // buffered write, any offset and length
			n := 1 + rnd.Int64N(128<<10)
			off := rnd.Int64N(maxSize)
			fillRand(rnd, buf[:n])
			if _, err := c.o.WriteAt(buf[:n], off); err != nil {
				t.Fatalf("step %d: os write: %v", i, err)
			}
			what = fmt.Sprintf("buffered write %d at %d", n, off)
		case 5: // truncate, through any handle
			size := rnd.Int64N(maxSize)
			var err error
			if rnd.IntN(2) == 0 {
				err = c.o.Truncate(size)
			} else {
				err = dioHandle.Truncate(size)
			}
			if err != nil {
				t.Fatalf("step %d: truncate: %v", i, err)
			}
			what = fmt.Sprintf("truncate %d", size)
		case 6: // fallocate, growing or not
			off, n := rnd.Int64N(maxSize), 1+rnd.Int64N(maxSize/4)
			var err error
			switch rnd.IntN(3) {
			case 0:
				err = dioHandle.Allocate(off, n)
			case 1:
				err = dioHandle.Preallocate(off, n)
			default:
				err = unix.Fallocate(int(c.o.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n)
			}
			if err != nil {
				t.Fatalf("step %d: fallocate: %v", i, err)
			}
			what = fmt.Sprintf("fallocate %d at %d", n, off)
		case 7: // punch
			off, n := rnd.Int64N(maxSize), 1+rnd.Int64N(maxSize/4)
			if err := dioHandle.Punch(off, n); err != nil {
				t.Fatalf("step %d: punch: %v", i, err)
			}
			what = fmt.Sprintf("punch %d at %d", n, off)
		case 8: // buffered write-back of everything, sometimes
			if err := c.o.Sync(); err != nil {
				t.Fatal(err)
			}
			what = "fsync"
		}
		c.verify(rnd, fmt.Sprintf("seed %d step %d (%s)", seed, i, what))
	}
}

// ---- volumes ----

// volumeEnv is a container file behind one ExtentMap, with its block size
// larger than the I/O alignment so that the engine zeroes sub-block ranges.
type volumeEnv struct {
	t         *testing.T
	container string
	em        *iomap.ExtentMap
	bs        int64
}

const volContainer = 4 << 20

func newVolumeEnv(t *testing.T) *volumeEnv {
	v := &volumeEnv{t: t, container: filepath.Join(t.TempDir(), "container"), bs: 16 << 10}
	if err := os.WriteFile(v.container, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(v.container, volContainer); err != nil {
		t.Fatal(err)
	}
	em, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: v.bs, Devices: []int64{volContainer}})
	if err != nil {
		t.Fatal(err)
	}
	v.em = em
	return v
}

func (v *volumeEnv) open(size int64) *dio.File {
	v.t.Helper()
	f, err := dio.Open(v.container, os.O_RDWR, 0, &dio.Options{Mapper: v.em, Size: size})
	if err != nil {
		v.t.Fatal(err)
	}
	v.t.Cleanup(func() { f.Close() })
	return f
}

// extents returns the map's extents as "off+len:type" strings.
func (v *volumeEnv) extents() []iomap.Mapping {
	var out []iomap.Mapping
	v.em.Extents(func(m iomap.Mapping) bool { out = append(out, m); return true })
	return out
}

func (v *volumeEnv) containerSize() int64 {
	st, err := os.Stat(v.container)
	if err != nil {
		v.t.Fatal(err)
	}
	return st.Size()
}

// TestVolumeFilesShareSizeAndData: two Files over one ExtentMap are one
// file: what one writes the other reads, a size one moves the other sees,
// and a second Open that disagrees about the size is refused.
func TestVolumeFilesShareSizeAndData(t *testing.T) {
	v := newVolumeEnv(t)
	f1 := v.open(1 << 20)
	f2 := v.open(0) // adopts the volume's size
	if s := dio.SizeForTest(t, f2); s != 1<<20 {
		t.Fatalf("second File's size %d, want the volume's %d", s, 1<<20)
	}
	if _, err := dio.Open(v.container, os.O_RDWR, 0, &dio.Options{Mapper: v.em, Size: 512 << 10}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Open with another size: %v, want EINVAL", err)
	}
	p := relBuf(t, 64<<10)
	fillRand(newRand(21), p)
	if _, err := f1.WriteAt(p, 1<<20); err != nil { // extends
		t.Fatal(err)
	}
	if s1, s2 := dio.SizeForTest(t, f1), dio.SizeForTest(t, f2); s1 != 1<<20+64<<10 || s2 != s1 {
		t.Fatalf("sizes after an extending write: %d and %d", s1, s2)
	}
	got := relBuf(t, 64<<10)
	if n, err := f2.ReadAt(got, 1<<20); n != len(got) || err != nil || !bytes.Equal(got, p) {
		t.Fatalf("the other File reads %d, %v (equal %v)", n, err, bytes.Equal(got, p))
	}
}

// TestVolumeSubBlockWritesFromTwoFilesBothSurvive: writes into the same new
// block through two Files over one map: the gate is the volume's, so one
// write's zeroing never lands on the other's data.
func TestVolumeSubBlockWritesFromTwoFilesBothSurvive(t *testing.T) {
	v := newVolumeEnv(t)
	files := []*dio.File{v.open(2 << 20), v.open(0)}
	align := dio.AlignForTest(files[0]).Offset
	sectors := v.bs / align
	rounds := 100
	for round := range rounds {
		base := int64(round) * v.bs
		var wg sync.WaitGroup
		errs := make([]error, sectors)
		for s := range sectors {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := relBuf(t, int(align))
				for i := range p {
					p[i] = byte(round + int(s) + 1)
				}
				_, errs[s] = files[s%2].WriteAt(p, base+s*align)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got := relBuf(t, int(v.bs))
		if _, err := files[round%2].ReadAt(got, base); err != nil {
			t.Fatal(err)
		}
		for s := range sectors {
			if b := got[s*align]; b != byte(round+int(s)+1) {
				t.Fatalf("round %d: sector %d reads %#x: another File's write zeroed it", round, s, b)
			}
		}
	}
}

// TestVolumePunchTruncatePreallocateActOnTheMap: Punch(0, 64K) zeroed the
// container's data where the map still said mapped, and Truncate(128K)
// shrank the container itself. They act on the map now, and the container
// keeps its size.
func TestVolumePunchTruncatePreallocateActOnTheMap(t *testing.T) {
	v := newVolumeEnv(t)
	f := v.open(0)
	if err := f.Truncate(0); err != nil { // an empty volume
		t.Fatal(err)
	}
	g := v.open(0)
	p := relBuf(t, 512<<10)
	fillRand(newRand(5), p)
	if _, err := f.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	mappedAt := func(off int64) iomap.Type {
		for _, m := range v.extents() {
			if off >= m.Offset && off < m.Offset+m.Length {
				return m.Type
			}
		}
		return iomap.Hole
	}
	// Punch of whole blocks: a hole in the map, zeroes for every File.
	if err := f.Punch(0, 64<<10); err != nil {
		t.Fatal(err)
	}
	if mt := mappedAt(0); mt != iomap.Hole {
		t.Fatalf("after Punch(0, 64K) the map says %v at 0", mt)
	}
	got := relBuf(t, 128<<10)
	if _, err := g.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:64<<10], make([]byte, 64<<10)) || !bytes.Equal(got[64<<10:], p[64<<10:128<<10]) {
		t.Fatal("after Punch(0, 64K): wrong bytes around the hole")
	}
	// Punch within blocks (unaligned to them, and to the sectors): the
	// bytes in range read as zeroes, the rest of each block is kept.
	off, n := int64(100<<10+300), int64(40<<10)
	if err := g.Punch(off, n); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), p...)
	clear(want[:64<<10])
	clear(want[off : off+n])
	all := relBuf(t, 512<<10)
	if _, err := f.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, want) {
		t.Fatalf("after an unaligned Punch: %s", firstDiff(all, want))
	}
	// Truncate: the volume shrinks, the container does not.
	if err := f.Truncate(128<<10 + 1000); err != nil {
		t.Fatal(err)
	}
	if cs := v.containerSize(); cs != volContainer {
		t.Fatalf("Truncate on the volume changed the container's size to %d", cs)
	}
	if s := dio.SizeForTest(t, g); s != 128<<10+1000 {
		t.Fatalf("the other File's size after Truncate: %d", s)
	}
	for _, m := range v.extents() {
		if m.Offset+m.Length > 144<<10 {
			t.Fatalf("after Truncate the map still holds %+v", m)
		}
	}
	if n, err := g.ReadAt(all, 0); n != 128<<10+1000 || err != io.EOF {
		t.Fatalf("ReadAt after Truncate = %d, %v", n, err)
	}
	// Grow it again: what was past the truncated end reads as zeroes.
	if _, err := f.WriteAt(p[:16<<10], 256<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := g.ReadAt(all[:256<<10], 0); err != nil {
		t.Fatal(err)
	}
	clear(want[128<<10+1000:])
	if !bytes.Equal(all[:256<<10], want[:256<<10]) {
		t.Fatalf("after truncating and growing again: %s", firstDiff(all[:256<<10], want[:256<<10]))
	}
	// Preallocate keeps the size and maps unwritten space; Allocate grows.
	size := dio.SizeForTest(t, f)
	if err := f.Preallocate(1<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	if s := dio.SizeForTest(t, g); s != size {
		t.Fatalf("Preallocate moved the size from %d to %d", size, s)
	}
	if mt := mappedAt(1 << 20); mt != iomap.Unwritten {
		t.Fatalf("Preallocate left %v in the map", mt)
	}
	if err := g.Allocate(2<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	if s := dio.SizeForTest(t, f); s != 2<<20+64<<10 {
		t.Fatalf("size after Allocate: %d", s)
	}
	if n, err := f.ReadAt(all[:64<<10], 2<<20); n != 64<<10 || err != nil || !bytes.Equal(all[:64<<10], make([]byte, 64<<10)) {
		t.Fatalf("read of allocated space = %d, %v", n, err)
	}
	if cs := v.containerSize(); cs != volContainer {
		t.Fatalf("the container's size moved to %d", cs)
	}
}

// ---- completions never nest in Submit ----

// TestChainedCallbacksOverHolesRunInConstantStack: a request that needs no
// I/O (a hole of a volume) completed inside Submit, so a callback that
// resubmitted recursed: 65,536 chained 4K Inline reads over a 256 MiB hole
// overflowed an 8 MiB stack. Completions now run on the reaper, in a loop.
func TestChainedCallbacksOverHolesRunInConstantStack(t *testing.T) {
	v := newVolumeEnv(t)
	f := v.open(256 << 20)
	const n = 65536
	buf := relBuf(t, 4096)
	r := new(dio.Request)
	var count, maxDepth atomic.Int64
	var mu sync.Mutex
	var failed error
	done := make(chan struct{})
	pcs := make([]uintptr, 4096)
	r.Op, r.Off, r.Buf, r.Policy = dio.Read, 0, buf, completion.Inline
	r.Callback = func(r *dio.Request) {
		if d := int64(runtime.Callers(0, pcs)); d > maxDepth.Load() {
			maxDepth.Store(d)
		}
		if _, err := r.Result(); err != nil {
			mu.Lock()
			failed = err
			mu.Unlock()
			close(done)
			return
		}
		if count.Add(1) == n {
			close(done)
			return
		}
		r.Off += 4096
		if err := f.Submit(r); err != nil {
			mu.Lock()
			failed = err
			mu.Unlock()
			close(done)
		}
	}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	<-done
	if failed != nil {
		t.Fatal(failed)
	}
	if d := maxDepth.Load(); d > 64 {
		t.Fatalf("callback ran %d frames deep: completions nest in Submit", d)
	}
}

// ---- Close against calls that use the descriptor ----

// TestCloseWaitsForDescriptorUsers: Sync, Datasync, Truncate, Allocate,
// Preallocate, Punch, Size and SyscallConn checked closed, then used the
// raw descriptor, so a racing Close let them hit a closed descriptor, or
// one the process had reused for another file. Each now holds the
// descriptor; Close waits for them, and calls after it fail with ErrClosed.
func TestCloseWaitsForDescriptorUsers(t *testing.T) {
	dir := t.TempDir()
	rounds := 30
	calls := []struct {
		name string
		fn   func(f *dio.File) error
	}{
		{"Sync", (*dio.File).Sync},
		{"Datasync", (*dio.File).Datasync},
		{"Truncate", func(f *dio.File) error { return f.Truncate(0) }},
		{"Allocate", func(f *dio.File) error { return f.Allocate(0, 4096) }},
		{"Preallocate", func(f *dio.File) error { return f.Preallocate(0, 1<<20) }},
		{"Punch", func(f *dio.File) error { return f.Punch(0, 1<<20) }},
		{"Size", func(f *dio.File) error { _, err := f.Size(); return err }},
		{"SyscallConn", func(f *dio.File) error {
			rc, err := f.SyscallConn()
			if err != nil {
				return err
			}
			var ferr error
			err = rc.Control(func(fd uintptr) {
				_, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0)
			})
			if ferr != nil {
				return ferr
			}
			return err
		}},
	}
	eng := sharedEngine(t)
	for round := range rounds {
		f, err := dio.Open(filepath.Join(dir, "racing"), os.O_RDWR|os.O_CREATE, 0o600, &dio.Options{Engine: eng})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(calls))
		start := make(chan struct{})
		for _, c := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for {
					err := c.fn(f)
					if errors.Is(err, dio.ErrClosed) {
						return
					}
					if err != nil {
						errs <- fmt.Errorf("round %d: %s: %w", round, c.name, err)
						return
					}
				}
			}()
		}
		close(start)
		runtime.Gosched() // let the callers start: when Close lands is random
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// Descriptors Close freed are reused now: a late Truncate or Punch
		// through a stale one would hit these files.
		var victims []*os.File
		for i := range 4 {
			p := filepath.Join(dir, fmt.Sprintf("victim-%d-%d", round, i))
			if err := os.WriteFile(p, bytes.Repeat([]byte{0xEE}, 8192), 0o600); err != nil {
				t.Fatal(err)
			}
			v, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			victims = append(victims, v)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for _, v := range victims {
			st, err := v.Stat()
			if err != nil || st.Size() != 8192 {
				t.Fatalf("round %d: %s changed under a closed File's call (size %d, %v)", round, v.Name(), st.Size(), err)
			}
			v.Close()
		}
	}
}

// sharedEngine returns an engine for the test, closed at its end.
func sharedEngine(t *testing.T) *dio.Engine {
	t.Helper()
	e, err := dio.NewEngine(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
