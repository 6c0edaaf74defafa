//go:build !linux

// Command pebblebench needs Linux (memory cgroups, and dio itself).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "pebblebench: needs Linux")
	os.Exit(1)
}
