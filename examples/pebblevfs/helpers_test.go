//go:build linux

package pebblevfs

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// longMode reports whether the long test mode is on (UIRINGDIO_LONG, as
// the library's own suite).
func longMode() bool {
	v := os.Getenv("UIRINGDIO_LONG")
	return v != "" && v != "0"
}

// testLogger keeps Pebble quiet; a Fatalf fails the test (from whatever
// goroutine Pebble called it on, so it panics rather than call t.Fatal).
type testLogger struct{ t testing.TB }

func (l testLogger) Infof(format string, args ...any)  {}
func (l testLogger) Errorf(format string, args ...any) { l.t.Logf("pebble: "+format, args...) }
func (l testLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble fatal: "+format, args...))
}

// newFS returns an FS that logs fallbacks to t and is closed at the end
// of the test.
func newFS(t testing.TB, opts ...Option) *FS {
	t.Helper()
	fs, err := New(append([]Option{WithLogf(t.Logf)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fs.Close(); err != nil {
			t.Errorf("FS.Close: %v", err)
		}
	})
	return fs
}

func key(i int) []byte { return fmt.Appendf(nil, "key%08d", i) }

// value returns a random value: mostly small, now and then a few KiB,
// so that some values span blocks.
func value(rng *rand.Rand) []byte {
	n := 8 + rng.IntN(200)
	if rng.IntN(50) == 0 {
		n = 1000 + rng.IntN(6000)
	}
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(rng.Uint32())
	}
	return v
}

// model is what the database must hold: key index → value.
type model map[int][]byte

func (m model) clone() model {
	c := make(model, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// check compares every key of r with m by a full scan, and n random point
// reads (present and absent keys) out of keys [0, keys).
func check(t testing.TB, what string, it *pebble.Iterator, get func([]byte) ([]byte, bool, error), m model, keys, n int, rng *rand.Rand) {
	t.Helper()
	seen := 0
	for valid := it.First(); valid; valid = it.Next() {
		var i int
		if _, err := fmt.Sscanf(string(it.Key()), "key%08d", &i); err != nil {
			t.Fatalf("%s: stray key %q", what, it.Key())
		}
		want, ok := m[i]
		if !ok {
			t.Fatalf("%s: key %d is in the DB, not in the model", what, i)
		}
		got, err := it.ValueAndErr()
		if err != nil {
			t.Fatalf("%s: value of key %d: %v", what, i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: key %d: value of %d bytes differs from the model's %d bytes", what, i, len(got), len(want))
		}
		seen++
	}
	if err := it.Close(); err != nil {
		t.Fatalf("%s: iterator: %v", what, err)
	}
	if seen != len(m) {
		t.Fatalf("%s: scan found %d keys, the model has %d", what, seen, len(m))
	}
	for range n {
		i := rng.IntN(keys)
		got, found, err := get(key(i))
		if err != nil {
			t.Fatalf("%s: get %d: %v", what, i, err)
		}
		want, ok := m[i]
		if found != ok || !bytes.Equal(got, want) {
			t.Fatalf("%s: get %d: found=%v (%d bytes), model has found=%v (%d bytes)", what, i, found, len(got), ok, len(want))
		}
	}
}

// getter returns a get function over a DB or snapshot, copying the value.
func getter(g func([]byte) ([]byte, io.Closer, error)) func([]byte) ([]byte, bool, error) {
	return func(k []byte) ([]byte, bool, error) {
		v, c, err := g(k)
		if err == pebble.ErrNotFound {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		v = bytes.Clone(v)
		return v, true, c.Close()
	}
}
