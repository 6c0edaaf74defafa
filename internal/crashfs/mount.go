//go:build linux

package crashfs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Options configure Mount. The zero value is the default.
type Options struct {
	// Backing is the directory that holds the durable image (default: a
	// new directory under t.TempDir()).
	Backing string
}

// skipUnlessFUSE skips the test when this process cannot mount a FUSE
// file system: it is not root, or /dev/fuse is missing.
func skipUnlessFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("crashfs: mounting a FUSE file system directly needs root")
	}
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		t.Skipf("crashfs: /dev/fuse: %v", err)
	}
}

// Mount mounts a file-level crash file system in a new directory under
// t.TempDir() and unmounts it at cleanup (files on it must be closed by
// then). It skips the test when the process is not root or has no
// /dev/fuse; other failures are errors.
func Mount(t testing.TB, opt Options) (*FS, error) {
	t.Helper()
	skipUnlessFUSE(t)
	base := t.TempDir()
	backing := opt.Backing
	if backing == "" {
		backing = filepath.Join(base, "backing")
		if err := os.Mkdir(backing, 0o755); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(base, "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	c, err := New(backing, dir)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := c.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return c, nil
}
