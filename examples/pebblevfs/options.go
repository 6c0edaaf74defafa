package pebblevfs

// DefaultReadahead is the read-ahead window of sequential reads (Read,
// and handles opened with vfs.SequentialReadsOption).
const DefaultReadahead = 512 << 10

// Option configures New. The zero configuration is: one engine with dio's
// defaults, Writers with dio's default chunk size, a DefaultReadahead
// window, and no log.
type Option func(*config)

type config struct {
	osConfig
	readahead int
	logf      func(format string, args ...any)
}

// WithReadahead sets the read-ahead window of sequential reads to n bytes
// (rounded up to 4 KiB); n < 0 turns read-ahead off.
func WithReadahead(n int) Option {
	return func(c *config) { c.readahead = n }
}

// WithLogf installs a function that is told, once per file, when a file
// falls back to vfs.Default, and why.
func WithLogf(f func(format string, args ...any)) Option {
	return func(c *config) { c.logf = f }
}

// Stats counts how files were opened.
type Stats struct {
	// Direct counts data files opened through dio.
	Direct uint64
	// Fallbacks counts data files that fell back to vfs.Default because
	// direct I/O was unavailable for them.
	Fallbacks uint64
}
