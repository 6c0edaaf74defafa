//go:build linux

package dio_test

import (
	"testing"

	"github.com/uringdio/uringdio/internal/fileorder"
)

// dioFileOrder is dio's files from the API down: each may use what files
// below it define, never what files above it do (fileorder.Check); a lower
// file reaches an upper one only through a function value or an interface
// handed down (the engine's hooks, the lock's launchAdmitted).
var dioFileOrder = []string{
	"file.go",        // the API: Open, ReadAt, WriteAt, Submit, Close, Sync, size and space calls
	"options.go",     // Options and what Open makes of them
	"caps.go",        // Capabilities
	"appender.go",    // streams: the Appender (group commit)
	"readahead.go",   // streams: ReadAhead
	"bounce.go",      // unaligned I/O: bounce buffers, read-modify-write, the size rule
	"volume.go",      // size and space changes, on the kernel's file or the engine's map
	"submit.go",      // a request: checked, locked, mapped to pieces, launched
	"check.go",       // input checks: ranges, alignment, untorn writes
	"done.go",        // the engine's hooks: the result, the completion work
	"inode.go",       // the shared state's tables: inodes and volumes
	"lock.go",        // the inode's I/O lock
	"request.go",     // Request's methods, its policy, recycled synchronous requests
	"fd.go",          // the descriptor: references, syncs, sizes
	"state.go",       // the types: File, Request, inode, volume, lock
	"ops.go",         // Op and Flags
	"engine.go",      // Engine, EngineOptions, Stats
	"errors.go",      // OpError and the sentinels
	"unsupported.go", // ErrUnsupported (every OS)
	"doc.go",
}

// TestFileOrder: dio's files call one way, down the data path.
func TestFileOrder(t *testing.T) {
	v, err := fileorder.Check(".", dioFileOrder)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range v {
		t.Error(x)
	}
}
