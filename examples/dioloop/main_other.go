//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The example serves a loop device over FUSE through io_uring: Linux only.
func main() {
	fmt.Fprintln(os.Stderr, "dioloop: needs Linux (FUSE, loop devices, io_uring and O_DIRECT)")
	os.Exit(1)
}
