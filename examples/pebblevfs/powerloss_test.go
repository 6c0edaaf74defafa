//go:build linux

package pebblevfs

// Power-loss suite: Pebble on the FS, on a file system that loses what was
// not flushed when the power is cut (internal/crashfs: ext4 on a loop
// device over an image on the crash file system, or the crash file system
// itself where loop devices or mkfs are missing). Each crash point arms a
// crash at a seeded random request to the image, starts a crash child (the
// test binary again, see crash_test.go) that commits batches with
// pebble.Sync and says which it was acknowledged, kills the child once the
// crash has cut its power (the process that lost power must not go on),
// brings the file system back, and has a check child reopen the DB and
// read every key, which it compares with what was acknowledged. Unlike TestCrashKeepsAcknowledgedWrites
// (SIGKILL alone, where the kernel keeps everything it accepted), a crash
// here drops every write the FS did not make durable, so a Sync that
// returns before its data is durable loses acknowledged writes: the
// counter-check makes the library's syncs lie and requires the suite to
// notice, every time.
//
// The Pebble DBs run in children rather than here because of what Pebble
// does when its I/O fails: a failed WAL or MANIFEST write or sync after
// the crash is fatal to it (Logger.Fatalf), and its background flushes and
// compactions go on failing; a process of its own is the DB that lost
// power, and SIGKILL ends it, whatever state the errors left it in. The
// check runs in a child too: in the counter-checks the DB it opens may be
// broken, and a compaction that meets a corrupt sstable is fatal as well.
//
// UIRINGDIO_POWERLOSS_SEED reproduces a run's crash points and the
// children's writes (not the scheduler's interleavings);
// UIRINGDIO_POWERLOSS_LEVEL=file runs on the file level; UIRINGDIO_LONG=1
// runs many more crash points and trials.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/internal/crashfs"
)

// powerMaxRequests bounds the crash point: the crash comes at a request to
// the image drawn from [1, powerMaxRequests] (one in five from [1, 60]:
// in or right after the child's Open, recovery included). A Sync commit
// costs the image a few requests (the WAL write, the flush, at times a
// journal commit), the child's Open a few dozen.
const powerMaxRequests = 800

// powerRun is a run of the suite on one DB: what it knows of the DB, and
// what its crash points did.
type powerRun struct {
	t    *testing.T
	tg   crashfs.Target
	dir  string   // the DB, on tg
	seed uint64   // the run's seed: its crash points and the children's writes
	env  []string // added to the children's environment (a lying switch)

	m crashModel

	points      int // crash points reached
	beforeReady int // ... that cut the child's Open (or recovery) short
	checks      int // checks of the DB after a crash
	keysChecked int // keys the checks compared with what was acknowledged
	firstAck    int // the first crash point after which acknowledged writes were checked (0: none)
	uncheckedAt int // acknowledgements when the DB was last checked
	dropped     crashfs.CrashStats
}

func (p *powerRun) String() string {
	return fmt.Sprintf("%d crash points (%d in the child's Open), %d acknowledged Sync commits, %d checks of %d written keys; the crashes found %d image writes pending: dropped %d whole, tore %d, kept %d (%d bytes lost)",
		p.points, p.beforeReady, p.m.acks, p.checks, p.keysChecked, p.dropped.Writes, p.dropped.WritesDropped, p.dropped.WritesTorn, p.dropped.WritesKept, p.dropped.BytesDropped)
}

// runPowerLoss runs points crash points on a new DB in dir, and returns the
// first violation it finds: an acknowledged write missing after a crash (an
// error wrapping errLost), a DB that does not open or read, or a value no
// child wrote (errBroken), or a child that failed without a crash.
// Failures of the harness are fatal.
func runPowerLoss(t *testing.T, tg crashfs.Target, dir string, seed uint64, points int, env []string) (*powerRun, error) {
	t.Helper()
	p := &powerRun{t: t, tg: tg, dir: dir, seed: seed, env: env}
	for round := range points {
		// Most crash points are checked; the rest leave the crashed DB
		// to the next child, which recovers it itself (and may be cut
		// while it does). The last is always checked.
		rng := rand.New(rand.NewPCG(seed, uint64(round)))
		checkIt := round == points-1 || rng.IntN(4) != 0
		if err := p.point(rng, uint64(round+1)*1_000_000, checkIt); err != nil {
			return p, fmt.Errorf("seed %d, crash point %d: %w", seed, round+1, err)
		}
	}
	return p, nil
}

// point runs one crash point: a child writing from sequence base until the
// crash armed at a random image request cuts it, the restart, and the
// check of the DB (if checkIt).
func (p *powerRun) point(rng *rand.Rand, base uint64, checkIt bool) error {
	t := p.t
	mode := crashfs.DropAll
	if rng.IntN(2) == 0 {
		mode = crashfs.Torn
	}
	n := 1 + rng.Int64N(powerMaxRequests)
	if rng.IntN(5) == 0 {
		n = 1 + rng.Int64N(60)
	}
	what := fmt.Sprintf("image request %d, %v", n, mode)
	fired := p.tg.CrashAfter(n, rng.Uint64(), mode)
	env := append([]string{"PEBBLEVFS_CHILD_SEED=" + strconv.FormatUint(p.seed, 10)}, p.env...)
	c := startChild(t, p.dir, base, env, &p.m)

	// Feed the child's lines to the model until it ends: killed when the
	// crash has cut its power, or failed on its own.
	var (
		st      crashfs.CrashStats
		crashed bool
		ready   bool
		other   []string
	)
	timeout := time.After(60 * time.Second)
	for lines := c.lines; lines != nil; {
		select {
		case l, ok := <-lines:
			if !ok {
				lines = nil
				break
			}
			if c.take(t, &p.m, l) {
				ready = ready || l == "ready"
				other = append(other, l)
			}
		case s, ok := <-fired:
			fired = nil
			if ok {
				st, crashed = s, true
				c.cmd.Process.Signal(syscall.SIGKILL)
			}
		case <-timeout:
			c.cmd.Process.Signal(syscall.SIGKILL)
			c.cmd.Wait()
			t.Fatalf("%s: child stuck; it said %q; its stderr:\n%s", what, other, c.errb.String())
		}
	}
	c.cmd.Wait()
	if !crashed {
		// The child ended on its own: only the crash may explain it. Its
		// stats reach the channel a little after the request it cut has
		// failed: wait for them, up to a bound far beyond that delay.
		select {
		case st, crashed = <-fired:
		case <-time.After(10 * time.Second):
		}
		if !crashed {
			for _, l := range other {
				if strings.HasPrefix(l, "err open:") {
					// The child recovers a DB the last crash left.
					return fmt.Errorf("%s: %w: the child could not open the DB after the last crash: %s", what, errBroken, l)
				}
			}
			return fmt.Errorf("%s: the child ended without a crash (%v); it said %q; its stderr:\n%s", what, c.cmd.ProcessState, other, c.errb.String())
		}
	}
	if err := p.tg.Restart(); err != nil {
		t.Fatalf("%s: restart after the crash: %v", what, err)
	}
	p.points++
	if !ready {
		p.beforeReady++
	}
	p.dropped.Files += st.Files
	p.dropped.Writes += st.Writes
	p.dropped.WritesKept += st.WritesKept
	p.dropped.WritesDropped += st.WritesDropped
	p.dropped.WritesTorn += st.WritesTorn
	p.dropped.BytesDropped += st.BytesDropped
	p.dropped.Truncates += st.Truncates
	p.dropped.TruncatesDropped += st.TruncatesDropped
	if !checkIt {
		return nil
	}

	if p.m.acks > p.uncheckedAt && p.firstAck == 0 {
		p.firstAck = p.points
	}
	keys, err := p.check()
	if err != nil {
		return fmt.Errorf("%s (%d commits acknowledged since the last check): %w", what, p.m.acks-p.uncheckedAt, err)
	}
	p.checks++
	p.keysChecked += keys
	p.uncheckedAt = p.m.acks
	return nil
}

// check reads the DB in a check child (checkChild: a DB that a crash
// broke can make Pebble's background work fatal, which must end the
// child, not the test) and compares what it found with the model. A check
// that cannot read every key is an error wrapping errBroken.
func (p *powerRun) check() (int, error) {
	t := p.t
	c := startChild(t, p.dir, 0, []string{"PEBBLEVFS_CHILD_CHECK=1"}, &p.m)
	var (
		states [crashKeys]crashState
		seen   int
		done   bool
		other  []string
	)
	timeout := time.After(60 * time.Second)
	for lines := c.lines; lines != nil; {
		select {
		case l, ok := <-lines:
			if !ok {
				lines = nil
				break
			}
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "state" {
				id, err := strconv.Atoi(f[1])
				if err != nil || id < 0 || id >= crashKeys {
					t.Fatalf("check child said %q", l)
				}
				if f[2] == "del" {
					states[id].del = true
				} else if states[id].seq, err = strconv.ParseUint(f[2], 10, 64); err != nil {
					t.Fatalf("check child said %q", l)
				}
				seen++
				continue
			}
			done = done || l == "checked"
			other = append(other, l)
		case <-timeout:
			c.cmd.Process.Signal(syscall.SIGKILL)
			c.cmd.Wait()
			t.Fatalf("check child stuck; it said %q; its stderr:\n%s", other, c.errb.String())
		}
	}
	c.cmd.Wait()
	if !done || seen != crashKeys {
		stderr, _, _ := strings.Cut(c.errb.String(), "\ngoroutine ")
		return 0, fmt.Errorf("%w: the check read %d keys of %d and ended %v; it said %q; its stderr:\n%s", errBroken, seen, crashKeys, c.cmd.ProcessState, other, stderr)
	}
	return p.m.compare(&states)
}

// powerReplay is the command line that repeats a run's choices.
func powerReplay(test string, seed uint64) string {
	level := ""
	if os.Getenv("UIRINGDIO_POWERLOSS_LEVEL") == "file" {
		level = "UIRINGDIO_POWERLOSS_LEVEL=file "
	}
	return fmt.Sprintf("replay: cd examples/pebblevfs && %sUIRINGDIO_POWERLOSS_SEED=%d go test -run '^%s$' .", level, seed, test)
}

// TestPowerLossKeepsSyncedWrites runs Pebble with pebble.Sync commits over
// crash points at seeded random image requests: after each power cut the
// DB opens without error, every commit acknowledged before the cut is
// there, value for value, and a key holds only a value a child wrote (an
// unacknowledged commit may or may not be there). 6 crash points; 50 in
// the long mode.
func TestPowerLossKeepsSyncedWrites(t *testing.T) {
	tg, what := crashfs.MountEither(t, "ext4", 128<<20)
	seed := crashfs.Seed(t)
	points := 6
	if longMode() {
		points = 50
	}
	start := time.Now()
	p, err := runPowerLoss(t, tg, filepath.Join(tg.Dir(), "db"), seed, points, nil)
	t.Logf("%s, seed %d, %v: %v", what, seed, time.Since(start).Round(time.Millisecond), p)
	if err != nil {
		t.Fatalf("%v\n%s", err, powerReplay("TestPowerLossKeepsSyncedWrites", seed))
	}
	// What the log says, asserted.
	if p.points != points {
		t.Fatalf("%d crash points reached, %d planned", p.points, points)
	}
	if p.m.acks == 0 || p.firstAck == 0 || p.keysChecked == 0 {
		t.Fatalf("seed %d: %d commits acknowledged, first checked after crash point %d, %d keys checked: the suite tested nothing", seed, p.m.acks, p.firstAck, p.keysChecked)
	}
	d := p.dropped
	if d.WritesKept+d.WritesTorn+d.WritesDropped != d.Writes {
		t.Fatalf("the crashes' stats do not add up: %+v", d)
	}
	// A crash point finds unsynced writes to drop about every other time
	// at the block level (the cut comes between a WAL write and its
	// flush, or not): over a long run, some must have been dropped. A
	// short run may miss them all.
	if longMode() && d.WritesDropped+d.WritesTorn == 0 {
		t.Fatalf("seed %d: %d crash points dropped no write: no crash came between a write and its sync", seed, p.points)
	}
}

// TestPowerLossCatchesSkipSync is the suite's counter-check: with
// durability.SkipSync on in the children, no fdatasync, fsync or RWF_DSYNC
// of the library reaches the file system, so Pebble's Sync commits are
// acknowledged before they are durable, and in every trial the suite must
// report lost acknowledged data within its bound of crash points: a
// commit missing, or a DB that no longer opens (at the file level a lost
// MANIFEST is the usual finding: Pebble synced it through the library,
// and nothing else flushes it). Each trial runs on a new DB; 3 trials, 10
// in the long mode.
func TestPowerLossCatchesSkipSync(t *testing.T) {
	powerCounterCheck(t, "SkipSync")
}

// TestPowerLossCatchesEarlyAck is the counter-check for a group commit
// that acknowledges before its sync has completed: with
// durability.EarlyAck on in the children, a Writer's Sync returns once the
// padded tail is written and leaves the fdatasync to run behind, and the
// suite must report lost acknowledged data within its bound of crash
// points, in every trial.
func TestPowerLossCatchesEarlyAck(t *testing.T) {
	powerCounterCheck(t, "EarlyAck")
}

// powerCounterCheck runs trials of the suite with the children's lying
// switch lie on: each must end in a violation (an error wrapping errLost
// or errBroken) within bound crash points.
func powerCounterCheck(t *testing.T, lie string) {
	tg, what := crashfs.MountEither(t, "ext4", 128<<20)
	seed := crashfs.Seed(t)
	const bound = 10
	trials := 3
	if longMode() {
		trials = 10
	}
	caught, lost, broken := 0, 0, 0
	for trial := range trials {
		s := seed + uint64(trial)
		dir := filepath.Join(tg.Dir(), fmt.Sprintf("lying-%s-%d", lie, trial))
		p, err := runPowerLoss(t, tg, dir, s, bound, []string{"PEBBLEVFS_CHILD_LIE=" + lie})
		switch {
		case err == nil:
			t.Errorf("trial %d (seed %d): with %s on, %v, and no acknowledged write lost", trial, s, lie, p)
		case errors.Is(err, errLost), errors.Is(err, errBroken):
			caught++
			if errors.Is(err, errLost) {
				lost++
			} else {
				broken++
			}
			t.Logf("trial %d (the first crash point checked after acknowledged commits: %d): caught: %v", trial, p.firstAck, err)
		default:
			t.Errorf("trial %d (seed %d): with %s on, the suite failed otherwise than by a lost write or a broken DB: %v", trial, s, lie, firstLine(err))
		}
	}
	t.Logf("%s with %s: caught %d of %d trials within %d crash points (%d lost commits, %d DBs broken; seed %d)", what, lie, caught, trials, bound, lost, broken, seed)
	if caught != trials {
		t.Log(powerReplay(t.Name(), seed))
	}
}

// firstLine is err's message up to its first newline (a child's stderr
// follows).
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
