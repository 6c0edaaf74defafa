package dio

import (
	"errors"
	"fmt"
)

// ErrUnsupported: the kernel, the device or the mapping lacks something
// (on systems without io_uring, Open fails with it); the error it comes in
// names what. It matches errors.ErrUnsupported.
var ErrUnsupported = fmt.Errorf("dio: %w", errors.ErrUnsupported)
