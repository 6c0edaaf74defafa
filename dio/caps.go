//go:build linux

package dio

import (
	"fmt"
	"strings"

	"github.com/uringdio/uringdio/internal/devinfo"
)

// String is the record as a person reads it: one fact per line.
func (c Capabilities) String() string {
	b := c.Backend + " (" + c.BackendWhy + ")"
	if strings.HasPrefix(c.BackendWhy, c.Backend+" ") {
		b = c.BackendWhy // it names the backend itself
	}
	return c.Info.String() + fmt.Sprintf("%-24s%d bytes\n%-24s%s\n", "largest I/O:", c.MaxIOSize, "backend:", b)
}

// Capabilities returns the file's record, gathered at the first call
// (statx, statfs, sysfs facts cached per device) and kept. Safe for
// concurrent use.
func (f *File) Capabilities() (Capabilities, error) {
	if !f.acquire() {
		return Capabilities{}, f.opErr("capabilities", 0, 0, ErrClosed)
	}
	defer f.release()
	c := &f.caps
	c.once.Do(func() {
		c.caps = Capabilities{Info: devinfo.Gather(int(f.fd)), Backend: "io_uring", BackendWhy: f.backend,
			MemAlignment: f.align.Memory, OffsetAlignment: f.align.Offset, MaxIOSize: f.maxIO}
		if f.mode.pread {
			c.caps.Backend = "pread"
		}
	})
	return c.caps, nil
}
