//go:build linux

package iomap_test

import (
	"fmt"
	"os"

	"github.com/uringdio/uringdio/iomap"
)

// A sparse file: the mapper tells the engine which ranges need I/O.
func ExampleFileMapper() {
	f, err := os.CreateTemp("", "iomap-example")
	if err != nil {
		panic(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	f.WriteAt(block, 0)
	f.WriteAt(block, 1<<20) // a hole in between
	fm, err := iomap.NewFileMapper(int(f.Fd()), iomap.FileMapperOptions{})
	if err != nil {
		panic(err)
	}
	err = iomap.Each(fm, 0, 2<<20, iomap.OpDirect, func(m *iomap.Mapping, pos, length int64) (int64, error) {
		fmt.Println(m.Type, pos, length)
		return length, nil
	})
	fmt.Println(err)
	// Output:
	// mapped 0 4096
	// hole 4096 1044480
	// mapped 1048576 4096
	// hole 1052672 1044480
	// <nil>
}
