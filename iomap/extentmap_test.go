package iomap

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"syscall"
	"testing"
)

func newTestExtentMap(t testing.TB, bs int64, devices ...int64) *ExtentMap {
	t.Helper()
	m, err := NewExtentMap(ExtentMapConfig{BlockSize: bs, Devices: devices})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func begin(t testing.TB, m Mapper, pos, length int64, op OpFlags) Mapping {
	t.Helper()
	mp, err := m.Begin(pos, length, op)
	if err != nil {
		t.Fatalf("Begin(%d, %d, %v): %v", pos, length, op, err)
	}
	if err := checkMapping(&mp, pos); err != nil {
		t.Fatal(err)
	}
	return mp
}

func wantMapping(t testing.TB, got Mapping, want string) {
	t.Helper()
	if got.String() != want {
		t.Fatalf("mapping %v, want %s", got, want)
	}
}

// writeAll maps [pos, pos+n) for writing with the Iter loop, as the dio
// engine does, and completes it with err. It returns the mappings seen.
func writeAll(t testing.TB, m *ExtentMap, pos, n int64, err error) []Mapping {
	t.Helper()
	var ms []Mapping
	it := NewIter(pos, n, OpWrite|OpDirect)
	for it.Next(m) {
		ms = append(ms, *it.Mapping())
		it.Advance(it.Len())
	}
	if it.Err() != nil {
		t.Fatalf("write [%d,+%d): %v", pos, n, it.Err())
	}
	if e := m.IOComplete(pos, n, OpWrite|OpDirect, err); e != nil {
		t.Fatal(e)
	}
	return ms
}

func checkNoLeak(t testing.TB, maps ...*ExtentMap) {
	t.Helper()
	st := maps[0].Stats()
	if st.Allocated+st.Free != st.Total {
		t.Fatalf("space leak: %+v", st)
	}
	if err := checkSpace(maps); err != nil {
		t.Fatal(err)
	}
}

func TestExtentMapWriteIntoHole(t *testing.T) {
	m := newTestExtentMap(t, 4096, 1<<20)
	wantMapping(t, begin(t, m, 5000, 100, 0), "hole [0,9223372036854775807) flags=none target=0 addr=none bs=4096")

	// A sub-block write allocates whole blocks and says they are new.
	ms := writeAll(t, m, 5000, 5000, nil)
	if len(ms) != 1 {
		t.Fatalf("mappings %v", ms)
	}
	wantMapping(t, ms[0], "unwritten [4096,12288) flags=new target=0 addr=0 bs=4096")
	// Completion converted it.
	wantMapping(t, begin(t, m, 4096, 10, 0), "mapped [4096,12288) flags=none target=0 addr=0 bs=4096")
	wantMapping(t, begin(t, m, 12288, 10, 0), "hole [12288,9223372036854775807) flags=none target=0 addr=none bs=4096")
	wantMapping(t, begin(t, m, 0, 10, 0), "hole [0,4096) flags=none target=0 addr=none bs=4096")
	// An overwrite is a pure overwrite.
	wantMapping(t, begin(t, m, 6000, 10, OpWrite|OpOverwriteOnly|OpNoWait), "mapped [4096,12288) flags=none target=0 addr=0 bs=4096")

	// The next hole write continues on the device and merges once written.
	ms = writeAll(t, m, 12288, 4096, nil)
	wantMapping(t, ms[0], "unwritten [12288,16384) flags=new target=0 addr=8192 bs=4096")
	wantMapping(t, begin(t, m, 0+4096, 10, 0), "mapped [4096,16384) flags=none target=0 addr=0 bs=4096")
	if st := m.Stats(); st.Extents != 1 || st.Allocated != 12288 {
		t.Fatalf("stats %+v, want one merged extent of 12288 bytes", st)
	}

	// Before completion, readers see unwritten space (zeros), not the device.
	mp := begin(t, m, 20000, 100, OpWrite)
	wantMapping(t, mp, "unwritten [16384,20480) flags=new target=0 addr=12288 bs=4096")
	wantMapping(t, begin(t, m, 20000, 100, 0), "unwritten [16384,20480) flags=none target=0 addr=12288 bs=4096")
	// A failed write leaves it unwritten.
	if err := m.IOComplete(20000, 100, OpWrite, syscall.EIO); err != nil {
		t.Fatal(err)
	}
	wantMapping(t, begin(t, m, 20000, 100, 0), "unwritten [16384,20480) flags=none target=0 addr=12288 bs=4096")
	checkNoLeak(t, m)
}

func TestExtentMapRefusals(t *testing.T) {
	m := newTestExtentMap(t, 4096, 1<<20)
	if err := m.Preallocate(0, 8192); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pos int64
		op  OpFlags
	}{
		{100000, OpWrite | OpNoWait},        // hole: allocation
		{100000, OpWrite | OpOverwriteOnly}, // hole: allocation
		{0, OpWrite | OpOverwriteOnly},      // unwritten: conversion
	} {
		if _, err := m.Begin(tc.pos, 4096, tc.op); !errors.Is(err, syscall.EAGAIN) {
			t.Errorf("Begin(%d, %v) error %v, want EAGAIN", tc.pos, tc.op, err)
		}
	}
	// NOWAIT into unwritten space needs no allocation.
	wantMapping(t, begin(t, m, 0, 4096, OpWrite|OpNoWait), "unwritten [0,8192) flags=none target=0 addr=0 bs=4096")
	// Reads never refuse.
	begin(t, m, 100000, 4096, OpNoWait|OpOverwriteOnly)
	for _, r := range [][2]int64{{-1, 10}, {0, 0}, {maxOff, 1}} {
		if _, err := m.Begin(r[0], r[1], 0); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Begin%v error %v, want EINVAL", r, err)
		}
	}
	if err := m.Punch(100, 4096); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("unaligned Punch error %v, want EINVAL", err)
	}
	if _, err := NewExtentMap(ExtentMapConfig{BlockSize: 1000, Devices: []int64{1 << 20}}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("block size 1000: %v", err)
	}
	if _, err := NewExtentMap(ExtentMapConfig{}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("no devices: %v", err)
	}
	checkNoLeak(t, m)
}

func TestExtentMapPreallocateAndPunch(t *testing.T) {
	m := newTestExtentMap(t, 4096, 1<<20)
	writeAll(t, m, 8192, 4096, nil)
	if err := m.Preallocate(1, 5*4096); err != nil { // rounds out to [0, 24576)
		t.Fatal(err)
	}
	var got []string
	m.Extents(func(mp Mapping) bool { got = append(got, mp.String()); return true })
	want := []string{
		"unwritten [0,8192) flags=none target=0 addr=4096 bs=4096",
		"mapped [8192,12288) flags=none target=0 addr=0 bs=4096",
		"unwritten [12288,24576) flags=none target=0 addr=12288 bs=4096",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("extents\n got %q\nwant %q", got, want)
	}
	// Writing the middle of an unwritten extent converts just those blocks.
	writeAll(t, m, 16384, 4096, nil)
	wantMapping(t, begin(t, m, 12288, 1, 0), "unwritten [12288,16384) flags=none target=0 addr=12288 bs=4096")
	wantMapping(t, begin(t, m, 16384, 1, 0), "mapped [16384,20480) flags=none target=0 addr=16384 bs=4096")
	wantMapping(t, begin(t, m, 20480, 1, 0), "unwritten [20480,24576) flags=none target=0 addr=20480 bs=4096")
	// Converting the rest merges back into one extent.
	writeAll(t, m, 12288, 4096, nil)
	writeAll(t, m, 20480, 4096, nil)
	wantMapping(t, begin(t, m, 12288, 1, 0), "mapped [12288,24576) flags=none target=0 addr=12288 bs=4096")

	if err := m.Punch(4096, 16384); err != nil {
		t.Fatal(err)
	}
	wantMapping(t, begin(t, m, 5000, 1, 0), "hole [4096,20480) flags=none target=0 addr=none bs=4096")
	wantMapping(t, begin(t, m, 0, 1, 0), "unwritten [0,4096) flags=none target=0 addr=4096 bs=4096")
	wantMapping(t, begin(t, m, 20480, 1, 0), "mapped [20480,24576) flags=none target=0 addr=20480 bs=4096")
	if st := m.Stats(); st.Allocated != 8192 {
		t.Fatalf("after punch: %+v", st)
	}
	checkNoLeak(t, m)
	m.Release()
	if st := m.Stats(); st.Allocated != 0 || st.Extents != 0 || st.Free != st.Total {
		t.Fatalf("after Release: %+v", st)
	}
}

func TestExtentMapCloneSharesUntilWritten(t *testing.T) {
	m := newTestExtentMap(t, 4096, 1<<20)
	writeAll(t, m, 0, 4*4096, nil)
	c := m.Clone()
	for _, x := range []*ExtentMap{m, c} {
		wantMapping(t, begin(t, x, 4096, 1, 0), "mapped [0,16384) flags=shared target=0 addr=0 bs=4096")
	}
	if st := m.Stats(); st.Allocated != 16384 || st.Shared != 16384 {
		t.Fatalf("after clone: %+v", st)
	}
	checkNoLeak(t, m, c)

	// Shared ranges need aligned writes.
	if _, err := c.Begin(4096+1, 4096, OpWrite); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unaligned write into shared extent: %v", err)
	}
	// Pure-overwrite and nowait writes cannot copy.
	for _, op := range []OpFlags{OpWrite | OpOverwriteOnly, OpWrite | OpNoWait} {
		if _, err := c.Begin(4096, 4096, op); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("%v write into shared extent: %v", op, err)
		}
	}

	// Writing block 1 of the clone copies it to fresh space ...
	mp := begin(t, c, 4096, 4096, OpWrite)
	wantMapping(t, mp, "mapped [4096,8192) flags=new|shared target=0 addr=16384 bs=4096")
	// ... while both maps still read the old extent until completion.
	wantMapping(t, begin(t, c, 4096, 1, 0), "mapped [0,16384) flags=shared target=0 addr=0 bs=4096")
	// A second writer of the same range gets the same reservation.
	wantMapping(t, begin(t, c, 4096, 4096, OpWrite), mp.String())
	if st := c.Stats(); st.Reserved != 4096 {
		t.Fatalf("reservation: %+v", st)
	}
	if err := c.IOComplete(4096, 4096, OpWrite, nil); err != nil {
		t.Fatal(err)
	}
	wantMapping(t, begin(t, c, 0, 1, 0), "mapped [0,4096) flags=shared target=0 addr=0 bs=4096")
	wantMapping(t, begin(t, c, 4096, 1, 0), "mapped [4096,8192) flags=none target=0 addr=16384 bs=4096")
	wantMapping(t, begin(t, c, 8192, 1, 0), "mapped [8192,16384) flags=shared target=0 addr=8192 bs=4096")
	// The original now owns block 1 alone, and keeps it.
	wantMapping(t, begin(t, m, 4096, 1, 0), "mapped [4096,8192) flags=none target=0 addr=4096 bs=4096")
	wantMapping(t, begin(t, m, 0, 1, 0), "mapped [0,4096) flags=shared target=0 addr=0 bs=4096")
	// And writes it in place.
	wantMapping(t, begin(t, m, 4096, 4096, OpWrite|OpOverwriteOnly), "mapped [4096,8192) flags=none target=0 addr=4096 bs=4096")
	checkNoLeak(t, m, c)

	// A reservation left over after its range stopped being shared still
	// takes the writes there.
	d := m.Clone()
	wantMapping(t, begin(t, m, 4096, 4096, OpWrite), "mapped [4096,8192) flags=new|shared target=0 addr=20480 bs=4096")
	d.Release()
	wantMapping(t, begin(t, m, 4096, 4096, OpWrite), "mapped [4096,8192) flags=new|shared target=0 addr=20480 bs=4096")
	if err := m.IOComplete(4096, 4096, OpWrite, nil); err != nil {
		t.Fatal(err)
	}
	wantMapping(t, begin(t, m, 4096, 1, 0), "mapped [4096,8192) flags=none target=0 addr=20480 bs=4096")
	checkNoLeak(t, m, c)

	// A failed copy-on-write keeps the old data and the reservation, which
	// the next write reuses.
	ms := writeAll(t, c, 8192, 8192, syscall.EIO)
	wantMapping(t, ms[0], "mapped [8192,16384) flags=new|shared target=0 addr=24576 bs=4096")
	wantMapping(t, begin(t, c, 8192, 1, 0), "mapped [8192,16384) flags=shared target=0 addr=8192 bs=4096")
	ms = writeAll(t, c, 8192, 8192, nil)
	wantMapping(t, ms[0], "mapped [8192,16384) flags=new|shared target=0 addr=24576 bs=4096")
	wantMapping(t, begin(t, c, 4096, 1, 0), "mapped [4096,8192) flags=none target=0 addr=16384 bs=4096")
	wantMapping(t, begin(t, c, 8192, 1, 0), "mapped [8192,16384) flags=none target=0 addr=24576 bs=4096")
	checkNoLeak(t, m, c)

	// Dropping the original frees what only it held: blocks 1 to 3.
	before := m.Stats().Allocated
	m.Release()
	if st := c.Stats(); st.Allocated != before-3*4096 || st.Shared != 0 {
		t.Fatalf("after releasing the original (had %d): %+v", before, st)
	}
	wantMapping(t, begin(t, c, 0, 1, 0), "mapped [0,4096) flags=none target=0 addr=0 bs=4096")
	checkNoLeak(t, c)
	c.Release()
	if st := c.Stats(); st.Allocated != 0 {
		t.Fatalf("after releasing both: %+v", st)
	}
}

func TestExtentMapCloneOfClone(t *testing.T) {
	m := newTestExtentMap(t, 512, 64*512)
	writeAll(t, m, 0, 8*512, nil)
	c1 := m.Clone()
	c2 := c1.Clone()
	if st := m.Stats(); st.Allocated != 8*512 || st.Shared != 8*512 {
		t.Fatalf("%+v", st)
	}
	if refs := m.sp.refs[0]; refs.Len() != 1 || func() int32 { x, _ := refs.Min(); return x.count }() != 3 {
		t.Fatalf("want one record with 3 references, got %d records", refs.Len())
	}
	writeAll(t, c1, 0, 512, nil)
	wantMapping(t, begin(t, m, 0, 1, 0), "mapped [0,4096) flags=shared target=0 addr=0 bs=512")
	m.Release()
	wantMapping(t, begin(t, c2, 0, 1, 0), "mapped [0,512) flags=none target=0 addr=0 bs=512")
	wantMapping(t, begin(t, c2, 512, 1, 0), "mapped [512,4096) flags=shared target=0 addr=512 bs=512")
	checkNoLeak(t, c1, c2)
	c1.Release()
	c2.Release()
	if st := c2.Stats(); st.Allocated != 0 || st.Free != st.Total {
		t.Fatalf("%+v", st)
	}
}

func TestExtentMapOutOfSpace(t *testing.T) {
	m := newTestExtentMap(t, 4096, 3*4096, 2*4096)
	// Two devices: the allocation spills from one to the other, and the
	// write gets one mapping per piece.
	ms := writeAll(t, m, 0, 5*4096, nil)
	if len(ms) != 2 || ms[0].Length != 3*4096 || ms[1].Target != 1 || ms[1].Length != 2*4096 {
		t.Fatalf("mappings %v", ms)
	}
	if _, err := m.Begin(5*4096, 4096, OpWrite); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("full device: %v", err)
	}
	if err := m.Preallocate(10*4096, 4096); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("full device: %v", err)
	}
	checkNoLeak(t, m)
}

// badAllocator returns whatever it is told to.
type badAllocator struct {
	target       int
	addr, length int64
}

func (b badAllocator) Alloc(n int64) (int, int64, int64, error) {
	return b.target, b.addr, b.length, nil
}
func (b badAllocator) Free(target int, addr, length int64) {}

func TestExtentMapChecksAllocator(t *testing.T) {
	for _, b := range []badAllocator{{0, 100, 4096}, {0, 0, 0}, {0, 0, 8192}, {-1, 0, 4096}, {0, -4096, 4096}} {
		m, err := NewExtentMap(ExtentMapConfig{Allocator: b})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Begin(0, 4096, OpWrite); !errors.Is(err, syscall.EIO) {
			t.Errorf("allocator returning %+v: %v", b, err)
		}
	}
}

func TestFirstFit(t *testing.T) {
	f, err := NewFirstFit(512, []int64{4 * 512, 10*512 + 100})
	if err != nil {
		t.Fatal(err)
	}
	if f.TotalBytes() != 14*512 || f.FreeBytes() != 14*512 {
		t.Fatalf("total %d free %d", f.TotalBytes(), f.FreeBytes())
	}
	alloc := func(n int64) [3]int64 {
		tg, a, l, err := f.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		return [3]int64{int64(tg), a, l}
	}
	if got := alloc(1024); got != [3]int64{0, 0, 1024} {
		t.Fatal(got)
	}
	if got := alloc(4096); got != [3]int64{1, 0, 4096} { // first fit skips device 0's 1024 bytes
		t.Fatal(got)
	}
	if got := alloc(8192); got != [3]int64{0, 1024, 1024} { // nothing fits: the (first) largest range
		t.Fatal(got)
	}
	f.Free(1, 0, 512)
	f.Free(1, 512, 512) // merges with the previous
	if got := alloc(1024); got != [3]int64{1, 0, 1024} {
		t.Fatal(got)
	}
	if got := alloc(1024); got != [3]int64{1, 4096, 1024} {
		t.Fatal(got)
	}
	if _, _, _, err := f.Alloc(512); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("full: %v", err)
	}
	if _, _, _, err := f.Alloc(100); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unaligned: %v", err)
	}
	for _, bad := range [][3]int64{{1, 0, 512}, {0, 0, 4096}, {2, 0, 512}, {0, 100, 512}} {
		f.Free(1, 0, 1024)
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Free%v after freeing [0,1024) on 1 did not panic", bad)
				}
			}()
			f.Free(int(bad[0]), bad[1], bad[2])
		}()
		alloc(1024)
	}
}

func TestExtentMapConcurrent(t *testing.T) {
	const bs = 4096
	m := newTestExtentMap(t, bs, 1<<26)
	writeAll(t, m, 0, 64*bs, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each goroutine writes its own region and reads everywhere.
			base := int64(64+g*64) * bs
			for i := range 200 {
				pos := base + int64(i%64)*bs
				if i%50 == 0 {
					if err := m.Punch(base, 64*bs); err != nil {
						panic(err)
					}
				}
				it := NewIter(pos, 2*bs, OpWrite)
				for it.Next(m) {
					it.Advance(it.Len())
				}
				if it.Err() != nil {
					panic(it.Err())
				}
				if err := m.IOComplete(pos, 2*bs, OpWrite, nil); err != nil {
					panic(err)
				}
				if mp, err := m.Begin(int64(i%64)*bs, bs, 0); err != nil || mp.Type != Mapped {
					panic(fmt.Sprint(mp, err))
				}
				m.Stats()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			c := m.Clone() // reads and preallocation of the clone race with m
			c.Preallocate(1<<22, 1<<20)
			c.Release()
		}
	}()
	wg.Wait()
	checkNoLeak(t, m)
}

func TestExtentMapReadZeroAllocs(t *testing.T) {
	m := newTestExtentMap(t, 4096, 1<<30)
	for i := range 1000 {
		writeAll(t, m, int64(i)*3*4096, 4096, nil) // 1000 extents with holes between
	}
	c := m.Clone()
	writeAll(t, c, 0, 4096, nil)
	for name, x := range map[string]*ExtentMap{"plain": m, "clone": c} {
		n := testing.AllocsPerRun(100, func() {
			for _, pos := range []int64{0, 4096, 500 * 3 * 4096, 999*3*4096 + 100, 1 << 40} {
				if _, err := x.Begin(pos, 4096, OpDirect); err != nil {
					panic(err)
				}
			}
			if _, err := x.Begin(3*4096, 4096, OpWrite|OpDirect); err != nil { // overwrite
				panic(err)
			}
		})
		if n != 0 {
			t.Errorf("%s: %v allocations per read Begin round", name, n)
		}
	}
}

func BenchmarkExtentMapBeginRead(b *testing.B) {
	m := newTestExtentMap(b, 4096, 1<<34)
	for i := range 10000 {
		writeAll(b, m, int64(i)*2*4096, 4096, nil)
	}
	b.ReportAllocs()
	b.SetBytes(4096)
	for i := 0; b.Loop(); i++ {
		if _, err := m.Begin(int64(i%20000)*4096, 4096, OpDirect); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExtentMapBeginOverwriteParallel(b *testing.B) {
	m := newTestExtentMap(b, 4096, 1<<34)
	for i := range 10000 {
		writeAll(b, m, int64(i)*2*4096, 4096, nil)
	}
	b.ReportAllocs()
	b.SetBytes(4096)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := m.Begin(int64(i%10000)*2*4096, 4096, OpWrite|OpDirect); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
