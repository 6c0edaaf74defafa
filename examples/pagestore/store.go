//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
)

// On-disk layout.
//
// pages.db is an array of PageSize frames; frame i holds page i. A frame
// that was never written reads as zeroes and is an empty page.
//
// wal.log starts with two header slots of walSlotSize bytes (ping-pong: a
// checkpoint writes the slot the previous one did not, so a torn header
// write never loses the last good header), followed by walCap record
// frames. A record is the full image of one page (a "full-page write"), so
// replaying it is idempotent and repairs a page torn by a crash during a
// checkpoint. The file is written with zeroes once, at creation: appends
// are then overwrites of allocated, written blocks, which is what lets a
// DSYNC append be written through (RWF_DSYNC) instead of being
// followed by an fdatasync.
//
// A frame (a page, or a WAL record) is:
//
//	[0:4)   magic "PGS1"
//	[4:8)   crc32c of [8:PageSize)
//	[8:12)  page id
//	[12:16) reserved
//	[16:24) LSN of the WAL record that wrote this image
//	[24:32) reserved
//	[32:)   payload (PayloadSize bytes)
//
// A WAL record at index i is valid iff its magic and crc are right and its
// LSN is header.startLSN+i. Records are appended one at a time, each
// durable before the next starts, so the valid records are a prefix: the
// scan stops at the first invalid one. LSNs grow across checkpoints, so
// records left over from before the last checkpoint never match.
const (
	PageSize    = 8192
	frameHeader = 32
	PayloadSize = PageSize - frameHeader

	walSlotSize = 4096
	walHeader   = 2 * walSlotSize

	frameMagic = 0x31534750 // "PGS1"
	walMagic   = 0x4c415750 // "PWAL"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is returned by Get for a page whose checksum or id is wrong.
var ErrCorrupt = errors.New("pagestore: corrupt page")

// Options configure a Store. Zero fields take the defaults.
type Options struct {
	// WALRecords is the WAL capacity in page images (default 64), used when
	// the store is created; an existing store keeps the capacity in its WAL
	// header. A full WAL triggers a checkpoint.
	WALRecords int
	// InitialPages is how many pages pages.db is created with, written
	// with zeroes so that later page writes are pure overwrites (default
	// 128). Pages beyond grow the file.
	InitialPages int
	// ReadSlots bounds the page reads in flight (default 64).
	ReadSlots int
}

// Stats count what the store did, and which completion path each I/O took.
type Stats struct {
	Puts            int64
	WALThrough      int64 // WAL appends written through (RWF_DSYNC on the SQE)
	WALSynced       int64 // WAL appends that needed an fdatasync after the data
	WALSyncedReason completion.Reason
	Checkpoints     int64
	PageWrites      int64 // page writes during checkpoints
	CallerWrites    int64 // ... completed on the checkpointing goroutine (Caller)
	PoolWrites      int64 // ... downgraded to the worker pool
	PoolReason      completion.Reason
	Replayed        int64 // WAL records replayed by Open
	Reads           int64 // page reads from pages.db (Inline completion)
}

// Store is a page store: fixed-size pages in one file, made durable by a
// write-ahead log. Put is durable when it returns. Store is safe for
// concurrent use: Gets run in parallel, Put and Checkpoint one at a time.
type Store struct {
	dir   string
	pages *dio.File
	wal   *dio.File

	mu sync.RWMutex // Put, Checkpoint, Close: exclusive; Get: shared
	// Everything below is guarded by mu (exclusive to change).
	failed   error             // a WAL or checkpoint I/O error: the store is fenced
	walCap   int               // records the WAL holds
	walNext  int               // index of the next record
	ckptNo   uint64            // number of the current WAL header
	nextLSN  uint64            // LSN of the next record
	dirty    map[uint32][]byte // page id -> frame, newer than pages.db
	free     [][]byte          // free frames for Put
	arena    []byte            // off-heap frames: dirty pages, one spare, headers
	hdr      []byte            // walSlotSize bytes for the WAL header
	walReq   *dio.Request      // reused for every append
	walWG    sync.WaitGroup    // the append in flight
	ckptReqs []*dio.Request    // reused by every checkpoint
	ckptQ    completion.Queue  // Caller completions of page writes
	ckptWG   sync.WaitGroup    // page writes not completed yet

	reads     chan *readSlot // free read slots
	readArena []byte

	stats struct {
		puts, walThrough, walSynced, ckpts, pageWrites, callerWrites, poolWrites, replayed atomic.Int64
		reads                                                                              atomic.Int64
		walSyncedReason, poolReason                                                        atomic.Uint32
	}
}

// readSlot is one page read in flight: its frame, its request, and where
// its completion delivers the payload.
type readSlot struct {
	s     *Store
	frame []byte
	req   *dio.Request
	id    uint32
	dst   []byte
	batch *readBatch
}

// readBatch tracks one Get: the last completion closes done.
type readBatch struct {
	pending atomic.Int64
	mu      sync.Mutex
	err     error
	done    chan struct{}
}

func (b *readBatch) setErr(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
}

func (b *readBatch) finish() {
	if b.pending.Add(-1) == 0 {
		close(b.done)
	}
}

// Open opens the store in dir, creating it if needed, and recovers: the
// page images in the WAL are written to pages.db by a checkpoint, so after
// Open every Put acknowledged before a crash is readable.
func Open(dir string, opt Options) (*Store, error) {
	if opt.WALRecords <= 0 {
		opt.WALRecords = 64
	}
	if opt.InitialPages <= 0 {
		opt.InitialPages = 128
	}
	if opt.ReadSlots <= 0 {
		opt.ReadSlots = 64
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Store{dir: dir, dirty: make(map[uint32][]byte)}
	var err error
	// A page write, a WAL append and a read each use one SQE: a small
	// ring is plenty, and each File has its own engine (ring, reaper, pool).
	if s.pages, err = dio.Open(filepath.Join(dir, "pages.db"), os.O_RDWR|os.O_CREATE, 0o644, nil); err != nil {
		return nil, err
	}
	if s.wal, err = dio.Open(filepath.Join(dir, "wal.log"), os.O_RDWR|os.O_CREATE, 0o644, &dio.Options{EngineOptions: &dio.EngineOptions{QueueDepth: 8}}); err != nil {
		s.pages.Close()
		return nil, err
	}
	if err := s.recover(opt); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

// recover reads the WAL header, creates the store if there is none, and
// replays the WAL.
func (s *Store) recover(opt Options) error {
	hdrs, err := ring.Alloc(walHeader)
	if err != nil {
		return err
	}
	defer ring.Free(hdrs)
	n, err := s.wal.ReadAt(hdrs, 0)
	if err != nil && err != io.EOF {
		return err
	}
	clear(hdrs[n:])
	var best walHdr
	for i := range 2 {
		if h, ok := parseHdr(hdrs[i*walSlotSize : (i+1)*walSlotSize]); ok && h.ckptNo > best.ckptNo {
			best = h
		}
	}
	create := best.ckptNo == 0
	if create {
		// No valid header: the store was never fully created (a crash
		// during creation acknowledged nothing). Start over.
		best = walHdr{ckptNo: 1, startLSN: 1, walCap: uint32(opt.WALRecords)}
	}
	s.walCap, s.ckptNo, s.nextLSN = int(best.walCap), best.ckptNo, best.startLSN
	s.setupMemory(opt.ReadSlots)
	if create {
		return s.create(opt)
	}

	// Scan the WAL: the valid records are a prefix. Each becomes the
	// page's dirty image (later records of a page replace earlier ones),
	// and the checkpoint below writes them all to pages.db.
	const chunk = 16
	scan, err := ring.Alloc(chunk * PageSize)
	if err != nil {
		return err
	}
	defer ring.Free(scan)
scanning:
	for i := 0; i < s.walCap; i += chunk {
		k := min(chunk, s.walCap-i)
		got, err := s.wal.ReadAt(scan[:k*PageSize], walHeader+int64(i)*PageSize)
		if err != nil && err != io.EOF {
			return err
		}
		for j := range k {
			rec := scan[j*PageSize : (j+1)*PageSize]
			if got < (j+1)*PageSize || !validFrame(rec) || frameLSN(rec) != best.startLSN+uint64(i+j) {
				break scanning
			}
			id := frameID(rec)
			f, ok := s.dirty[id]
			if !ok {
				f = s.free[len(s.free)-1]
				s.free = s.free[:len(s.free)-1]
				s.dirty[id] = f
			}
			copy(f, rec)
			s.walNext++
			s.nextLSN++
			s.stats.replayed.Add(1)
		}
	}
	if s.walNext > 0 {
		return s.checkpointLocked()
	}
	return nil
}

// setupMemory carves the off-heap frames: walCap dirty pages plus one
// spare for the Put in progress, the header slot, and the read slots.
func (s *Store) setupMemory(readSlots int) {
	var err error
	if s.arena, err = ring.Alloc((s.walCap+1)*PageSize + walSlotSize); err != nil {
		panic(err)
	}
	for i := range s.walCap + 1 {
		s.free = append(s.free, s.arena[i*PageSize:(i+1)*PageSize:(i+1)*PageSize])
	}
	s.hdr = s.arena[(s.walCap+1)*PageSize:]
	s.walReq = new(dio.Request)
	s.walReq.Callback = func(*dio.Request) { s.walWG.Done() }
	for range s.walCap {
		s.ckptReqs = append(s.ckptReqs, new(dio.Request))
	}
	if s.readArena, err = ring.Alloc(readSlots * PageSize); err != nil {
		panic(err)
	}
	s.reads = make(chan *readSlot, readSlots)
	for i := range readSlots {
		rs := &readSlot{s: s, frame: s.readArena[i*PageSize : (i+1)*PageSize : (i+1)*PageSize], req: new(dio.Request)}
		rs.req.Op = dio.Read
		rs.req.Buf = rs.frame
		rs.req.Policy = completion.Inline
		rs.req.Callback = rs.done
		s.reads <- rs
	}
}

// create writes a fresh store: pages.db and the WAL body full of zeroes,
// then the first WAL header, which is what makes the store exist.
func (s *Store) create(opt Options) error {
	zero, err := ring.Alloc(16 * PageSize)
	if err != nil {
		return err
	}
	defer ring.Free(zero)
	fill := func(f *dio.File, off, n int64) error {
		if err := f.Truncate(0); err != nil {
			return err
		}
		for end := off + n; off < end; {
			k := min(int64(len(zero)), end-off)
			if _, err := f.WriteAt(zero[:k], off); err != nil {
				return err
			}
			off += k
		}
		return f.Datasync()
	}
	if err := fill(s.pages, 0, int64(opt.InitialPages)*PageSize); err != nil {
		return err
	}
	if err := fill(s.wal, 0, walHeader+int64(s.walCap)*PageSize); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	return s.writeHeader(walHdr{ckptNo: s.ckptNo, startLSN: s.nextLSN, walCap: uint32(s.walCap)})
}

// Put stores payload (at most PayloadSize bytes; the rest of the page is
// zeroes) as page id. When Put returns nil the page is durable: its image
// is in the WAL, written with DSYNC.
func (s *Store) Put(ctx context.Context, id uint32, payload []byte) error {
	if len(payload) > PayloadSize {
		return fmt.Errorf("pagestore: payload of %d bytes exceeds %d", len(payload), PayloadSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.walNext == s.walCap {
		if err := s.checkpointLocked(); err != nil {
			return err
		}
	}
	f := s.free[len(s.free)-1]
	n := copy(f[frameHeader:], payload)
	clear(f[frameHeader+n:])
	sealFrame(f, id, s.nextLSN)

	// The append: DSYNC, asking for Caller completion. A write written
	// through needs no work after the data, so it keeps Caller and r.Wait
	// below runs its (trivial) completion here. If write-through were
	// impossible (a mapped file whose write allocates), the engine would
	// downgrade it to the pool, which runs the fdatasync; EffectivePolicy
	// tells us which happened. Either way the completion ends in the
	// callback, walWG.Done.
	r := s.walReq
	r.Op, r.Off, r.Buf, r.Flags, r.Policy = dio.Write, walHeader+int64(s.walNext)*PageSize, f, dio.DSync, completion.Caller
	s.walWG.Add(1)
	if err := s.wal.Submit(r); err != nil {
		s.walWG.Done()
		return err
	}
	if p, _ := r.EffectivePolicy(); p == completion.Caller {
		r.Wait(ctx)
	}
	s.walWG.Wait()
	if _, err := r.Result(); err != nil {
		// The record may or may not be on disk: the next append
		// overwrites the same slot. A Put that failed may still show up
		// after a crash, never a Put that succeeded go missing.
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECANCELED) {
			return err
		}
		s.failed = fmt.Errorf("pagestore: WAL append failed, store fenced: %w", err)
		return s.failed
	}
	if p, why := r.EffectivePolicy(); p == completion.Caller {
		s.stats.walThrough.Add(1)
	} else {
		s.stats.walSynced.Add(1)
		s.stats.walSyncedReason.Store(uint32(why))
	}
	s.free = s.free[:len(s.free)-1]
	if old, ok := s.dirty[id]; ok {
		s.free = append(s.free, old)
	}
	s.dirty[id] = f
	s.walNext++
	s.nextLSN++
	s.stats.puts.Add(1)
	return nil
}

// Get reads pages ids[i] into dsts[i] (PayloadSize bytes each; shorter
// buffers get a prefix). Pages never written read as zeroes. Pages newer
// than the last checkpoint come from memory; the others are read from
// pages.db, all at once, and each read's completion runs inline on the
// engine's reaper: it checks the page's checksum and copies the payload
// out, work that never blocks.
func (s *Store) Get(ctx context.Context, ids []uint32, dsts [][]byte) error {
	if len(ids) != len(dsts) {
		return fmt.Errorf("pagestore: %d ids, %d buffers", len(ids), len(dsts))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.failed != nil {
		return s.failed
	}
	b := &readBatch{done: make(chan struct{})}
	b.pending.Store(1) // ours, dropped after the last submission
	var err error
	for i, id := range ids {
		if f, ok := s.dirty[id]; ok {
			copy(dsts[i], f[frameHeader:])
			continue
		}
		var rs *readSlot
		select {
		case rs = <-s.reads:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
		rs.id, rs.dst, rs.batch = id, dsts[i], b
		rs.req.Off = int64(id) * PageSize
		b.pending.Add(1)
		if err = s.pages.Submit(rs.req); err != nil {
			b.pending.Add(-1)
			s.reads <- rs
			break
		}
	}
	b.finish()
	<-b.done // requests in flight own dsts: wait for them even after an error
	if err != nil {
		return err
	}
	return b.err
}

// done is a read's completion, on the reaper (Inline).
func (rs *readSlot) done(r *dio.Request) {
	n, err := r.Result()
	b := rs.batch
	switch {
	case err != nil && err != io.EOF:
		b.setErr(err)
	default:
		rs.s.stats.reads.Add(1)
		f := rs.frame
		clear(f[n:]) // past the end of pages.db: never written
		if binary.LittleEndian.Uint32(f) == 0 && isZero(f) {
			clear(rs.dst)
		} else if !validFrame(f) || frameID(f) != rs.id {
			b.setErr(fmt.Errorf("%w: page %d (checksum or id mismatch)", ErrCorrupt, rs.id))
		} else {
			copy(rs.dst, f[frameHeader:])
		}
	}
	rs.dst, rs.batch = nil, nil
	rs.s.reads <- rs // never blocks: the channel holds every slot
	b.finish()
}

// Checkpoint writes the pages changed since the last checkpoint to
// pages.db, fdatasyncs it, and starts a new WAL generation.
func (s *Store) Checkpoint(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.checkpointLocked()
}

// checkpointLocked is Checkpoint with mu held. Once the page writes are
// submitted it runs to the end: the frames belong to the kernel until
// every write has completed.
func (s *Store) checkpointLocked() error {
	if s.walNext == 0 {
		return nil
	}
	// Submit every dirty page asking for Caller completion: their
	// completion work runs below, on this goroutine, in q.Wait. A write
	// that needed work after its data (on a mapped file: one that
	// allocates or grows the file) would be sent to the pool instead.
	var reqs []*dio.Request
	var caller int
	var err error
	for id, f := range s.dirty {
		r := s.ckptReqs[len(reqs)]
		r.Op, r.Off, r.Buf, r.Flags = dio.Write, int64(id)*PageSize, f, 0
		r.Policy, r.Queue, r.Callback = completion.Caller, &s.ckptQ, s.ckptDone
		s.ckptWG.Add(1)
		if err = s.pages.Submit(r); err != nil {
			s.ckptWG.Done()
			break
		}
		reqs = append(reqs, r)
		if p, why := r.EffectivePolicy(); p == completion.Caller {
			caller++
		} else {
			s.stats.poolReason.Store(uint32(why))
		}
	}
	// Run the Caller completions here, as they arrive, then wait for
	// the pooled ones. Every completion ends in ckptDone.
	if _, werr := s.ckptQ.Wait(context.Background(), caller); werr != nil && err == nil {
		err = werr
	}
	s.ckptWG.Wait()
	for _, r := range reqs {
		if _, rerr := r.Result(); rerr != nil && err == nil {
			err = rerr
		}
	}
	s.stats.pageWrites.Add(int64(len(reqs)))
	s.stats.callerWrites.Add(int64(caller))
	s.stats.poolWrites.Add(int64(len(reqs) - caller))
	if err == nil {
		err = s.pages.Datasync()
	}
	if err == nil {
		// pages.db now holds every image in the WAL: start a new
		// generation. Its header goes in the other slot.
		err = s.writeHeader(walHdr{ckptNo: s.ckptNo + 1, startLSN: s.nextLSN, walCap: uint32(s.walCap)})
	}
	if err != nil {
		s.failed = fmt.Errorf("pagestore: checkpoint failed, store fenced: %w", err)
		return s.failed
	}
	s.ckptNo++
	s.walNext = 0
	for id, f := range s.dirty {
		s.free = append(s.free, f)
		delete(s.dirty, id)
	}
	s.stats.ckpts.Add(1)
	return nil
}

// ckptDone is every checkpoint write's completion callback: on the
// checkpointing goroutine for Caller, on a pool worker for Pool.
func (s *Store) ckptDone(*dio.Request) { s.ckptWG.Done() }

// writeHeader writes h into its slot (ckptNo % 2) with DSYNC.
func (s *Store) writeHeader(h walHdr) error {
	clear(s.hdr)
	le := binary.LittleEndian
	le.PutUint32(s.hdr[0:], walMagic)
	le.PutUint64(s.hdr[8:], h.ckptNo)
	le.PutUint64(s.hdr[16:], h.startLSN)
	le.PutUint32(s.hdr[24:], h.walCap)
	le.PutUint32(s.hdr[28:], PageSize)
	le.PutUint32(s.hdr[4:], crc32.Checksum(s.hdr[8:], castagnoli))
	_, err := s.wal.WriteAtContext(context.Background(), s.hdr, int64(h.ckptNo%2)*walSlotSize, dio.DSync)
	return err
}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Puts:            s.stats.puts.Load(),
		WALThrough:      s.stats.walThrough.Load(),
		WALSynced:       s.stats.walSynced.Load(),
		WALSyncedReason: completion.Reason(s.stats.walSyncedReason.Load()),
		Checkpoints:     s.stats.ckpts.Load(),
		PageWrites:      s.stats.pageWrites.Load(),
		CallerWrites:    s.stats.callerWrites.Load(),
		PoolWrites:      s.stats.poolWrites.Load(),
		PoolReason:      completion.Reason(s.stats.poolReason.Load()),
		Replayed:        s.stats.replayed.Load(),
		Reads:           s.stats.reads.Load(),
	}
}

// Close checkpoints (unless the store is fenced) and closes the files.
// Closing without a checkpoint would be just as safe: Open replays the WAL.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.failed == nil {
		err = s.checkpointLocked()
	}
	if cerr := s.closeFiles(); err == nil {
		err = cerr
	}
	return err
}

func (s *Store) closeFiles() error {
	// dio.File.Close waits for the I/O in flight: only then is the memory
	// the kernel may write to ours to free.
	err := s.pages.Close()
	if werr := s.wal.Close(); err == nil {
		err = werr
	}
	if s.arena != nil {
		ring.Free(s.arena)
		ring.Free(s.readArena)
		s.arena, s.readArena = nil, nil
	}
	return err
}

type walHdr struct {
	ckptNo, startLSN uint64
	walCap           uint32
}

func parseHdr(b []byte) (walHdr, bool) {
	le := binary.LittleEndian
	if le.Uint32(b) != walMagic || le.Uint32(b[4:]) != crc32.Checksum(b[8:], castagnoli) || le.Uint32(b[28:]) != PageSize {
		return walHdr{}, false
	}
	h := walHdr{ckptNo: le.Uint64(b[8:]), startLSN: le.Uint64(b[16:]), walCap: le.Uint32(b[24:])}
	return h, h.walCap > 0
}

func sealFrame(f []byte, id uint32, lsn uint64) {
	le := binary.LittleEndian
	le.PutUint32(f[0:], frameMagic)
	le.PutUint32(f[8:], id)
	le.PutUint32(f[12:], 0)
	le.PutUint64(f[16:], lsn)
	le.PutUint64(f[24:], 0)
	le.PutUint32(f[4:], crc32.Checksum(f[8:], castagnoli))
}

func validFrame(f []byte) bool {
	le := binary.LittleEndian
	return le.Uint32(f) == frameMagic && le.Uint32(f[4:]) == crc32.Checksum(f[8:], castagnoli)
}

func frameID(f []byte) uint32  { return binary.LittleEndian.Uint32(f[8:]) }
func frameLSN(f []byte) uint64 { return binary.LittleEndian.Uint64(f[16:]) }

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
