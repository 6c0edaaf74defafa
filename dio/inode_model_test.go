//go:build linux

package dio_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/iomap"
)

// The inode's model test (issue 21): several dio handles on two engines
// (one of them closed and opened again as it goes), a plain os.File, and
// Truncate, Allocate, Preallocate and Punch, all at once on one file,
// racing aligned and unaligned reads and writes; on other files of the
// same engine an Appender and a ReadAhead reader run meanwhile. Each
// worker owns a region of the file (regions start and end inside sectors,
// so neighbours' read-modify-writes share sectors) and checks every read
// of it against its own model; one worker owns the end of the file and
// moves its size (extending unaligned writes, Truncate). At each quiescent
// point the whole file is compared with the union of the models. The same
// runs on a volume (an ExtentMap over a container file).

const (
	imRegion = 40<<10 + 300 // a worker's bytes: not a multiple of any sector
	imTail   = 96<<10 + 700 // a tail worker's room
)

// imHandle is what a worker writes and reads through.
type imHandle interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
}

type imWorker struct {
	name   string
	off    int64 // the region's first byte in the file
	model  []byte
	handle func() imHandle // the handle for the next operation
	space  *dio.File       // Punch, Allocate, Preallocate on the region; nil: none
	after  func()          // runs after each operation (a re-open)
}

// run does ops random operations on the worker's region.
func (w *imWorker) run(rng *rand.Rand, ops int, align int64) error {
	for range ops {
		h := w.handle()
		n := int64(len(w.model))
		off := rng.Int64N(n)
		l := 1 + rng.Int64N(min(n-off, 12000))
		if rng.IntN(3) == 0 { // aligned where the region allows
			lo := alignUp64(w.off+off, align)
			hi := (w.off + off + l) &^ (align - 1)
			if hi > lo {
				off, l = lo-w.off, hi-lo
			}
		}
		switch k := rng.IntN(10); {
		case k < 5:
			p := make([]byte, l)
			fillRand(rng, p)
			if m, err := h.WriteAt(p, w.off+off); err != nil || int64(m) != l {
				return fmt.Errorf("%s: WriteAt(%d, %d) = %d, %v", w.name, w.off+off, l, m, err)
			}
			copy(w.model[off:], p)
		case k < 8 || w.space == nil:
			p := make([]byte, l)
			if m, err := h.ReadAt(p, w.off+off); (err != nil && err != io.EOF) || int64(m) != l {
				return fmt.Errorf("%s: ReadAt(%d, %d) = %d, %v", w.name, w.off+off, l, m, err)
			}
			if i := diffAt(p, w.model[off:off+l]); i >= 0 {
				return fmt.Errorf("%s: ReadAt(%d, %d) differs from the model at %d", w.name, w.off+off, l, w.off+off+int64(i))
			}
		case k == 8:
			if err := w.space.Punch(w.off+off, l); err != nil {
				return fmt.Errorf("%s: Punch(%d, %d): %v", w.name, w.off+off, l, err)
			}
			clear(w.model[off : off+l])
		default:
			do := w.space.Allocate
			if rng.IntN(2) == 0 {
				do = w.space.Preallocate
			}
			if err := do(w.off+off, l); err != nil {
				return fmt.Errorf("%s: allocate(%d, %d): %v", w.name, w.off+off, l, err)
			}
		}
		if w.after != nil {
			w.after()
		}
	}
	return nil
}

// imTailWorker owns [start, start+room) at the end of the file and grows
// it: extending unaligned writes from where its bytes end, and reads. Two
// of them, one after the other, race their extensions (the first one's
// writes stop extending the file once the second has written); the file
// is cut back between rounds (imRun).
type imTailWorker struct {
	name  string
	h     imHandle
	start int64
	room  int64
	model []byte // its bytes, from start
}

func (w *imTailWorker) run(rng *rand.Rand, ops int) error {
	for range ops {
		end := w.start + int64(len(w.model))
		if rng.IntN(2) == 0 && int64(len(w.model))+12000 < w.room {
			off := end - rng.Int64N(min(end-w.start, 3000)+1) + rng.Int64N(2000)
			p := make([]byte, 1+rng.Int64N(9000))
			fillRand(rng, p)
			if m, err := w.h.WriteAt(p, off); err != nil || m != len(p) {
				return fmt.Errorf("%s: WriteAt(%d, %d) = %d, %v", w.name, off, len(p), m, err)
			}
			if e := off - w.start + int64(len(p)); e > int64(len(w.model)) {
				w.model = append(w.model, make([]byte, e-int64(len(w.model)))...)
			}
			copy(w.model[off-w.start:], p)
			continue
		}
		if len(w.model) == 0 {
			continue
		}
		off := rng.Int64N(int64(len(w.model)))
		p := make([]byte, 1+rng.Int64N(int64(len(w.model))-off))
		if m, err := w.h.ReadAt(p, w.start+off); (err != nil && err != io.EOF) || m != len(p) {
			return fmt.Errorf("%s: ReadAt(%d, %d) = %d, %v", w.name, w.start+off, len(p), m, err)
		}
		if i := diffAt(p, w.model[off:off+int64(len(p))]); i >= 0 {
			return fmt.Errorf("%s: ReadAt(%d) differs from the model at %d", w.name, w.start+off, w.start+off+int64(i))
		}
	}
	return nil
}

// imStreams runs an Appender and a ReadAhead reader on other files of
// engine e (nil: the default) until stop is closed, and reports the first
// error.
func imStreams(t *testing.T, dir string, e *dio.Engine, stop <-chan struct{}) <-chan error {
	res := make(chan error, 1)
	src := make([]byte, 3<<20)
	fillRand(newRand(99), src)
	rf := openRW(t, filepath.Join(dir, "scan"), &dio.Options{Engine: e})
	if _, err := rf.WriteAt(src, 0); err != nil {
		t.Fatal(err)
	}
	lf := openRW(t, filepath.Join(dir, "log"), &dio.Options{Engine: e})
	go func() {
		res <- func() error {
			w, err := lf.Appender(0, 64<<10, 2)
			if err != nil {
				return err
			}
			var logged int
			for i := 0; ; i++ {
				select {
				case <-stop:
					if err := w.Close(); err != nil {
						return err
					}
					got := make([]byte, logged)
					if n, err := lf.ReadAt(got, 0); n != logged || (err != nil && err != io.EOF) || !bytes.Equal(got, src[:logged]) {
						return fmt.Errorf("the log reads back %d bytes, %v, want %d", n, err, logged)
					}
					return nil
				default:
				}
				rec := src[logged : logged+1+i%5000]
				if logged+len(rec)+5000 > len(src) {
					continue
				}
				w.Write(rec)
				logged += len(rec)
				if i%8 == 0 {
					if err := w.SyncData(); err != nil {
						return err
					}
					rd, err := rf.ReadAhead(int64(i*97)%(1<<20), 128<<10, 3)
					if err != nil {
						return err
					}
					got, err := io.ReadAll(rd)
					rd.Close()
					if err != nil || !bytes.Equal(got, src[int64(i*97)%(1<<20):]) {
						return fmt.Errorf("ReadAhead read %d bytes, %v, not the file", len(got), err)
					}
				}
			}
		}()
	}()
	return res
}

// imRun runs rounds of the workers at once and checks the whole file at
// each quiescent point with read (the file's bytes and size); between
// rounds truncate cuts the file back into the first tail worker's bytes.
func imRun(t *testing.T, workers []*imWorker, tails [2]*imTailWorker, truncate func(int64) error, read func() []byte, streams <-chan error, stop chan struct{}, align int64) {
	t.Helper()
	rounds, ops := 4, 40
	if longMode() {
		rounds, ops = 40, 200
	}
	seed := uint64(envInt("UIRINGDIO_INODE_SEED", rand.Int64()))
	t.Logf("seed %d (UIRINGDIO_INODE_SEED replays it)", seed)
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, len(workers)+2)
		for i, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.run(newRand(seed+uint64(round*100+i)), ops, align); err != nil {
					errs <- err
				}
			}()
		}
		for i, w := range tails {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.run(newRand(seed+uint64(round*100+98+i)), ops); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d (seed %d): %v", round, seed, err)
		}
		// Quiescent: the whole file is the union of the models.
		var want []byte
		for _, w := range workers {
			want = append(want, w.model...)
		}
		want = append(want, tails[0].model...)
		if len(tails[1].model) > 0 {
			want = append(want, make([]byte, tails[1].start-int64(len(want)))...)
			want = append(want, tails[1].model...)
		}
		got := read()
		if len(got) != len(want) {
			t.Fatalf("round %d (seed %d): the file is %d bytes, the models %d", round, seed, len(got), len(want))
		}
		if i := diffAt(got, want); i >= 0 {
			t.Fatalf("round %d (seed %d): the file differs from the models at %d", round, seed, i)
		}
		// Cut the file back into the first tail's bytes for the next round.
		keep := newRand(seed + uint64(round)).Int64N(int64(len(tails[0].model)) + 1)
		if err := truncate(tails[0].start + keep); err != nil {
			t.Fatal(err)
		}
		tails[0].model, tails[1].model = tails[0].model[:keep], nil
	}
	close(stop)
	if err := <-streams; err != nil {
		t.Fatalf("the streams beside: %v", err)
	}
}

// TestInodeModelManyHandles is the model test on a kernel file.
func TestInodeModelManyHandles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "shared")
	e2 := mustEngineT(t, &dio.EngineOptions{QueueDepth: 32})
	h1 := openRW(t, p, nil)                                               // the default engine
	h2 := openRW(t, p, &dio.Options{Engine: e2})                          // a second engine
	h3 := openRW(t, p, &dio.Options{EngineOptions: &dio.EngineOptions{}}) // an engine of its own
	of, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	align := dio.AlignForTest(h1).Offset

	const n = 6
	start := int64(n * imRegion)
	init := make([]byte, start)
	fillRand(newRand(5), init)
	if _, err := h1.WriteAt(init, 0); err != nil {
		t.Fatal(err)
	}
	workers := make([]*imWorker, n)
	for i := range workers {
		w := &imWorker{name: fmt.Sprintf("worker %d", i), off: int64(i) * imRegion,
			model: append([]byte(nil), init[i*imRegion:(i+1)*imRegion]...)}
		switch i {
		case 0:
			w.handle = func() imHandle { return h1 }
		case 1:
			w.handle = func() imHandle { return h2 }
			w.space = h2
		case 2:
			w.handle = func() imHandle { return h3 }
		case 3:
			w.handle = func() imHandle { return of }
		case 4: // its handle is closed and opened again every few operations
			// Closing it frees its descriptor number, which a decoy file
			// takes at once: a write sent through the closed handle's
			// descriptor would land in the decoy, which must stay empty.
			var cur *dio.File
			var decoy *os.File
			var k int
			decoyPath := filepath.Join(dir, "decoy")
			reopen := func() {
				if cur != nil {
					if err := cur.Close(); err != nil {
						t.Error(err)
					}
				}
				if decoy != nil {
					decoy.Close()
				}
				var err error
				if decoy, err = os.OpenFile(decoyPath, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
					t.Error(err)
				}
				f, err := dio.Open(p, os.O_RDWR, 0, &dio.Options{Engine: e2})
				if err != nil {
					t.Error(err)
				}
				cur = f
			}
			reopen()
			t.Cleanup(func() {
				cur.Close()
				decoy.Close()
				if st, err := os.Stat(decoyPath); err != nil || st.Size() != 0 {
					t.Errorf("the decoy that took closed descriptors holds %d bytes (%v): a write went out through a closed handle", st.Size(), err)
				}
			})
			w.handle = func() imHandle { return cur }
			w.after = func() {
				if k++; k%3 == 0 {
					reopen()
				}
			}
		case 5:
			w.handle = func() imHandle { return h1 }
			w.space = h1
		}
		workers[i] = w
	}
	stop := make(chan struct{})
	streams := imStreams(t, dir, nil, stop)
	tails := [2]*imTailWorker{
		{name: "tail (dio)", h: h1, start: start, room: imTail},
		{name: "tail (os.File)", h: of, start: start + imTail, room: imTail},
	}
	imRun(t, workers, tails, h3.Truncate, func() []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, streams, stop, align)
}

// TestInodeModelVolume is the model test on a volume: an ExtentMap of
// 16 KiB blocks (writes that are not block-aligned zero sub-blocks and run
// alone) over a container file, through handles on two engines.
func TestInodeModelVolume(t *testing.T) {
	dir := t.TempDir()
	const bs = 16 << 10
	const capacity = 16 << 20
	dev := filepath.Join(dir, "dev")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dev, capacity); err != nil {
		t.Fatal(err)
	}
	em, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: bs, Devices: []int64{capacity}})
	if err != nil {
		t.Fatal(err)
	}
	e2 := mustEngineT(t, &dio.EngineOptions{QueueDepth: 32})
	open := func(e *dio.Engine) *dio.File {
		f, err := dio.Open(dev, os.O_RDWR, 0, &dio.Options{Mapper: em, Engine: e})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	v1, v2 := open(nil), open(e2)
	t.Cleanup(func() { v1.Close(); v2.Close() })
	if err := v1.Truncate(0); err != nil {
		t.Fatal(err)
	}
	align := dio.AlignForTest(v1).Offset
	const n = 4
	start := int64(n * imRegion)
	init := make([]byte, start)
	fillRand(newRand(6), init)
	if _, err := v1.WriteAt(init, 0); err != nil {
		t.Fatal(err)
	}
	workers := make([]*imWorker, n)
	for i := range workers {
		w := &imWorker{name: fmt.Sprintf("volume worker %d", i), off: int64(i) * imRegion,
			model: append([]byte(nil), init[i*imRegion:(i+1)*imRegion]...)}
		switch i {
		case 0:
			w.handle = func() imHandle { return v1 }
		case 1:
			w.handle = func() imHandle { return v2 }
			w.space = v2
		case 2:
			var cur *dio.File
			var k int
			cur = open(e2)
			t.Cleanup(func() { cur.Close() })
			w.handle = func() imHandle { return cur }
			w.after = func() {
				if k++; k%3 == 0 {
					cur.Close()
					cur = open(e2)
				}
			}
		case 3:
			w.handle = func() imHandle { return v1 }
			w.space = v1
		}
		workers[i] = w
	}
	stop := make(chan struct{})
	streams := imStreams(t, dir, e2, stop)
	tails := [2]*imTailWorker{
		{name: "tail (v1)", h: v1, start: start, room: imTail},
		{name: "tail (v2)", h: v2, start: start + imTail, room: imTail},
	}
	imRun(t, workers, tails, v2.Truncate, func() []byte {
		size, err := v2.Size()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		if m, err := v2.ReadAt(b, 0); int64(m) != size || (err != nil && !errors.Is(err, io.EOF)) {
			t.Fatalf("reading the volume: %d, %v", m, err)
		}
		return b
	}, streams, stop, align)
}

// diffAt returns the first index where a and b differ, or -1.
func diffAt(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func alignUp64(v, a int64) int64 { return (v + a - 1) / a * a }
