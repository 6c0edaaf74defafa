//go:build linux

package dio

import (
	"sync"
	"sync/atomic"
)

// spill holds Pool completions that found the pool's queue full, in
// order, for spillFeeder to hand to the pool. The reaper never waits for
// room (a Pool callback may be waiting for I/O that only a reaper can
// complete), and callbacks still run only on the pool's workers, as many
// at once as WithPool allows. Under overload the spill grows instead of
// the reaper stalling: the engine's own submissions are bounded by its
// slots; what grows is completions the callbacks have not caught up with.
type spill struct {
	mu   sync.Mutex
	q    []*Request
	n    atomic.Int64 // len(q), read without mu by put
	done bool         // the feeder has exited: completions run where they are
	wake chan struct{}
}

func (e *Engine) spillPush(r *Request) {
	e.stats.PoolOverflow.Add(1)
	s := &e.spill
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		r.RunCompletion()
		return
	}
	s.q = append(s.q, r)
	s.n.Add(1)
	s.mu.Unlock()
	signal(s.wake)
}

// spillFeeder moves spilled completions into the pool, waiting for room
// as the reaper must not. It exits once the engine stops and the spill is
// empty; Engine.Close waits for it before it closes the pool.
func (e *Engine) spillFeeder() {
	defer e.wg.Done()
	s := &e.spill
	for {
		s.mu.Lock()
		if len(s.q) == 0 {
			select {
			case <-e.stop:
				s.done = true
				s.mu.Unlock()
				return
			default:
			}
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-e.stop:
			}
			continue
		}
		r := s.q[0]
		s.q[0] = nil
		s.q = s.q[1:]
		s.mu.Unlock()
		if err := e.pool.Submit(r); err != nil {
			r.RunCompletion() // pool closed: complete here rather than lose it
		}
		s.n.Add(-1)
	}
}
