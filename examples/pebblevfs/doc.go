// Package pebblevfs is a Pebble (github.com/cockroachdb/pebble/v2) vfs.FS
// whose data files go through uringdio's direct I/O.
//
// What goes where:
//
//   - sstables (*.sst), blob files (*.blob), WALs (*.log) and MANIFESTs
//     (MANIFEST-*) are opened with dio.Open on one engine shared by the
//     whole FS. Files Pebble creates (Create, ReuseForWrite) are written
//     through a dio.Appender: Pebble's writes are appends, the Appender gathers
//     them into aligned chunks written behind, and Sync and SyncData write
//     the zero-padded tail (a group commit for concurrent WAL syncs). Files
//     Pebble opens to read (Open) are read with ReadAt; Read (WAL and
//     MANIFEST replay) and the handles Pebble opens for sequential reads
//     (vfs.SequentialReadsOption, which compactions use) read through a
//     read-ahead window (read synchronously, a window at a time), and
//     Prefetch (which Pebble calls when an iterator reads blocks in order)
//     starts one asynchronous read of the span it names and returns; the
//     ReadAts within the span wait for it. Page-cache read-ahead does
//     nothing under O_DIRECT.
//   - Everything else (directories, LOCK, OPTIONS, markers, temporary
//     files, renames, links, removals) goes to vfs.Default: those are small
//     files whose durability is a directory fsync or a rename, which the
//     kernel already does right.
//
// Stat reports the logical size of a file being written (the Appender's Size;
// on disk the file may end in the padding of the last sync until it is
// closed), for open handles and for FS.Stat by name alike.
//
// Where direct I/O is unavailable (not Linux, no io_uring, or a file system
// that refuses O_DIRECT) the FS falls back to vfs.Default for that file,
// counts it (Stats.Fallbacks) and says so through the WithLogf function.
package pebblevfs
