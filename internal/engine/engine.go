//go:build linux

// Package engine carries out direct I/O for package dio: one goroutine
// per engine, locked to an OS thread, owns an io_uring (owner.go), makes
// every SQE and reaps every CQE (reap.go), audits the ring for lost
// completions (audit.go); workers run completions that may block
// (workers.go); a pread backend serves devices that complete synchronously
// and engines without a ring (pread.go); a bounded pool holds aligned
// buffers (pool.go).
//
// It knows operations on descriptors with memory ranges, flags, a
// completion policy and hooks (req.go): nothing of files, sizes, ends of
// file, inodes or mappers, which are dio's. It imports ring and
// completion, never dio.
package engine

import (
	"fmt"
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
		pr:        newPreadBackend(),
		directSem: make(chan struct{}, 1),
		noProbe:   c.WrapRing != nil || c.RingFlags != 0 || c.FixedCount > 0 || c.RegFiles > 0,
	}
	e.own.lostAfter = c.LostAfter
	e.workers = newWorkers(c.Workers, func(r *Req) { e.pr.run(e, r) })
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

// NoRing says why the engine has no ring (nil: it has one).
func (e *Engine) NoRing() error { return e.noRing }

// IOPoll reports whether the ring polls for completions.
func (e *Engine) IOPoll() bool { return e.iopoll }

// Closed reports whether Close has begun; Broken whether the ring
// delivered a completion that matched nothing (ErrRingBroken).
func (e *Engine) Closed() bool { return e.closed.Load() }

// Broken: see Closed.
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
	e.fixed.free()
	e.zero.free()
	return err
}

// Inflight is the number of SQEs in flight.
func (e *Engine) Inflight() int64 { return max(e.inflight.Load(), 0) }

// FixedBuffers returns the registered buffers (none without them).
func (e *Engine) FixedBuffers() [][]byte { return e.fixed.bufs }

// Fixed reports whether b lies in the registered arena.
func (e *Engine) Fixed(b []byte) bool {
	a := e.fixed.arena
	if a == nil || len(b) == 0 {
		return false
	}
	base, p := uintptr(addrOf(a)), uintptr(addrOf(b))
	return p >= base && p+uintptr(len(b)) <= base+uintptr(len(a))
}

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

// Zeroes returns n bytes of zeroes in off-heap memory, valid until Close.
func (e *Engine) Zeroes(n int) ([]byte, error) {
	z := &e.zero
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(z.buf) < n {
		b, err := ring.Alloc(n)
		if err != nil {
			return nil, err
		}
		if z.buf != nil {
			z.old = append(z.old, z.buf)
		}
		z.buf = b
	}
	return z.buf[:n], nil
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
			e.pr.run(e, r)
		} else {
			e.workers.push(r, jobPread)
		}
	case sync && r.Direct && e.direct():
		e.pr.run(e, r)
		<-e.directSem
	default:
		e.enqueue(r)
	}
	e.put(r, false) // the launcher's reference
}

// Finish completes a request that never reached Launch (its owner failed
// or cancelled it before) with the Err and StopAt it set, through its
// policy.
func (e *Engine) Finish(r *Req) {
	r.refs.Store(1)
	r.State.Store(Inflight)
	e.put(r, false)
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
