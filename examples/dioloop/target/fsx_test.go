//go:build linux

package target

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/uringdio/uringdio/internal/fsx"
)

// fsxFile is one file of the run on the ext4 above the device, and its
// model.
type fsxFile struct {
	name string
	f    *os.File
	m    *fsx.Model
}

// fsxRun is the model checker on a file system mounted from a target's
// loop device: random writes, truncates, fsyncs and reads of a few files
// through os.File (and so the kernel's page cache), with remounts that
// make the reads reach the device.
type fsxRun struct {
	t     *testing.T
	s     *server
	dir   string
	rng   *rand.Rand
	log   *fsx.Log
	seed  uint64
	files []*fsxFile
	// Counts, for the log.
	reads, writes, truncates, fsyncs, remounts int
}

// fsxMaxSize bounds the files' sizes.
const fsxMaxSize = 2 << 20

// TestExt4AboveReadsEqualTheModel runs the model checker on an ext4 made
// on the target's loop device: writes, truncates and fsyncs through the
// page cache above, remounts (so that the page cache is empty and reads
// come from the device, through the target, from the image), and every
// read, and a full comparison after each remount, equal the model. After
// the run fsck finds the file system clean.
func TestExt4AboveReadsEqualTheModel(t *testing.T) {
	s := serve(t, childConfig{Image: filepath.Join(t.TempDir(), "disk.img"), Size: 64 << 20})
	mkfsExt4(t, s.Dev())
	dir := t.TempDir()
	s.mountExt4(t, dir, "")

	ops := 1500
	if longMode() {
		ops = 200_000
	}
	if v := os.Getenv("UIRINGDIO_FSX_OPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("UIRINGDIO_FSX_OPS: %v", err)
		}
		ops = n
	}
	sd := uint64(time.Now().UnixNano())
	if v := os.Getenv("UIRINGDIO_FSX_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("UIRINGDIO_FSX_SEED: %v", err)
		}
		sd = n
	}
	x := &fsxRun{t: t, s: s, dir: dir, rng: rand.New(rand.NewPCG(sd, 0x9e3779b97f4a7c15)), log: fsx.NewLog(40), seed: sd}
	for i := range 3 {
		x.files = append(x.files, &fsxFile{name: fmt.Sprintf("f%d", i), m: fsx.NewModel()})
	}
	x.open()
	// Registered after the mount's cleanup, so it runs before it: a
	// failed run leaves no file open on the file system.
	t.Cleanup(func() {
		for _, f := range x.files {
			if f.f != nil {
				f.f.Close()
			}
		}
	})
	for range ops {
		x.step()
	}
	x.remount()
	x.closeAll()
	s.umount(t, dir)
	if err := fsck(t, s.Dev()); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	t.Logf("seed %d: %d ops (%d writes, %d reads, %d truncates, %d fsyncs, %d remounts); the target served %d reads (%d MiB), %d writes (%d MiB), %d fdatasyncs; %d bounced",
		sd, ops, x.writes, x.reads, x.truncates, x.fsyncs, x.remounts, st.Reads, st.ReadBytes>>20, st.Writes, st.WriteBytes>>20, st.Datasyncs, st.Engine.Bounced)
	if st.Reads == 0 || st.Datasyncs == 0 {
		t.Errorf("the run reached the target with %d reads and %d fdatasyncs: the checker did not exercise it", st.Reads, st.Datasyncs)
	}
	if st.Errors != 0 {
		t.Errorf("the target answered %d requests with an error", st.Errors)
	}
}

// fail stops the run with the seed, the last operations and a replay
// command.
func (x *fsxRun) fail(format string, args ...any) {
	x.t.Helper()
	x.t.Fatalf("%s\nseed %d; last operations:\n%sreplay: UIRINGDIO_FSX_SEED=%d go test -run %s ./examples/dioloop/target",
		fmt.Sprintf(format, args...), x.seed, x.log, x.seed, x.t.Name())
}

func (x *fsxRun) open() {
	for _, f := range x.files {
		var err error
		if f.f, err = os.OpenFile(filepath.Join(x.dir, f.name), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
			x.fail("open %s: %v", f.name, err)
		}
	}
}

func (x *fsxRun) closeAll() {
	for _, f := range x.files {
		err := f.f.Close()
		f.f = nil
		if err != nil {
			x.fail("close %s: %v", f.name, err)
		}
	}
}

// remount closes the files, unmounts the file system (it writes back what
// is dirty and flushes), mounts it again and compares every file with its
// model: the page cache is empty, so this reads from the device.
func (x *fsxRun) remount() {
	x.remounts++
	x.log.Add("remount")
	x.closeAll()
	x.s.umount(x.t, x.dir)
	x.s.mountExt4(x.t, x.dir, "")
	x.open()
	for _, f := range x.files {
		x.verify(f)
	}
}

// verify reads f whole and compares it with its model.
func (x *fsxRun) verify(f *fsxFile) {
	fi, err := f.f.Stat()
	if err != nil {
		x.fail("stat %s: %v", f.name, err)
	}
	if fi.Size() != f.m.KSize {
		x.fail("%s: size %d, the model says %d", f.name, fi.Size(), f.m.KSize)
	}
	got := make([]byte, f.m.KSize)
	if _, err := f.f.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		x.fail("read %s whole: %v", f.name, err)
	}
	if d := f.m.Check(0, got); d != "" {
		x.fail("%s, read whole: %s", f.name, d)
	}
}

// step runs one random operation.
func (x *fsxRun) step() {
	f := x.files[x.rng.IntN(len(x.files))]
	switch p := x.rng.IntN(100); {
	case p < 40:
		x.write(f)
	case p < 75:
		x.read(f)
	case p < 85:
		x.truncate(f)
	case p < 98:
		x.fsync(f)
	default:
		x.remount()
	}
}

// span returns a random offset and length: block-aligned half of the time
// (the common case of a database), anything otherwise.
func (x *fsxRun) span() (int64, int) {
	if x.rng.IntN(2) == 0 {
		off := int64(x.rng.IntN(fsxMaxSize/4096)) * 4096
		n := (1 + x.rng.IntN(64)) * 4096
		return off, min(n, int(fsxMaxSize-off))
	}
	off := x.rng.Int64N(fsxMaxSize)
	n := 1 + x.rng.IntN(128<<10)
	return off, min(n, int(fsxMaxSize-off))
}

func (x *fsxRun) write(f *fsxFile) {
	off, n := x.span()
	p := randomBytes(x.rng, n)
	x.log.Add("write %s [%d, %d) %d bytes", f.name, off, off+int64(n), n)
	if _, err := f.f.WriteAt(p, off); err != nil {
		x.fail("write %s at %d: %v", f.name, off, err)
	}
	f.m.Write(off, p)
	x.writes++
}

func (x *fsxRun) read(f *fsxFile) {
	off, n := x.span()
	if x.rng.IntN(4) == 0 && f.m.KSize > 0 {
		off = x.rng.Int64N(f.m.KSize) // inside the file, most of the time
	}
	x.log.Add("read %s [%d, %d)", f.name, off, off+int64(n))
	got := make([]byte, n)
	k, err := f.f.ReadAt(got, off)
	if err != nil && !errors.Is(err, io.EOF) {
		x.fail("read %s at %d: %v", f.name, off, err)
	}
	want := max(0, min(int64(n), f.m.KSize-off))
	if int64(k) != want {
		x.fail("read %s [%d, %d): %d bytes, the model has %d", f.name, off, off+int64(n), k, want)
	}
	if d := f.m.Check(off, got[:k]); d != "" {
		x.fail("read %s: %s", f.name, d)
	}
	x.reads++
}

func (x *fsxRun) truncate(f *fsxFile) {
	n := x.rng.Int64N(fsxMaxSize)
	if x.rng.IntN(2) == 0 {
		n &^= 4095
	}
	x.log.Add("truncate %s %d", f.name, n)
	if err := f.f.Truncate(n); err != nil {
		x.fail("truncate %s to %d: %v", f.name, n, err)
	}
	f.m.Truncate(n)
	x.truncates++
}

func (x *fsxRun) fsync(f *fsxFile) {
	x.log.Add("fsync %s", f.name)
	if err := f.f.Sync(); err != nil {
		x.fail("fsync %s: %v", f.name, err)
	}
	x.fsyncs++
}
