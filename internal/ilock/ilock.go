// Package ilock is the lock dio keeps per inode and per volume: a
// reader-writer lock whose holders are requests, not goroutines. A holder
// may take it in one goroutine and release it in another (an I/O
// completion), and a holder that cannot enter waits in a FIFO queue that
// the release hands back, so that an asynchronous request is queued
// without blocking anyone. Which holders take it shared and which
// exclusive is dio's to say (dio/lock.go).
//
// Uncontended, entering is one compare-and-swap and leaving one atomic
// add. Once anyone waits, everyone queues behind it: a stream of shared
// holders cannot starve an exclusive one.
package ilock

import (
	"sync"
	"sync/atomic"
)

// Lock is the lock. The zero value is unlocked. Safe for concurrent use.
type Lock[T any] struct {
	// state: the number of shared holders in the low 32 bits, excl while
	// held exclusive, queued while the queue is not empty (it turns the
	// fast paths off). Changed with atomics; queued and admissions from
	// the queue only under mu.
	state      atomic.Uint64
	mu         sync.Mutex
	head, tail *Waiter[T] // the queue, FIFO through next; under mu
	waited     atomic.Uint64
}

// Waiter is a holder's place at the lock: Value is the holder's, Excl
// says how it takes the lock (set before Enter), Held whether it holds it
// (written by the lock: by Enter, or by the Leave or Remove that admits
// it).
type Waiter[T any] struct {
	Value T
	Excl  bool
	Held  bool
	next  *Waiter[T]
}

// Next returns the waiter after w in a list Leave or Remove returned,
// and unlinks w.
func (w *Waiter[T]) Next() *Waiter[T] {
	n := w.next
	w.next = nil
	return n
}

const (
	count  = 1<<32 - 1
	excl   = 1 << 32
	queued = 1 << 33
)

func admissible(s uint64, ex bool) bool { return s&excl == 0 && (!ex || s&count == 0) }

func grant(ex bool) uint64 {
	if ex {
		return excl
	}
	return 1
}

// Enter takes the lock for w and reports true or, unless try is set,
// queues w and reports false: w is admitted later by the Leave or Remove
// that makes room, which returns it.
func (l *Lock[T]) Enter(w *Waiter[T], try bool) bool {
	w.next = nil
	for s := l.state.Load(); s&queued == 0 && admissible(s, w.Excl); s = l.state.Load() {
		if l.state.CompareAndSwap(s, s+grant(w.Excl)) {
			w.Held = true
			return true
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		s := l.state.Load()
		if l.head == nil && admissible(s, w.Excl) {
			if l.state.CompareAndSwap(s, s+grant(w.Excl)) {
				w.Held = true
				return true
			}
			continue
		}
		if try {
			return false
		}
		// Once queued is set, every release comes here (under mu) to
		// admit: a release before it changed s, and this CAS fails.
		if s&queued != 0 || l.state.CompareAndSwap(s, s|queued) {
			break
		}
	}
	l.waited.Add(1)
	if l.tail == nil {
		l.head = w
	} else {
		l.tail.next = w
	}
	l.tail = w
	return false
}

// Leave releases w's hold and returns the waiters it admits, in order
// (Next walks them).
func (l *Lock[T]) Leave(w *Waiter[T]) *Waiter[T] {
	w.Held = false
	s := l.state.Add(^(grant(w.Excl) - 1)) // -grant
	if s&queued == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.admitLocked()
}

// admitLocked admits queued waiters from the head while they may enter.
func (l *Lock[T]) admitLocked() *Waiter[T] {
	var first, last *Waiter[T]
	for l.head != nil {
		w := l.head
		s := l.state.Load()
		if !admissible(s, w.Excl) {
			break
		}
		if !l.state.CompareAndSwap(s, s+grant(w.Excl)) {
			continue // a release meanwhile: look again
		}
		if l.head = w.next; l.head == nil {
			l.tail = nil
		}
		w.next, w.Held = nil, true
		if last == nil {
			first = w
		} else {
			last.next = w
		}
		last = w
	}
	if l.head == nil {
		for s := l.state.Load(); !l.state.CompareAndSwap(s, s&^queued); s = l.state.Load() {
		}
	}
	return first
}

// Remove takes w off the queue if it still waits there, and returns the
// waiters its leaving admits (those behind it, if it was an exclusive one
// at the head).
func (l *Lock[T]) Remove(w *Waiter[T]) (found bool, admitted *Waiter[T]) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var prev *Waiter[T]
	for x := l.head; x != nil; prev, x = x, x.next {
		if x != w {
			continue
		}
		if prev == nil {
			l.head = x.next
		} else {
			prev.next = x.next
		}
		if l.tail == x {
			l.tail = prev
		}
		x.next = nil
		return true, l.admitLocked()
	}
	return false, nil
}

// Waited is how many waiters had to queue.
func (l *Lock[T]) Waited() uint64 { return l.waited.Load() }
