//go:build linux

package devinfo

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fsEnv makes the file systems of TestGather once per run and shares
// them between its rows; each is torn down when TestGather ends.
type fsEnv struct {
	t     *testing.T // TestGather's
	mu    sync.Mutex
	loops map[string]loopResult
}

type loopResult struct {
	l   *loopFS
	err error
}

// loop returns the file system of type fstype (made with mkfsArgs the
// first time), or skips st, the row's test, saying why it cannot be made
// here.
func (e *fsEnv) loop(st *testing.T, fstype string, mkfsArgs ...string) *loopFS {
	st.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.loops[fstype]
	if !ok {
		r.l, r.err = mountLoop(e.t, fstype, mkfsArgs...)
		e.loops[fstype] = r
	}
	if r.err != nil {
		st.Skip(r.err)
	}
	return r.l
}

// dataFile creates a file in dir holding 1 MiB written through the page
// cache and synced, and returns its path.
func dataFile(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return p
}

// gather opens path read-only (with O_DIRECT where the file system takes
// it) and returns Gather's record.
func gather(t *testing.T, path string) Info {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == unix.EINVAL {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	return Gather(fd)
}

// A want is what a row expects of Gather's record. Empty strings and nil
// pointers are not checked.
type want struct {
	kind      Kind
	fs        string
	align     uint32 // expected OffsetAlign; 0: unknown; ^0: not checked
	alignFrom string // a substring of OffsetAlign.From
	readFrom  string // a substring of ReadOffsetAlign.From
	untorn    *Untorn
	device    string // "": unknown; "loop": a loop device with its backing file; else the name
	deviceWhy string // a substring of Device.From when unknown
	dsync     DSyncCost
	dsyncWhy  string // a substring of DSync.From when unknown (dsync 0)
	noWait    *bool  // nil: only checked against a real RWF_NOWAIT read
	buffered  *bool  // nil: unknown
	bufFrom   string // a substring of MayBeBuffered.From
}

func ptr[T any](v T) *T { return &v }

var noUntorn = &Untorn{}

// TestGather checks Gather's record on each kind of file system that can
// be made here: a tmpfs of its own, the temp dir (ext4 on the virtio disk
// of the project's VM), ext4, xfs (reflink, for software untorn writes)
// and btrfs on loop devices, a loop block device itself, an overlay and a
// FUSE mount. Rows that cannot run here skip with the reason. Some rows
// also check the record against what the kernel does: RWF_ATOMIC writes at
// and past the reported limits, a real RWF_NOWAIT read, and whether a
// direct write to btrfs dirties page cache.
func TestGather(t *testing.T) {
	env := &fsEnv{t: t, loops: map[string]loopResult{}}
	rows := []struct {
		name  string
		file  func(t *testing.T) string
		want  want
		extra func(t *testing.T, path string, i Info)
	}{
		{
			name: "tmpfs",
			file: func(t *testing.T) string { return dataFile(t, mountTmpfs(t), "f") },
			want: want{kind: KindRegular, fs: "tmpfs", align: 0, untorn: noUntorn,
				deviceWhy: "tmpfs", dsyncWhy: "tmpfs", noWait: ptr(false),
				buffered: ptr(true), bufFrom: "page cache"},
			extra: func(t *testing.T, path string, i Info) { zeroLengthReadChecksNothing(t, path) },
		},
		{
			name: "temp dir (ext4 on vda)",
			file: func(t *testing.T) string {
				p := dataFile(t, t.TempDir(), "f")
				if i := gather(t, p); !i.Device.Known || i.Device.Value.Name != "vda" || i.FSType.Value != "ext4" {
					t.Skipf("the temp dir is not on ext4 on vda, whose facts this row knows:\n%s", i)
				}
				return p
			},
			want: want{kind: KindRegular, fs: "ext4", align: 512, alignFrom: "statx", untorn: noUntorn,
				device: "vda", dsync: DSyncWriteFlush, noWait: ptr(true),
				buffered: ptr(false), bufFrom: "statx"},
			extra: func(t *testing.T, path string, i Info) {
				d := i.Device.Value
				if d.WriteCache != known(WriteBack, "sysfs") || d.FUA != known(false, "sysfs") {
					t.Errorf("vda: write cache %+v, FUA %+v; want write back, no FUA", d.WriteCache, d.FUA)
				}
			},
		},
		{
			name: "ext4 on loop",
			file: func(t *testing.T) string { return dataFile(t, env.loop(t, "ext4", "-q", "-F").Dir, "f") },
			want: want{kind: KindRegular, fs: "ext4", align: 512, alignFrom: "statx", untorn: noUntorn,
				device: "loop", dsyncWhy: "loop device", noWait: ptr(true), buffered: ptr(false)},
		},
		{
			name: "loop block device",
			file: func(t *testing.T) string { return env.loop(t, "ext4", "-q", "-F").Dev },
			want: want{kind: KindBlockDevice, fs: "block device", align: 512, alignFrom: "statx", untorn: noUntorn,
				device: "loop", dsyncWhy: "loop device", noWait: ptr(true), buffered: ptr(false)},
		},
		{
			name: "xfs reflink on loop",
			file: func(t *testing.T) string {
				return dataFile(t, env.loop(t, "xfs", "-q", "-f", "-m", "reflink=1").Dir, "f")
			},
			want: want{kind: KindRegular, fs: "xfs", align: 512, alignFrom: "statx", readFrom: "STATX_DIO_READ_ALIGN",
				untorn: &Untorn{Min: 4096, Max: 1 << 20, MaxSegments: 1}, device: "loop", dsyncWhy: "loop device",
				noWait: ptr(true), buffered: ptr(false)},
			extra: func(t *testing.T, path string, i Info) { untornWritesMatchKernel(t, path, i.Untorn.Value) },
		},
		{
			name: "btrfs on loop",
			file: func(t *testing.T) string { return dataFile(t, env.loop(t, "btrfs", "-q", "-f").Dir, "f") },
			want: want{kind: KindRegular, fs: "btrfs", align: 4096, alignFrom: "btrfs sector size", untorn: noUntorn,
				device: "loop", dsyncWhy: "loop device", noWait: ptr(true),
				buffered: ptr(true), bufFrom: "NODATASUM"},
			extra: func(t *testing.T, path string, i Info) {
				if !strings.Contains(i.BufferedAdvice, "chattr +C") {
					t.Errorf("advice %q does not say chattr +C", i.BufferedAdvice)
				}
				directWritesDirtyPages(t, filepath.Dir(path), true)
			},
		},
		{
			name: "btrfs on loop, file in a chattr +C directory",
			file: func(t *testing.T) string {
				dir := filepath.Join(env.loop(t, "btrfs", "-q", "-f").Dir, "nocow")
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := run("chattr", "+C", dir); err != nil {
					t.Skip(err)
				}
				return dataFile(t, dir, "f")
			},
			want: want{kind: KindRegular, fs: "btrfs", align: 4096, alignFrom: "btrfs sector size", untorn: noUntorn,
				device: "loop", dsyncWhy: "loop device", noWait: ptr(true),
				buffered: ptr(false), bufFrom: "NOCOW"},
			extra: func(t *testing.T, path string, i Info) { directWritesDirtyPages(t, filepath.Dir(path), false) },
		},
		{
			// Last of the btrfs rows: it remounts the volume nodatasum.
			name: "btrfs on loop, file created under mount -o nodatasum",
			file: func(t *testing.T) string {
				dir := env.loop(t, "btrfs", "-q", "-f").Dir
				if err := unix.Mount("", dir, "", unix.MS_REMOUNT, "nodatasum"); err != nil {
					t.Skipf("remount btrfs nodatasum: %v", err)
				}
				return dataFile(t, dir, "g")
			},
			want: want{kind: KindRegular, fs: "btrfs", align: 4096, alignFrom: "btrfs sector size", untorn: noUntorn,
				device: "loop", dsyncWhy: "loop device", noWait: ptr(true),
				buffered: ptr(false), bufFrom: "NODATASUM"},
			extra: func(t *testing.T, path string, i Info) {
				var st unix.Statx_t
				if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_MNT_ID, &st); err != nil {
					t.Fatal(err)
				}
				if f := mountNoDataSum(&st); f != known(true, "mountinfo") {
					t.Errorf("mountNoDataSum = %+v, want known true", f)
				}
			},
		},
		{
			name: "overlay",
			file: func(t *testing.T) string { return dataFile(t, mountOverlay(t), "f") },
			want: want{kind: KindRegular, fs: "overlay", align: ^uint32(0), deviceWhy: "overlay", dsyncWhy: "overlay"},
		},
		{
			name: "FUSE (bindfs)",
			file: func(t *testing.T) string { return dataFile(t, mountFUSE(t), "f") },
			want: want{kind: KindRegular, fs: "fuse", align: 0, untorn: noUntorn, deviceWhy: "FUSE", dsyncWhy: "FUSE"},
		},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			path := r.file(t)
			i := gather(t, path)
			t.Logf("%s:\n%s", path, i)
			checkWant(t, i, r.want)
			checkWellFormed(t, i)
			noWaitMatchesRealRead(t, path, i.NoWait)
			if r.extra != nil && !t.Failed() {
				r.extra(t, path, i)
			}
		})
	}
}

func checkWant(t *testing.T, i Info, w want) {
	t.Helper()
	if i.Kind != w.kind {
		t.Errorf("Kind = %v, want %v", i.Kind, w.kind)
	}
	if i.FSType != known(w.fs, i.FSType.From) {
		t.Errorf("FSType = %+v, want %q", i.FSType, w.fs)
	}
	switch {
	case w.align == ^uint32(0):
	case w.align == 0:
		for _, f := range []Fact[uint32]{i.MemAlign, i.OffsetAlign, i.ReadOffsetAlign} {
			if f.Known {
				t.Errorf("alignment %+v, want unknown", f)
			}
		}
	default:
		if i.OffsetAlign.Value != w.align || !i.OffsetAlign.Known || !strings.Contains(i.OffsetAlign.From, w.alignFrom) {
			t.Errorf("OffsetAlign = %+v, want %d from %q", i.OffsetAlign, w.align, w.alignFrom)
		}
		if !i.MemAlign.Known || i.MemAlign.Value == 0 || i.MemAlign.Value > w.align {
			t.Errorf("MemAlign = %+v, want known and at most %d", i.MemAlign, w.align)
		}
		if !i.ReadOffsetAlign.Known || i.ReadOffsetAlign.Value == 0 || i.ReadOffsetAlign.Value > w.align ||
			!strings.Contains(i.ReadOffsetAlign.From, w.readFrom) {
			t.Errorf("ReadOffsetAlign = %+v, want known, at most %d, from %q", i.ReadOffsetAlign, w.align, w.readFrom)
		}
	}
	if w.untorn != nil && (i.Untorn.Value != *w.untorn || !i.Untorn.Known) {
		t.Errorf("Untorn = %+v, want %+v", i.Untorn, *w.untorn)
	}
	d := i.Device.Value
	switch {
	case w.device == "":
		if i.Device.Known || !strings.Contains(i.Device.From, w.deviceWhy) {
			t.Errorf("Device = %+v, want unknown because of %q", i.Device, w.deviceWhy)
		}
	case w.device == "loop":
		if !i.Device.Known || !d.IsLoop() || d.BackingFile == "" {
			t.Errorf("Device = %+v, want a loop device with its backing file", i.Device)
		}
	case !i.Device.Known || d.Name != w.device:
		t.Errorf("Device = %+v, want %s", i.Device, w.device)
	}
	if i.Device.Known {
		for name, f := range map[string]bool{"logical block size": d.LogicalBlockSize.Known,
			"physical block size": d.PhysicalBlockSize.Known, "max I/O": d.MaxIOBytes.Known,
			"rotational": d.Rotational.Known, "write cache": d.WriteCache.Known, "FUA": d.FUA.Known, "io_poll": d.IOPoll.Known} {
			if !f {
				t.Errorf("device %s unknown", name)
			}
		}
	}
	if w.dsync != 0 {
		if i.DSync.Value != w.dsync || !i.DSync.Known {
			t.Errorf("DSync = %+v, want %v", i.DSync, w.dsync)
		}
	} else if i.DSync.Known || !strings.Contains(i.DSync.From, w.dsyncWhy) {
		t.Errorf("DSync = %+v, want unknown because of %q", i.DSync, w.dsyncWhy)
	}
	if w.noWait != nil && i.NoWait != known(*w.noWait, i.NoWait.From) {
		t.Errorf("NoWait = %+v, want %v", i.NoWait, *w.noWait)
	}
	switch {
	case w.buffered == nil:
		if i.MayBeBuffered.Known {
			t.Errorf("MayBeBuffered = %+v, want unknown", i.MayBeBuffered)
		}
	case i.MayBeBuffered.Value != *w.buffered || !i.MayBeBuffered.Known || !strings.Contains(i.MayBeBuffered.From, w.bufFrom):
		t.Errorf("MayBeBuffered = %+v, want %v from %q", i.MayBeBuffered, *w.buffered, w.bufFrom)
	}
}

// checkWellFormed checks what holds for every record: an unknown fact says
// why, and String has one aligned line per fact.
func checkWellFormed(t *testing.T, i Info) {
	t.Helper()
	type fact struct {
		name  string
		known bool
		from  string
	}
	facts := []fact{{"FSType", i.FSType.Known, i.FSType.From}, {"MemAlign", i.MemAlign.Known, i.MemAlign.From},
		{"OffsetAlign", i.OffsetAlign.Known, i.OffsetAlign.From}, {"ReadOffsetAlign", i.ReadOffsetAlign.Known, i.ReadOffsetAlign.From},
		{"Untorn", i.Untorn.Known, i.Untorn.From}, {"Device", i.Device.Known, i.Device.From},
		{"NoWait", i.NoWait.Known, i.NoWait.From}, {"MayBeBuffered", i.MayBeBuffered.Known, i.MayBeBuffered.From},
		{"DSync", i.DSync.Known, i.DSync.From}}
	for _, f := range facts {
		if f.from == "" {
			t.Errorf("%s (known %v) does not say where it came from or why it is unknown", f.name, f.known)
		}
	}
	s := i.String()
	if strings.Contains(s, "unknown ()") || !strings.HasSuffix(s, "\n") {
		t.Errorf("String:\n%s", s)
	}
	col := -1
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		c := strings.Index(line, ":")
		v := c + 1 + len(line[c+1:]) - len(strings.TrimLeft(line[c+1:], " "))
		if c < 0 || (col >= 0 && v != col) {
			t.Errorf("String line not aligned: %q", line)
		}
		col = v
	}
}

// noWaitMatchesRealRead checks the NOWAIT probe against a real 4 KiB
// RWF_NOWAIT read at offset 0: EOPNOTSUPP exactly when NoWait says no.
func noWaitMatchesRealRead(t *testing.T, path string, nw Fact[bool]) {
	t.Helper()
	if !nw.Known {
		t.Errorf("NoWait unknown: %s", nw.From)
		return
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	_, err = unix.Preadv2(fd, [][]byte{make([]byte, 4096)}, 0, unix.RWF_NOWAIT)
	if (err == unix.EOPNOTSUPP) == nw.Value {
		t.Errorf("NoWait %v, but a real RWF_NOWAIT read says %v", nw.Value, err)
	}
}

// zeroLengthReadChecksNothing pins why the NOWAIT probe reads one byte: a
// zero-length RWF_NOWAIT read returns 0 before the kernel checks the flag,
// even on a file that refuses RWF_NOWAIT (path is such a file).
func zeroLengthReadChecksNothing(t *testing.T, path string) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if n, err := unix.Preadv2(fd, [][]byte{{}}, 0, unix.RWF_NOWAIT); n != 0 || err != nil {
		t.Logf("a zero-length RWF_NOWAIT read now says (%d, %v): the kernel checks the flag first", n, err)
	}
	var b [1]byte
	if _, err := unix.Preadv2(fd, [][]byte{b[:]}, noWaitProbeOff, unix.RWF_NOWAIT); err != unix.EOPNOTSUPP {
		t.Errorf("the one-byte probe says %v, want EOPNOTSUPP", err)
	}
}

// alignedBuf returns n bytes of page-aligned anonymous memory.
func alignedBuf(t *testing.T, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	for j := range b {
		b[j] = byte(j)
	}
	return b
}

// untornWritesMatchKernel checks the reported untorn-write limits against
// RWF_ATOMIC writes: the smallest and the largest reported length succeed
// at an offset aligned to the length, twice the largest fails with
// EINVAL.
func untornWritesMatchKernel(t *testing.T, path string, u Untorn) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := alignedBuf(t, int(2*u.Max))
	for _, c := range []struct {
		n   uint32
		err error
	}{{u.Min, nil}, {u.Max, nil}, {2 * u.Max, unix.EINVAL}} {
		n, err := unix.Pwritev2(fd, [][]byte{buf[:c.n]}, int64(c.n), unix.RWF_ATOMIC)
		if err != c.err || (err == nil && n != int(c.n)) {
			t.Errorf("RWF_ATOMIC write of %d bytes at %d: (%d, %v), want error %v", c.n, c.n, n, err, c.err)
		}
	}
}

// directWritesDirtyPages checks MayBeBuffered against the kernel: it
// writes 8 MiB with O_DIRECT to a new file in dir and counts the pages
// dirtied meanwhile (/proc/vmstat nr_dirtied, which counts the whole
// system). A write done through the page cache dirties its 2048 pages; a
// real direct write dirties none of its own (the loop device writes to
// its image with direct I/O too). The global count lags the per-CPU
// counters by up to a few hundred pages, so the line is drawn at half:
// a buffered write stays above it, a direct one below it unless
// something else dirties pages at the same time, which the three tries
// allow for.
func directWritesDirtyPages(t *testing.T, dir string, buffered bool) {
	const size = 8 << 20
	pages := int64(size / os.Getpagesize())
	buf := alignedBuf(t, size)
	p := filepath.Join(dir, "dirtied")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if i := Gather(fd); i.MayBeBuffered != known(buffered, i.MayBeBuffered.From) {
		t.Fatalf("a new file in %s: MayBeBuffered %+v, want %v", dir, i.MayBeBuffered, buffered)
	}
	least := int64(-1)
	for try := 0; try < 3; try++ {
		before := nrDirtied(t)
		if n, err := unix.Pwrite(fd, buf, int64(try)*size); n != size || err != nil {
			t.Fatalf("direct write: (%d, %v)", n, err)
		}
		d := nrDirtied(t) - before
		if least < 0 || d < least {
			least = d
		}
	}
	t.Logf("an 8 MiB direct write dirtied at least %d pages", least)
	if buffered && least < pages/2 {
		t.Errorf("reported buffered, but a direct write of %d pages dirtied %d", pages, least)
	}
	if !buffered && least >= pages/2 {
		t.Errorf("reported direct, but a direct write of %d pages dirtied %d", pages, least)
	}
}

func nrDirtied(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/vmstat")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "nr_dirtied "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no nr_dirtied in /proc/vmstat")
	return 0
}
