//go:build linux

package dio

import "github.com/uringdio/uringdio/iomap"

// defaultMapper is the mapper a File gets without WithMapper.
func defaultMapper(fd int, size int64) (iomap.Mapper, error) {
	return iomap.NewFileMapper(fd, iomap.FileMapperOptions{})
}
