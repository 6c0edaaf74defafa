//go:build !linux

package iomap

import (
	"errors"
	"fmt"
)

func errNoLinux(what string) error {
	return fmt.Errorf("iomap: %s needs Linux: %w", what, errors.ErrUnsupported)
}

// NewFileMapper needs Linux (FIEMAP, SEEK_DATA/SEEK_HOLE as Linux defines
// them); elsewhere it returns an error wrapping errors.ErrUnsupported.
func NewFileMapper(fd int, opts FileMapperOptions) (*FileMapper, error) {
	return nil, errNoLinux("NewFileMapper")
}

func (fm *FileMapper) scan(ws, we int64) ([]ext, error) { return nil, errNoLinux("FileMapper") }

func (fm *FileMapper) statSize() (int64, error) { return 0, errNoLinux("FileMapper") }

func errScan(spans []ext, pos int64) error { return errNoLinux("FileMapper") }

// Truncate needs Linux.
func (fm *FileMapper) Truncate(size int64) error { return errNoLinux("FileMapper.Truncate") }

// Punch needs Linux.
func (fm *FileMapper) Punch(off, length int64) error { return errNoLinux("FileMapper.Punch") }

// Preallocate needs Linux.
func (fm *FileMapper) Preallocate(off, length int64) error {
	return errNoLinux("FileMapper.Preallocate")
}
