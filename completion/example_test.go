package completion_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/uringdio/uringdio/completion"
)

// request stands for the engine's request type: it implements Task itself,
// so handing it to a pool or queue allocates nothing.
type request struct {
	once completion.Once
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

func ExampleChoose() {
	// An asynchronous DSYNC write to a hole: its completion must convert
	// extents and fdatasync, so it cannot run on the caller's goroutine.
	p, why := completion.Choose(completion.Caller, completion.Facts{Write: true, NeedsSync: true, SingleSQE: true})
	fmt.Println(p, why)

	// A pure overwrite may be deferred to the caller.
	p, why = completion.Choose(completion.Caller, completion.Facts{Write: true, PureOverwrite: true})
	fmt.Println(p, why)

	// A synchronous read on an IOPOLL ring, one SQE: the caller polls.
	p, why = completion.Choose(completion.Default, completion.Facts{Sync: true, SingleSQE: true, PolledRing: true})
	fmt.Println(p, why)
	// Output:
	// pool not-overwrite
	// caller none
	// polled none
}

func ExampleWorkerPool() {
	pool := completion.NewPool(2, 64)
	defer pool.Close()

	var done sync.WaitGroup
	reqs := make([]request, 3)
	for i := range reqs {
		reqs[i] = request{off: int64(i) * 4096, n: 4096, done: &done}
		done.Add(1)
		// The reaper hands work that may block to the pool. Submit waits
		// for room when the queue is full.
		if err := pool.Submit(&reqs[i]); err != nil {
			fmt.Println(err)
		}
	}
	done.Wait()
	fmt.Println("completed:", pool.Completed())
	// Output:
	// completed: 3
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
			if reqs[i].once.Claim() {
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
