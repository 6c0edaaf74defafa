package choose

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestOnceClaimRace races 64 goroutines on Claim, many times over, and
// checks that exactly one wins each round.
func TestOnceClaimRace(t *testing.T) {
	const racers = 64
	rounds := 500
	if testing.Short() {
		rounds = 50
	}
	var o Once
	for round := range rounds {
		o.Reset()
		var (
			wins  atomic.Int32
			start = make(chan struct{})
			wg    sync.WaitGroup
		)
		for range racers {
			wg.Go(func() {
				<-start
				if o.Claim() {
					wins.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("round %d: %d of %d goroutines won Claim, want 1", round, n, racers)
		}
		if !o.Claimed() || o.Claim() {
			t.Fatalf("round %d: Once not claimed after the race", round)
		}
	}
}

func TestOnceReset(t *testing.T) {
	var o Once
	if o.Claimed() {
		t.Fatal("zero Once is claimed")
	}
	for range 3 {
		if !o.Claim() {
			t.Fatal("first Claim after Reset lost")
		}
		if o.Claim() {
			t.Fatal("second Claim won")
		}
		o.Reset()
	}
}

func TestOnceDoesNotAllocate(t *testing.T) {
	o := new(Once)
	allocs := testing.AllocsPerRun(1000, func() {
		if !o.Claim() {
			panic("lost")
		}
		o.Reset()
	})
	if allocs != 0 {
		t.Fatalf("Once: %v allocs per run, want 0", allocs)
	}
}
