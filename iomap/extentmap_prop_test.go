package iomap

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

var propSeed = flag.Uint64("iomap.seed", 0, "seed for the ExtentMap property test (0: fixed seeds plus one from the clock)")

// checkSpace checks the space invariants of maps, which must be every live
// map sharing one space: each allocated block is referenced by extents or
// reservations exactly as often as the refcount records say, allocated
// bytes are the distinct referenced bytes, free space is disjoint from
// them, and free + allocated == total. It also checks each map's trees and
// that FlagShared is reported exactly for blocks referenced more than once.
func checkSpace(maps []*ExtentMap) error {
	sp := maps[0].sp
	bs := sp.bs
	type blk struct {
		t int32
		b int64
	}
	refs := map[blk]int{}
	for i, m := range maps {
		if m.sp != sp {
			return fmt.Errorf("map %d has another space", i)
		}
		m.mu.RLock()
		for _, tr := range []*extTree{m.data, m.cow} {
			prev := int64(-1)
			var err error
			tr.Ascend(func(x ext) bool {
				if x.len <= 0 || x.off < prev || (x.off|x.len|x.addr)&(bs-1) != 0 ||
					(tr == m.data && x.typ != Mapped && x.typ != Unwritten) {
					err = fmt.Errorf("map %d: bad extent %+v after %d", i, x, prev)
					return false
				}
				prev = x.end()
				for a := x.addr; a < x.addr+x.len; a += bs {
					refs[blk{x.target, a}]++
				}
				return true
			})
			if err != nil {
				m.mu.RUnlock()
				return err
			}
		}
		var err error
		m.cow.Ascend(func(r ext) bool {
			for pos := r.off; pos < r.end(); pos += bs {
				if _, ok := lookup(m.data, pos); !ok {
					err = fmt.Errorf("map %d: reservation %+v over a hole at %d", i, r, pos)
					return false
				}
			}
			return true
		})
		m.mu.RUnlock()
		if err != nil {
			return err
		}
	}

	sp.mu.RLock()
	defer sp.mu.RUnlock()
	recorded := map[blk]int{}
	for t, tr := range sp.refs {
		prev := int64(-1)
		var err error
		tr.Ascend(func(x ext) bool {
			if x.count < 2 || x.off < prev || x.len <= 0 {
				err = fmt.Errorf("bad refcount record %+v on target %d", x, t)
				return false
			}
			prev = x.end()
			for a := x.off; a < x.end(); a += bs {
				recorded[blk{int32(t), a}] = int(x.count)
			}
			return true
		})
		if err != nil {
			return err
		}
	}
	for b, n := range refs {
		if r := recorded[b]; n >= 2 && r != n || n == 1 && r != 0 {
			return fmt.Errorf("block %+v: %d references, refcount record says %d", b, n, r)
		}
	}
	for b, r := range recorded {
		if refs[b] != r {
			return fmt.Errorf("block %+v: refcount record %d for %d references", b, r, refs[b])
		}
	}
	if want := int64(len(refs)) * bs; sp.allocated != want {
		return fmt.Errorf("allocated %d bytes, extents reference %d", sp.allocated, want)
	}
	if ff, ok := sp.alloc.(*FirstFit); ok {
		ff.mu.Lock()
		var free int64
		for t, tr := range ff.free {
			prevEnd := int64(-1)
			tr.Ascend(func(x ext) bool {
				if x.off <= prevEnd { // overlapping or unmerged neighbours
					free = -1 << 62
				}
				prevEnd = x.end()
				free += x.len
				return true
			})
			for b := range refs {
				if b.t == int32(t) {
					if x, ok := lookup(tr, b.b); ok {
						ff.mu.Unlock()
						return fmt.Errorf("referenced block %+v is free in %+v", b, x)
					}
				}
			}
		}
		ff.mu.Unlock()
		if free+sp.allocated != sp.total || free != ff.FreeBytes() {
			return fmt.Errorf("free %d (counter %d) + allocated %d != total %d", free, ff.FreeBytes(), sp.allocated, sp.total)
		}
	}
	// FlagShared, as readers see it.
	sp.mu.RUnlock()
	defer sp.mu.RLock()
	for i, m := range maps {
		var err error
		m.Extents(func(mp Mapping) bool {
			for a := mp.Addr; a < mp.Addr+mp.Length; a += bs {
				if shared := refs[blk{int32(mp.Target), a}] > 1; shared != (mp.Flags&FlagShared != 0) {
					err = fmt.Errorf("map %d: %v, but block %d has %d references", i, mp, a, refs[blk{int32(mp.Target), a}])
					return false
				}
			}
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// propWorld is a set of live maps sharing one space, the fake devices
// their mappings point into, and the model: what each map must read.
type propWorld struct {
	t     *testing.T
	rnd   *rand.Rand
	bs    int64
	size  int64 // file size the ops stay within
	devs  [][]byte
	maps  []*ExtentMap
	model []*propModel
	log   []string
}

type propModel struct {
	data  []byte
	types []Type // per block: Hole, Unwritten or Mapped
}

func (w *propWorld) fail(format string, args ...any) {
	w.t.Helper()
	for _, l := range w.log {
		w.t.Log(l)
	}
	w.t.Fatalf(format, args...)
}

// write runs a write through the Iter loop the way the dio engine does:
// data goes to the device at the mapped address, the sub-block head and
// tail of new and unwritten blocks are zeroed, then IOComplete. A failed
// write (fail) lands nothing but the zeroing.
func (w *propWorld) write(i int, pos, n int64, fail bool) {
	m := w.maps[i]
	buf := make([]byte, n)
	for j := range buf {
		buf[j] = byte(1 + w.rnd.IntN(255))
	}
	it := NewIter(pos, n, OpWrite|OpDirect)
	for it.Next(m) {
		mp := it.Mapping()
		p, l := it.Pos(), it.Len()
		if mp.Type != Mapped && mp.Type != Unwritten || mp.Addr == NoAddr || mp.BlockSize != w.bs {
			w.fail("write [%d,+%d): mapping %v", pos, n, mp)
		}
		dev := w.devs[mp.Target]
		if mp.Flags&FlagNew != 0 || mp.Type == Unwritten {
			if head := p &^ (w.bs - 1); head < p {
				if head < mp.Offset {
					w.fail("head zeroing of %d outside %v", p, mp)
				}
				clear(dev[mp.AddrAt(head):mp.AddrAt(p)])
			}
			if e := p + l; e&(w.bs-1) != 0 && e == it.Remaining()+p {
				tail := min(roundUp(e, w.bs), mp.End())
				clear(dev[mp.AddrAt(e):mp.AddrAt(tail)])
			}
		}
		if !fail {
			copy(dev[mp.AddrAt(p):mp.AddrAt(p+l)], buf[p-pos:p-pos+l])
		}
		it.Advance(l)
	}
	if it.Err() != nil {
		w.fail("write [%d,+%d) to map %d: %v", pos, n, i, it.Err())
	}
	var err error
	if fail {
		err = syscall.EIO
	}
	if e := m.IOComplete(pos, n, OpWrite|OpDirect, err); e != nil {
		w.fail("IOComplete: %v", e)
	}
	md := w.model[i]
	if fail {
		// Nothing landed, but the holes the write covered got their
		// (unwritten, zero-reading) blocks.
		for b := pos / w.bs; b*w.bs < pos+n; b++ {
			if md.types[b] == Hole {
				md.types[b] = Unwritten
			}
		}
		return
	}
	for b := pos / w.bs; b*w.bs < pos+n; b++ {
		if md.types[b] != Mapped {
			clear(md.data[b*w.bs : (b+1)*w.bs])
			md.types[b] = Mapped
		}
	}
	copy(md.data[pos:], buf)
}

// check reads every map through the Iter loop and compares data and block
// types with the model, then checks the space invariants.
func (w *propWorld) check() {
	for i, m := range w.maps {
		got := make([]byte, w.size)
		it := NewIter(0, w.size, OpDirect)
		for it.Next(m) {
			mp := it.Mapping()
			p, l := it.Pos(), it.Len()
			for b := p / w.bs; b*w.bs < p+l; b++ {
				if want := w.model[i].types[b]; mp.Type != want {
					w.fail("map %d block %d: read mapping %v, model says %v", i, b, mp, want)
				}
			}
			if mp.Type == Mapped {
				copy(got[p:p+l], w.devs[mp.Target][mp.AddrAt(p):mp.AddrAt(p+l)])
			}
			it.Advance(l)
		}
		if it.Err() != nil {
			w.fail("read map %d: %v", i, it.Err())
		}
		if !bytes.Equal(got, w.model[i].data) {
			for j := range got {
				if got[j] != w.model[i].data[j] {
					w.fail("map %d byte %d (block %d) reads %d, model says %d", i, j, int64(j)/w.bs, got[j], w.model[i].data[j])
				}
			}
		}
	}
	if err := checkSpace(w.maps); err != nil {
		w.fail("%v", err)
	}
	if st := w.maps[0].Stats(); st.Allocated+st.Free != st.Total {
		w.fail("stats %+v", st)
	}
}

func (w *propWorld) hasShared(i int) bool {
	shared := w.maps[i].Stats().Reserved > 0
	w.maps[i].Extents(func(mp Mapping) bool {
		shared = shared || mp.Flags&FlagShared != 0
		return !shared
	})
	return shared
}

func runExtentMapProp(t *testing.T, seed uint64, ops int) {
	const bs = 16
	w := &propWorld{
		t:    t,
		rnd:  rand.New(rand.NewPCG(seed, seed^0x5eed)),
		bs:   bs,
		size: 40 * bs,
		devs: [][]byte{make([]byte, 150*bs), make([]byte, 200*bs)},
	}
	m, err := NewExtentMap(ExtentMapConfig{BlockSize: bs, Devices: []int64{150 * bs, 200 * bs}})
	if err != nil {
		t.Fatal(err)
	}
	w.maps = []*ExtentMap{m}
	w.model = []*propModel{{data: make([]byte, w.size), types: make([]Type, w.size/bs)}}
	nblk := w.size / bs
	for range ops {
		i := w.rnd.IntN(len(w.maps))
		b := w.rnd.Int64N(nblk)
		nb := 1 + w.rnd.Int64N(min(8, nblk-b))
		switch op := w.rnd.IntN(10); {
		case op < 5: // write, sub-block where nothing is shared
			pos, n := b*bs, nb*bs
			if !w.hasShared(i) && w.rnd.IntN(2) == 0 {
				pos += w.rnd.Int64N(bs)
				n = 1 + w.rnd.Int64N(b*bs+nb*bs-pos)
			}
			fail := w.rnd.IntN(8) == 0
			w.log = append(w.log, fmt.Sprintf("write map %d [%d,+%d) fail=%v", i, pos, n, fail))
			w.write(i, pos, n, fail)
		case op < 6:
			w.log = append(w.log, fmt.Sprintf("preallocate map %d blocks [%d,+%d)", i, b, nb))
			if err := w.maps[i].Preallocate(b*bs, nb*bs); err != nil {
				w.fail("Preallocate: %v", err)
			}
			for j := b; j < b+nb; j++ {
				if w.model[i].types[j] == Hole {
					w.model[i].types[j] = Unwritten
				}
			}
		case op < 7:
			w.log = append(w.log, fmt.Sprintf("punch map %d blocks [%d,+%d)", i, b, nb))
			if err := w.maps[i].Punch(b*bs, nb*bs); err != nil {
				w.fail("Punch: %v", err)
			}
			for j := b; j < b+nb; j++ {
				w.model[i].types[j] = Hole
			}
			clear(w.model[i].data[b*bs : (b+nb)*bs])
		case op < 9 && len(w.maps) < 4:
			w.log = append(w.log, fmt.Sprintf("clone map %d as %d", i, len(w.maps)))
			w.maps = append(w.maps, w.maps[i].Clone())
			md := w.model[i]
			w.model = append(w.model, &propModel{data: bytes.Clone(md.data), types: append([]Type(nil), md.types...)})
		case len(w.maps) > 1:
			w.log = append(w.log, fmt.Sprintf("release map %d", i))
			w.maps[i].Release()
			if st := w.maps[i].Stats(); st.Extents != 0 || st.Reserved != 0 {
				w.fail("released map: %+v", st)
			}
			w.maps = append(w.maps[:i], w.maps[i+1:]...)
			w.model = append(w.model[:i], w.model[i+1:]...)
		}
		w.check()
	}
	for _, m := range w.maps {
		m.Release()
	}
	if st := m.Stats(); st.Allocated != 0 || st.Free != st.Total {
		w.fail("after releasing every map: %+v", st)
	}
}

// TestExtentMapProperty runs random sequences of writes (sub-block,
// failing), preallocations, punches, clones and releases against a model
// of what each map must read, with fake devices the mappings point into,
// and checks the space invariants after every step.
func TestExtentMapProperty(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	if *propSeed != 0 {
		seeds = []uint64{*propSeed}
	} else {
		seeds = append(seeds, uint64(time.Now().UnixNano()))
	}
	runs, ops := 25, 150
	if testing.Short() {
		runs, ops = 5, 100
	}
	for _, seed := range seeds {
		for r := range runs {
			s := seed*1000 + uint64(r)
			t.Run(fmt.Sprint(s), func(t *testing.T) {
				defer func() {
					if t.Failed() {
						t.Logf("reproduce with: go test ./iomap -run TestExtentMapProperty -iomap.seed=%d (run %d)", seed, r)
					}
				}()
				runExtentMapProp(t, s, ops)
			})
		}
	}
}
