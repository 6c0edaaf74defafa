package iomap

import (
	"errors"
	"fmt"
	"reflect"
	"syscall"
	"testing"
)

// walk runs the loop over l and returns what each body call saw.
type visit struct {
	pos, length int64
	typ         Type
	flags       Flags
}

// stdLayout has every type and flag, each run a different length.
var stdLayout = []seg{
	{len: 4096, typ: Mapped},
	{len: 8192, typ: Hole},
	{len: 512, typ: Unwritten},
	{len: 1000, typ: Mapped, flags: FlagShared},
	{len: 3000, typ: Unwritten, flags: FlagNew},
	{len: 100, typ: Inline},
	{len: 4096, typ: Delalloc},
	{len: 4096, typ: Mapped, flags: FlagDirty | FlagNew},
	{len: 7, typ: Hole},
	{len: 4096, typ: Mapped, flags: FlagShared | FlagDirty | 1<<FlagPrivateShift},
}

// expectVisits is what a full walk of [pos, pos+length) over l must see:
// one visit per run intersected with the range, clipped to maxLen pieces.
func expectVisits(l *layoutMapper, pos, length int64) []visit {
	var out []visit
	end := pos + length
	for pos < end {
		s, off := l.at(pos)
		n := min(off+s.len, end) - pos
		if l.maxLen > 0 {
			n = min(n, l.maxLen)
		}
		out = append(out, visit{pos, n, s.typ, s.flags})
		pos += n
	}
	return out
}

func TestIterVisitsLayout(t *testing.T) {
	total := (&layoutMapper{segs: stdLayout}).total()
	for _, tc := range []struct {
		name        string
		pos, length int64
		maxLen      int64
		op          OpFlags
	}{
		{"all", 0, total, 0, 0},
		{"all-write", 0, total, 0, OpWrite | OpDirect},
		{"beyond-layout", 0, total + 10000, 0, 0},
		{"mid-run-start", 100, 13000, 0, 0},
		{"inside-one-run", 5000, 100, 0, 0},
		{"short-mappings", 0, total, 1000, 0},
		{"one-byte-mappings", 4090, 20, 1, OpWrite},
		{"odd-short", 13, total - 26, 777, OpNoWait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &layoutMapper{segs: stdLayout, maxLen: tc.maxLen}
			var got []visit
			it := NewIter(tc.pos, tc.length, tc.op)
			for it.Next(l) {
				m := it.Mapping()
				if it.Pos() < m.Offset || it.Pos()+it.Len() > m.End() {
					t.Fatalf("body range [%d,+%d) outside %v", it.Pos(), it.Len(), m)
				}
				if it.Op() != tc.op {
					t.Fatalf("Op() = %v, want %v", it.Op(), tc.op)
				}
				got = append(got, visit{it.Pos(), it.Len(), m.Type, m.Flags})
				it.Advance(it.Len())
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
			if it.Done() != tc.length || it.Remaining() != 0 {
				t.Fatalf("Done() = %d, Remaining() = %d, want %d, 0", it.Done(), it.Remaining(), tc.length)
			}
			if want := expectVisits(l, tc.pos, tc.length); !reflect.DeepEqual(got, want) {
				t.Fatalf("visits:\n got %v\nwant %v", got, want)
			}
			// Every Begin is followed by an End for it, with the range Begin
			// was asked for trimmed to the mapping, and everything advanced.
			if len(l.calls) != 2*len(got) {
				t.Fatalf("%d mapper calls for %d visits: %v", len(l.calls), len(got), l.calls)
			}
			for i, v := range got {
				b, e := l.calls[2*i], l.calls[2*i+1]
				if b.end || !e.end || b.pos != v.pos || e.pos != v.pos || e.length != v.length ||
					e.done != v.length || b.length != tc.pos+tc.length-v.pos || b.op != tc.op || e.op != tc.op {
					t.Fatalf("visit %v: begin %+v end %+v", v, b, e)
				}
			}
		})
	}
}

func TestIterStoppingRules(t *testing.T) {
	errEnd := fmt.Errorf("iomap test: end failed: %w", syscall.EIO)
	errBegin := fmt.Errorf("iomap test: begin failed: %w", syscall.EAGAIN)
	layout := []seg{{len: 100, typ: Mapped}, {len: 100, typ: Hole}, {len: 100, typ: Unwritten}}
	type body func(it *Iter, n int) // n counts body calls from 0

	all := func(it *Iter, n int) { it.Advance(it.Len()) }
	for _, tc := range []struct {
		name   string
		setup  func(l *layoutMapper)
		body   body
		err    error // errors.Is target; nil means no error
		done   int64
		bodies int
		calls  []call // expected mapper calls, if set
	}{
		{
			name: "runs-to-the-end", body: all, done: 300, bodies: 3,
		},
		{
			name: "body-error-stops",
			body: func(it *Iter, n int) {
				if n == 1 {
					it.SetErr(errBody)
					return
				}
				it.Advance(it.Len())
			},
			err: errBody, done: 100, bodies: 2,
			calls: []call{
				{pos: 0, length: 300}, {end: true, pos: 0, length: 100, done: 100},
				{pos: 100, length: 200}, {end: true, pos: 100, length: 100, done: 0},
			},
		},
		{
			name: "error-after-partial-advance-keeps-done",
			body: func(it *Iter, n int) {
				it.Advance(30)
				it.SetErr(errBody)
			},
			err: errBody, done: 30, bodies: 1,
			calls: []call{{pos: 0, length: 300}, {end: true, pos: 0, length: 100, done: 30}},
		},
		{
			name:  "begin-error-stops-without-end",
			setup: func(l *layoutMapper) { l.beginErr = map[int64]error{200: errBegin} },
			body:  all, err: syscall.EAGAIN, done: 200, bodies: 2,
			calls: []call{
				{pos: 0, length: 300}, {end: true, pos: 0, length: 100, done: 100},
				{pos: 100, length: 200}, {end: true, pos: 100, length: 100, done: 100},
				{pos: 200, length: 100},
			},
		},
		{
			name:  "end-error-stops-even-after-progress",
			setup: func(l *layoutMapper) { l.endErr = errEnd },
			body:  all, err: errEnd, done: 100, bodies: 1,
		},
		{
			name: "first-error-wins-over-end-error",
			setup: func(l *layoutMapper) {
				l.endErr = errEnd
			},
			body: func(it *Iter, n int) { it.SetErr(errBody) },
			err:  errBody, done: 0, bodies: 1,
		},
		{
			name: "no-progress-stops-without-error",
			body: func(it *Iter, n int) {
				if n == 0 {
					it.Advance(it.Len())
				}
			},
			done: 100, bodies: 2,
			calls: []call{
				{pos: 0, length: 300}, {end: true, pos: 0, length: 100, done: 100},
				{pos: 100, length: 200}, {end: true, pos: 100, length: 100, done: 0},
			},
		},
		{
			name:  "stale-mapping-is-mapped-again",
			setup: func(l *layoutMapper) { l.staleOnce = map[int64]bool{100: true} },
			body: func(it *Iter, n int) {
				if it.Mapping().Flags&FlagStale != 0 {
					return // the body notices and advances nothing
				}
				it.Advance(it.Len())
			},
			done: 300, bodies: 4,
			calls: []call{
				{pos: 0, length: 300}, {end: true, pos: 0, length: 100, done: 100},
				{pos: 100, length: 200}, {end: true, pos: 100, length: 100, done: 0},
				{pos: 100, length: 200}, {end: true, pos: 100, length: 100, done: 100},
				{pos: 200, length: 100}, {end: true, pos: 200, length: 100, done: 100},
			},
		},
		{
			name:  "stale-with-progress-goes-on",
			setup: func(l *layoutMapper) { l.staleAll = true },
			body:  all, done: 300, bodies: 3,
		},
		{
			name:  "stale-forever-is-bounded",
			setup: func(l *layoutMapper) { l.staleAll = true },
			body:  func(it *Iter, n int) {},
			err:   syscall.ESTALE, done: 0, bodies: maxStaleRetries + 1,
		},
		{
			name: "over-advance-is-an-error",
			body: func(it *Iter, n int) {
				if err := it.Advance(it.Len() + 1); !errors.Is(err, syscall.EIO) {
					panic(fmt.Sprint("Advance past the mapping returned ", err))
				}
			},
			err: syscall.EIO, done: 0, bodies: 1,
		},
		{
			name: "negative-advance-is-an-error",
			body: func(it *Iter, n int) { it.Advance(-1) },
			err:  syscall.EIO, done: 0, bodies: 1,
		},
		{
			name: "several-advances-per-body",
			body: func(it *Iter, n int) {
				for it.Len() > 0 {
					it.Advance(min(it.Len(), 33))
				}
			},
			done: 300, bodies: 3,
		},
		{
			name: "partial-advance-re-begins-at-new-pos",
			body: func(it *Iter, n int) { it.Advance(min(it.Len(), 60)) },
			done: 300, bodies: 6,
			calls: []call{
				{pos: 0, length: 300}, {end: true, pos: 0, length: 100, done: 60},
				{pos: 60, length: 240}, {end: true, pos: 60, length: 40, done: 40},
				{pos: 100, length: 200}, {end: true, pos: 100, length: 100, done: 60},
				{pos: 160, length: 140}, {end: true, pos: 160, length: 40, done: 40},
				{pos: 200, length: 100}, {end: true, pos: 200, length: 100, done: 60},
				{pos: 260, length: 40}, {end: true, pos: 260, length: 40, done: 40},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &layoutMapper{segs: layout}
			if tc.setup != nil {
				tc.setup(l)
			}
			it := NewIter(0, 300, 0)
			bodies := 0
			for it.Next(l) {
				tc.body(&it, bodies)
				bodies++
				if bodies > 100 {
					t.Fatal("loop does not stop")
				}
			}
			if tc.err == nil && it.Err() != nil || tc.err != nil && !errors.Is(it.Err(), tc.err) {
				t.Fatalf("Err() = %v, want %v", it.Err(), tc.err)
			}
			if it.Done() != tc.done || bodies != tc.bodies {
				t.Fatalf("Done() = %d after %d bodies, want %d after %d", it.Done(), bodies, tc.done, tc.bodies)
			}
			if tc.calls != nil && !reflect.DeepEqual(l.calls, tc.calls) {
				t.Fatalf("mapper calls:\n got %+v\nwant %+v", l.calls, tc.calls)
			}
			if it.Next(l) {
				t.Fatal("Next after the end returned true")
			}
			if !reflect.DeepEqual(*it.Mapping(), Mapping{}) || it.Len() != 0 {
				t.Fatalf("after the loop Mapping() = %v, Len() = %d", it.Mapping(), it.Len())
			}
		})
	}
}

// badMapper returns whatever mapping it is told to.
type badMapper struct{ m Mapping }

func (b badMapper) Begin(pos, length int64, op OpFlags) (Mapping, error) { return b.m, nil }
func (b badMapper) End(pos, length, done int64, op OpFlags, m *Mapping) error {
	panic("End called for a mapping Iter should have rejected")
}

func TestIterRejectsBadMappings(t *testing.T) {
	for _, m := range []Mapping{
		{Offset: 0, Length: 0, Type: Mapped},            // empty
		{Offset: 200, Length: 100, Type: Mapped},        // starts after pos
		{Offset: 0, Length: 100, Type: Mapped},          // ends at pos
		{Offset: -10, Length: 300, Type: Hole},          // negative offset
		{Offset: 50, Length: maxOff, Type: Hole},        // overflows
		{Offset: 0, Length: 1000, Type: numTypes},       // unknown type
		{Offset: 0, Length: 1000, Type: Delalloc + 100}, // unknown type
	} {
		it := NewIter(100, 50, 0)
		if it.Next(badMapper{m}) {
			t.Fatalf("Next accepted %v for pos 100", m)
		}
		if !errors.Is(it.Err(), syscall.EIO) {
			t.Fatalf("mapping %v: Err() = %v, want EIO", m, it.Err())
		}
	}
}

func TestIterRange(t *testing.T) {
	l := &layoutMapper{segs: stdLayout}
	it := NewIter(5, 0, 0)
	if it.Next(l) || it.Err() != nil || len(l.calls) != 0 {
		t.Fatalf("zero length: Next ran, Err() = %v, calls %v", it.Err(), l.calls)
	}
	for _, r := range [][2]int64{{-1, 10}, {0, -1}, {maxOff - 5, 10}} {
		it.Reset(r[0], r[1], OpWrite)
		if it.Next(l) || !errors.Is(it.Err(), syscall.EINVAL) || len(l.calls) != 0 {
			t.Fatalf("range %v: Err() = %v, calls %v", r, it.Err(), l.calls)
		}
	}
	// Reset brings a finished Iter back to life.
	it.Reset(0, 10, 0)
	if !it.Next(l) || it.Err() != nil || it.Len() != 10 {
		t.Fatalf("after Reset: Err() = %v, Len() = %d", it.Err(), it.Len())
	}
}

func TestEach(t *testing.T) {
	l := &layoutMapper{segs: stdLayout}
	total := l.total()
	var got []visit
	err := Each(l, 0, total, OpWrite, func(m *Mapping, pos, length int64) (int64, error) {
		got = append(got, visit{pos, length, m.Type, m.Flags})
		return length, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := expectVisits(l, 0, total); !reflect.DeepEqual(got, want) {
		t.Fatalf("visits:\n got %v\nwant %v", got, want)
	}

	// Bytes returned with an error are advanced, then the loop stops.
	l = &layoutMapper{segs: stdLayout}
	err = Each(l, 0, total, 0, func(m *Mapping, pos, length int64) (int64, error) {
		return 10, errBody
	})
	if !errors.Is(err, errBody) {
		t.Fatalf("Each = %v, want %v", err, errBody)
	}
	if want := []call{{pos: 0, length: total}, {end: true, pos: 0, length: 4096, done: 10}}; !reflect.DeepEqual(l.calls, want) {
		t.Fatalf("calls %+v, want %+v", l.calls, want)
	}
}

func TestIterZeroAllocs(t *testing.T) {
	w := NewWholeFile(1 << 20)
	n := testing.AllocsPerRun(100, func() {
		it := NewIter(1<<19, 1<<20, OpDirect)
		for it.Next(w) {
			it.Advance(it.Len())
		}
		if it.Err() != nil || it.Done() != 1<<20 {
			panic(it.Err())
		}
	})
	if n != 0 {
		t.Fatalf("Iter over WholeFile: %v allocations per loop, want 0", n)
	}
}

func BenchmarkIterWholeFile(b *testing.B) {
	w := NewWholeFile(1 << 30)
	b.ReportAllocs()
	b.SetBytes(4096)
	for i := 0; b.Loop(); i++ {
		it := NewIter(int64(i%(1<<18))*4096, 4096, OpDirect)
		for it.Next(w) {
			it.Advance(it.Len())
		}
	}
}
