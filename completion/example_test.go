package completion_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/uringdio/uringdio/completion"
)

// request stands for the engine's request type: it implements Task itself,
// so handing it to a pool or queue allocates nothing.
type request struct {
	once atomic.Bool // claimed by the path that finishes it
	off  int64
	n    int
	done *sync.WaitGroup
}

func (r *request) RunCompletion() {
	// End-of-I/O work: record the result, run hooks, fdatasync, wake...
	if r.done != nil {
		r.done.Done()
	}
}

func ExampleQueue() {
	// The caller owns a queue; the engine's reapers push its finished
	// pure-overwrite requests there instead of completing them.
	var q completion.Queue

	reqs := make([]request, 4)
	var reapers sync.WaitGroup
	for i := range reqs {
		reapers.Go(func() {
			// Two paths may race to finish a request (its last CQE and a
			// cancellation); the one that claims it pushes it, once.
			if reqs[i].once.CompareAndSwap(false, true) {
				q.Push(&reqs[i])
			}
		})
	}

	// The caller's own goroutine runs the completions.
	ran, err := q.Wait(context.Background(), len(reqs))
	fmt.Println(ran, err)
	reapers.Wait()
	fmt.Println(q.Poll(), q.Len())
	// Output:
	// 4 <nil>
	// 0 0
}
