//go:build !linux

package crashfs

import "testing"

// Options configure Mount.
type Options struct{ Backing string }

// BlockOptions configure MountBlock.
type BlockOptions struct {
	FS           string
	Size         int64
	MountOptions string
}

// FS is the file-level crash file system; Linux only.
type FS struct{}

// BlockMount is the block-level crash file system; Linux only.
type BlockMount struct{}

// Mount skips the test: the crash file system needs Linux.
func Mount(t testing.TB, opt Options) (*FS, error) {
	t.Helper()
	t.Skip("crashfs: needs Linux (FUSE)")
	return nil, unavailable("needs Linux")
}

// MountBlock skips the test: the crash file system needs Linux.
func MountBlock(t testing.TB, opt BlockOptions) (*BlockMount, error) {
	t.Helper()
	t.Skip("crashfs: needs Linux (FUSE, loop devices)")
	return nil, unavailable("needs Linux")
}
