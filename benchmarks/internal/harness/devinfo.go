//go:build linux

package harness

import (
	"fmt"

	"github.com/uringdio/uringdio/internal/devinfo"
	"golang.org/x/sys/unix"
)

// DescribeFile opens path read-only, with O_DIRECT if the file system
// takes it and without otherwise, and returns what the kernel says about
// direct I/O on it (devinfo.Gather), headed by the path. It is diobench
// -info.
func DescribeFile(path string) (string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == unix.EINVAL {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	return path + "\n" + devinfo.Gather(fd).String(), nil
}
