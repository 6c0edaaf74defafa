package crashfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// newTestPending returns a pendingFile over a new backing file holding
// initial, and the backing file's path.
func newTestPending(t *testing.T, initial []byte) (*pendingFile, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "durable")
	if err := os.WriteFile(path, initial, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPendingFile(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.close() })
	return p, path
}

func readAll(t *testing.T, p *pendingFile) []byte {
	t.Helper()
	buf := make([]byte, p.Size()+3*pageSize) // past the end too
	n, err := p.ReadAt(buf, 0)
	if err != nil && !(err == io.EOF && n == 0) {
		t.Fatal(err)
	}
	return buf[:n]
}

func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// model is the reference for pendingFile: two byte slices.
type model struct{ latest, durable []byte }

func (m *model) write(b []byte, off int64) {
	if end := off + int64(len(b)); end > int64(len(m.latest)) {
		m.latest = append(m.latest, make([]byte, end-int64(len(m.latest)))...)
	}
	copy(m.latest[off:], b)
}

func (m *model) truncate(size int64) {
	if size <= int64(len(m.latest)) {
		m.latest = m.latest[:size]
		return
	}
	m.latest = append(m.latest, make([]byte, size-int64(len(m.latest)))...)
}

// TestPendingMatchesModel runs random writes (aligned or not, past the end
// too), size changes both ways, reads, syncs and DropAll crashes against a
// two-slice model: reads always see the latest state, a sync makes it the
// durable image, a crash brings the durable image back.
func TestPendingMatchesModel(t *testing.T) {
	for seed := range uint64(10) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			initial := make([]byte, rng.IntN(5*pageSize))
			for i := range initial {
				initial[i] = byte(rng.Uint32())
			}
			p, path := newTestPending(t, initial)
			m := model{latest: bytes.Clone(initial), durable: bytes.Clone(initial)}
			for step := range 300 {
				switch r := rng.IntN(20); {
				case r < 11:
					off := rng.Int64N(6 * pageSize)
					if rng.IntN(2) == 0 {
						off &^= SectorSize - 1
					}
					b := make([]byte, 1+rng.IntN(2*pageSize))
					for i := range b {
						b[i] = byte(rng.Uint32())
					}
					if err := p.WriteAt(b, off); err != nil {
						t.Fatal(err)
					}
					m.write(b, off)
				case r < 15:
					size := rng.Int64N(6 * pageSize)
					if err := p.Truncate(size); err != nil {
						t.Fatal(err)
					}
					m.truncate(size)
				case r < 17:
					if err := p.Sync(); err != nil {
						t.Fatal(err)
					}
					m.durable = bytes.Clone(m.latest)
					if got := fileBytes(t, path); !bytes.Equal(got, m.durable) {
						t.Fatalf("step %d: after sync the durable image differs from the latest state", step)
					}
				case r < 18:
					var st CrashStats
					if err := p.crash(DropAll, nil, &st); err != nil {
						t.Fatal(err)
					}
					m.latest = bytes.Clone(m.durable)
					if got := fileBytes(t, path); !bytes.Equal(got, m.durable) {
						t.Fatalf("step %d: a DropAll crash changed the durable image", step)
					}
				default:
					off := rng.Int64N(int64(len(m.latest)) + 1)
					buf := make([]byte, rng.IntN(3*pageSize))
					n, err := p.ReadAt(buf, off)
					want := m.latest[off:min(off+int64(len(buf)), int64(len(m.latest)))]
					if off == int64(len(m.latest)) && len(buf) > 0 {
						if err != io.EOF || n != 0 {
							t.Fatalf("step %d: read at the end: %d, %v", step, n, err)
						}
					} else if err != nil || !bytes.Equal(buf[:n], want) {
						t.Fatalf("step %d: read [%d,+%d): %d bytes, %v; differs from the model", step, off, len(buf), n, err)
					}
				}
				if p.Size() != int64(len(m.latest)) {
					t.Fatalf("step %d: size %d, model %d", step, p.Size(), len(m.latest))
				}
			}
			if got := readAll(t, p); !bytes.Equal(got, m.latest) {
				t.Fatal("final read differs from the model")
			}
		})
	}
}

// sectorTag fills a sector with the content version v gives sector s: v
// and s in the first 16 bytes, then a pattern from both, so that any
// sector read back names one version, and a mix of two is detected.
func sectorTag(b []byte, v, s uint64) {
	binary.LittleEndian.PutUint64(b, v)
	binary.LittleEndian.PutUint64(b[8:], s)
	x := v*0x9e3779b97f4a7c15 ^ s*0xbf58476d1ce4e5b9 | 1
	for i := 16; i < len(b); i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

// sectorVersion returns the version a sector holds, or false if it is not
// exactly one version's content for that sector.
func sectorVersion(b []byte, s uint64) (uint64, bool) {
	v := binary.LittleEndian.Uint64(b)
	want := make([]byte, len(b))
	sectorTag(want, v, s)
	return v, bytes.Equal(b, want)
}

// tornScenario is a file of sectors at version 0, durable, then writes of
// versions 1..n over random sector ranges, not synced.
type tornScenario struct {
	sectors int
	writes  []tornWrite
}

type tornWrite struct {
	v          uint64
	first, cnt int // sectors
}

func newTornScenario(rng *rand.Rand, sectors, writes int) tornScenario {
	sc := tornScenario{sectors: sectors}
	for i := range writes {
		first := rng.IntN(sectors)
		cnt := 1 + rng.IntN(min(16, sectors-first))
		sc.writes = append(sc.writes, tornWrite{v: uint64(i + 1), first: first, cnt: cnt})
	}
	return sc
}

func (sc tornScenario) initial() []byte {
	b := make([]byte, sc.sectors*SectorSize)
	for s := range sc.sectors {
		sectorTag(b[s*SectorSize:(s+1)*SectorSize], 0, uint64(s))
	}
	return b
}

func (w tornWrite) data() []byte {
	b := make([]byte, w.cnt*SectorSize)
	for i := range w.cnt {
		sectorTag(b[i*SectorSize:(i+1)*SectorSize], w.v, uint64(w.first+i))
	}
	return b
}

// check reports whether img is a state a torn crash may leave: every
// sector whole, holding version 0 or a version that wrote it.
func (sc tornScenario) check(img []byte) error {
	if len(img) != sc.sectors*SectorSize {
		return fmt.Errorf("image of %d bytes, want %d", len(img), sc.sectors*SectorSize)
	}
	for s := range sc.sectors {
		v, ok := sectorVersion(img[s*SectorSize:(s+1)*SectorSize], uint64(s))
		if !ok {
			return fmt.Errorf("sector %d is not one version's whole content", s)
		}
		if v == 0 {
			continue
		}
		if v > uint64(len(sc.writes)) {
			return fmt.Errorf("sector %d holds version %d, never written", s, v)
		}
		if w := sc.writes[v-1]; s < w.first || s >= w.first+w.cnt {
			return fmt.Errorf("sector %d holds version %d, which wrote sectors [%d,%d)", s, v, w.first, w.first+w.cnt)
		}
	}
	return nil
}

// TestTornCrashLeavesWholeSectors crashes in Torn mode over many seeds
// and checks that every sector of the durable image is whole, old or new;
// that the same seed always leaves the same image; and that the seeds
// together keep, tear and drop writes (the mode does tear).
func TestTornCrashLeavesWholeSectors(t *testing.T) {
	var total CrashStats
	for seed := range uint64(150) {
		rng := rand.New(rand.NewPCG(seed, 2))
		sc := newTornScenario(rng, 64, 1+rng.IntN(12))
		var imgs [2][]byte
		for run := range imgs {
			p, path := newTestPending(t, sc.initial())
			for _, w := range sc.writes {
				if err := p.WriteAt(w.data(), int64(w.first*SectorSize)); err != nil {
					t.Fatal(err)
				}
			}
			var st CrashStats
			if err := p.crash(Torn, rand.New(rand.NewPCG(seed, 3)), &st); err != nil {
				t.Fatal(err)
			}
			if st.Writes != len(sc.writes) || st.WritesKept+st.WritesTorn+st.WritesDropped != st.Writes {
				t.Fatalf("seed %d: stats %v for %d writes", seed, st, len(sc.writes))
			}
			imgs[run] = fileBytes(t, path)
			if err := sc.check(imgs[run]); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if run == 0 {
				total.Writes += st.Writes
				total.WritesKept += st.WritesKept
				total.WritesTorn += st.WritesTorn
				total.WritesDropped += st.WritesDropped
				total.BytesDropped += st.BytesDropped
			}
		}
		if !bytes.Equal(imgs[0], imgs[1]) {
			t.Fatalf("seed %d: two crashes with the same seed left different images", seed)
		}
	}
	if total.WritesKept == 0 || total.WritesTorn == 0 || total.WritesDropped == 0 {
		t.Fatalf("over 150 seeds: %v; want some writes kept, torn and dropped", total)
	}
	t.Logf("over 150 seeds: %v", total)
}
