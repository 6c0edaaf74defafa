package choose

import "sync/atomic"

// Once guards a completion so that it runs exactly once even when two paths
// race to finish it (the last CQE and a cancellation, say). The zero value
// is unclaimed. Claim is safe for concurrent use; Reset is not.
type Once struct{ state atomic.Uint32 }

// Claim reports true to exactly one caller between Resets, and false to
// every other. The winner owns the completion.
func (o *Once) Claim() bool { return o.state.CompareAndSwap(0, 1) }

// Claimed reports whether some caller has won Claim since the last Reset.
func (o *Once) Claimed() bool { return o.state.Load() != 0 }

// Reset makes o claimable again, for reuse of a pooled request. Call it
// only when no one can call Claim concurrently: after the winner finished
// and every other path that might finish the request has let go of it.
func (o *Once) Reset() { o.state.Store(0) }
