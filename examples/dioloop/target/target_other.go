//go:build !linux

package target

import (
	"context"
	"fmt"

	"github.com/uringdio/uringdio/dio"
)

// Target serves one image as a block device; Linux only (FUSE, loop
// devices, io_uring).
type Target struct{}

// Stats count what a Target served; Linux only.
type Stats struct{}

// Start fails with an error wrapping dio.ErrUnsupported: the target needs
// Linux.
func Start(cfg Config) (*Target, error) {
	return nil, fmt.Errorf("target: needs Linux (FUSE, loop devices, io_uring): %w", dio.ErrUnsupported)
}

func (t *Target) File() string                    { return "" }
func (t *Target) Dir() string                     { return "" }
func (t *Target) Size() int64                     { return 0 }
func (t *Target) Image() *dio.File                { return nil }
func (t *Target) Device() string                  { return "" }
func (t *Target) Attach() (string, error)         { return "", ErrNoLoop }
func (t *Target) LoopDirectIO() bool              { return false }
func (t *Target) Flush() error                    { return dio.ErrUnsupported }
func (t *Target) Stats() Stats                    { return Stats{} }
func (t *Target) Close(ctx context.Context) error { return nil }

// Loop is a loop device attached to a file; Linux only.
type Loop struct{}

// AttachLoop fails with an error wrapping ErrNoLoop: loop devices are
// Linux's.
func AttachLoop(path string, blockSize int) (*Loop, error) {
	return nil, fmt.Errorf("%w: loop devices are Linux's", ErrNoLoop)
}

func (l *Loop) Device() string { return "" }
func (l *Loop) DirectIO() bool { return false }
func (l *Loop) Close() error   { return nil }
