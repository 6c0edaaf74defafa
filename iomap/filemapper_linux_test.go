//go:build linux

package iomap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

const k = 1024

func TestFiemapABI(t *testing.T) {
	if s := unsafe.Sizeof(fiemapHdr{}); s != 32 {
		t.Errorf("sizeof(struct fiemap) = %d, want 32", s)
	}
	if s := unsafe.Sizeof(fiemapExtent{}); s != 56 {
		t.Errorf("sizeof(struct fiemap_extent) = %d, want 56", s)
	}
	var e fiemapExtent
	for _, f := range []struct {
		name      string
		got, want uintptr
	}{
		{"fe_logical", unsafe.Offsetof(e.Logical), 0},
		{"fe_physical", unsafe.Offsetof(e.Physical), 8},
		{"fe_length", unsafe.Offsetof(e.Length), 16},
		{"fe_flags", unsafe.Offsetof(e.Flags), 40},
		{"fm_extent_count", unsafe.Offsetof(fiemapHdr{}.ExtentCount), 24},
		{"fm_extents", unsafe.Offsetof(fiemapBuf{}.ext), 32},
	} {
		if f.got != f.want {
			t.Errorf("offsetof(%s) = %d, want %d", f.name, f.got, f.want)
		}
	}
	// _IOWR('f', 11, struct fiemap) with the generic ioctl encoding.
	const want = uint(3<<30 | 32<<16 | 'f'<<8 | 11)
	if fsIocFiemap != want {
		t.Errorf("FS_IOC_FIEMAP = %#x, want %#x", fsIocFiemap, want)
	}
}

// span is an expected piece of a file's layout.
type span struct {
	off, end int64
	typ      Type
	flags    Flags
}

func (s span) String() string {
	return fmt.Sprintf("%v%s[%d,%d)", s.typ, flagSuffix(s.flags), s.off, s.end)
}

func flagSuffix(f Flags) string {
	if f == 0 {
		return ""
	}
	return "|" + f.String()
}

// readLayout walks [0, end) with read mappings, as the engine would.
func readLayout(t *testing.T, m Mapper, end int64) []span {
	t.Helper()
	var out []span
	it := NewIter(0, end, OpDirect)
	for it.Next(m) {
		mp := it.Mapping()
		if (mp.Type == Mapped || mp.Type == Unwritten) && (mp.Addr != mp.Offset || mp.Target != 0 || mp.BlockSize != 0) {
			t.Fatalf("file mapping not on the file itself: %v", mp)
		}
		s := span{it.Pos(), it.Pos() + it.Len(), mp.Type, mp.Flags}
		if n := len(out); n > 0 && out[n-1].end == s.off && out[n-1].typ == s.typ && out[n-1].flags == s.flags {
			out[n-1].end = s.end
		} else {
			out = append(out, s)
		}
		it.Advance(it.Len())
	}
	if it.Err() != nil {
		t.Fatal(it.Err())
	}
	return out
}

func sameLayout(t *testing.T, what string, got, want []span) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s layout:\n got %v\nwant %v", what, got, want)
	}
}

// layoutFile builds, in dir, a 448 KiB file with every kind of range:
//
//	[0,64K) data  [64K,192K) hole  [192K,224K) unwritten  [224K,256K) data
//	[256K,320K) unwritten  [320K,384K) hole  [384K,448K) data
//	beyond EOF: [448K,512K) hole  [512K,576K) unwritten (KEEP_SIZE)
//
// With sync it is fsynced, so that nothing is delalloc.
func layoutFile(t *testing.T, dir string, sync bool) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fd := int(f.Fd())
	data := bytes.Repeat([]byte{0xab}, 64*k)
	must(t, unix.Fallocate(fd, 0, 192*k, 128*k))
	if _, err := unix.Pwrite(fd, data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, data[:32*k], 224*k); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, data, 384*k); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 512*k, 64*k); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatal(err)
	}
	if sync {
		must(t, f.Sync())
	}
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var wantFIEMAPLayout = []span{
	{0, 64 * k, Mapped, 0},
	{64 * k, 192 * k, Hole, 0},
	{192 * k, 224 * k, Unwritten, 0},
	{224 * k, 256 * k, Mapped, 0},
	{256 * k, 320 * k, Unwritten, 0},
	{320 * k, 384 * k, Hole, 0},
	{384 * k, 448 * k, Mapped, 0},
	{448 * k, 640 * k, Hole, 0}, // beyond EOF
}

// With SEEK_DATA/SEEK_HOLE unwritten extents without cached data are holes.
var wantSeekLayout = []span{
	{0, 64 * k, Mapped, 0},
	{64 * k, 224 * k, Hole, 0},
	{224 * k, 256 * k, Mapped, 0},
	{256 * k, 384 * k, Hole, 0},
	{384 * k, 448 * k, Mapped, 0},
	{448 * k, 640 * k, Hole, 0},
}

func newFileMapper(t *testing.T, f *os.File, opts FileMapperOptions) *FileMapper {
	t.Helper()
	fm, err := NewFileMapper(int(f.Fd()), opts)
	if err != nil {
		t.Fatal(err)
	}
	return fm
}

// checkWriteMappings checks what writes into each kind of range get, with
// and without OpOverwriteOnly, on the layoutFile layout. With seek, the
// layout comes from SEEK_DATA/SEEK_HOLE: unwritten space is a hole, and so
// is everything after the last data.
func checkWriteMappings(t *testing.T, fm *FileMapper, seek bool) {
	t.Helper()
	hole1End, eofHoleEnd := int64(192*k), int64(512*k)
	if seek {
		hole1End, eofHoleEnd = 224*k, maxOff
	}
	for _, tc := range []struct {
		pos       int64
		want      string
		overwrite bool // OpOverwriteOnly succeeds
	}{
		{0, fmt.Sprintf("mapped [0,%d) flags=none target=0 addr=0", 64*k), true},
		{100 * k, fmt.Sprintf("mapped [%d,%d) flags=new target=0 addr=%d", 64*k, hole1End, 64*k), false},
		{400 * k, fmt.Sprintf("mapped [%d,%d) flags=none target=0 addr=%d", 384*k, 448*k, 384*k), true},
		// Beyond EOF: a hole up to the preallocation.
		{460 * k, fmt.Sprintf("mapped [%d,%d) flags=new target=0 addr=%d", 448*k, eofHoleEnd, 448*k), false},
	} {
		got := begin(t, fm, tc.pos, 4096, OpWrite|OpDirect)
		if got.String() != tc.want {
			t.Errorf("write at %d: %v, want %s", tc.pos, got, tc.want)
		}
		_, err := fm.Begin(tc.pos, 4096, OpWrite|OpOverwriteOnly)
		if tc.overwrite != (err == nil) || err != nil && !errors.Is(err, syscall.EAGAIN) {
			t.Errorf("overwrite-only write at %d: %v", tc.pos, err)
		}
	}
	got := begin(t, fm, 200*k, 4096, OpWrite)
	if seek {
		wantMapping(t, got, fmt.Sprintf("mapped [%d,%d) flags=new target=0 addr=%d", 64*k, 224*k, 64*k))
	} else {
		wantMapping(t, got, fmt.Sprintf("unwritten [%d,%d) flags=none target=0 addr=%d", 192*k, 224*k, 192*k))
		// The preallocation beyond EOF stays unwritten, and what follows
		// is a hole to the end of the cached window.
		wantMapping(t, begin(t, fm, 520*k, 4096, OpWrite),
			fmt.Sprintf("unwritten [%d,%d) flags=none target=0 addr=%d", 512*k, 576*k, 512*k))
		wantMapping(t, begin(t, fm, 600*k, 4096, OpWrite),
			fmt.Sprintf("mapped [%d,%d) flags=new target=0 addr=%d", 576*k, fm.window, 576*k))
	}
	if _, err := fm.Begin(200*k, 4096, OpWrite|OpOverwriteOnly); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("overwrite-only write into unwritten space: %v", err)
	}
}

func TestFileMapperExt4(t *testing.T) {
	dir := t.TempDir()
	requireFS(t, dir, unix.EXT4_SUPER_MAGIC, "ext4")
	testFileMapperFS(t, dir)
}

// testFileMapperFS runs the layout tests on the file system holding dir.
func testFileMapperFS(t *testing.T, dir string) {
	t.Run("fiemap", func(t *testing.T) {
		f := layoutFile(t, dir, true)
		fm := newFileMapper(t, f, FileMapperOptions{})
		if fm.UsesSeek() {
			t.Fatal("FIEMAP not used")
		}
		if fm.Size() != 448*k {
			t.Fatalf("Size() = %d", fm.Size())
		}
		sameLayout(t, "FileMapper", readLayout(t, fm, 640*k), wantFIEMAPLayout)
		sameLayout(t, "filefrag -v", filefragLayout(t, f.Name(), 448*k, 640*k), wantFIEMAPLayout)
		checkWriteMappings(t, fm, false)
		// Reads beyond the size are holes up to the largest offset.
		wantMapping(t, begin(t, fm, 448*k, 1, 0), fmt.Sprintf("hole [%d,%d) flags=none target=0 addr=none", 448*k, maxOff))
	})
	t.Run("fiemap-small-window", func(t *testing.T) {
		// Windows smaller than extents, and several FIEMAP calls per
		// window, must give the same layout.
		f := layoutFile(t, dir, true)
		fm := newFileMapper(t, f, FileMapperOptions{Window: 1})
		sameLayout(t, "FileMapper", readLayout(t, fm, 640*k), wantFIEMAPLayout)
		if n := fm.fills.Load(); n < 5 {
			t.Fatalf("%d fills with a 64 KiB window over 448 KiB", n)
		}
	})
	t.Run("fiemap-sync-flushes-delalloc", func(t *testing.T) {
		f := layoutFile(t, dir, false) // buffered data not written back
		fm := newFileMapper(t, f, FileMapperOptions{})
		sameLayout(t, "FileMapper", readLayout(t, fm, 640*k), wantFIEMAPLayout)
	})
	t.Run("seek", func(t *testing.T) {
		f := layoutFile(t, dir, true)
		fm := newFileMapper(t, f, FileMapperOptions{NoFIEMAP: true})
		if !fm.UsesSeek() {
			t.Fatal("SEEK_DATA not used")
		}
		sameLayout(t, "FileMapper", readLayout(t, fm, 640*k), wantSeekLayout)
		checkWriteMappings(t, fm, true)
	})
}

func TestFileMapperDelallocWithoutSync(t *testing.T) {
	dir := t.TempDir()
	requireFS(t, dir, unix.EXT4_SUPER_MAGIC, "ext4 (delayed allocation)")
	f, err := os.Create(filepath.Join(dir, "delalloc"))
	must(t, err)
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 64*k), 0); err != nil {
		t.Fatal(err)
	}
	fm := newFileMapper(t, f, FileMapperOptions{NoSync: true})
	got := readLayout(t, fm, 64*k)
	if len(got) != 1 || got[0].typ != Delalloc {
		t.Skipf("buffered data already allocated (%v): cannot observe delalloc", got)
	}
	// With the default FIEMAP_FLAG_SYNC the same range is data.
	fm = newFileMapper(t, f, FileMapperOptions{})
	sameLayout(t, "synced", readLayout(t, fm, 64*k), []span{{0, 64 * k, Mapped, 0}})
}

func TestFileMapperTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "iomap")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	requireFS(t, dir, unix.TMPFS_MAGIC, "tmpfs")
	f := layoutFile(t, dir, true)
	fm := newFileMapper(t, f, FileMapperOptions{})
	if !fm.UsesSeek() {
		t.Fatal("tmpfs has no FIEMAP, but the mapper did not fall back to SEEK_DATA")
	}
	sameLayout(t, "FileMapper", readLayout(t, fm, 640*k), wantSeekLayout)
	checkWriteMappings(t, fm, true)
}

func requireFS(t *testing.T, dir string, magic int64, name string) {
	t.Helper()
	var st unix.Statfs_t
	must(t, unix.Statfs(dir, &st))
	if int64(st.Type) != magic {
		t.Skipf("%s is not on %s (f_type %#x)", dir, name, st.Type)
	}
}

var filefragLine = regexp.MustCompile(`^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+\d+\.\.\s*\d+:\s+(\d+):\s*\d*:?\s*(\S*)$`)

// filefragLayout runs filefrag -v on path and turns its extent list into
// spans over [0, end), clipped at size for everything but holes, the way a
// read sees them.
func filefragLayout(t *testing.T, path string, size, end int64) []span {
	t.Helper()
	bin, err := exec.LookPath("filefrag")
	if err != nil {
		t.Skip("filefrag not installed")
	}
	out, err := exec.Command(bin, "-v", "-b4096", path).CombinedOutput()
	if err != nil {
		t.Fatalf("filefrag: %v\n%s", err, out)
	}
	var spans []span
	add := func(s span) {
		if s.end <= s.off {
			return
		}
		if n := len(spans); n > 0 && spans[n-1].end == s.off && spans[n-1].typ == s.typ && spans[n-1].flags == s.flags {
			spans[n-1].end = s.end
			return
		}
		spans = append(spans, s)
	}
	cur := int64(0)
	header := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		header = header || strings.Contains(sc.Text(), "logical_offset")
		m := filefragLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		first, _ := strconv.ParseInt(m[1], 10, 64)
		length, _ := strconv.ParseInt(m[3], 10, 64)
		lo, hi := first*4096, (first+length)*4096
		typ, flags := Mapped, Flags(0)
		for _, fl := range strings.Split(m[4], ",") {
			switch fl {
			case "unwritten":
				typ = Unwritten
			case "delalloc":
				typ = Delalloc
			case "inline", "not_aligned", "tail_packed":
				typ = Inline
			case "shared":
				flags |= FlagShared
			}
		}
		add(span{cur, min(lo, size), Hole, 0})
		if lo < size {
			add(span{lo, min(hi, size), typ, flags})
		}
		cur = max(cur, min(hi, size))
	}
	add(span{cur, end, Hole, 0})
	if !header {
		t.Fatalf("filefrag output not understood:\n%s", out)
	}
	return spans
}

func TestFileMapperCache(t *testing.T) {
	f := layoutFile(t, t.TempDir(), true)
	fm := newFileMapper(t, f, FileMapperOptions{})
	fd := int(f.Fd())

	// A miss under NOWAIT is refused: learning the layout may block.
	if _, err := fm.Begin(0, 4096, OpNoWait); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("NOWAIT miss: %v", err)
	}
	begin(t, fm, 0, 4096, 0)
	if fm.fills.Load() != 1 {
		t.Fatalf("%d fills", fm.fills.Load())
	}
	// The whole window is cached now: hits, also under NOWAIT.
	for _, pos := range []int64{0, 100 * k, 200 * k, 300 * k, 500 * k} {
		begin(t, fm, pos, 4096, OpNoWait|OpWrite)
	}
	if fm.fills.Load() != 1 {
		t.Fatalf("%d fills after hits", fm.fills.Load())
	}

	// A write into the hole, as the engine does it: Begin, the I/O, End,
	// IOComplete. The cache forgets the range, and the next read sees data.
	mp := begin(t, fm, 100*k, 4*k, OpWrite)
	if mp.Type != Mapped || mp.Flags != FlagNew {
		t.Fatalf("write into hole: %v", mp)
	}
	if _, err := unix.Pwrite(fd, make([]byte, 4*k), 100*k); err != nil {
		t.Fatal(err)
	}
	must(t, fm.End(100*k, 4*k, 4*k, OpWrite, &mp))
	must(t, fm.IOComplete(100*k, 4*k, OpWrite, nil))
	wantMapping(t, begin(t, fm, 100*k, 1, 0), fmt.Sprintf("mapped [%d,%d) flags=none target=0 addr=%d", 100*k, 104*k, 100*k))
	wantMapping(t, begin(t, fm, 64*k, 1, 0), fmt.Sprintf("hole [%d,%d) flags=none target=0 addr=none", 64*k, 100*k))

	// Extending the file: the size follows the completion.
	mp = begin(t, fm, 700*k, 4*k, OpWrite)
	if _, err := unix.Pwrite(fd, make([]byte, 4*k), 700*k); err != nil {
		t.Fatal(err)
	}
	must(t, fm.End(700*k, 4*k, 4*k, OpWrite, &mp))
	must(t, fm.IOComplete(700*k, 4*k, OpWrite, nil))
	if fm.Size() != 704*k {
		t.Fatalf("Size() = %d after extending write", fm.Size())
	}
	wantMapping(t, begin(t, fm, 700*k, 1, 0), fmt.Sprintf("mapped [%d,%d) flags=none target=0 addr=%d", 700*k, 704*k, 700*k))

	// After a failed write the size comes from fstat: the kernel may have
	// extended the file part way, or not at all.
	fm.size.Store(1 << 30)
	must(t, fm.IOComplete(800*k, 4*k, OpWrite, syscall.EIO))
	if fm.Size() != 704*k {
		t.Fatalf("Size() = %d after a failed write, want the file's %d", fm.Size(), 704*k)
	}

	// Punch, Preallocate and Truncate change the file and the cache.
	must(t, fm.Punch(0, 64*k))
	wantMapping(t, begin(t, fm, 0, 1, 0), fmt.Sprintf("hole [0,%d) flags=none target=0 addr=none", 100*k))
	must(t, fm.Preallocate(0, 32*k))
	wantMapping(t, begin(t, fm, 0, 1, 0), fmt.Sprintf("unwritten [0,%d) flags=none target=0 addr=0", 32*k))
	must(t, fm.Truncate(16*k))
	if fm.Size() != 16*k {
		t.Fatalf("Size() = %d after Truncate", fm.Size())
	}
	wantMapping(t, begin(t, fm, 0, 1, 0), fmt.Sprintf("unwritten [0,%d) flags=none target=0 addr=0", 16*k))
	wantMapping(t, begin(t, fm, 200*k, 1, OpWrite), fmt.Sprintf("mapped [%d,%d) flags=new target=0 addr=%d", 16*k, fm.window, 16*k))

	// A change behind the mapper's back stays invisible until Invalidate.
	if _, err := unix.Pwrite(fd, make([]byte, 16*k), 0); err != nil {
		t.Fatal(err)
	}
	must(t, f.Sync())
	wantMapping(t, begin(t, fm, 0, 1, 0), fmt.Sprintf("unwritten [0,%d) flags=none target=0 addr=0", 16*k))
	fm.Invalidate(0, 1)
	wantMapping(t, begin(t, fm, 0, 1, 0), fmt.Sprintf("mapped [0,%d) flags=none target=0 addr=0", 16*k))
	fm.SetSize(8 * k)
	wantMapping(t, begin(t, fm, 8*k, 1, 0), fmt.Sprintf("hole [%d,%d) flags=none target=0 addr=none", 8*k, maxOff))

	if _, err := fm.Begin(-1, 1, 0); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Begin(-1): %v", err)
	}
}

func TestFileMapperMaxCached(t *testing.T) {
	f := layoutFile(t, t.TempDir(), true)
	fm := newFileMapper(t, f, FileMapperOptions{Window: 64 * k, MaxCached: 4})
	for range 3 {
		sameLayout(t, "FileMapper", readLayout(t, fm, 640*k), wantFIEMAPLayout)
		fm.mu.RLock()
		n := fm.cache.Len()
		fm.mu.RUnlock()
		if n > 4 {
			t.Fatalf("%d spans cached, MaxCached 4", n)
		}
	}
}

func TestNewFileMapperErrors(t *testing.T) {
	d, err := os.Open(t.TempDir())
	must(t, err)
	defer d.Close()
	if _, err := NewFileMapper(int(d.Fd()), FileMapperOptions{}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("directory: %v", err)
	}
	if _, err := NewFileMapper(-1, FileMapperOptions{}); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("bad fd: %v", err)
	}
}

func TestFileMapperFreshSince(t *testing.T) {
	f := layoutFile(t, t.TempDir(), true)
	fm := newFileMapper(t, f, FileMapperOptions{})
	gen := fm.gen
	fm.invalidate(100*k, 104*k)
	for _, tc := range []struct {
		lo, hi int64
		fresh  bool
	}{
		{0, 64 * k, true},
		{0, 100 * k, true},
		{0, 100*k + 1, false},
		{103 * k, 200 * k, false},
		{104 * k, maxOff, true},
	} {
		if got := fm.freshSince(gen, tc.lo, tc.hi); got != tc.fresh {
			t.Errorf("fill of [%d,%d) begun before invalidating [100K,104K): fresh = %v", tc.lo, tc.hi, got)
		}
	}
	for range invalLog {
		fm.invalidate(1<<30, 1<<30+1)
	}
	if fm.freshSince(gen, 0, 64*k) {
		t.Error("a fill older than the invalidation log counts as fresh")
	}
	if !fm.freshSince(fm.gen, 0, maxOff) {
		t.Error("a fill with no invalidation since is stale")
	}
}

// TestFileMapperFillRace writes blocks into holes while readers keep
// refilling the cache: once a write's IOComplete returned, no read may see
// the block as a hole, which it would if a fill that read the layout
// before the write cached it after the invalidation.
func TestFileMapperFillRace(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "race"))
	must(t, err)
	defer f.Close()
	const blocks = 512
	must(t, f.Truncate(blocks*4*k))
	fm := newFileMapper(t, f, FileMapperOptions{Window: 64 * k})
	var done atomic.Int64 // blocks [0, done) are written and completed
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := done.Load()
				if n == 0 {
					continue
				}
				b := rnd.Int64N(n)
				if rnd.IntN(4) == 0 {
					fm.Invalidate(b*4*k, 4*k) // more fills
				}
				mp, err := fm.Begin(b*4*k, 4*k, 0)
				if err != nil {
					errs <- err
					return
				}
				if mp.Type != Mapped {
					errs <- fmt.Errorf("block %d written and completed (done %d), read sees %v", b, n, mp)
					return
				}
			}
		}()
	}
	buf := bytes.Repeat([]byte{7}, 4*k)
	for b := int64(0); b < blocks; b++ {
		pos := b * 4 * k
		mp, err := fm.Begin(pos, 4*k, OpWrite)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Pwrite(int(f.Fd()), buf, pos); err != nil {
			t.Fatal(err)
		}
		must(t, fm.End(pos, 4*k, 4*k, OpWrite, &mp))
		must(t, fm.IOComplete(pos, 4*k, OpWrite, nil))
		done.Store(b + 1)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if fm.fills.Load() == 0 {
		t.Fatal("the readers never filled the cache: the race was not exercised")
	}
}

func TestFileMapperReadZeroAllocs(t *testing.T) {
	f := layoutFile(t, t.TempDir(), true)
	fm := newFileMapper(t, f, FileMapperOptions{})
	readLayout(t, fm, 640*k) // warm the cache
	n := testing.AllocsPerRun(100, func() {
		for _, pos := range []int64{0, 100 * k, 200 * k, 230 * k, 400 * k, 500 * k} {
			if _, err := fm.Begin(pos, 4096, OpDirect); err != nil {
				panic(err)
			}
		}
		it := NewIter(0, 448*k, OpDirect)
		for it.Next(fm) {
			it.Advance(it.Len())
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per round of cached read Begins", n)
	}
}

func BenchmarkFileMapperBeginCached(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	// 4096 extents: every other 64 KiB written.
	for i := int64(0); i < 4096; i++ {
		if _, err := f.WriteAt(make([]byte, 4096), i*128*k); err != nil {
			b.Fatal(err)
		}
	}
	f.Sync()
	fm, err := NewFileMapper(int(f.Fd()), FileMapperOptions{})
	if err != nil {
		b.Fatal(err)
	}
	size := fm.Size()
	for pos := int64(0); pos < size; pos += 16 << 20 {
		fm.Begin(pos, 1, 0)
	}
	fills := fm.fills.Load()
	b.ReportAllocs()
	b.SetBytes(4096)
	b.RunParallel(func(pb *testing.PB) {
		rnd := rand.New(rand.NewPCG(1, 2))
		for pb.Next() {
			if _, err := fm.Begin(rnd.Int64N(size)&^4095, 4096, OpDirect); err != nil {
				b.Fatal(err)
			}
		}
	})
	if fm.fills.Load() != fills {
		b.Fatalf("cache misses in the loop: %d fills", fm.fills.Load()-fills)
	}
}
