package iomap

import "testing"

// layoutFromBytes turns fuzz input into a layout: each byte pair is one run
// of 1..256 bytes with a type and a combination of new/shared/dirty.
func layoutFromBytes(b []byte) []seg {
	var segs []seg
	for i := 0; i+1 < len(b) && len(segs) < 64; i += 2 {
		k := b[i+1]
		segs = append(segs, seg{
			len:   1 + int64(b[i]),
			typ:   Type(k % uint8(numTypes)),
			flags: Flags(k/uint8(numTypes)) & (FlagNew | FlagShared | FlagDirty),
		})
	}
	return segs
}

// FuzzIter checks on random layouts, ranges, mapping lengths, partial
// advances and stale mappings that the loop visits every byte of the range
// exactly once, in order, with the type and flags of the layout, and that
// the mapper sees matching Begin/End calls.
func FuzzIter(f *testing.F) {
	f.Add([]byte{255, 1, 10, 0, 3, 2, 40, 7}, uint16(0), uint16(400), uint8(0), uint8(0), uint8(0))
	f.Add([]byte{255, 1, 10, 0, 3, 2, 40, 7}, uint16(100), uint16(2000), uint8(17), uint8(5), uint8(3))
	f.Add([]byte{0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 9}, uint16(1), uint16(5), uint8(1), uint8(1), uint8(1))
	f.Add([]byte{100, 19, 100, 5}, uint16(150), uint16(0), uint8(0), uint8(0), uint8(0))
	f.Add([]byte{}, uint16(10), uint16(300), uint8(64), uint8(0), uint8(2))
	f.Add([]byte{7, 6, 200, 12, 30, 1, 99, 8}, uint16(3), uint16(1500), uint8(0), uint8(9), uint8(4))
	f.Fuzz(func(t *testing.T, layout []byte, pos, length uint16, maxLen, chunk, stale uint8) {
		l := &layoutMapper{segs: layoutFromBytes(layout), maxLen: int64(maxLen)}
		start := int64(pos) % (l.total() + 64)
		n := int64(length) % 2048
		if stale != 0 {
			l.staleOnce = map[int64]bool{}
			for p := start; p < start+n; p++ {
				if p%5 == int64(stale)%5 {
					l.staleOnce[p] = true
				}
			}
		}
		next := start
		var advances []int64 // bytes advanced per body call
		it := NewIter(start, n, OpWrite)
		for it.Next(l) {
			m := it.Mapping()
			if it.Pos() != next {
				t.Fatalf("body at %d, want %d", it.Pos(), next)
			}
			if it.Len() <= 0 || it.Pos() < m.Offset || it.Pos()+it.Len() > m.End() || it.Pos()+it.Len() > start+n {
				t.Fatalf("body [%d,+%d) does not fit %v or the range", it.Pos(), it.Len(), m)
			}
			if m.Flags&FlagStale != 0 {
				advances = append(advances, 0)
				continue
			}
			s, _ := l.at(it.Pos())
			for p := it.Pos(); p < it.Pos()+it.Len(); p++ {
				if ps, _ := l.at(p); ps.typ != m.Type || ps.flags != m.Flags || ps != s {
					t.Fatalf("byte %d is %v/%v, mapping says %v", p, ps.typ, ps.flags, m)
				}
			}
			k := it.Len()
			if chunk != 0 {
				k = min(k, int64(chunk))
			}
			if err := it.Advance(k); err != nil {
				t.Fatal(err)
			}
			next += k
			advances = append(advances, k)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		if next != start+n || it.Done() != n {
			t.Fatalf("visited [%d,%d), Done() = %d, want [%d,%d)", start, next, it.Done(), start, start+n)
		}
		if len(l.calls) != 2*len(advances) {
			t.Fatalf("%d mapper calls for %d bodies", len(l.calls), len(advances))
		}
		for i, adv := range advances {
			b, e := l.calls[2*i], l.calls[2*i+1]
			m, _ := l.Begin(b.pos, b.length, b.op) // the same mapping again
			if b.end || !e.end || e.pos != b.pos || e.done != adv ||
				b.length != start+n-b.pos || e.length != min(b.length, m.End()-b.pos) {
				t.Fatalf("body %d advanced %d: begin %+v end %+v", i, adv, b, e)
			}
		}
	})
}
