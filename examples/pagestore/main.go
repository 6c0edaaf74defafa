//go:build linux

// Pagestore is the storage layer a B-tree or LSM engine keeps under its
// buffer pool: fixed 8 KiB pages in one file, made durable by a
// write-ahead log, on O_DIRECT io_uring I/O through uringdio. It shows the
// completion policies doing the jobs they were made for:
//
//   - page reads complete Inline, on the engine's reaper: the completion
//     checks the page's crc32c and copies the payload out, work that never
//     blocks;
//   - page writes (at checkpoint) complete through Caller: the reaper
//     hands each finished write to the checkpointing goroutine's
//     completion.Queue, which runs them. pages.db is a kernel file, so the
//     kernel finishes every write (allocation, the new size) before its
//     completion is posted and none needs work on the pool; the example
//     counts any that would be downgraded;
//   - the WAL is appended with dio.DSync, written through: RWF_DSYNC on
//     the SQE (a FUA write, or a cache flush where the device has no FUA,
//     plus whatever metadata the write changed) instead of a write
//     followed by an fdatasync;
//   - a checkpoint writes the dirty pages, fdatasyncs pages.db, then starts
//     a new WAL generation in a ping-pong header.
//
// The store survives kill -9 between any two operations: every Put that
// returned is readable after restart (main_test.go kills a child process
// at random points, restarts, and checks exactly that).
//
// Run it (a few seconds; files under os.TempDir(), removed at the end):
//
//	go run ./examples/pagestore
//	go run ./examples/pagestore -ops 5000 -pages 512 -wal 128 -keep
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"time"
)

// config is what main's flags set.
type config struct {
	Dir          string // "" means a new directory under os.TempDir()
	Keep         bool   // keep the directory
	Pages        int    // distinct page ids written
	Ops          int    // Puts
	WALRecords   int    // WAL capacity in pages
	InitialPages int    // pages.db's pre-written size in pages
	Seed         uint64
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Dir, "dir", "", "store directory (default: a new one under "+os.TempDir()+")")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the store directory")
	flag.IntVar(&cfg.Pages, "pages", 160, "distinct page ids")
	flag.IntVar(&cfg.Ops, "ops", 1000, "page writes (Puts)")
	flag.IntVar(&cfg.WALRecords, "wal", 64, "WAL capacity in pages (a full WAL checkpoints)")
	flag.IntVar(&cfg.InitialPages, "initial", 128, "pages pages.db is created with (pages beyond grow the file)")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "random seed")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pagestore:", err)
		os.Exit(1)
	}
}

// run writes random pages, reads them all back, "crashes" (closes the
// files without a checkpoint), reopens and verifies again.
func run(ctx context.Context, cfg config, out io.Writer) error {
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "pagestore-")
		if err != nil {
			return err
		}
		dir = d
		if !cfg.Keep {
			defer os.RemoveAll(dir)
		}
	}
	opt := Options{WALRecords: cfg.WALRecords, InitialPages: cfg.InitialPages}
	s, err := Open(dir, opt)
	if err != nil {
		return err
	}
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	fmt.Fprintf(out, "store %s: %d-byte pages, WAL of %d pages, pages.db created with %d pages\n",
		dir, PageSize, s.walCap, cfg.InitialPages)

	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	want := make(map[uint32]uint64) // page id -> version
	payload := make([]byte, PayloadSize)
	start := time.Now()
	for v := uint64(1); v <= uint64(cfg.Ops); v++ {
		id := uint32(rng.IntN(cfg.Pages))
		fillPayload(payload, id, v)
		if err := s.Put(ctx, id, payload); err != nil {
			return err
		}
		want[id] = v
	}
	el := time.Since(start)
	st := s.Stats()
	fmt.Fprintf(out, "put %d pages in %v (%.0f/s): each durable on return\n", st.Puts, el.Round(time.Millisecond), float64(st.Puts)/el.Seconds())
	fmt.Fprintf(out, "  WAL appends: %d written through with RWF_DSYNC (completion: caller), %d needed an fdatasync (pool: %v)\n",
		st.WALThrough, st.WALSynced, st.WALSyncedReason)
	fmt.Fprintf(out, "  checkpoints: %d, page writes %d: %d completed by the checkpoint goroutine (caller), %d on the pool (reason: %v)\n",
		st.Checkpoints, st.PageWrites, st.CallerWrites, st.PoolWrites, st.PoolReason)

	verify := func(what string) error {
		ids := make([]uint32, cfg.Pages)
		dsts := make([][]byte, cfg.Pages)
		for i := range ids {
			ids[i], dsts[i] = uint32(i), make([]byte, PayloadSize)
		}
		before := s.Stats().Reads
		start := time.Now()
		if err := s.Get(ctx, ids, dsts); err != nil {
			return err
		}
		el := time.Since(start)
		for i, id := range ids {
			if err := checkPayload(dsts[i], id, want[id]); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		fmt.Fprintf(out, "%s: read %d pages in one batch in %v (%d from pages.db, inline completion, crc32c checked), all as written\n",
			what, len(ids), el.Round(time.Microsecond), s.Stats().Reads-before)
		return nil
	}
	if err := verify("read back"); err != nil {
		return err
	}

	// A crash: the files are closed with the WAL holding pages that
	// pages.db does not have yet. Open replays them.
	pending := s.walNext
	s.closeFiles()
	s = nil
	fmt.Fprintf(out, "crash: files closed without a checkpoint, %d page images only in the WAL\n", pending)
	if s, err = Open(dir, opt); err != nil {
		return err
	}
	fmt.Fprintf(out, "reopen: replayed %d WAL records\n", s.Stats().Replayed)
	if err := verify("after recovery"); err != nil {
		return err
	}
	err = s.Close()
	s = nil
	return err
}

// fillPayload fills b with the content of version v of page id: the id
// and version, then bytes derived from both.
func fillPayload(b []byte, id uint32, v uint64) {
	binary.LittleEndian.PutUint32(b, id)
	binary.LittleEndian.PutUint64(b[4:], v)
	x := uint64(id)<<40 ^ v*0x9e3779b97f4a7c15 | 1
	for i := 12; i < len(b); i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

// checkPayload reports whether b is version v of page id (v == 0: a page
// never written, all zeroes).
func checkPayload(b []byte, id uint32, v uint64) error {
	got := payloadVersion(b)
	if v == 0 {
		if !isZero(b) {
			return fmt.Errorf("page %d: want an empty page, got version %d", id, got)
		}
		return nil
	}
	want := make([]byte, len(b))
	fillPayload(want, id, v)
	if string(b) != string(want) {
		return fmt.Errorf("page %d: want version %d, got version %d (id field %d)", id, v, got, binary.LittleEndian.Uint32(b))
	}
	return nil
}

// payloadVersion returns the version field of a payload.
func payloadVersion(b []byte) uint64 { return binary.LittleEndian.Uint64(b[4:]) }
