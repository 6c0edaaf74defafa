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
