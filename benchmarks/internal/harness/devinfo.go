//go:build linux

package harness

import (
	"fmt"
	"os"

	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/devinfo"
	"golang.org/x/sys/unix"
)

// DescribeFile returns the capability record of path, headed by the path:
// what the kernel says about direct I/O on it and which of the engine's
// backends serves it, and why (dio.File.Capabilities, opened read-only
// with dio.Open as a user would). Where dio cannot open the file (a file
// system that refuses O_DIRECT) it says why and gives what the kernel says
// without O_DIRECT. It is diobench -info.
func DescribeFile(path string) (string, error) {
	f, err := dio.Open(path, os.O_RDONLY, 0, nil)
	if err == nil {
		defer f.Close()
		c, err := f.Capabilities()
		if err != nil {
			return "", err
		}
		return path + "\n" + c.String(), nil
	}
	fd, err2 := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err2 != nil {
		return "", fmt.Errorf("open %s: %w", path, err2)
	}
	defer unix.Close(fd)
	return fmt.Sprintf("%s\n%s%-24s%v\n", path, devinfo.Gather(fd).String(), "dio:", err), nil
}
