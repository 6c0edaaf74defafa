// Package workerpool is a bounded pool of goroutines for completion work
// that may block (the Pool policy), the counterpart of the kernel's
// s_dio_done_wq. It left package completion, whose users never built one;
// nothing in the project imports it today (dio keeps its own workers,
// dio/workers.go, with an unbounded queue its owner never waits on).
package workerpool

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
)

// Task is work the pool runs (completion.Task's shape).
type Task interface{ RunCompletion() }

// ErrPoolClosed is returned by WorkerPool.Submit after WorkerPool.Close.
var ErrPoolClosed = errors.New("workerpool: pool closed")

// DefaultQueueLen is the queue bound NewPool uses when given queueLen <= 0.
const DefaultQueueLen = 1024

// WorkerPool is the bounded worker pool that runs completion work under the
// Pool policy: work that may block, such as fdatasync, size extension,
// unwritten extent conversion and end-of-I/O hooks. It is the counterpart of
// the kernel's per-superblock s_dio_done_wq. (It is not named Pool because
// that name is the Policy.)
//
// Tasks wait in a FIFO queue of fixed length; a full queue makes Submit block
// (backpressure), never drops a task. Each submitted task runs exactly once.
// A WorkerPool is safe for concurrent use. Create one with NewPool; the zero
// value is not usable.
//
// A Task must not call Close on its own pool, and should not call Submit on
// it either (if every worker blocks in Submit on a full queue, nothing drains
// it); use TrySubmit there.
type WorkerPool struct {
	// mu orders Submit against Close: Submit holds it shared while it sends,
	// Close takes it exclusively before it closes tasks, so no send can hit a
	// closed channel.
	mu     sync.RWMutex
	closed bool
	tasks  chan Task

	running   atomic.Int64
	completed atomic.Uint64

	closeOnce sync.Once
	workers   sync.WaitGroup
}

// NewPool starts a pool of workers goroutines (workers <= 0 means
// runtime.GOMAXPROCS(0)) with room for queueLen waiting tasks
// (queueLen <= 0 means DefaultQueueLen). Call Close to stop it.
func NewPool(workers, queueLen int) *WorkerPool {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if queueLen <= 0 {
		queueLen = DefaultQueueLen
	}
	p := &WorkerPool{tasks: make(chan Task, queueLen)}
	p.workers.Add(workers)
	for range workers {
		go p.work()
	}
	return p
}

func (p *WorkerPool) work() {
	defer p.workers.Done()
	for t := range p.tasks {
		p.running.Add(1)
		t.RunCompletion()
		p.running.Add(-1)
		p.completed.Add(1)
	}
}

// Submit queues t to run once on a worker. When the queue is full it blocks
// until there is room. After Close it returns ErrPoolClosed and t does not
// run. t must not be nil. It does not allocate.
func (p *WorkerPool) Submit(t Task) error {
	return p.SubmitContext(context.Background(), t)
}

// SubmitContext is Submit that gives up waiting for room when ctx is done,
// returning ctx.Err(); t then does not run.
func (p *WorkerPool) SubmitContext(ctx context.Context, t Task) error {
	if t == nil {
		panic("workerpool: Submit of a nil Task")
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrPoolClosed
	}
	select {
	case p.tasks <- t:
		return nil
	default:
	}
	select {
	case p.tasks <- t:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TrySubmit queues t if there is room now and reports whether it did. It
// never blocks, and reports false after Close. t must not be nil.
func (p *WorkerPool) TrySubmit(t Task) bool {
	if t == nil {
		panic("workerpool: TrySubmit of a nil Task")
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	select {
	case p.tasks <- t:
		return true
	default:
		return false
	}
}

// QueueDepth returns how many tasks are queued and not yet started. It and
// Running are separate snapshots: a task a worker has just dequeued may for
// an instant be counted by neither.
func (p *WorkerPool) QueueDepth() int { return len(p.tasks) }

// Cap returns the queue bound: how many tasks may wait before Submit blocks.
func (p *WorkerPool) Cap() int { return cap(p.tasks) }

// Running returns how many tasks are running now.
func (p *WorkerPool) Running() int { return int(p.running.Load()) }

// Completed returns how many tasks have finished running.
func (p *WorkerPool) Completed() uint64 { return p.completed.Load() }

// Close stops accepting tasks, waits for Submits already blocked on a full
// queue to place theirs, runs everything queued, and returns when every
// worker has exited. It is idempotent and safe to call concurrently; every
// call returns only after the workers are gone. It must not be called from
// a Task run by this pool.
func (p *WorkerPool) Close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		close(p.tasks)
		p.mu.Unlock()
	})
	p.workers.Wait()
}
