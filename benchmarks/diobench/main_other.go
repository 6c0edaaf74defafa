//go:build !linux

// Diobench needs Linux (io_uring, O_DIRECT); elsewhere it says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "diobench: needs Linux (io_uring and O_DIRECT)")
	os.Exit(2)
}
