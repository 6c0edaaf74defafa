//go:build linux

package pebblevfs

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/faultring"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

// loadForFaults writes n keys into a new DB in dir through a clean FS,
// flushes and compacts them into sstables, and returns the model.
func loadForFaults(t *testing.T, dir string, n int) model {
	fs := newFS(t)
	opts := workloadOptions(fs, 4<<10, testLogger{t})
	defer opts.Cache.Unref()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	m := make(model)
	b := db.NewBatch()
	for i := range n {
		v := value(rng)
		b.Set(key(i), v, nil)
		m[i] = v
		if b.Count() == 500 {
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			b = db.NewBatch()
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return m
}

// readOnlyOptions opens a loaded DB for reads only (no flushes or
// compactions, so every read is the test's), with a tiny block cache so
// that reads reach the files.
func readOnlyOptions(fs vfs.FS, logger pebble.Logger) *pebble.Options {
	return &pebble.Options{
		FS:                fs,
		Logger:            logger,
		ReadOnly:          true,
		Cache:             pebble.NewCache(64 << 10),
		DisableTableStats: true,
	}
}

// faultReads runs gets and short scans and sorts the outcomes: an error,
// or data that must equal the model's. injected reports how many faults
// that must fail a read have been injected so far; a get during which it
// grew must fail.
func faultReads(t *testing.T, db *pebble.DB, m model, n int, injected func() uint64) (ok, failed int) {
	rng := rand.New(rand.NewPCG(6, 6))
	get := getter(db.Get)
	for range n {
		i := rng.IntN(len(m) + 100)
		before := injected()
		got, found, err := get(key(i))
		if err != nil {
			failed++
			continue
		}
		if injected() != before {
			t.Fatalf("get %d: a fault was injected, and the get returned no error", i)
		}
		want, ok2 := m[i]
		if found != ok2 || !bytes.Equal(got, want) {
			t.Fatalf("get %d under faults: found=%v (%d bytes), want found=%v (%d bytes): wrong data", i, found, len(got), ok2, len(want))
		}
		ok++
		if rng.IntN(20) == 0 {
			it, err := db.NewIter(&pebble.IterOptions{LowerBound: key(i), UpperBound: key(i + 50)})
			if err != nil {
				failed++
				continue
			}
			for valid := it.First(); valid; valid = it.Next() {
				var k int
				for _, c := range it.Key()[3:] {
					k = k*10 + int(c-'0')
				}
				v, err := it.ValueAndErr()
				if err != nil {
					break
				}
				if !bytes.Equal(v, m[k]) {
					t.Fatalf("scan from %d under faults: key %d: wrong data", i, k)
				}
			}
			if it.Close() != nil {
				failed++
			}
		}
	}
	return ok, failed
}

// TestReadFaultsAreErrorsNotWrongData injects faults into the read CQEs
// beneath the FS (faultring, installed with ringhook.Attach): EIO,
// ENOSPC and zero-byte reads must reach Pebble as errors; short reads,
// EINTR and EAGAIN the engine retries, so the read must succeed. Either
// way, no get or scan may return data that differs from the model.
func TestReadFaultsAreErrorsNotWrongData(t *testing.T) {
	dir := t.TempDir()
	m := loadForFaults(t, dir, 20_000)
	var mu sync.Mutex
	var rings []*faultring.Ring
	var eo dio.EngineOptions
	ringhook.Attach(&eo, ringhook.Hooks{WrapRing: func(r ringhook.Ring) ringhook.Ring {
		fr := faultring.New(r, faultring.Config{Seed: 7, Decide: readFaults(rand.New(rand.NewPCG(7, 7)), 0.03)})
		mu.Lock()
		rings = append(rings, fr)
		mu.Unlock()
		return fr
	}})
	fs := newFS(t, WithEngineOptions(eo))
	failing := func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		var n uint64
		for _, r := range rings {
			st := r.Stats()
			n += st.Faults[faultring.EIO] + st.Faults[faultring.ENOSPC] + st.Faults[faultring.Zero]
		}
		return n
	}
	var db *pebble.DB
	var err error
	opts := readOnlyOptions(fs, testLogger{t})
	defer opts.Cache.Unref()
	opens := 0
	for db == nil {
		if opens++; opens > 50 {
			t.Fatalf("50 opens failed under faults; the last: %v", err)
		}
		db, err = pebble.Open(dir, opts)
	}
	n := 3000
	if longMode() {
		n = 50_000
	}
	ok, failed := faultReads(t, db, m, n, failing)
	if err := db.Close(); err != nil {
		t.Logf("close after faults: %v", err)
	}
	var st faultring.Stats
	for _, r := range rings {
		s := r.Stats()
		st.DataCQEs += s.DataCQEs
		for k := range s.Faults {
			st.Faults[k] += s.Faults[k]
		}
	}
	t.Logf("%d opens; %d reads right, %d failed with an error; %d data CQEs, faults: EIO %d, ENOSPC %d, zero %d, short %d, short-unaligned %d, EINTR %d, EAGAIN %d",
		opens, ok, failed, st.DataCQEs, st.Faults[faultring.EIO], st.Faults[faultring.ENOSPC], st.Faults[faultring.Zero],
		st.Faults[faultring.Short], st.Faults[faultring.ShortUnaligned], st.Faults[faultring.EINTR], st.Faults[faultring.EAGAIN])
	if failed == 0 || st.Injected() == 0 {
		t.Errorf("no fault reached Pebble: %d injected, %d reads failed", st.Injected(), failed)
	}
}

// readFaults returns a faultring decision that gives a read CQE a fault
// with probability p.
func readFaults(rng *rand.Rand, p float64) func(faultring.CQE) faultring.Fault {
	kinds := []faultring.Fault{faultring.EIO, faultring.ENOSPC, faultring.Zero, faultring.Short,
		faultring.ShortUnaligned, faultring.EINTR, faultring.EAGAIN}
	return func(c faultring.CQE) faultring.Fault {
		switch c.SQE.Op {
		case ring.OpRead, ring.OpReadv, ring.OpReadFixed:
			if rng.Float64() < p {
				return kinds[rng.IntN(len(kinds))]
			}
		}
		return faultring.None
	}
}

// TestErrorfsAboveFS puts Pebble's errorfs above the FS and injects errors
// into reads at random: every injected error must fail the get that met
// it, and no get may return wrong data.
func TestErrorfsAboveFS(t *testing.T) {
	dir := t.TempDir()
	m := loadForFaults(t, dir, 20_000)
	var on atomic.Bool
	var injected atomic.Uint64
	rng := rand.New(rand.NewPCG(8, 8))
	var rmu sync.Mutex
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !on.Load() || (op.Kind != errorfs.OpFileReadAt && op.Kind != errorfs.OpFileRead) {
			return nil
		}
		rmu.Lock()
		hit := rng.IntN(30) == 0
		rmu.Unlock()
		if !hit {
			return nil
		}
		injected.Add(1)
		return errorfs.ErrInjected
	})
	efs := errorfs.Wrap(newFS(t), inj)
	opts := readOnlyOptions(efs, testLogger{t})
	defer opts.Cache.Unref()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	on.Store(true)
	ok, failed := faultReads(t, db, m, 3000, injected.Load)
	on.Store(false)
	if err := db.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	t.Logf("%d reads right, %d failed; %d errors injected", ok, failed, injected.Load())
	if failed == 0 {
		t.Error("no injected error reached Pebble")
	}
}
