//go:build linux

package dio_test

// Power-loss suites: the library's durability promises, checked on a file
// system that loses what was not flushed when the power is cut
// (internal/crashfs: ext4, or xfs for untorn writes, on a loop device over
// an image on the crash file system). Each suite runs crash points: it
// arms a crash at a seeded random request to the image, runs a concurrent
// workload until the crash stops it, brings the file system back, and
// checks what survived against what the library acknowledged.
//
//   - TestPowerLossWriter/GroupCommit: several goroutines append records
//     through one Writer and call SyncData and Sync concurrently (group
//     commit), on new, preallocated, appended-to and recycled logs. Every
//     byte below a Size that a sync acknowledged is there; past it, every
//     sector holds its old content or the Writer's bytes followed by zero
//     padding, never anything else, and a reader accepts only whole
//     records of this Writer there.
//   - TestPowerLossDSync/Writes: DSync and Sync writes (WriteAtContext, or
//     a Request through Submit), and plain writes followed by Datasync or
//     an asynchronous Fdatasync, overwriting and extending one file,
//     aligned or not (read-modify-write), from four goroutines. Every byte
//     holds its last acknowledged value or one a write in flight carried,
//     and the file is as long as an acknowledged write reached.
//   - TestPowerLossAtomicWritesUntorn (xfs with untorn writes): ranges of
//     the smallest and the largest untorn unit overwritten with Atomic
//     hold one write's data, all of it, after crashes that tear the
//     image's writes; ranges of the same sizes written without Atomic are
//     counted when they tear, as a comparison.
//
// The counter-checks (TestPowerLossWriter/Catches..., TestPowerLossDSync/
// CatchesSkipSync) turn the library's syncs into lies
// (internal/durability) and require the suite to report lost acknowledged
// data within a bounded number of crash points, every time: a suite that
// cannot fail proves nothing. A suite and its counter-checks share one
// mount (each in a directory of its own, removed after it): a mount makes
// a file system and starts a FUSE server, which costs more than a few
// crash points.
//
// UIRINGDIO_POWERLOSS_SEED reproduces a run's crash points and workloads
// (not the scheduler's interleavings); UIRINGDIO_LONG=1 runs many more
// crash points and trials.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/crashfs"
	"github.com/uringdio/uringdio/internal/durability"
)

// powerSector is the unit the crash file system tears at, and the direct-I/O
// alignment of the loop devices it runs on: a sector holds one write's
// content for it, or its old content.
const powerSector = 512

// errLost marks a check that found acknowledged data missing after a
// crash: what the counter-checks must see.
var errLost = errors.New("acknowledged data lost")

// powerMount mounts fstype on the block-level crash file system, and
// skips the test where that cannot run (no root, /dev/fuse, loop devices
// or mkfs).
func powerMount(t *testing.T, fstype string, size int64) *crashfs.BlockMount {
	t.Helper()
	m, err := crashfs.MountBlock(t, crashfs.BlockOptions{FS: fstype, Size: size})
	if errors.Is(err, crashfs.ErrUnavailable) {
		t.Skipf("the block-level crash file system cannot run here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// powerBudget bounds a suite's crash points: at least min, then more
// while the run is younger than d, up to max.
type powerBudget struct {
	min, max int
	d        time.Duration
}

func (b powerBudget) more(points int, start time.Time) bool {
	return points < b.max && (points < b.min || time.Since(start) < b.d)
}

// powerRun is what a suite's crash points have in common: where the crash
// comes, and what the crashes did.
type powerRun struct {
	t           *testing.T
	m           *crashfs.BlockMount
	maxRequests int64 // the crash comes at an image request drawn from [1, maxRequests]
	torn        int   // how many crash points in 4 tear the image's writes (Torn); the rest drop them (DropAll)
	points      int   // crash points reached
	firstAck    int   // the first crash point after which acknowledged data was checked (0: none yet)
	dropped     crashfs.CrashStats
}

func (p *powerRun) String() string {
	return fmt.Sprintf("%d crash points; the crashes found %d device writes pending: dropped %d whole, tore %d, kept %d (%d bytes lost)",
		p.points, p.dropped.Writes, p.dropped.WritesDropped, p.dropped.WritesTorn, p.dropped.WritesKept, p.dropped.BytesDropped)
}

// cut arms a crash at an image request drawn from rng, runs work until
// the crash stops it (work returns its first error, or nil once it has
// done its share), and brings the file system back: when cut returns, the
// crash has happened (Restart makes an armed crash happen if the workload
// ended first). An error of work's is the crash's doing only if the crash
// has happened; one that came without a crash is returned. Files work
// opened are the caller's to close afterwards (they fail with EIO).
func (p *powerRun) cut(rng *rand.Rand, work func() error) (string, error) {
	mode := crashfs.DropAll
	if rng.IntN(4) < p.torn {
		mode = crashfs.Torn
	}
	n := 1 + rng.Int64N(p.maxRequests)
	what := fmt.Sprintf("crash point %d (image request %d, %v)", p.points+1, n, mode)
	fired := p.m.CrashAfter(n, rng.Uint64(), mode)
	werr := work()
	var st crashfs.CrashStats
	seen := false
	if werr != nil {
		// The crash's stats reach the channel a little after the request
		// it cut has failed: wait for them, up to a bound far beyond that.
		select {
		case st, seen = <-fired:
		case <-time.After(10 * time.Second):
		}
		if !seen {
			return what, fmt.Errorf("%s: the workload failed without a crash: %w", what, werr)
		}
	}
	if err := p.m.Restart(); err != nil {
		p.t.Fatalf("%s: restart after the crash: %v", what, err)
	}
	if !seen {
		if st, seen = <-fired; !seen {
			p.t.Fatalf("%s: the armed crash was lost", what)
		}
	}
	p.points++
	p.dropped.Writes += st.Writes
	p.dropped.WritesKept += st.WritesKept
	p.dropped.WritesDropped += st.WritesDropped
	p.dropped.WritesTorn += st.WritesTorn
	p.dropped.BytesDropped += st.BytesDropped
	return what, nil
}

// runWorkers runs n workers until each has returned, and returns their
// errors; the first to fail closes stop, which the others watch.
func runWorkers(n int, work func(i int, stop <-chan struct{}) error) error {
	stop := make(chan struct{})
	var once sync.Once
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = work(i, stop)
			if errs[i] != nil {
				once.Do(func() { close(stop) })
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// powerFill fills b with bytes drawn from x (xorshift), eight at a time
// (the race detector checks each store).
func powerFill(b []byte, x uint64) {
	x |= 1
	for len(b) > 0 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if len(b) < 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], x)
			copy(b, w[:])
			return
		}
		binary.LittleEndian.PutUint64(b, x)
		b = b[8:]
	}
}

// zeroExtended returns b[lo:hi], with zeroes where b ends before hi.
func zeroExtended(b []byte, lo, hi int64) []byte {
	out := make([]byte, hi-lo)
	if lo < int64(len(b)) {
		copy(out, b[lo:min(hi, int64(len(b)))])
	}
	return out
}

// zeroPadded reports whether got is want's bytes up to some point, then
// zeroes: what a padded write of a prefix of want leaves.
func zeroPadded(got, want []byte) bool {
	i := 0
	for i < len(got) && got[i] == want[i] {
		i++
	}
	return isZero(got[i:])
}

// writeDurable creates path holding b, fsynced, and fsyncs its directory.
func writeDurable(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	syncDirOf(t, path)
}

// syncDirOf fsyncs the directory that holds path.
func syncDirOf(t *testing.T, path string) {
	t.Helper()
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// ---- the suites' common shape ----

// powerSuite runs one suite's crash points in dir on m until b ends or a
// check fails, and returns what it did and the first violation it found.
// Failures of the harness itself are fatal.
type powerSuite func(t *testing.T, m *crashfs.BlockMount, dir string, seed uint64, b powerBudget) (powerResult, error)

// powerResult is what a suite's run did.
type powerResult interface {
	fmt.Stringer
	run() *powerRun
}

func (p *powerRun) run() *powerRun { return p }

// runPowerSuite runs suite as a test: every check must hold, and the run
// must have checked acknowledged data.
func runPowerSuite(t *testing.T, m *crashfs.BlockMount, suite powerSuite, b powerBudget) {
	t.Helper()
	seed := crashfs.Seed(t)
	start := time.Now()
	res, err := suite(t, m, filepath.Join(m.Dir(), "suite"), seed, b)
	if rerr := os.RemoveAll(filepath.Join(m.Dir(), "suite")); rerr != nil {
		t.Fatal(rerr)
	}
	t.Logf("%s, seed %d, %v: %v", m.FSType(), seed, time.Since(start).Round(time.Millisecond), res)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	if res.run().firstAck == 0 {
		t.Fatalf("seed %d: no crash point came after an acknowledgement: the suite tested nothing", seed)
	}
}

// powerCounterCheck runs trials of suite with the lying switch sw on: in
// each, the suite must report lost acknowledged data within bound crash
// points.
func powerCounterCheck(t *testing.T, m *crashfs.BlockMount, suite powerSuite, sw *atomic.Bool, name string) {
	t.Helper()
	const bound = 20
	seed := crashfs.Seed(t)
	trials := 3
	if longMode() {
		trials = 20
	}
	sw.Store(true)
	defer sw.Store(false)
	caught := 0
	for trial := range trials {
		s := seed + uint64(trial)
		dir := filepath.Join(m.Dir(), fmt.Sprintf("lying-%s-%d", name, trial))
		res, err := suite(t, m, dir, s, powerBudget{min: bound, max: bound})
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		switch {
		case err == nil:
			t.Errorf("trial %d (seed %d): with %s on, %v, and no acknowledged data lost", trial, s, name, res)
		case !errors.Is(err, errLost):
			t.Errorf("trial %d (seed %d): with %s on, the suite failed otherwise than by a loss: %v", trial, s, name, err)
		default:
			caught++
			t.Logf("trial %d: caught at crash point %d (the first after an acknowledgement: %d): %v", trial, res.run().points, res.run().firstAck, err)
		}
	}
	t.Logf("%s with %s: caught %d of %d within %d crash points", m.FSType(), name, caught, trials, bound)
}

// ---- suite 1: the appending Writer and its group commit ----

// A log record is a header (payload length, CRC-32C of the rest, the
// Writer's generation, sequence number) and its payload. A reader walks
// the records from the start of the file, knowing the generation that
// last started the log from 0, and stops at the first record that is not
// whole or does not follow the one before it (the first: that generation
// from 0; then the same generation and the next sequence number, or a
// later generation from 0): at zero padding, at a torn record, and at a
// recycled log's old records, as RocksDB's recyclable log format stops at
// a record of another log number.
const logHeader = 24

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func logRecord(gen, seq uint64, payload []byte) []byte {
	b := make([]byte, logHeader+len(payload))
	binary.LittleEndian.PutUint32(b[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(b[8:], gen)
	binary.LittleEndian.PutUint64(b[16:], seq)
	copy(b[logHeader:], payload)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	return b
}

// logRecords returns the end of the last record a reader of b accepts,
// b being a log that generation first started from 0, and how many it
// accepts.
func logRecords(b []byte, first uint64) (end int64, n int) {
	gen, seq := first, uint64(0)
	for {
		h := b[end:]
		if len(h) < logHeader {
			return end, n
		}
		l := int64(binary.LittleEndian.Uint32(h))
		if l == 0 || l > int64(len(h))-logHeader {
			return end, n
		}
		g, s := binary.LittleEndian.Uint64(h[8:]), binary.LittleEndian.Uint64(h[16:])
		follows := n == 0 && g == first && s == 0 || n > 0 && (g == gen && s == seq+1 || g > gen && s == 0)
		if !follows || crc32.Checksum(h[8:logHeader+l], castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
			return end, n
		}
		gen, seq = g, s
		end += logHeader + l
		n++
	}
}

// logPayload draws a record's payload length: mostly small, some of a
// few sectors, a few across several chunks.
func logPayload(rng *rand.Rand) int {
	switch r := rng.IntN(100); {
	case r < 70:
		return 1 + rng.IntN(600)
	case r < 96:
		return 600 + rng.IntN(8000)
	default:
		return 20000 + rng.IntN(150000)
	}
}

// logModel is what one Writer was given and what its syncs acknowledged.
// Safe for concurrent use.
type logModel struct {
	mu   sync.Mutex // held across each Write and its append to want: want is in the Writer's order
	gen  uint64
	seq  uint64
	want []byte // what the file should hold: its bytes before the Writer's start, then every byte the Writer took

	acked   atomic.Int64 // the largest Size read before a SyncData or Sync that returned nil
	syncs   atomic.Int64 // SyncData and Sync calls that returned nil
	records atomic.Int64
}

func (lm *logModel) ack(size int64) {
	lm.syncs.Add(1)
	for {
		a := lm.acked.Load()
		if size <= a || lm.acked.CompareAndSwap(a, size) {
			return
		}
	}
}

// write appends one record holding payload through w.
func (lm *logModel) write(w dio.Appender, payload []byte) error {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	rec := logRecord(lm.gen, lm.seq, payload)
	k, err := w.Write(rec)
	lm.want = append(lm.want, rec[:k]...)
	if err != nil {
		return fmt.Errorf("write of record %d: %w", lm.seq, err)
	}
	lm.seq++
	lm.records.Add(1)
	return nil
}

// logWorker appends records through w and, after about a third of them,
// syncs (SyncData, some Sync): the Size it read before a sync that
// returned nil is acknowledged.
func logWorker(w dio.Appender, lm *logModel, seed uint64, ops int, stop <-chan struct{}) error {
	rng := newRand(seed)
	payload := make([]byte, 200000)
	for range ops {
		select {
		case <-stop:
			return nil
		default:
		}
		p := payload[:logPayload(rng)]
		powerFill(p, rng.Uint64())
		if err := lm.write(w, p); err != nil {
			return err
		}
		if rng.IntN(3) != 0 {
			continue
		}
		size := w.Size()
		sync, name := w.SyncData, "SyncData"
		if rng.IntN(5) == 0 {
			sync, name = w.Sync, "Sync"
		}
		if err := sync(); err != nil {
			return fmt.Errorf("%s at Size %d: %w", name, size, err)
		}
		lm.ack(size)
	}
	return nil
}

// checkLog checks a log after a crash. got is the file, old what it held
// before the Writer started, want what the Writer was given (old's bytes
// before its start, then its own), acked the largest acknowledged Size,
// closed the Size a Close that returned nil left (-1: none), first the
// generation that last started the log from 0. It returns where a
// reader's walk of the records ends.
func checkLog(got, old, want []byte, acked, closed int64, first uint64) (int64, error) {
	if int64(len(got)) < acked {
		return 0, fmt.Errorf("%w: the log has %d bytes; a sync acknowledged %d", errLost, len(got), acked)
	}
	if !bytes.Equal(got[:acked], want[:acked]) {
		return 0, fmt.Errorf("%w: the %d acknowledged bytes differ from what was written: %s", errLost, acked, firstDiff(got[:acked], want[:acked]))
	}
	if closed >= 0 && int64(len(got)) != closed {
		return 0, fmt.Errorf("after a Close that returned nil at Size %d, the log has %d bytes", closed, len(got))
	}
	// Past the acknowledged bytes, sector by sector: the old content, or
	// what one of the Writer's writes put there (a chunk, or a tail padded
	// with zeroes).
	for lo := acked &^ (powerSector - 1); lo < int64(len(got)); lo += powerSector {
		from, hi := max(lo, acked), min(lo+powerSector, int64(len(got)))
		g := got[from:hi]
		if bytes.Equal(g, zeroExtended(old, from, hi)) || zeroPadded(g, zeroExtended(want, from, hi)) {
			continue
		}
		return 0, fmt.Errorf("past the %d acknowledged bytes, [%d, %d) holds neither what the log held before (%s) nor the Writer's bytes and zero padding (%s)",
			acked, from, hi, firstDiff(g, zeroExtended(old, from, hi)), firstDiff(g, zeroExtended(want, from, hi)))
	}
	end, _ := logRecords(got, first)
	if end < acked {
		return 0, fmt.Errorf("%w: a reader stops at %d, before the %d acknowledged bytes", errLost, end, acked)
	}
	if end > int64(len(want)) || !bytes.Equal(got[acked:end], want[acked:end]) {
		return 0, fmt.Errorf("a reader accepts records up to %d that are not the Writer's (it wrote %d bytes)", end, len(want))
	}
	return end, nil
}

// powerLog is a log file of the Writer suite, and what it held after the
// last recovery.
type powerLog struct {
	path    string
	content []byte
	first   uint64 // the generation that last started it from 0
}

// logRun is the Writer suite: logs in dir created (some preallocated),
// appended to from where a reader stops, and recycled (preallocated,
// rewritten from 0 over old records by a later generation).
type logRun struct {
	powerRun
	dir  string
	logs []*powerLog
	gen  uint64

	modes       map[string]int
	records     int64 // records written
	syncs       int64 // syncs that returned nil
	fdatasyncs  uint64
	ackedBytes  int64 // bytes acknowledged, summed over the crash points
	cleanCloses int
}

func (lr *logRun) String() string {
	var modes []string
	for k, v := range lr.modes {
		modes = append(modes, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(modes)
	return fmt.Sprintf("%v; logs: %s; %d records written, %d syncs acknowledged %d bytes (%d clean Closes), the engine issued %d fsyncs and fdatasyncs for them",
		&lr.powerRun, strings.Join(modes, ", "), lr.records, lr.syncs, lr.ackedBytes, lr.cleanCloses, lr.fdatasyncs)
}

// runLogSuite is the Writer suite's core (a powerSuite).
func runLogSuite(t *testing.T, m *crashfs.BlockMount, dir string, seed uint64, b powerBudget) (powerResult, error) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	syncDirOf(t, dir)
	lr := &logRun{powerRun: powerRun{t: t, m: m, maxRequests: 150, torn: 2}, dir: dir, modes: map[string]int{}}
	start := time.Now()
	for round := 0; b.more(lr.points, start); round++ {
		if err := lr.round(newRand(seed ^ uint64(round)*0x9e3779b97f4a7c15)); err != nil {
			return lr, fmt.Errorf("seed %d, %w", seed, err)
		}
	}
	return lr, nil
}

// round runs one crash point: a Writer on a new, appended-to or recycled
// log, four goroutines writing and syncing through it, the crash, the
// checks.
func (lr *logRun) round(rng *rand.Rand) error {
	t := lr.t
	var (
		lg       *powerLog
		start    int64
		mode     string
		prealloc int64
	)
	lr.gen++
	gen := lr.gen
	var lastEnd int64
	if len(lr.logs) > 0 {
		last := lr.logs[len(lr.logs)-1]
		lastEnd, _ = logRecords(last.content, last.first)
	}
	// The first rounds take each kind of log in turn; then half append,
	// a quarter recycle, a quarter start a new log (at most eight).
	mode = []string{"new", "appended", "recycled", "new preallocated"}[min(lr.points, 3)]
	if lr.points >= 4 {
		mode = []string{"new", "new preallocated", "recycled", "recycled", "appended"}[min(rng.IntN(8), 4)]
	}
	switch {
	case len(lr.logs) == 0 && mode != "new preallocated":
		mode = "new"
	case len(lr.logs) >= 8 && strings.HasPrefix(mode, "new"), mode == "appended" && lastEnd > 4<<20:
		mode = "recycled"
	}
	switch mode {
	case "new", "new preallocated":
		lg = &powerLog{path: filepath.Join(lr.dir, fmt.Sprintf("%06d.log", len(lr.logs)))}
		if mode == "new preallocated" {
			prealloc = 64<<10 + rng.Int64N(1<<20)
		}
	case "recycled":
		lg = lr.logs[rng.IntN(len(lr.logs))]
		prealloc = int64(len(lg.content)) + 64<<10 + rng.Int64N(1<<20)
	case "appended":
		lg = lr.logs[len(lr.logs)-1]
		start = lastEnd
	}
	lr.modes[mode]++
	first := lg.first
	if start == 0 {
		first = gen
	}

	f, err := dio.Open(lg.path, os.O_RDWR|os.O_CREATE, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if lg.content == nil { // new: durable, and empty
		lr.logs = append(lr.logs, lg)
		lg.content = []byte{}
		syncDirOf(t, lg.path)
	}
	if prealloc > 0 {
		if err := f.Preallocate(0, prealloc); err != nil {
			t.Fatal(err)
		}
	}
	chunk, inflight := []int{4 << 10, 16 << 10, 64 << 10, 0}[rng.IntN(4)], 1+rng.IntN(4)
	w, err := f.Appender(start, chunk, inflight)
	if err != nil {
		t.Fatal(err)
	}
	lm := &logModel{gen: gen, want: bytes.Clone(lg.content[:start])}
	lm.acked.Store(start)
	closed := int64(-1)
	syncs0 := f.Engine().Stats().Syncs
	wseed, ops, closeIt := rng.Uint64(), 20+rng.IntN(150), rng.IntN(3) == 0
	if rng.IntN(3) == 0 {
		ops = 2 + rng.IntN(15) // done before most crash points: a Close comes first
	}
	what, err := lr.cut(rng, func() error {
		err := runWorkers(4, func(i int, stop <-chan struct{}) error {
			return logWorker(w, lm, wseed+uint64(i), ops, stop)
		})
		if err == nil && closeIt {
			size := w.Size()
			if err = w.Close(); err == nil {
				closed = size
				lm.ack(size)
			}
		}
		return err
	})
	lr.fdatasyncs += f.Engine().Stats().Syncs - syncs0
	if closed < 0 {
		w.Close() // after the crash: it fails, and gives its buffers back
	}
	where := fmt.Sprintf("%s, %s log %s from %d (chunk %d, %d in flight)", what, mode, filepath.Base(lg.path), start, chunk, inflight)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	acked := lm.acked.Load()
	lr.records += lm.records.Load()
	lr.syncs += lm.syncs.Load()
	lr.ackedBytes += acked - start
	if closed >= 0 {
		lr.cleanCloses++
	}
	if acked > start && lr.firstAck == 0 {
		lr.firstAck = lr.points
	}
	got, err := os.ReadFile(lg.path)
	if err != nil {
		return fmt.Errorf("%s: %w: the log is gone after the crash: %v", where, errLost, err)
	}
	if _, err := checkLog(got, lg.content, lm.want, acked, closed, first); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	lg.content, lg.first = got, first
	return nil
}

// TestPowerLossWriter runs the Writer suite and its counter-checks on one
// ext4 over the block-level crash file system.
//
// GroupCommit: after every crash, each byte a SyncData or Sync
// acknowledged (the Size read before the call) is there, and past it the
// log holds only its old content, the Writer's bytes and zero padding,
// whole records of this Writer as far as a reader goes.
//
// CatchesSkipSync, the counter-check for syncs that lie: with
// durability.SkipSync on, no fdatasync, fsync or RWF_DSYNC reaches the
// file system, and the suite must report a lost acknowledged byte within
// 20 crash points, in every trial.
//
// CatchesEarlyAck, the counter-check for a group commit that acknowledges
// before its sync has completed: with durability.EarlyAck on, the same.
func TestPowerLossWriter(t *testing.T) {
	m := powerMount(t, "ext4", 128<<20)
	t.Run("GroupCommit", func(t *testing.T) {
		b := powerBudget{min: 8, max: 40, d: 4 * time.Second}
		if longMode() {
			b = powerBudget{min: 400, max: 400}
		}
		runPowerSuite(t, m, runLogSuite, b)
	})
	t.Run("CatchesSkipSync", func(t *testing.T) {
		powerCounterCheck(t, m, runLogSuite, &durability.SkipSync, "SkipSync")
	})
	t.Run("CatchesEarlyAck", func(t *testing.T) {
		powerCounterCheck(t, m, runLogSuite, &durability.EarlyAck, "EarlyAck")
	})
}

// ---- suite 2: DSync writes, and Datasync after plain writes ----

// The DSync suite's file: dsyncWorkers regions that each worker
// overwrites, then the appender's bytes. The regions are not multiples of
// the sector, so neighbours share a sector, which each rewrites with a
// read-modify-write under the file's gate.
const (
	dsyncWorkers = 3
	dsyncRegion  = 48<<10 + 200
	dsyncBase    = dsyncWorkers * dsyncRegion // the appender writes from here on
	dsyncCap     = 2 << 20                    // it extends the file up to here, then overwrites its own bytes
)

// dsyncWrite is a write a worker started and that was not acknowledged
// yet.
type dsyncWrite struct {
	off  int64
	data []byte
}

// dsyncModel is what the DSync suite knows of its file. Safe for
// concurrent use.
type dsyncModel struct {
	mu      sync.Mutex
	durable []byte         // each byte's acknowledged value: the file after the last recovery, then each acknowledged write (zero past its end)
	size    int64          // the file is at least this long: its size after the last recovery, or an acknowledged write's end
	maxEnd  int64          // the furthest end a write asked for
	pending [][]dsyncWrite // per worker, the writes it started since its last acknowledgement

	writes, acked, syncs int // writes started, writes acknowledged, Datasync and Fdatasync calls that returned nil
}

func (dm *dsyncModel) start(w int, off int64, data []byte) {
	dm.mu.Lock()
	defer dm.mu.Unlock()
	dm.pending[w] = append(dm.pending[w], dsyncWrite{off, bytes.Clone(data)})
	dm.maxEnd = max(dm.maxEnd, off+int64(len(data)))
	dm.writes++
}

// ack records that worker w's pending writes are durable.
func (dm *dsyncModel) ack(w int) {
	dm.mu.Lock()
	defer dm.mu.Unlock()
	for _, p := range dm.pending[w] {
		end := p.off + int64(len(p.data))
		if end > int64(len(dm.durable)) {
			dm.durable = append(dm.durable, make([]byte, end-int64(len(dm.durable)))...)
		}
		copy(dm.durable[p.off:], p.data)
		dm.size = max(dm.size, end)
		dm.acked++
	}
	dm.pending[w] = dm.pending[w][:0]
}

// check checks the file after a crash: at least as long as every
// acknowledged write reached, no longer than a write asked for (a
// read-modify-write that extends the file may leave it at the sector
// boundary until its truncate), and each byte holds its acknowledged value
// or one that a pending write carried.
func (dm *dsyncModel) check(got []byte) error {
	if int64(len(got)) < dm.size {
		return fmt.Errorf("%w: the file has %d bytes; writes up to %d were acknowledged", errLost, len(got), dm.size)
	}
	if limit := max(int64(len(dm.durable)), alignUpTo(dm.maxEnd, powerSector)); int64(len(got)) > limit {
		return fmt.Errorf("the file has %d bytes, past every write's end (%d)", len(got), dm.maxEnd)
	}
	bad, first := 0, -1
	for lo := int64(0); lo < int64(len(got)); lo += 4096 {
		hi := min(lo+4096, int64(len(got)))
		durable := zeroExtended(dm.durable, lo, hi)
		if bytes.Equal(got[lo:hi], durable) {
			continue // the whole page at once: the race detector checks each byte a loop reads
		}
		for i := lo; i < hi; i++ {
			g := got[i]
			if g == durable[i-lo] {
				continue
			}
			carried := false
			for _, ws := range dm.pending {
				for _, p := range ws {
					if o := i - p.off; o >= 0 && o < int64(len(p.data)) && p.data[o] == g {
						carried = true
					}
				}
			}
			if !carried {
				if first < 0 {
					first = int(i)
				}
				bad++
			}
		}
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d bytes hold neither their acknowledged value nor one a write in flight carried; the first at %d: %#x, acknowledged %#x",
			errLost, bad, first, got[first], zeroExtended(dm.durable, int64(first), int64(first)+1)[0])
	}
	return nil
}

func alignUpTo(n, a int64) int64 { return (n + a - 1) &^ (a - 1) }

// dsyncWorker writes through f: workers below dsyncWorkers overwrite
// their region, the last one extends the file (with a hole now and then)
// and, past dsyncCap, overwrites what it wrote. Half of its writes are
// DSync (a fifth of them Sync), acknowledged when they return; the others
// come in batches of plain writes acknowledged by a Datasync, or by an
// asynchronous Fdatasync request. Half are aligned (the kernel's direct
// I/O; of those, half go through Submit and Request.Wait), half not
// (read-modify-write through bounce buffers).
func dsyncWorker(f *dio.File, dm *dsyncModel, w int, end int64, buf []byte, seed uint64, ops int, stop <-chan struct{}) error {
	rng := newRand(seed)
	ctx := context.Background()
	lo, hi := int64(w)*dsyncRegion, int64(w+1)*dsyncRegion
	for op := 0; op < ops; {
		select {
		case <-stop:
			return nil
		default:
		}
		batch := 0 // DSync
		if rng.IntN(2) == 0 {
			batch = 1 + rng.IntN(4)
		}
		for k := range max(batch, 1) {
			aligned := rng.IntN(2) == 0
			n := 1 + rng.Int64N(16<<10)
			var off int64
			if aligned {
				n = alignUpTo(n, powerSector)
			}
			switch {
			case w < dsyncWorkers:
				off = lo + rng.Int64N(hi-lo-n)
				if aligned {
					off = alignUpTo(off, powerSector)
					if off+n > hi {
						off -= powerSector
					}
				}
			case end < dsyncCap:
				// Extending writes start at the end of file: a write
				// past it on ext4 may bring back, in the gap, bytes a
				// crash left past the end (see
				// TestPowerLossWritePastEOFZeroesTheGap).
				lo, off = dsyncBase, end
				aligned = aligned && off%powerSector == 0
			default:
				lo = dsyncBase
				off = lo + rng.Int64N(end-lo-n)
				if aligned {
					off = alignUpTo(off, powerSector)
				}
			}
			at := 0
			if !aligned && rng.IntN(2) == 0 {
				at = 1 + rng.IntN(powerSector-1) // unaligned memory
			}
			p := buf[at : at+int(n)]
			powerFill(p, rng.Uint64())
			dm.start(w, off, p)
			end = max(end, off+n)
			var fl dio.Flags
			if batch == 0 {
				fl = dio.DSync
				if rng.IntN(5) == 0 {
					fl = dio.Sync
				}
			}
			if err := dsyncWriteOne(ctx, f, p, off, fl, aligned && at == 0 && rng.IntN(2) == 0); err != nil {
				return fmt.Errorf("write %d of %d at %d (flags %v, batch item %d): %w", op, n, off, fl, k, err)
			}
			op++
		}
		if batch > 0 {
			if rng.IntN(2) == 0 {
				if err := f.Datasync(); err != nil {
					return fmt.Errorf("Datasync after %d writes: %w", batch, err)
				}
			} else {
				r := new(dio.Request)
				r.Op = dio.Fdatasync
				if err := f.Submit(r); err != nil {
					return fmt.Errorf("Submit Fdatasync: %w", err)
				}
				if _, err := r.Wait(ctx); err != nil {
					return fmt.Errorf("Fdatasync request after %d writes: %w", batch, err)
				}
			}
			dm.mu.Lock()
			dm.syncs++
			dm.mu.Unlock()
		}
		dm.ack(w)
	}
	return nil
}

// dsyncWriteOne writes p at off with flags fl: with WriteAtContext, or
// (async, for aligned writes) as a Request through Submit, waited for.
func dsyncWriteOne(ctx context.Context, f *dio.File, p []byte, off int64, fl dio.Flags, async bool) error {
	if !async {
		_, err := f.WriteAtContext(ctx, p, off, fl)
		return err
	}
	r := new(dio.Request)
	r.Op, r.Off, r.Buf, r.Flags = dio.Write, off, p, fl
	if err := f.Submit(r); err != nil {
		return err
	}
	_, err := r.Wait(ctx)
	return err
}

// dsyncRun is the DSync suite.
type dsyncRun struct {
	powerRun
	path    string
	durable []byte // the file after the last recovery

	writes, acked, syncs int
}

func (dr *dsyncRun) String() string {
	return fmt.Sprintf("%v; %d writes, %d acknowledged (DSync or Sync, or by %d Datasync and Fdatasync calls); the file ends at %d",
		&dr.powerRun, dr.writes, dr.acked, dr.syncs, len(dr.durable))
}

// runDSyncSuite is the DSync suite's core (a powerSuite).
func runDSyncSuite(t *testing.T, m *crashfs.BlockMount, dir string, seed uint64, b powerBudget) (powerResult, error) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	syncDirOf(t, dir)
	dr := &dsyncRun{powerRun: powerRun{t: t, m: m, maxRequests: 120, torn: 2}, path: filepath.Join(dir, "data")}
	dr.durable = make([]byte, dsyncBase)
	powerFill(dr.durable, seed)
	writeDurable(t, dr.path, dr.durable)
	buf := relBuf(t, 16<<10+2*powerSector)
	bufs := make([][]byte, dsyncWorkers+1)
	for i := range bufs {
		bufs[i] = buf
		if i > 0 {
			bufs[i] = relBuf(t, len(buf))
		}
	}
	start := time.Now()
	for round := 0; b.more(dr.points, start); round++ {
		rng := newRand(seed ^ uint64(round)*0x9e3779b97f4a7c15)
		f, err := dio.Open(dr.path, os.O_RDWR, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		dm := &dsyncModel{durable: bytes.Clone(dr.durable), size: int64(len(dr.durable)), pending: make([][]dsyncWrite, dsyncWorkers+1)}
		wseed, ops := rng.Uint64(), 10+rng.IntN(60)
		what, err := dr.cut(rng, func() error {
			return runWorkers(dsyncWorkers+1, func(i int, stop <-chan struct{}) error {
				return dsyncWorker(f, dm, i, int64(len(dr.durable)), bufs[i], wseed+uint64(i), ops, stop)
			})
		})
		f.Close()
		if err != nil {
			return dr, fmt.Errorf("seed %d, %w", seed, err)
		}
		dr.writes += dm.writes
		dr.acked += dm.acked
		dr.syncs += dm.syncs
		if dm.acked > 0 && dr.firstAck == 0 {
			dr.firstAck = dr.points
		}
		got, err := os.ReadFile(dr.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := dm.check(got); err != nil {
			return dr, fmt.Errorf("seed %d, %s: %w", seed, what, err)
		}
		dr.durable = got
	}
	return dr, nil
}

// TestPowerLossDSync runs the DSync suite and its counter-check on one
// ext4 over the block-level crash file system.
//
// Writes: after every crash, each byte holds the value of the last write
// that covered it and was acknowledged (a DSync or Sync write that
// returned, a plain write followed by a Datasync or Fdatasync that
// returned), or one that a write in flight carried; the file is at least
// as long as an acknowledged write reached.
//
// CatchesSkipSync, the counter-check: with durability.SkipSync on, DSync
// writes carry no RWF_DSYNC and Datasync and Fdatasync do nothing, and the
// suite must report a lost acknowledged byte within 20 crash points, in
// every trial.
func TestPowerLossDSync(t *testing.T) {
	m := powerMount(t, "ext4", 128<<20)
	t.Run("Writes", func(t *testing.T) {
		b := powerBudget{min: 8, max: 40, d: 4 * time.Second}
		if longMode() {
			b = powerBudget{min: 400, max: 400}
		}
		runPowerSuite(t, m, runDSyncSuite, b)
	})
	t.Run("CatchesSkipSync", func(t *testing.T) {
		powerCounterCheck(t, m, runDSyncSuite, &durability.SkipSync, "SkipSync")
	})
}

// TestPowerLossWritePastEOFZeroesTheGap pins what a write that starts
// past the end of file leaves in the gap when a crash has left bytes past
// the end: zeroes, as os.File's pwrite and ftruncate leave them. The crash
// is an ordinary one: a direct write past the end whose data a flush made
// durable (here the fsync of another file) but whose size change the
// crash lost, so that after the remount the file's last block holds that
// write's bytes past the end. A later write further on must not bring
// them back inside the file.
//
// On ext4 it did: the kernel's direct write does not zero the old last
// block past the old end (xfs does, from xfs_file_write_checks), and dio's
// WriteAt passed an aligned write to the kernel as it was and, for an
// unaligned one, zeroed only the sectors its read-modify-write covered.
// A synchronous write that starts past the end now zeroes the rest of the
// old last block first. UIRINGDIO_LONG=1 runs the cases on xfs too.
func TestPowerLossWritePastEOFZeroesTheGap(t *testing.T) {
	const (
		size  = 6000 // the durable end: inside the second 4 KiB block
		stale = 6144 // the lost write, past the end in the same block
		at    = 8192 // where the later write starts: the next block
	)
	ways := []struct {
		name  string
		dio   bool // the library's path, as opposed to a comparison
		write func(t *testing.T, path string)
	}{
		{"dio aligned", true, func(t *testing.T, path string) {
			f, err := dio.Open(path, os.O_RDWR, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := relBuf(t, 4096)
			powerFill(b, 1)
			if _, err := f.WriteAt(b, at); err != nil {
				t.Fatal(err)
			}
		}},
		{"dio unaligned", true, func(t *testing.T, path string) {
			f, err := dio.Open(path, os.O_RDWR, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte("later"), at+100); err != nil {
				t.Fatal(err)
			}
		}},
		{"os.File pwrite", false, func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte("later"), at+100); err != nil {
				t.Fatal(err)
			}
		}},
		{"ftruncate", false, func(t *testing.T, path string) {
			if err := os.Truncate(path, at+4096); err != nil {
				t.Fatal(err)
			}
		}},
	}
	fstypes := []string{"ext4"}
	if longMode() {
		fstypes = append(fstypes, "xfs") // which zeroes the gap: a comparison
	}
	for _, fstype := range fstypes {
		t.Run(fstype, func(t *testing.T) {
			m := powerMount(t, fstype, 0)
			path := func(i int) string { return filepath.Join(m.Dir(), fmt.Sprint("f", i)) }
			old := bytes.Repeat([]byte{'o'}, size)
			b := relBuf(t, 2048)
			for i := range b {
				b[i] = 'X'
			}
			other := filepath.Join(m.Dir(), "other")
			writeDurable(t, other, []byte{1})
			for i := range ways {
				writeDurable(t, path(i), old)
			}
			for i := range ways {
				f, err := dio.Open(path(i), os.O_RDWR, 0, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(b, stale); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			// A flush (the fsync of a file with nothing to commit) makes
			// the device's writes durable, and no size change.
			o, err := os.OpenFile(other, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Sync(); err != nil {
				t.Fatal(err)
			}
			o.Close()
			if _, err := m.Crash(1, crashfs.DropAll); err != nil {
				t.Fatal(err)
			}
			for i, w := range ways {
				t.Run(w.name, func(t *testing.T) {
					if got, err := os.ReadFile(path(i)); err != nil || !bytes.Equal(got, old) {
						t.Fatalf("after the crash: %d bytes, %v; want the %d durable ones", len(got), err, size)
					}
					w.write(t, path(i))
					got, err := os.ReadFile(path(i))
					if err != nil {
						t.Fatal(err)
					}
					gap := got[size:at]
					if isZero(gap) {
						return
					}
					t.Errorf("the gap [%d, %d) the write left holds %d bytes of the write a crash lost past the old end, not zeroes",
						size, at, bytes.Count(gap, []byte{'X'}))
				})
			}
		})
	}
}

// ---- suite 3: untorn writes ----

// errTorn marks an untorn write found torn after a crash.
var errTorn = errors.New("untorn write torn")

// untornMagic opens every sector the untorn suite writes.
const untornMagic = 0x4e524f54 // "TORN"

// untornFill fills b (one sector) with what version v of range id holds
// at sector s: a header naming them, a CRC-32C of the sector, and bytes
// drawn from them.
func untornFill(b []byte, id, v uint32, s int) {
	binary.LittleEndian.PutUint32(b[0:], untornMagic)
	binary.LittleEndian.PutUint32(b[4:], id)
	binary.LittleEndian.PutUint32(b[8:], v)
	binary.LittleEndian.PutUint32(b[12:], uint32(s))
	powerFill(b[20:], uint64(id)<<48^uint64(v)<<20^uint64(s))
	binary.LittleEndian.PutUint32(b[16:], untornSum(b))
}

func untornSum(b []byte) uint32 {
	return crc32.Update(crc32.Checksum(b[:16], castagnoli), castagnoli, b[20:])
}

// untornVersion returns the version sector s of range id holds, or false
// if it holds no version's data for it.
func untornVersion(b []byte, id uint32, s int) (uint32, bool) {
	le := binary.LittleEndian
	ok := le.Uint32(b) == untornMagic && le.Uint32(b[4:]) == id && le.Uint32(b[12:]) == uint32(s) && le.Uint32(b[16:]) == untornSum(b)
	return le.Uint32(b[8:]), ok
}

// untornRange is a range the untorn suite overwrites whole, with Atomic
// or without, always by the same worker.
type untornRange struct {
	id      uint32
	off, n  int64
	atomic  bool
	acked   []uint32 // per sector, the version acknowledged (or read after the last recovery)
	pending []uint32 // versions written since the last acknowledgement
	next    uint32
}

func (r *untornRange) kind() string {
	if r.atomic {
		return fmt.Sprintf("untorn %d", r.n)
	}
	return fmt.Sprintf("plain %d", r.n)
}

// ack records that the range's last version written is durable.
func (r *untornRange) ack() {
	for s := range r.acked {
		r.acked[s] = r.next - 1
	}
	r.pending = r.pending[:0]
}

// check checks the range after a crash: each sector holds a version whole
// (sectors do not tear), the acknowledged one or one written since; an
// untorn range holds one version in every sector. It reports whether a
// range written without Atomic holds more than one.
func (r *untornRange) check(got []byte) (torn bool, err error) {
	if int64(len(got)) < r.off+r.n {
		return false, fmt.Errorf("%w: the file has %d bytes; %s range %d ends at %d", errLost, len(got), r.kind(), r.id, r.off+r.n)
	}
	vs := make([]uint32, len(r.acked))
	for s := range vs {
		v, ok := untornVersion(got[r.off+int64(s)*powerSector:][:powerSector], r.id, s)
		switch {
		case !ok:
			return false, fmt.Errorf("%s range %d at %d: sector %d holds no version's data for it", r.kind(), r.id, r.off, s)
		case v != r.acked[s] && !slices.Contains(r.pending, v):
			return false, fmt.Errorf("%w: %s range %d at %d: sector %d holds version %d; acknowledged %d, written since %v",
				errLost, r.kind(), r.id, r.off, s, v, r.acked[s], r.pending)
		}
		vs[s] = v
	}
	for _, v := range vs {
		if v != vs[0] {
			torn = true
		}
	}
	if torn && r.atomic {
		return true, fmt.Errorf("%w: %s range %d at %d holds %s (acknowledged %v, written since %v)",
			errTorn, r.kind(), r.id, r.off, versionRuns(vs), r.acked[0], r.pending)
	}
	r.acked, r.pending = vs, r.pending[:0]
	return torn, nil
}

// versionRuns describes the versions of a range's sectors as runs.
func versionRuns(vs []uint32) string {
	var b strings.Builder
	for i := 0; i < len(vs); {
		j := i
		for j < len(vs) && vs[j] == vs[i] {
			j++
		}
		fmt.Fprintf(&b, "v%d×%d ", vs[i], j-i)
		i = j
	}
	return strings.TrimSpace(b.String())
}

// untornRun is the untorn suite.
type untornRun struct {
	powerRun
	path   string
	ranges [2][]*untornRange // by worker: the smallest unit's ranges, the largest's

	writes, atomicWrites, acked int
	checks, plainTorn           map[string]int // range checks and tears seen after crashes, by kind
}

func (ur *untornRun) String() string {
	var kinds []string
	for k, n := range ur.checks {
		if !strings.HasPrefix(k, "plain") {
			kinds = append(kinds, fmt.Sprintf("%s: %d range checks, none torn", k, n))
		} else {
			kinds = append(kinds, fmt.Sprintf("%s: %d torn of %d", k, ur.plainTorn[k], n))
		}
	}
	slices.Sort(kinds)
	return fmt.Sprintf("%v; %d writes (%d untorn), %d acknowledged; %s", &ur.powerRun, ur.writes, ur.atomicWrites, ur.acked, strings.Join(kinds, "; "))
}

// untornWorker overwrites its ranges, each write a new version of a whole
// range: with DSync half of the time (acknowledged when it returns), the
// rest in batches acknowledged by a Datasync.
func untornWorker(f *dio.File, ur *untornRun, w int, buf []byte, seed uint64, ops int, stop <-chan struct{}) (writes, atomics, acked int, err error) {
	rng := newRand(seed)
	ctx := context.Background()
	var batch []*untornRange
	for range ops {
		select {
		case <-stop:
			return
		default:
		}
		r := ur.ranges[w][rng.IntN(len(ur.ranges[w]))]
		v := r.next
		r.next++
		p := buf[:r.n]
		for s := range int(r.n / powerSector) {
			untornFill(p[s*powerSector:][:powerSector], r.id, v, s)
		}
		r.pending = append(r.pending, v)
		var fl dio.Flags
		if r.atomic {
			fl = dio.Atomic
			atomics++
		}
		dsync := rng.IntN(2) == 0
		if dsync {
			fl |= dio.DSync
		}
		writes++
		if _, err := f.WriteAtContext(ctx, p, r.off, fl); err != nil {
			return writes, atomics, acked, fmt.Errorf("%s write of range %d version %d (flags %v): %w", r.kind(), r.id, v, fl, err)
		}
		if dsync {
			r.ack()
			acked++
			continue
		}
		if !slices.Contains(batch, r) {
			batch = append(batch, r)
		}
		if rng.IntN(3) == 0 {
			if err := f.Datasync(); err != nil {
				return writes, atomics, acked, fmt.Errorf("Datasync: %w", err)
			}
			for _, r := range batch {
				r.ack()
				acked++
			}
			batch = batch[:0]
		}
	}
	return
}

// runUntornSuite is the untorn suite's core (a powerSuite), on a file
// system with untorn writes (it skips the test elsewhere).
func runUntornSuite(t *testing.T, m *crashfs.BlockMount, dir string, seed uint64, b powerBudget) (powerResult, error) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	syncDirOf(t, dir)
	ur := &untornRun{powerRun: powerRun{t: t, m: m, maxRequests: 60, torn: 3}, path: filepath.Join(dir, "untorn"),
		checks: map[string]int{}, plainTorn: map[string]int{}}
	f, err := dio.Open(ur.path, os.O_RDWR|os.O_CREATE, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	u := c.Untorn.Value
	switch {
	case !u.Supported():
		f.Close()
		t.Skipf("%s reports no untorn writes (%s)", m.FSType(), c.Untorn.From)
	case int64(u.Max) > dio.MaxIOForTest(f):
		f.Close()
		t.Skipf("the largest untorn unit (%d) is more than one SQE (%d): dio refuses it", u.Max, dio.MaxIOForTest(f))
	}
	// Version 0 everywhere, durable: sixteen ranges of each kind of the
	// smallest unit, one of the largest (at an offset aligned to it).
	lo, hi := int64(u.Min), int64(u.Max)
	var off int64
	layout := func(w int, n int64, count int) {
		off = alignUpTo(off, n)
		for _, atomic := range []bool{true, false} {
			for range count {
				r := &untornRange{id: uint32(len(ur.ranges[0]) + len(ur.ranges[1])), off: off, n: n, atomic: atomic,
					acked: make([]uint32, n/powerSector), next: 1}
				ur.ranges[w] = append(ur.ranges[w], r)
				off += n
			}
		}
	}
	layout(0, lo, 16)
	layout(1, hi, 1)
	buf := relBuf(t, int(hi))
	for _, rs := range ur.ranges {
		for _, r := range rs {
			for s := range int(r.n / powerSector) {
				untornFill(buf[s*powerSector:][:powerSector], r.id, 0, s)
			}
			if _, err := f.WriteAt(buf[:r.n], r.off); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	syncDirOf(t, ur.path)
	bufs := [2][]byte{buf[:lo], relBuf(t, int(hi))}

	start := time.Now()
	for round := 0; b.more(ur.points, start); round++ {
		rng := newRand(seed ^ uint64(round)*0x9e3779b97f4a7c15)
		f, err := dio.Open(ur.path, os.O_RDWR, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		wseed := rng.Uint64()
		ops := [2]int{8 + rng.IntN(60), 1 + rng.IntN(6)}
		var counts [2][3]int
		what, err := ur.cut(rng, func() error {
			return runWorkers(2, func(i int, stop <-chan struct{}) error {
				var err error
				counts[i][0], counts[i][1], counts[i][2], err = untornWorker(f, ur, i, bufs[i], wseed+uint64(i), ops[i], stop)
				return err
			})
		})
		f.Close()
		if err != nil {
			return ur, fmt.Errorf("seed %d, %w", seed, err)
		}
		for _, c := range counts {
			ur.writes += c[0]
			ur.atomicWrites += c[1]
			ur.acked += c[2]
			if c[2] > 0 && ur.firstAck == 0 {
				ur.firstAck = ur.points
			}
		}
		got, err := os.ReadFile(ur.path)
		if err != nil {
			t.Fatal(err)
		}
		for _, rs := range ur.ranges {
			for _, r := range rs {
				torn, err := r.check(got)
				if err != nil {
					return ur, fmt.Errorf("seed %d, %s: %w", seed, what, err)
				}
				ur.checks[r.kind()]++
				if torn {
					ur.plainTorn[r.kind()]++
				}
			}
		}
	}
	return ur, nil
}

// TestPowerLossAtomicWritesUntorn runs the untorn suite on xfs (with
// reflink, which gives untorn writes of a block to 1 MiB through
// copy-on-write where the device has none): ranges of the smallest and
// the largest untorn unit overwritten with Atomic, with DSync or a
// Datasync after, crashed mostly in the torn mode (the image keeps a
// random part of the unflushed writes, sector by sector). Each such range
// holds one write's data, all of it, never a mix, and the version
// acknowledged or a later one. Ranges of the same sizes written without
// Atomic may tear (counted, not asserted).
func TestPowerLossAtomicWritesUntorn(t *testing.T) {
	m := powerMount(t, "xfs", 0)
	b := powerBudget{min: 6, max: 40, d: 3 * time.Second}
	if longMode() {
		b = powerBudget{min: 300, max: 300}
	}
	runPowerSuite(t, m, runUntornSuite, b)
}
