//go:build linux

// Package engine carries out direct I/O for package dio: an owner
// goroutine per io_uring (owner.go, reap.go, sqe.go, audit.go), workers
// for completions that may block, the pread backend, and aligned buffer
// memory. It knows pieces of I/O on descriptors with memory, flags, a
// completion policy and hooks (req.go): nothing of files, sizes, ends of
// file, inodes or mappers, which are dio's. It imports ring and
// completion, never dio.
package engine

import (
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/ring"
)

// NeedsRing names the setting that asks for a ring (so the engine cannot
// fall back to pread where io_uring is refused), or returns "".
func (c *Config) NeedsRing() string {
	switch {
	case c.RingFlags&ring.SetupSQPoll != 0:
		return "EngineOptions.SQPoll"
	case c.RingFlags&ring.SetupIOPoll != 0:
		return "EngineOptions.IOPoll"
	case c.RingFlags != 0:
		return "EngineOptions.RingFlags"
	case c.FixedCount > 0:
		return "EngineOptions.FixedBuffers"
	case c.RegFiles > 0:
		return "EngineOptions.RegisteredFiles"
	case c.WrapRing != nil:
		return "a ring wrapper (test hook)"
	}
	return ""
}

// New makes an engine. Where io_uring is refused (a seccomp profile,
// kernel.io_uring_disabled, no kernel support) it serves everything with
// pread, unless c asks for a ring (NeedsRing).
func New(c Config) (*Engine, error) {
	if bad := c.RingFlags & unhonoured; bad != 0 {
		return nil, fmt.Errorf("setup flags %v: the engine's owner cannot honour them (it picks SINGLE_ISSUER|DEFER_TASKRUN itself): %w", bad, syscall.EINVAL)
	}
	e := &Engine{
		Bufs:      NewPool(c.BufMemory),
		preadSem:  make(chan struct{}, 4*runtime.GOMAXPROCS(0)),
		directSem: make(chan struct{}, 1),
		noProbe:   c.NeedsRing() != "",
	}
	e.own.lostAfter = c.LostAfter
	e.workers = newWorkers(c.Workers, e.preadRun)
	err := e.startOwner(&c) // the owner makes the ring on its own thread
	if err == nil {
		return e, nil
	}
	if !refusedRing(err) {
		return nil, err
	}
	if opt := c.NeedsRing(); opt != "" {
		return nil, fmt.Errorf("%s needs io_uring, and the ring was refused: %w", opt, err)
	}
	e.noRing = err
	return e, nil
}

// IOPoll reports whether the ring polls for completions.
func (e *Engine) IOPoll() bool { return e.iopoll }

// Closed reports whether Close has begun.
func (e *Engine) Closed() bool { return e.closed.Load() }

// Broken reports whether the engine refuses I/O (ErrRingBroken).
func (e *Engine) Broken() bool { return e.broken.Load() }

// Close stops the engine once what is in flight has completed: the owner,
// the workers, the ring, the memory. Called on the owner (from an Inline
// callback) it cannot wait for the owner: it returns at once and the
// engine stops by itself.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	if e.OnEngineThread() {
		go e.shutdown()
		return nil
	}
	return e.shutdown()
}

func (e *Engine) shutdown() error {
	var err error
	if e.ring != nil {
		err = e.stopOwner() // the owner drains, then closes the ring
	}
	e.workers.close()
	e.Bufs.close()
	e.fixed.Free()
	return err
}

// Inflight is the number of SQEs in flight.
func (e *Engine) Inflight() int64 { return max(e.inflight.Load(), 0) }

// FixedBuffers returns the registered buffers (none without them).
func (e *Engine) FixedBuffers() [][]byte { return e.fixed.Bufs() }

// Fixed reports whether b lies in the registered arena.
func (e *Engine) Fixed(b []byte) bool { return e.fixed.Contains(b) }

// RegisterFile puts fd in a registered-file slot and returns the slot, or
// -1 if the engine registers no files or its table is full.
func (e *Engine) RegisterFile(fd int32) (int32, error) {
	if e.own.fileSlots == nil {
		return -1, nil
	}
	idx, err := int32(-1), error(nil)
	e.onOwner(func() {
		for i, v := range e.own.fileSlots {
			if v == -1 {
				if err = e.ring.UpdateFiles(uint32(i), []int32{fd}); err == nil {
					e.own.fileSlots[i], idx = fd, int32(i)
				}
				return
			}
		}
	})
	return idx, err
}

// UnregisterFile frees a slot from RegisterFile.
func (e *Engine) UnregisterFile(idx int32) {
	if idx < 0 {
		return
	}
	e.onOwner(func() {
		e.ring.UpdateFiles(uint32(idx), []int32{-1})
		e.own.fileSlots[idx] = -1
	})
}

// Launch starts r, whose pieces its owner has filled: on the pread
// backend (r.Pread), in the calling goroutine when a synchronous request
// finds the ring idle (r.Direct), or through the owner. r is the engine's
// until Hooks.Complete has returned; a request with no pieces completes
// at once (never on this stack, where Inline is asked for).
func (e *Engine) Launch(r *Req, sync bool) {
	r.refs.Store(int32(len(r.Pieces)) + 1)
	r.State.Store(Inflight)
	switch {
	case len(r.Pieces) == 0:
	case r.Pread:
		if sync {
			e.preadRun(r)
		} else {
			e.workers.push(r, jobPread)
		}
	case sync && r.Direct && e.direct():
		e.preadRun(r)
		<-e.directSem
	default:
		e.enqueue(r)
	}
	e.put(r, false) // the launcher's reference
}

// Await waits for r to complete, running its completion on this goroutine
// if the policy leaves it to the waiter (Wait, Polled, Caller without a
// Queue; with a Queue it runs what is ready there until r's has run). If
// done ends first, r's I/O is cancelled and Await still waits for it: a
// buffer is never given back while the kernel may use it.
func (e *Engine) Await(r *Req, done <-chan struct{}) {
	gen := r.Gen()
	for r.State.Load() < IODone {
		select {
		case <-r.Wake:
		case <-done:
			done = nil
			e.Cancel(r, gen)
		}
	}
	switch {
	case r.Policy == completion.Caller && r.Queue != nil:
		for r.State.Load() != Complete {
			if r.Queue.Poll() == 0 && r.State.Load() != Complete {
				<-r.Wake
			}
		}
	case r.Policy == completion.Wait || r.Policy == completion.Polled || r.Policy == completion.Caller:
		r.runCompletion()
	}
	for r.State.Load() != Complete {
		<-r.Wake // Inline or Pool: the completion runs elsewhere
	}
}

// Cancel cancels the use gen of r: a request still in its owner's queue
// leaves it (Hooks.Dequeue); the pread backend's pieces not yet run end
// with ECANCELED; a ring request's SQEs are cancelled by the owner. A
// cancel of an earlier use of a recycled request reaches nothing.
func (e *Engine) Cancel(r *Req, gen uint32) {
	switch {
	case r.Gen() != gen:
	case r.Hooks.Dequeue():
	case r.Pread:
		r.cancelled.Store(true)
	default:
		e.requestCancel(r, gen)
	}
}

// Audit queues an audit from the owner (tests).
func (e *Engine) Audit() { e.onOwner(func() { e.audit() }) }

// LostAfter is the audit interval (0: audits off).
func (e *Engine) LostAfter() time.Duration { return e.own.lostAfter }
