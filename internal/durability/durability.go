// Package durability holds test-only switches that make the library's
// durability calls lie, so that power-loss tests can prove they would
// catch a library that acknowledges data before it is durable. Nothing
// but such tests may set them.
package durability

import "sync/atomic"

// SkipSync, when set, makes dio skip every fsync and fdatasync it would
// issue (File.Sync, File.Datasync, the sync a DSync or Sync write needs)
// and leave RWF_DSYNC and RWF_SYNC off its writes.
var SkipSync atomic.Bool

// EarlyAck, when set, makes a dio.Appender's group commit acknowledge its
// callers as soon as the data is handed to the kernel, before the
// fdatasync (or the RWF_DSYNC write) that makes it durable has completed.
var EarlyAck atomic.Bool
