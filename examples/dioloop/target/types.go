package target

import (
	"errors"

	"github.com/uringdio/uringdio/dio"
)

// Config says what Start serves and how. The zero value, but for Image, is
// the default.
type Config struct {
	// Image is the backing file (or block device) that holds the disk.
	Image string
	// Size, if not 0, is the disk's size in bytes: the image is created
	// if missing and grown to Size; an image larger than Size is an error
	// (it is never shrunk, nor served in part). 0 serves the image's
	// size. A multiple of BlockSize.
	Size int64
	// Dir is the directory the FUSE file system is mounted on; "" makes
	// a new one under os.TempDir(), removed by Close.
	Dir string
	// BlockSize is the loop device's logical block size: 512, 1024, 2048
	// or 4096 (default). At 4096 every request the loop driver sends is
	// 4 KiB-aligned, so it reaches the image zero-copy wherever the
	// image's direct-I/O alignment is 4096 or less.
	BlockSize int
	// Options open the image (dio.Open): the engine, or a volume's
	// Mapper (an iomap.ExtentMap; the tests cover kernel files only).
	// Nil: the process's engine, a kernel file.
	Options *dio.Options
}

// ErrBusy says that Close gave up waiting for the loop device's users: the
// device stayed open (a file system still mounted on it, a process holding
// it) until Close's context ended.
var ErrBusy = errors.New("target: the loop device is still in use")

// ErrNoLoop says that the machine has no loop devices to attach: no
// /dev/loop-control or no node for a free device (ENOENT), or no loop
// driver (ENODEV, ENXIO); the error wrapping it says which. Any other
// failure to attach one (the kernel refusing the file, no free device)
// does not match it.
var ErrNoLoop = errors.New("target: no loop device")
