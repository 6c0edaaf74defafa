//go:build linux

package target

// Power loss beneath the target: the image lives on internal/crashfs's
// file-level crash file system, which keeps every write since the image's
// last fsync or fdatasync apart and drops it (all of it, or a seeded torn
// subset) when the power is cut. ext4 on the target's loop device writes
// files and fsyncs them; then the power goes, the old mount is shut down
// without flushing its log, the target stops, and a new target serves
// what the image kept. Every file whose fsync (and its directory's)
// returned must be there with its data, and fsck must find the file system
// clean. The target only keeps that promise if the device's flushes become
// fdatasyncs of the image before they are answered: the counter-check
// answers them first and must lose files.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/uringdio/uringdio/internal/crashfs"
	"golang.org/x/sys/unix"
)

// upperOpts mount the ext4 above: no periodic journal commit masks a
// missing flush (commit=3600), nor does the flush ext4 adds on
// replace-by-rename and truncate (noauto_da_alloc).
const upperOpts = "commit=3600,noauto_da_alloc"

// powerRun is the power-loss harness: a crash file system holding the
// image, the target serving it, and ext4 on the target's loop device.
type powerRun struct {
	t     *testing.T
	fs    *crashfs.FS
	image string // the image, on fs
	cc    childConfig
	s     *server
	dir   string // where the ext4 above is mounted
	rng   *rand.Rand
	seed  uint64
	acked map[string][]byte // files whose fsync returned, and their data
	// Totals, for the log.
	fsynced, checked int
	dropped          crashfs.CrashStats
}

// newPowerRun makes an ext4 image on the crash file system's durable
// side (a freshly formatted disk, all of it durable), and serves it.
func newPowerRun(t *testing.T, ackBeforeSync bool) *powerRun {
	skipUnlessLoopOverFUSE(t)
	backing := t.TempDir()
	raw := filepath.Join(backing, "disk.img")
	if err := os.WriteFile(raw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 64<<20); err != nil {
		t.Fatal(err)
	}
	mkfsExt4(t, raw)
	fs, err := crashfs.Mount(t, crashfs.Options{Backing: backing})
	if err != nil {
		t.Fatal(err)
	}
	sd := crashfs.Seed(t)
	r := &powerRun{
		t:     t,
		fs:    fs,
		image: filepath.Join(fs.Dir(), "disk.img"),
		cc:    childConfig{AckBeforeSync: ackBeforeSync},
		dir:   t.TempDir(),
		rng:   rand.New(rand.NewPCG(sd, 1)),
		seed:  sd,
		acked: make(map[string][]byte),
	}
	r.cc.Image = r.image
	r.start()
	return r
}

// start serves the image and mounts the ext4 on it (which replays its
// journal after a crash).
func (r *powerRun) start() {
	r.s = serve(r.t, r.cc)
	r.s.mountExt4(r.t, r.dir, upperOpts)
}

// writeFile creates name with data and fsyncs it, or (sync false)
// writes the data back to the device without a flush (sync_file_range):
// writes the image holds pending at the cut. A write or fsync error (the
// power is out) returns it; the file is closed either way.
func (r *powerRun) writeFile(name string, data []byte, sync bool) error {
	f, err := os.OpenFile(filepath.Join(r.dir, name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		if sync {
			err = f.Sync()
		} else {
			err = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// overwrite rewrites part of an acknowledged file in place and fsyncs it.
// If that fails, the file's content is no longer known (part of the
// overwrite may be on the image): it is dropped from the acknowledged set.
func (r *powerRun) overwrite(name string) error {
	data := slices.Clone(r.acked[name])
	off := r.rng.IntN(len(data))
	n := 1 + r.rng.IntN(len(data)-off)
	copy(data[off:off+n], randomBytes(r.rng, n))
	delete(r.acked, name)
	f, err := os.OpenFile(filepath.Join(r.dir, name), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data[off:off+n], int64(off))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		r.acked[name] = data
	}
	return err
}

// workload writes and fsyncs files (and their directory), overwrites some
// acknowledged ones in place and fsyncs them, and leaves a few unsynced at
// the end, until it is done or a call fails (the power is out). It returns
// the error that stopped it.
func (r *powerRun) workload(round int) error {
	for k := range 6 {
		name := fmt.Sprintf("r%d-%d", round, k)
		data := randomBytes(r.rng, 4096*(1+r.rng.IntN(48))+r.rng.IntN(4096))
		if err := r.writeFile(name, data, true); err != nil {
			return err
		}
		if err := syncDir(r.dir); err != nil {
			return err
		}
		r.acked[name] = data
		r.fsynced++
		if len(r.acked) > 1 && r.rng.IntN(2) == 0 {
			names := make([]string, 0, len(r.acked))
			for n := range r.acked {
				names = append(names, n)
			}
			slices.Sort(names)
			if err := r.overwrite(names[r.rng.IntN(len(names))]); err != nil {
				return err
			}
			r.fsynced++
		}
	}
	for k := range 3 {
		data := randomBytes(r.rng, 4096*(1+r.rng.IntN(16)))
		if err := r.writeFile(fmt.Sprintf("r%d-unsynced-%d", round, k), data, false); err != nil {
			return err
		}
	}
	return nil
}

// cut cuts the power: werr is the error that stopped the workload, which
// must be the armed crash's (fired) doing; with none, it cuts the power
// now, and counts the armed crash too if it fired unseen (at a write the
// workload did not wait for). Then it shuts the ext4 above down without
// flushing its log, unmounts it, stops the target (whose flushes fail from
// the cut on), ends the crash and serves the durable image again.
func (r *powerRun) cut(mode crashfs.Mode, fired <-chan crashfs.CrashStats, werr error) {
	t := r.t
	add := func(st crashfs.CrashStats) {
		r.dropped.Writes += st.Writes
		r.dropped.WritesDropped += st.WritesDropped
		r.dropped.WritesTorn += st.WritesTorn
		r.dropped.BytesDropped += st.BytesDropped
	}
	switch {
	case werr != nil && fired == nil:
		t.Fatalf("the workload failed with the power on: %v", werr)
	case werr != nil:
		// The crash that failed the workload: its stats are sent
		// when it happens, perhaps after the failure reached us.
		st, ok := <-fired
		if !ok {
			t.Fatalf("the workload failed (%v), and the armed crash did not fire", werr)
		}
		add(st)
	default:
		st, err := r.fs.Crash(r.rng.Uint64(), mode)
		if err != nil {
			t.Fatal(err)
		}
		add(st)
		if fired != nil {
			// Crash disarmed it, or it had fired: either way
			// the channel is closed now, with its stats if it
			// fired.
			if st, ok := <-fired; ok {
				add(st)
			}
		}
	}
	shutdownFS(r.dir)
	if err := unix.Unmount(r.dir, 0); err != nil {
		t.Fatalf("umount %s after the cut: %v", r.dir, err)
	}
	r.s.call("RemoveUpper", r.dir, new(int))
	// Its flushes fail with EIO: the image it has open is from before
	// the cut.
	if err := r.s.stop(); err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatalf("the target from before the cut: %v", err)
	}
	if err := r.fs.Restart(); err != nil {
		t.Fatal(err)
	}
	r.start()
}

// check reads every acknowledged file, then unmounts the ext4 and runs
// fsck on the device, and returns what it found wrong; then it mounts the
// ext4 again.
func (r *powerRun) check() error {
	var errs []error
	names := make([]string, 0, len(r.acked))
	for n := range r.acked {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		got, err := os.ReadFile(filepath.Join(r.dir, name))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("fsynced file %s: %w", name, err))
		case !bytes.Equal(got, r.acked[name]):
			errs = append(errs, fmt.Errorf("fsynced file %s: %d bytes, not the %d fsynced", name, len(got), len(r.acked[name])))
		}
		r.checked++
	}
	r.s.umount(r.t, r.dir)
	if err := fsck(r.t, r.s.Dev()); err != nil {
		errs = append(errs, err)
	}
	r.s.mountExt4(r.t, r.dir, upperOpts)
	return errors.Join(errs...)
}

// TestFsyncedFilesSurvivePowerLoss cuts the power under the target in
// rounds, dropping every write the image had not fdatasynced (DropAll) or
// a torn subset of them (Torn), at the end of a round's workload or in the
// middle of it (at a seeded random request to the image), and checks after
// each cut that every file the ext4 above had fsynced is intact and that
// fsck finds the file system clean.
func TestFsyncedFilesSurvivePowerLoss(t *testing.T) {
	r := newPowerRun(t, false)
	rounds := 6
	if longMode() {
		rounds = 60
	}
	midway := 0
	for round := range rounds {
		mode := crashfs.DropAll
		if round%2 == 1 {
			mode = crashfs.Torn
		}
		var fired <-chan crashfs.CrashStats
		if round%3 == 2 {
			// In the middle: at a request to the image (writes and
			// syncs), of which a round makes about 85.
			fired = r.fs.CrashAfter(1+r.rng.Int64N(70), r.rng.Uint64(), mode)
		}
		werr := r.workload(round)
		if werr != nil {
			midway++
		}
		r.cut(mode, fired, werr)
		if err := r.check(); err != nil {
			t.Fatalf("round %d (%v), seed %d: %v\nreplay: UIRINGDIO_POWERLOSS_SEED=%d go test -run %s ./examples/dioloop/target",
				round, mode, r.seed, err, r.seed, t.Name())
		}
	}
	st := r.fs.Stats()
	t.Logf("seed %d: %d rounds (%d cut in the middle of the workload), %d fsyncs acknowledged, %d file checks after the cuts; the image got %d writes and %d syncs, the cuts found %d writes pending and dropped %d, tore %d (%d bytes lost)",
		r.seed, rounds, midway, r.fsynced, r.checked, st.Writes, st.Syncs, r.dropped.Writes, r.dropped.WritesDropped, r.dropped.WritesTorn, r.dropped.BytesDropped)
	if r.dropped.Writes == 0 {
		t.Error("no cut found a write pending: the test cut nothing")
	}
}

// TestEarlyFlushAckIsCaught is the counter-check: the target answers the
// device's flushes without the image's Datasync (the child's dio skips it:
// durability.SkipSync), and the power-loss check above must find fsynced
// files lost.
func TestEarlyFlushAckIsCaught(t *testing.T) {
	r := newPowerRun(t, true)
	werr := r.workload(0)
	if r.fsynced == 0 {
		t.Fatal("the workload acknowledged no fsync")
	}
	r.cut(crashfs.DropAll, nil, werr)
	err := r.check()
	if err == nil {
		t.Fatalf("flushes answered without the image's Datasync, %d fsynced files, a cut, and the check found nothing lost", len(r.acked))
	}
	t.Logf("caught, as it must be: %v", err)
}

// syncDir fsyncs a directory: its entries are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
