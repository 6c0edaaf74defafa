//go:build !linux

package crashfs

import "testing"

// Options configure Mount.
type Options struct{ Backing string }

// FS is the file-level crash file system; Linux only.
type FS struct{}

// Mount skips the test: the crash file system needs Linux.
func Mount(t testing.TB, opt Options) (*FS, error) {
	t.Helper()
	t.Skip("crashfs: needs Linux (FUSE)")
	return nil, unavailable("needs Linux")
}
