//go:build linux

package pebblevfs

import "github.com/uringdio/uringdio/dio"

type osConfig struct {
	engineOpts *dio.EngineOptions
	writer     WriterOptions
	logWriter  *WriterOptions
}

// WriterOptions tune the dio.Appender that a file Pebble creates is
// written through (dio.File.Appender); the zero value is dio's default.
type WriterOptions struct {
	// ChunkSize is how much the Appender gathers before it writes.
	ChunkSize int
	// MaxInflight bounds the chunks written behind at once.
	MaxInflight int
}

// WithEngineOptions sets the options of the FS's one engine
// (dio.NewEngine): queue depth, buffer memory, ...
func WithEngineOptions(o dio.EngineOptions) Option {
	return func(c *config) { c.engineOpts = &o }
}

// WithWriterOptions sets the options of the Appenders that files Pebble
// creates are written through.
func WithWriterOptions(o WriterOptions) Option {
	return func(c *config) { c.writer = o }
}

// DefaultLogChunk is the chunk size of a WAL's Writer: Pebble's WAL block
// size. A WAL is synced after every commit group, and each sync writes the
// chunk being filled from its start, so the chunk bounds what one sync
// writes (with dio's default 256 KiB chunk, a sync of a small commit wrote
// 128 KiB on average).
const DefaultLogChunk = 32 << 10

// WithLogWriterOptions sets the options of the Appenders of WALs (*.log);
// the default is a DefaultLogChunk chunk and dio's other defaults.
func WithLogWriterOptions(o WriterOptions) Option {
	return func(c *config) { c.logWriter = &o }
}
