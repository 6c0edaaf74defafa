//go:build linux

package crashfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// longMode reports whether the long runs were asked for (UIRINGDIO_LONG=1).
func longMode() bool { return os.Getenv("UIRINGDIO_LONG") != "" && os.Getenv("UIRINGDIO_LONG") != "0" }

// mountBlock is MountBlock that skips where the block level cannot run.
func mountBlock(t *testing.T, fstype string) *BlockMount {
	t.Helper()
	m, err := MountBlock(t, BlockOptions{FS: fstype})
	if errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// syncDir fsyncs a directory.
func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	must(t, err)
	defer d.Close()
	must(t, d.Sync())
}

// TestBlockLevelKeepsWhatWasFlushed runs rounds of five writes on ext4
// and xfs over a loop device over the crash file system, then crashes:
//
//   - a new file written and fsynced survives;
//   - an existing file overwritten with O_DIRECT and fdatasynced holds
//     the new data;
//   - a new file written without fsync has none of its data (on ext4,
//     with commit=3600 and the shutdown, not even its name);
//   - an existing file overwritten through the page cache without fsync
//     holds the old data;
//   - an existing file overwritten with O_DIRECT without fdatasync holds
//     the old data: the write reached the device, which lost it.
//
// DropAll rounds check all five, every time; Torn rounds check the two
// synced ones (and that the file system mounts: its journal recovers from
// a torn tail).
func TestBlockLevelKeepsWhatWasFlushed(t *testing.T) {
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			m := mountBlock(t, fstype)
			rounds := 3
			if longMode() {
				rounds = 40
			}
			var dropped CrashStats
			for round := range rounds {
				mode := DropAll
				if round%2 == 1 {
					mode = Torn
				}
				st := blockRound(t, m, round, mode)
				dropped.Writes += st.Writes
				dropped.WritesDropped += st.WritesDropped
				dropped.BytesDropped += st.BytesDropped
			}
			t.Logf("%s: %d rounds; the crashes dropped %d of %d pending device writes, %d bytes", fstype, rounds, dropped.WritesDropped, dropped.Writes, dropped.BytesDropped)
		})
	}
}

func blockRound(t *testing.T, m *BlockMount, round int, mode Mode) CrashStats {
	t.Helper()
	dir := filepath.Join(m.Dir(), fmt.Sprint(round))
	must(t, os.Mkdir(dir, 0o755))
	path := func(name string) string { return filepath.Join(dir, name) }
	old, neu := fill(64<<10, 'o'), fill(64<<10, byte('a'+round%26))
	// The existing files, durable.
	for _, name := range []string{"odirect-synced", "cached-unsynced", "odirect-unsynced"} {
		writeSynced(t, path(name), old)
	}
	syncDir(t, dir)

	// Durable writes first: an fsync commits the journal, which must not
	// carry the unsynced changes below.
	writeSynced(t, path("new-synced"), neu)
	f, err := os.OpenFile(path("odirect-synced"), os.O_RDWR|syscall.O_DIRECT, 0)
	must(t, err)
	must(t, pwrite(f, alignedBuf(t, neu), 0))
	must(t, unix.Fdatasync(int(f.Fd())))
	f.Close()

	// Then the changes nothing syncs.
	must(t, os.WriteFile(path("new-unsynced"), neu, 0o644))
	f, err = os.OpenFile(path("cached-unsynced"), os.O_RDWR, 0)
	must(t, err)
	must(t, pwrite(f, neu, 0))
	f.Close()
	f, err = os.OpenFile(path("odirect-unsynced"), os.O_RDWR|syscall.O_DIRECT, 0)
	must(t, err)
	must(t, pwrite(f, alignedBuf(t, neu), 0))
	f.Close()
	if st := m.Stats(); st.PendingWrites == 0 {
		t.Fatalf("round %d: an O_DIRECT write went to the device unflushed, yet no write is pending", round)
	}

	st, err := m.Crash(uint64(round), mode)
	if err != nil {
		t.Fatalf("round %d: crash: %v", round, err)
	}
	if st.WritesDropped == 0 && mode == DropAll {
		t.Errorf("round %d: the crash dropped nothing: %v", round, st)
	}
	expect := func(name string, want []byte) {
		t.Helper()
		if got := mustRead(t, path(name)); !bytes.Equal(got, want) {
			t.Errorf("round %d (%v): %s after the crash: %s", round, mode, name, describe(got, want))
		}
	}
	expect("new-synced", neu)
	expect("odirect-synced", neu)
	if mode != DropAll {
		return st
	}
	expect("cached-unsynced", old)
	expect("odirect-unsynced", old)
	got, err := os.ReadFile(path("new-unsynced"))
	switch {
	case m.FSType() == "ext4" && !errors.Is(err, os.ErrNotExist):
		t.Errorf("round %d: new-unsynced exists after the crash (%d bytes, %v); ext4 with commit=3600 never committed its creation", round, len(got), err)
	case err == nil && bytes.Contains(got, neu[:512]):
		t.Errorf("round %d: new-unsynced holds its unsynced data after the crash", round)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		t.Errorf("round %d: new-unsynced: %v", round, err)
	}
	return st
}
