//go:build linux

package main

// Power-loss suite: the store runs on a file system that loses what was
// not flushed when the power is cut (internal/crashfs: ext4 on a loop
// device over a crash file system image, or the crash file system itself
// where loop devices or mkfs are missing). Each round arms a crash at a
// seeded random request to the image, opens the store (recovering it),
// checks every page against what was acknowledged, then writes, reads and
// checkpoints until the crash stops it, and remounts. Unlike
// TestCrashRecovery (SIGKILL, where the kernel's caches survive), a crash
// here drops every write the store did not make durable, so a missing
// fdatasync or RWF_DSYNC loses acknowledged pages: the counter-check
// turns the library's durability calls into lies and expects the suite to
// notice.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/uringdio/uringdio/internal/crashfs"
	"github.com/uringdio/uringdio/internal/durability"
)

func powerLongMode() bool {
	return os.Getenv("UIRINGDIO_LONG") != "" && os.Getenv("UIRINGDIO_LONG") != "0"
}

// powerCfg is one run of the suite.
type powerCfg struct {
	dir  string // the store, on the target
	seed uint64
	// Crash points: at least minRounds, then more while the run is
	// younger than budget, up to maxRounds.
	minRounds, maxRounds int
	budget               time.Duration
	// maxRequests bounds the crash point: the crash comes at a request
	// to the image drawn from [1, maxRequests].
	maxRequests int64
}

// powerResult is what a run did.
type powerResult struct {
	rounds        int // crash points reached
	recoveryCuts  int // ... of which during Open (recovery)
	acks          int // Puts acknowledged
	verifiedPages int // page reads checked against the model after recovery
	firstAckRound int // the first round that acknowledged a Put (-1: none)
	dropped       crashfs.CrashStats
}

func (r *powerResult) String() string {
	return fmt.Sprintf("%d crash points (%d during recovery), %d acknowledged Puts, %d pages verified after recovery; the crashes found %d writes pending and dropped %d whole, tore %d (%d bytes lost)",
		r.rounds, r.recoveryCuts, r.acks, r.verifiedPages, r.dropped.Writes, r.dropped.WritesDropped, r.dropped.WritesTorn, r.dropped.BytesDropped)
}

// powerModel is what the suite knows of the store: per page, the last
// acknowledged version and the versions whose Put started but was not
// acknowledged (each may or may not have made it). Safe for concurrent
// use.
type powerModel struct {
	mu sync.Mutex
	m  crashModel
}

func (pm *powerModel) put(id uint32, v uint64) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.m.pending[id] = append(pm.m.pending[id], v)
}

func (pm *powerModel) ack(id uint32, v uint64) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.m.acked[id] = v
	pm.m.pending[id] = pm.m.pending[id][:0]
}

// errRead marks a check that could not read the pages (the crash may
// have cut it short), as opposed to one that found a violation.
var errRead = errors.New("read after recovery failed")

// check reads every page of s and checks it against the model: the last
// acknowledged version, or a newer unacknowledged one, and whole (the
// store checks each page's checksum and id; a payload is checked byte for
// byte). The pages read become the acknowledged state: recovery made
// them durable.
func (pm *powerModel) check(s *Store) (int, error) {
	ids := make([]uint32, crashPages)
	dsts := make([][]byte, crashPages)
	for i := range ids {
		ids[i], dsts[i] = uint32(i), make([]byte, PayloadSize)
	}
	if err := s.Get(context.Background(), ids, dsts); err != nil {
		if errors.Is(err, ErrCorrupt) {
			return 0, fmt.Errorf("read after recovery: %w", err)
		}
		return 0, fmt.Errorf("%w: %w", errRead, err)
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for i, id := range ids {
		got := payloadVersion(dsts[i])
		if !pm.m.allowed(id, got) {
			return 0, fmt.Errorf("page %d holds version %d; last acknowledged %d, unacknowledged %v: an acknowledged write was lost", id, got, pm.m.acked[id], pm.m.pending[id])
		}
		if err := checkPayload(dsts[i], id, got); err != nil {
			return 0, fmt.Errorf("torn or wrong page accepted: %w", err)
		}
		pm.m.acked[id] = got
		pm.m.pending[id] = pm.m.pending[id][:0]
	}
	return len(ids), nil
}

// runPowerLoss runs the suite and returns the first violation it finds:
// an acknowledged write missing after recovery, a torn page accepted, or
// the store failing without a crash. Failures of the harness itself are
// fatal.
func runPowerLoss(t *testing.T, tg crashfs.Target, cfg powerCfg) (*powerResult, error) {
	t.Helper()
	res := powerResult{firstAckRound: -1}
	var model powerModel
	version := uint64(0)
	start := time.Now()
	for round := 0; round < cfg.maxRounds && (round < cfg.minRounds || time.Since(start) < cfg.budget); round++ {
		rng := rand.New(rand.NewPCG(cfg.seed, uint64(round)))
		mode := crashfs.DropAll
		if rng.IntN(2) == 0 {
			mode = crashfs.Torn
		}
		n := 1 + rng.Int64N(cfg.maxRequests)
		if rng.IntN(4) == 0 {
			n = 1 + rng.Int64N(8) // in or right after recovery
		}
		cw := &crashWatch{fired: tg.CrashAfter(n, rng.Uint64(), mode)}
		if err := powerRound(cfg, rng, &model, &version, &res, cw); err != nil {
			return &res, fmt.Errorf("round %d (crash at image request %d, %v, seed %d): %w", round, n, mode, cfg.seed, err)
		}
		// Restart makes the crash happen now if the workload stopped
		// before it (its Put limit).
		if err := tg.Restart(); err != nil {
			t.Fatalf("round %d: restart after the crash: %v", round, err)
		}
		st, ok := cw.stats()
		if !ok {
			t.Fatalf("round %d: the armed crash was lost", round)
		}
		res.rounds++
		res.dropped.Writes += st.Writes
		res.dropped.WritesDropped += st.WritesDropped
		res.dropped.WritesTorn += st.WritesTorn
		res.dropped.BytesDropped += st.BytesDropped
		if res.acks > 0 && res.firstAckRound < 0 {
			res.firstAckRound = round
		}
	}
	// The last recovery, checked.
	s, err := Open(cfg.dir, crashOpts)
	if err != nil {
		return &res, fmt.Errorf("final reopen: %w", err)
	}
	defer s.Close()
	k, err := model.check(s)
	res.verifiedPages += k
	if err != nil {
		return &res, fmt.Errorf("after the last crash: %w", err)
	}
	return &res, nil
}

// crashWatch follows one armed crash.
type crashWatch struct {
	fired <-chan crashfs.CrashStats
	st    crashfs.CrashStats
	seen  bool
}

// happened reports whether the crash has happened, so that an error may
// be its doing. The crash's stats reach the channel a little after the
// request it cut has failed: happened waits for them, up to a limit far
// beyond that delay.
func (w *crashWatch) happened() bool {
	if !w.seen {
		select {
		case st, ok := <-w.fired:
			w.st, w.seen = st, ok
		case <-time.After(10 * time.Second):
		}
	}
	return w.seen
}

// stats waits for the crash (it must have happened, or have been made to
// by Restart) and returns what it dropped.
func (w *crashWatch) stats() (crashfs.CrashStats, bool) {
	if !w.seen {
		w.st, w.seen = <-w.fired
	}
	return w.st, w.seen
}

// maxPutsPerRound stops a round's workload if the crash has not come.
const maxPutsPerRound = 5000

// powerRound opens (recovers) the store, checks it, and runs the workload
// until the armed crash stops it (or it has made maxPutsPerRound Puts).
func powerRound(cfg powerCfg, rng *rand.Rand, model *powerModel, version *uint64, res *powerResult, cw *crashWatch) error {
	s, err := Open(cfg.dir, crashOpts)
	if err != nil {
		if cw.happened() {
			res.recoveryCuts++
			return nil
		}
		return fmt.Errorf("open without a crash: %w", err)
	}
	defer s.Close() // after a crash it fails (the device is gone): the store is fenced
	k, err := model.check(s)
	res.verifiedPages += k
	if err != nil {
		if !errors.Is(err, errRead) || !cw.happened() {
			return err
		}
		res.recoveryCuts++
		return nil
	}

	// The workload: a writer (Puts, checkpoints) and a reader (Gets),
	// until the first error, which the crash must explain.
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	wseed, rseed := rng.Uint64(), rng.Uint64()
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer halt()
		wrng := rand.New(rand.NewPCG(wseed, 1))
		payload := make([]byte, PayloadSize)
		for range maxPutsPerRound {
			select {
			case <-stop:
				return
			default:
			}
			*version++
			id, v := uint32(wrng.IntN(crashPages)), *version
			fillPayload(payload, id, v)
			model.put(id, v)
			if err := s.Put(ctx, id, payload); err != nil {
				errs <- fmt.Errorf("put page %d version %d: %w", id, v, err)
				return
			}
			model.ack(id, v)
			res.acks++
			if wrng.IntN(13) == 0 {
				if err := s.Checkpoint(ctx); err != nil {
					errs <- fmt.Errorf("checkpoint: %w", err)
					return
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		defer halt()
		rrng := rand.New(rand.NewPCG(rseed, 2))
		ids := make([]uint32, 4)
		dsts := make([][]byte, len(ids))
		for i := range dsts {
			dsts[i] = make([]byte, PayloadSize)
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := range ids {
				ids[i] = uint32(rrng.IntN(crashPages))
			}
			if err := s.Get(ctx, ids, dsts); err != nil {
				errs <- fmt.Errorf("get: %w", err)
				return
			}
			for i, id := range ids {
				if err := checkPayload(dsts[i], id, payloadVersion(dsts[i])); err != nil {
					errs <- fmt.Errorf("get returned a wrong page: %w", err)
					return
				}
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if errors.Is(err, ErrCorrupt) || !cw.happened() {
			return fmt.Errorf("the store failed without a crash: %w", err)
		}
	}
	return nil
}

// TestPowerLoss runs the store over crash points at seeded random image
// requests (UIRINGDIO_POWERLOSS_SEED reproduces a run's choices; the
// interleaving of its reader and writer is the scheduler's): every Put
// acknowledged before a crash must read back, byte for byte, after
// recovery, and no torn page may be accepted.
func TestPowerLoss(t *testing.T) {
	tg, what := crashfs.MountEither(t, "ext4", 128<<20)
	cfg := powerCfg{dir: filepath.Join(tg.Dir(), "store"), seed: crashfs.Seed(t), minRounds: 10, maxRounds: 20, budget: 10 * time.Second, maxRequests: 200}
	if powerLongMode() {
		cfg.minRounds, cfg.maxRounds = 500, 500
	}
	start := time.Now()
	res, err := runPowerLoss(t, tg, cfg)
	t.Logf("%s, seed %d, %v: %v", what, cfg.seed, time.Since(start).Round(time.Millisecond), res)
	if err != nil {
		t.Fatal(err)
	}
	if res.acks == 0 || res.verifiedPages == 0 {
		t.Fatalf("the suite acknowledged %d Puts and verified %d pages: it tested nothing", res.acks, res.verifiedPages)
	}
}

// TestPowerLossCatchesLyingSync is the suite's counter-check: with
// durability.SkipSync on, every fdatasync, fsync and RWF_DSYNC of the
// library is a lie, and in every trial the suite must report a lost
// acknowledged write (or a torn page) within its bound of crash points.
// Rounds whose crash comes before any Put is acknowledged (during
// recovery) can show nothing; the first crash after acknowledged Puts
// nearly always does (a Torn crash may keep a few lied-about writes), and
// the test logs which crash point that was.
func TestPowerLossCatchesLyingSync(t *testing.T) {
	tg, what := crashfs.MountEither(t, "ext4", 128<<20)
	seed := crashfs.Seed(t)
	trials := 3
	if powerLongMode() {
		trials = 30
	}
	durability.SkipSync.Store(true)
	defer durability.SkipSync.Store(false)
	caught := 0
	for trial := range trials {
		const bound = 20
		cfg := powerCfg{dir: filepath.Join(tg.Dir(), fmt.Sprint("lying-", trial)), seed: seed + uint64(trial), minRounds: bound, maxRounds: bound, maxRequests: 200}
		res, err := runPowerLoss(t, tg, cfg)
		if err == nil {
			t.Errorf("trial %d (seed %d): %v with lying syncs, and no lost write found", trial, cfg.seed, res)
			continue
		}
		caught++
		t.Logf("trial %d: caught in the recovery after crash point %d (the first crash after acknowledged Puts: point %d): %v",
			trial, res.rounds, res.firstAckRound+1, err)
	}
	t.Logf("%s: caught %d of %d", what, caught, trials)
}
