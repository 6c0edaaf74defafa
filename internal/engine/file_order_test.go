//go:build linux

package engine_test

import (
	"testing"

	"github.com/uringdio/uringdio/internal/fileorder"
)

// engineFileOrder is the engine's files from its API down (see
// fileorder.Check): a lower file reaches an upper one only through a
// function value or an interface (a request's Hooks).
var engineFileOrder = []string{
	"engine.go",  // the API: New, Launch, Await, Cancel, Close
	"owner.go",   // the owner's loop: its ring, queues, entering the kernel
	"reap.go",    // completions: a CQE's result, short transfers, retries
	"audit.go",   // lost completions
	"sqe.go",     // pieces become SQEs in slots
	"pread.go",   // the pread backend, and the choice of backend
	"done.go",    // the last reference: where the completion runs
	"workers.go", // completion workers
	"queue.go",   // launchers hand the owner work
	"pool.go",    // aligned memory: the buffer pool, registered buffers, zeroes
	"state.go",   // the types: Engine and its parts, their owners
	"req.go",     // Req, Piece, Hooks: what a request is
}

// TestFileOrder: the engine's files call one way.
func TestFileOrder(t *testing.T) {
	v, err := fileorder.Check(".", engineFileOrder)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range v {
		t.Error(x)
	}
}
