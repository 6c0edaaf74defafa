//go:build !linux

package ring

// Ring is only available on Linux; elsewhere New fails with ErrUnsupported.
type Ring struct{}

// Params configures a ring (Linux only).
type Params struct{}

// New fails: io_uring is Linux-only.
func New(Params) (*Ring, error) {
	return nil, Unsupported("setup", "io_uring needs Linux", 0)
}
