package ilock

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestLockExcludes: holders taking the lock shared and exclusive from many
// goroutines, queued ones woken by whoever admits them, some leaving the
// queue before they are admitted (Remove): no exclusive holder ever runs
// beside another holder, every waiter is admitted or removed, and the lock
// ends unlocked.
func TestLockExcludes(t *testing.T) {
	var l Lock[chan struct{}]
	var shared, exclusive atomic.Int32
	var bad atomic.Int32
	wake := func(a *Waiter[chan struct{}]) {
		for a != nil {
			n := a.Next()
			close(a.Value)
			a = n
		}
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 2000 {
				w := &Waiter[chan struct{}]{Value: make(chan struct{}), Excl: rng.IntN(4) == 0}
				if !l.Enter(w, false) {
					if rng.IntN(8) == 0 {
						if found, a := l.Remove(w); found {
							wake(a)
							continue
						}
					}
					<-w.Value
				}
				if !w.Held {
					bad.Add(1)
				}
				if w.Excl {
					if exclusive.Add(1) != 1 || shared.Load() != 0 {
						bad.Add(1)
					}
					exclusive.Add(-1)
				} else {
					shared.Add(1)
					if exclusive.Load() != 0 {
						bad.Add(1)
					}
					shared.Add(-1)
				}
				wake(l.Leave(w))
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d exclusion violations", n)
	}
	if s := l.state.Load(); s != 0 {
		t.Fatalf("state %#x after every holder left", s)
	}
	if l.Waited() == 0 {
		t.Fatal("no holder ever queued: the test did not contend")
	}
}

// BenchmarkShared is the lock's cost to a shared holder (a write of a
// kernel file): one enter and leave, uncontended.
func BenchmarkShared(b *testing.B) {
	var l Lock[int]
	w := &Waiter[int]{}
	b.ReportAllocs()
	for range b.N {
		l.Enter(w, false)
		l.Leave(w)
	}
}
