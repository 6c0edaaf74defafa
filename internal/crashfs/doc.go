// Package crashfs simulates power loss for tests: it keeps, per file, the
// writes and size changes since the file's last fsync or fdatasync apart
// from the durable image, and a crash drops them, all or a seeded random
// subset torn at 512-byte sector boundaries.
//
// It is a test helper: no production code depends on it.
package crashfs
