//go:build !linux

package pebblevfs

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// FS is vfs.Default where dio is unavailable (not Linux): every data file
// falls back, and the log says so once.
type FS struct {
	vfs.FS
	fallbacks atomic.Uint64
}

// New returns an FS that is vfs.Default, since dio needs Linux.
func New(opts ...Option) (*FS, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.logf != nil {
		c.logf("pebblevfs: dio needs Linux: every file goes through vfs.Default")
	}
	return &FS{FS: vfs.Default}, nil
}

// Close does nothing.
func (f *FS) Close() error { return nil }

// Stats returns zero counts: nothing goes through dio.
func (f *FS) Stats() Stats { return Stats{} }

type osConfig struct{}
