//go:build !linux

package dio

import (
	"fmt"
	"os"
)

// File is only available on Linux.
type File struct{}

// Options configure Open (Linux only).
type Options struct{}

// Open fails: dio needs Linux's io_uring.
func Open(path string, flag int, perm os.FileMode, o *Options) (*File, error) {
	return nil, fmt.Errorf("dio: open %s: io_uring needs Linux: %w", path, ErrUnsupported)
}
