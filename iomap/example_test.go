package iomap_test

import (
	"fmt"

	"github.com/uringdio/uringdio/iomap"
)

// A read that crosses the end of a file: the loop hands out the mapped part,
// then the hole beyond the size, which a direct-I/O engine zero-fills.
func ExampleIter() {
	mapper := iomap.NewWholeFile(10000)
	it := iomap.NewIter(8192, 4096, iomap.OpDirect)
	for it.Next(mapper) {
		m := it.Mapping()
		fmt.Printf("%v: [%d,+%d) at %d\n", m.Type, it.Pos(), it.Len(), m.AddrAt(it.Pos()))
		it.Advance(it.Len())
	}
	fmt.Println(it.Done(), it.Err())
	// Output:
	// mapped: [8192,+1808) at 8192
	// hole: [10000,+2288) at -1
	// 4096 <nil>
}

func ExampleEach() {
	mapper := iomap.NewWholeFile(6000)
	err := iomap.Each(mapper, 4096, 4096, 0, func(m *iomap.Mapping, pos, length int64) (int64, error) {
		fmt.Println(m.Type, pos, length)
		return length, nil
	})
	fmt.Println(err)
	// Output:
	// mapped 4096 1904
	// hole 6000 2192
	// <nil>
}

// A clone shares its space until written: the write goes to fresh space,
// and readers keep seeing the old extent until the write completes.
func ExampleExtentMap_Clone() {
	m, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: 4096, Devices: []int64{1 << 20}})
	if err != nil {
		panic(err)
	}
	write := func(m *iomap.ExtentMap, pos, n int64) {
		it := iomap.NewIter(pos, n, iomap.OpWrite)
		for it.Next(m) {
			fmt.Println("write:", it.Mapping())
			it.Advance(it.Len()) // the engine writes to Target at Addr here
		}
		m.IOComplete(pos, n, iomap.OpWrite, it.Err())
	}
	read := func(m *iomap.ExtentMap, pos int64) {
		mp, _ := m.Begin(pos, 1, 0)
		fmt.Println("read: ", mp)
	}
	write(m, 0, 8192)
	c := m.Clone()
	read(c, 0)
	write(c, 4096, 4096)
	read(c, 4096)
	read(m, 4096)
	fmt.Printf("%+v\n", c.Stats())
	// Output:
	// write: unwritten [0,8192) flags=new target=0 addr=0 bs=4096
	// read:  mapped [0,8192) flags=shared target=0 addr=0 bs=4096
	// write: mapped [4096,8192) flags=new|shared target=0 addr=8192 bs=4096
	// read:  mapped [4096,8192) flags=none target=0 addr=8192 bs=4096
	// read:  mapped [4096,8192) flags=none target=0 addr=4096 bs=4096
	// {Total:1048576 Allocated:12288 Free:1036288 Shared:4096 Reserved:0 Extents:2}
}
