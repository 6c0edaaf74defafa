package crashfs

import (
	"errors"
	"fmt"
)

// Mode says what a crash does to the writes that were not synced.
type Mode uint8

const (
	// DropAll loses every write, and every size change, since the last
	// sync of each file.
	DropAll Mode = iota
	// Torn lets a seeded random subset survive: each pending write
	// survives whole, not at all, or in part, whole sectors of it
	// (SectorSize) kept or lost independently; each pending size change
	// survives or not. What survives is applied in the original order.
	Torn
)

func (m Mode) String() string {
	switch m {
	case DropAll:
		return "drop-all"
	case Torn:
		return "torn"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// CrashStats say what one crash did to the pending operations.
type CrashStats struct {
	Files            int   // files that had pending operations
	Writes           int   // writes pending at the crash
	WritesKept       int   // ... that survived whole
	WritesTorn       int   // ... of which some sectors survived, some not
	WritesDropped    int   // ... that were lost entirely
	BytesDropped     int64 // bytes of pending writes lost (torn writes included)
	Truncates        int   // size changes pending at the crash
	TruncatesDropped int   // ... that were lost
}

func (s CrashStats) String() string {
	return fmt.Sprintf("%d files, %d writes pending: %d kept, %d torn, %d dropped (%d bytes lost); %d of %d truncates lost",
		s.Files, s.Writes, s.WritesKept, s.WritesTorn, s.WritesDropped, s.BytesDropped, s.TruncatesDropped, s.Truncates)
}

// Stats are a file system's counters.
type Stats struct {
	PendingWrites int64      // writes not synced yet (a crash now would drop them)
	PendingBytes  int64      // their bytes
	Writes        int64      // writes received since the mount
	Syncs         int64      // fsync/fdatasync requests received (O_DSYNC writes count too)
	Crashes       int        // crashes so far
	LastCrash     CrashStats // what the last crash did
}

// ErrUnavailable says that the machine cannot run a crash file system of
// the kind asked for (no loop devices, no mkfs for that file system, a
// kernel that refuses the setup); the error wrapping it says why. It
// wraps errors.ErrUnsupported.
var ErrUnavailable = fmt.Errorf("crashfs: unavailable here: %w", errors.ErrUnsupported)

// unavailable returns an error wrapping ErrUnavailable.
func unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnavailable, fmt.Sprintf(format, args...))
}
