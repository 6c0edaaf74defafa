//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The example drives io_uring: Linux only.
func main() {
	fmt.Fprintln(os.Stderr, "polledread: needs Linux (io_uring and O_DIRECT)")
	os.Exit(1)
}
