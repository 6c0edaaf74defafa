// Package durability holds a switch for power-loss tests, and nothing
// else.
package durability

import "sync/atomic"

// SkipSync, when set, makes package dio's durability calls lie: File.Sync
// and File.Datasync return nil without calling fsync or fdatasync, the
// completion of a DSync or Sync write skips the fdatasync or fsync it
// needs, and a write-through write goes without RWF_DSYNC. Every call
// still reports success.
//
// It is for power-loss tests only: a crash suite turns it on to check
// that it notices acknowledged writes going missing (the counter-check
// in examples/pagestore). Nothing else may set it.
var SkipSync atomic.Bool
