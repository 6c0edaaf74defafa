//go:build linux

package pebblevfs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// workloadOptions makes a DB that flushes and compacts often: a small
// memtable and L0 threshold, small files, a small block cache so that
// reads reach the files.
func workloadOptions(fs *FS, blockSize int, logger pebble.Logger) *pebble.Options {
	o := &pebble.Options{
		FS:                    fs,
		Logger:                logger,
		MemTableSize:          1 << 20,
		L0CompactionThreshold: 2,
		Cache:                 pebble.NewCache(4 << 20),
	}
	o.Levels[0].BlockSize = blockSize
	o.TargetFileSizes[0] = 1 << 20
	return o
}

// TestWorkload runs a random workload on Pebble over the FS and checks
// every key against an in-memory model: sets with random values in
// batches, deletes, range deletes, snapshots (checked against the model as
// it was), flushes, a manual compaction and reopens, with 4 KiB and 32 KiB
// blocks. 100k keys; a million in the long mode.
func TestWorkload(t *testing.T) {
	keys := 100_000
	if longMode() {
		keys = 1_000_000
	} else if testing.Short() {
		keys = 20_000
	}
	for _, bs := range []int{4 << 10, 32 << 10} {
		t.Run(fmt.Sprintf("block=%dK", bs>>10), func(t *testing.T) {
			runWorkload(t, keys, bs)
		})
	}
}

func runWorkload(t *testing.T, keys, blockSize int) {
	start := time.Now()
	fs := newFS(t)
	dir := t.TempDir()
	opts := workloadOptions(fs, blockSize, testLogger{t})
	defer opts.Cache.Unref()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if db != nil {
			db.Close()
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(blockSize), 42))
	m := make(model)
	type snap struct {
		s *pebble.Snapshot
		m model
	}
	var snaps []snap
	var flushes, compactions int64
	checkSnap := func(s snap, what string) {
		it, err := s.s.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		check(t, what, it, getter(s.s.Get), s.m, keys, 500, rng)
	}
	reopen := func(what string) {
		for _, s := range snaps {
			checkSnap(s, what+": snapshot")
			s.s.Close()
		}
		snaps = nil
		met := db.Metrics()
		flushes += met.Flush.Count
		compactions += met.Compact.Count
		if err := db.Close(); err != nil {
			t.Fatalf("%s: close: %v", what, err)
		}
		db = nil
		if db, err = pebble.Open(dir, opts); err != nil {
			t.Fatalf("%s: open: %v", what, err)
		}
		it, err := db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		check(t, what, it, getter(db.Get), m, keys, 2000, rng)
	}

	ops := keys * 3 / 2
	const batchSize = 100
	var sets, dels, rangeDels int
	for op := 0; op < ops; {
		b := db.NewBatch()
		for j := 0; j < batchSize; j, op = j+1, op+1 {
			i := rng.IntN(keys)
			switch r := rng.IntN(100); {
			case r < 90:
				v := value(rng)
				if err := b.Set(key(i), v, nil); err != nil {
					t.Fatal(err)
				}
				m[i] = v
				sets++
			case r < 99:
				if err := b.Delete(key(i), nil); err != nil {
					t.Fatal(err)
				}
				delete(m, i)
				dels++
			default:
				if rng.IntN(20) != 0 {
					break
				}
				end := min(i+1+rng.IntN(200), keys)
				if err := b.DeleteRange(key(i), key(end), nil); err != nil {
					t.Fatal(err)
				}
				for k := i; k < end; k++ {
					delete(m, k)
				}
				rangeDels++
			}
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		switch {
		case op%(ops/5) < batchSize:
			snaps = append(snaps, snap{db.NewSnapshot(), m.clone()})
		case op%(ops/4) < batchSize:
			if err := db.Flush(); err != nil {
				t.Fatal(err)
			}
		case op%(ops/3) < batchSize:
			reopen(fmt.Sprintf("reopen after %d ops", op))
		case op == ops/2/batchSize*batchSize:
			if err := db.Compact(context.Background(), key(0), key(keys), true); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A synced write, so the last WAL is synced through the Writer too.
	if err := db.Set(key(0), []byte("last"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	m[0] = []byte("last")
	reopen("final reopen")
	met := db.Metrics()
	flushes += met.Flush.Count
	compactions += met.Compact.Count
	st := fs.Stats()
	if st.Direct == 0 || st.Fallbacks != 0 {
		t.Errorf("files through dio: %d, fallbacks: %d", st.Direct, st.Fallbacks)
	}
	if flushes == 0 || compactions == 0 {
		t.Errorf("the workload did not flush and compact: %d flushes, %d compactions", flushes, compactions)
	}
	t.Logf("%d keys, %d ops (%d sets, %d deletes, %d range deletes), %d in the model; %d flushes, %d compactions, %d tables; %d files through dio; %d SQEs, %d syncs, %d bounced; %v",
		keys, ops, sets, dels, rangeDels, len(m), flushes, compactions, met.Total().TablesCount,
		st.Direct, fs.Engine().Stats().Submitted, fs.Engine().Stats().Syncs, fs.Engine().Stats().Bounced,
		time.Since(start).Round(time.Millisecond))
}
