//go:build linux

package crashfs

import (
	"errors"
	"os"
	"strconv"
	"testing"
	"time"
)

// Target is a crash file system at either level: the block level
// (*BlockMount) or the file level (*FS).
type Target interface {
	Dir() string
	CrashAfter(n int64, seed uint64, mode Mode) <-chan CrashStats
	Restart() error
	Stats() Stats
}

// MountEither mounts fstype over the block-level crash file system, or the
// file-level one where the block level is unavailable (or where the
// environment's UIRINGDIO_POWERLOSS_LEVEL=file asks for it), and returns
// it with a description for the test's log. It fails the test on any
// other error; Mount skips it where neither level can run.
func MountEither(t *testing.T, fstype string, size int64) (Target, string) {
	t.Helper()
	if os.Getenv("UIRINGDIO_POWERLOSS_LEVEL") != "file" {
		m, err := MountBlock(t, BlockOptions{FS: fstype, Size: size})
		if err == nil {
			return m, fstype + " on a loop device over the crash file system"
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatal(err)
		}
		t.Logf("block level unavailable (%v): file level", err)
	}
	c, err := Mount(t, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c, "the crash file system (file level)"
}

// Seed is the environment's UIRINGDIO_POWERLOSS_SEED (a power-loss
// suite's replay), or a new seed each run.
func Seed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("UIRINGDIO_POWERLOSS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("UIRINGDIO_POWERLOSS_SEED: %v", err)
		}
		return seed
	}
	return uint64(time.Now().UnixNano())
}
