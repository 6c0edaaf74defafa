//go:build linux

package dio

import (
	"context"
	"slices"
	"sync"
	"syscall"

	"github.com/uringdio/uringdio/internal/engine"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/durability"
)

// An Appender appends to a File through direct I/O (File.Appender), the
// way RocksDB's
// WritableFileWriter and glommio's DmaStreamWriter do: Write takes any
// number of bytes into an aligned buffer; each full chunk is written
// behind, asynchronously, with a bounded number in flight; Sync and
// SyncData make every byte written so far durable by writing the partial
// last chunk padded with zeroes to the alignment (it is written again,
// longer, at the next flush). Until Close the file may therefore end in
// zero padding past the Appender's Size; Close truncates the file to Size and
// syncs it. The padding is never truncated at a sync: that would free the
// space of a preallocated (or recycled) log and make every later write an
// extending one.
//
// Concurrent SyncData (and Sync) calls are a group commit (sync says how):
// Write goes on while a sync's I/O is in flight, every waiter who arrives
// meanwhile is covered by the next round, and one fdatasync covers every
// round written before it; a lone committer's round is one RWF_DSYNC
// write. A reused log (written before, or recycled, as Pebble's
// ReuseForWrite does) makes every commit a pure overwrite of written
// blocks: the file system then has no size or extent to journal, and a
// sync is one device write and one cache flush. Errors are sticky: after a failed write or
// sync the Appender refuses further writes and syncs with that error (a
// failed fdatasync may have dropped dirty data), and bytes that a Sync
// acknowledged before it stay durable. ENOSPC in the middle of an append is
// such an error: the bytes of earlier successful syncs are intact; what
// was written after them may or may not be on disk.
//
// The Appender owns the file's contents from its start offset on while it
// is open: do not write them through other handles. Write copies p before
// it returns: p is the caller's again then. Its buffers come from the
// engine's buffer memory (EngineOptions.BufferMemory), all at once when it
// is made, never waiting: fewer chunks in flight where there is no room
// for all, and where there is none, chunks written synchronously through
// bounce buffers. Write, Sync, SyncData, Size and Close are safe for
// concurrent use.
type Appender interface {
	// Write appends p. It returns an error only if the Appender is closed
	// or has failed (the sticky error).
	Write(p []byte) (int, error)
	// SyncData makes every byte written so far durable (fdatasync
	// semantics).
	SyncData() error
	// Sync is SyncData with the file's metadata too (fsync semantics).
	Sync() error
	// Size returns the logical size: the start offset plus every byte
	// written.
	Size() int64
	// Close writes what is buffered, truncates the file to Size (dropping
	// the padding past it, and anything a reused file held there) and
	// syncs it. It does not close the File.
	Close() error
}

var _ Appender = (*appender)(nil)

// chunkIO is a chunk written behind: its number and its buffer.
type chunkIO struct {
	n   uint64
	buf []byte
}

// appender is the Appender.
type appender struct {
	f     *File
	chunk int64
	max   int

	mu      sync.Mutex // the chunk being filled and the Appender's state
	mcond   sync.Cond  // on mu: a round's tail write is done (tailBusy)
	buf     []byte     // the chunk being filled, from the engine's pool
	heap    bool       // buf is Go memory: the pool had no room (writeOut)
	bufOff  int64      // its file offset (aligned)
	n       int64      // bytes in it
	err     error      // sticky
	closed  bool
	dirty   bool  // chunks written behind since the last round: a flush must follow them
	tailLen int64 // bytes of buf a round has written (or is writing)
	// tailBusy: rounds' writes of buf's tail sectors in flight; buf is
	// not written behind meanwhile (two writes of one sector in flight
	// could land in either order), and while a write-behind waits
	// (behind), no round starts.
	tailBusy int
	behind   int

	// Chunks written behind: requests, their completion state, and the
	// buffers not in use (one per free request).
	cmu      sync.Mutex
	ccond    sync.Cond
	inflight int
	werr     error
	free     []*Request
	spare    [][]byte
	pending  []chunkIO // the chunks in flight, in order
	chunks   uint64    // chunks written behind so far; under mu

	// Group commit (smu): the rounds not yet flushed, in order; synced is
	// how far every byte is durable; flushing: a flush runs; failed: a
	// round or flush failed, the sticky error is everyone's; closing: no
	// round starts.
	smu      sync.Mutex
	scond    sync.Cond
	rounds   []*commitRound // written or being written, not yet flushed
	synced   int64
	flushing bool
	failed   bool
	closing  bool
}

// commitRound is a group commit round (sync). Its leader writes its
// fields under smu.
type commitRound struct {
	tbuf    []byte // its copy of the tail sectors
	covered int64  // the size it makes durable (once snapped)
	snapped bool
	aligned bool // its write ends on a sector boundary: the next round's write cannot overlap it
	written bool
	err     error
}

// maxRounds bounds the rounds in flight at once.
const maxRounds = 4

// Appender returns an Appender that appends to f from off (0 for a new or
// a reused file, the file's size to append to it). The bytes before off in
// its sector are read and kept. chunk is how much it gathers before it
// writes (a multiple of the file's alignment, at most 1 MiB; 0 means 256
// KiB); inflight bounds the chunks written behind at once (0 means 4).
func (f *File) Appender(off int64, chunk, inflight int) (Appender, error) {
	w, err := f.newAppender(off, chunk, inflight)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return w, nil
}

func (f *File) newAppender(off int64, chunkSize, inflight int) (*appender, error) {
	a := f.align.Offset
	chunk := int64(chunkSize)
	if chunk <= 0 {
		chunk = 256 << 10
	}
	if chunk%a != 0 || chunk > engine.MaxBuffer || off < 0 {
		return nil, f.opErr("appender", off, chunk, syscall.EINVAL)
	}
	if !f.mode.writable {
		return nil, f.opErr("appender", off, 0, readOnlyErr{})
	}
	if off > f.maxEnd()-chunk {
		return nil, f.opErr("appender", off, chunk, syscall.EFBIG)
	}
	if inflight <= 0 {
		inflight = 4
	}
	if off%a != 0 && !f.mode.canRead {
		return nil, f.opErr("appender", off, 0, unsupported(
			"an Appender from an unaligned offset on a write-only file whose permissions refuse reading: it must read the bytes before it in their sector"))
	}
	// Its buffers, in one step: the chunk being filled and one per chunk
	// written behind, as many as the engine's buffer memory has room for
	// now (engine.Pool). With one, chunks are written synchronously; with
	// none, the chunk is Go memory, copied through a bounce buffer when
	// it is written.
	bufs, err := f.eng.Bufs.Reserve(1+inflight, chunk)
	if err != nil {
		return nil, f.opErr("appender", off, chunk, err)
	}
	w := &appender{f: f, chunk: chunk, max: max(len(bufs)-1, 0), synced: off, bufOff: off &^ (a - 1), n: off % a}
	w.ccond.L, w.scond.L, w.mcond.L = &w.cmu, &w.smu, &w.mu
	if len(bufs) == 0 { // no room: Go memory, written through bounce buffers
		w.heap, bufs = true, [][]byte{make([]byte, chunk)}
	}
	for _, b := range bufs[1:] {
		w.spare = append(w.spare, b[:chunk])
	}
	w.buf = bufs[0][:chunk]
	if w.n > 0 {
		if err := w.readHead(a); err != nil {
			w.releaseBufs()
			return nil, reframe(err, "appender", off, 0)
		}
	}
	for range w.max {
		r := &Request{}
		r.Op, r.Policy, r.Callback = Write, completion.Inline, w.written
		w.free = append(w.free, r)
	}
	return w, nil
}

func (w *appender) Size() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bufOff + w.n
}

func (w *appender) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.bufOff+w.n > w.f.maxEnd()-int64(len(p)) {
		return 0, w.f.opErr("write", w.bufOff+w.n, int64(len(p)), syscall.EFBIG)
	}
	done := 0
	for done < len(p) {
		k := copy(w.buf[w.n:], p[done:])
		w.n += int64(k)
		done += k
		if w.n == w.chunk {
			if err := w.writeBehind(); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}

// usable reports the error that makes the Appender refuse work. Called with
// mu held.
func (w *appender) usable() error {
	if w.closed {
		return w.f.opErr("write", w.bufOff+w.n, 0, ErrClosed)
	}
	if w.err == nil {
		w.cmu.Lock()
		w.err = w.werr
		w.cmu.Unlock()
	}
	return w.err
}

// writeBehind submits the full chunk and starts a new one. Called with mu
// held.
func (w *appender) writeBehind() error {
	// Rounds writing this chunk's tail sectors go first; new rounds wait
	// for this write-behind (snapshot).
	w.behind++
	for w.tailBusy > 0 {
		w.mcond.Wait()
	}
	w.behind--
	w.mcond.Broadcast()
	var err error
	switch {
	case w.tailLen == w.chunk: // every byte written by rounds already
	case w.max == 0: // one buffer: write it now and fill it again
		err = w.writeOut(w.buf, w.bufOff, 0)
		w.dirty = true
	default:
		err = w.submitChunk()
	}
	if err != nil {
		w.err = err
		return err
	}
	w.bufOff += w.chunk
	w.n, w.tailLen = 0, 0
	return nil
}

// submitChunk writes the full chunk behind, asynchronously, and takes a
// spare buffer for the next. Called with mu held.
func (w *appender) submitChunk() error {
	w.cmu.Lock()
	for len(w.free) == 0 && w.werr == nil {
		w.ccond.Wait()
	}
	if w.werr != nil {
		w.cmu.Unlock()
		return w.werr
	}
	r := w.free[len(w.free)-1]
	w.free = w.free[:len(w.free)-1]
	next := w.spare[len(w.spare)-1]
	w.spare = w.spare[:len(w.spare)-1]
	w.inflight++
	w.chunks++
	w.pending = append(w.pending, chunkIO{w.chunks, w.buf})
	w.cmu.Unlock()
	// The sectors before the one the last round's write ended in are
	// written already.
	from := w.tailLen &^ (w.f.align.Offset - 1)
	r.Off, r.Buf, r.Flags, r.Tag = w.bufOff+from, w.buf[from:], 0, w.chunks
	if err := w.f.submit(r); err != nil {
		w.cmu.Lock()
		w.pending = w.pending[:len(w.pending)-1]
		w.inflight--
		w.free = append(w.free, r)
		w.spare = append(w.spare, next)
		w.cmu.Unlock()
		return err
	}
	w.dirty = true
	w.buf = next
	return nil
}

// written is the completion of a chunk written behind (Inline, on the
// reaper): it gives the buffer back and records an error.
func (w *appender) written(r *Request) {
	_, err := r.Result()
	w.cmu.Lock()
	r.Buf = nil
	if err != nil && w.werr == nil {
		w.werr = err
	}
	w.inflight--
	w.free = append(w.free, r)
	for i, c := range w.pending {
		if c.n == r.Tag {
			w.spare = append(w.spare, c.buf)
			w.pending = append(w.pending[:i], w.pending[i+1:]...)
			break
		}
	}
	w.ccond.Broadcast()
	w.cmu.Unlock()
}

// waitChunks waits until the chunks written behind up to number upTo are
// written, and returns the first error a chunk reported.
func (w *appender) waitChunks(upTo uint64) error {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	for len(w.pending) > 0 && w.pending[0].n <= upTo && w.werr == nil {
		w.ccond.Wait()
	}
	return w.werr
}

// drain waits for every chunk in flight and returns the first error a
// chunk reported. Called with mu held.
func (w *appender) drain() error {
	w.cmu.Lock()
	for w.inflight > 0 {
		w.ccond.Wait()
	}
	err := w.werr
	w.cmu.Unlock()
	if err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}

func (w *appender) SyncData() error { return w.sync(true) }

func (w *appender) Sync() error { return w.sync(false) }

// sync is a group commit in two stages. Writes: a waiter is covered by
// the first round that takes its snapshot after the waiter's Write; it
// waits for that round if one is in flight, and otherwise leads a new one,
// which writes the tail sectors its snapshot found. Rounds' writes overlap
// (up to maxRounds), except that a round whose first sector is the last
// one of the round before waits for that round's write: two writes of one
// sector in flight could land in either order. Flushes: one fdatasync at a
// time covers every round written before it began; whoever finds no flush
// running and a written round not yet durable runs the next one. A lone
// committer's round, with nothing else to make durable, is one RWF_DSYNC
// write instead. Everyone returns once every byte they wrote before the
// call is durable.
func (w *appender) sync(data bool) error {
	if !data {
		if err := w.sync(true); err != nil {
			return err
		}
		return w.f.syncRef(false) // the metadata too: an fsync after the data
	}
	w.mu.Lock()
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return err
	}
	target := w.bufOff + w.n
	w.mu.Unlock()
	w.smu.Lock()
	defer w.smu.Unlock()
	for {
		if w.failed || w.synced >= target {
			break
		}
		var last *commitRound
		if k := len(w.rounds); k > 0 {
			last = w.rounds[k-1]
		}
		switch {
		case last != nil && (!last.snapped || last.covered >= target):
			if !w.flush() { // a round in flight covers it: flush what is written
				w.scond.Wait()
			}
		case !w.closing && (last == nil || len(w.rounds) < maxRounds && last.snapped && last.aligned):
			rd := &commitRound{}
			w.rounds = append(w.rounds, rd)
			w.smu.Unlock()
			err := w.round(rd)
			w.smu.Lock()
			rd.written, rd.err = true, err
			w.failed = w.failed || err != nil
			w.scond.Broadcast()
		default:
			w.scond.Wait()
		}
	}
	if w.failed {
		return w.stickyErr()
	}
	return nil
}

// flush runs the next flush if none is running and a written round waits
// for one, and reports whether it did. Called with smu held; it lets go
// of it while the flush runs.
func (w *appender) flush() bool {
	end, k := int64(-1), 0
	for ; k < len(w.rounds) && w.rounds[k].written; k++ {
		end = w.rounds[k].covered
	}
	if w.flushing || end <= w.synced {
		return false
	}
	w.flushing = true
	w.smu.Unlock()
	var err error
	if durability.EarlyAck.Load() {
		go w.f.syncRef(true) // the power-loss tests' counter-check: acknowledge now, sync later
	} else {
		err = w.f.syncRef(true)
	}
	w.smu.Lock()
	w.flushing = false
	if err != nil {
		w.mu.Lock()
		w.err = w.f.opErr("sync", end, 0, err)
		w.mu.Unlock()
		w.failed = true
	} else {
		w.synced = max(w.synced, end)
		w.rounds = w.rounds[k:]
	}
	w.scond.Broadcast()
	return true
}

func (w *appender) stickyErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.usable()
}

// round is a group commit round's write (sync): snapshot, the chunks
// written behind before it done, the tail sectors written.
func (w *appender) round(rd *commitRound) error {
	off, tail, chunks, dirty, err := w.snapshot(rd)
	w.smu.Lock()
	rd.snapped = true
	lone := len(w.rounds) == 1 && !dirty && !durability.EarlyAck.Load()
	w.scond.Broadcast()
	w.smu.Unlock()
	if err == nil && dirty { // the flush that covers this round covers them
		err = w.waitChunks(chunks)
	}
	if err == nil && len(tail) > 0 {
		var fl Flags
		if lone { // nothing else to make durable: one RWF_DSYNC write
			fl = DSync
		}
		_, err = w.f.directIO(context.Background(), Write, tail, off, fl, false)
		if err == nil && lone {
			w.smu.Lock()
			w.synced = max(w.synced, rd.covered) // every round before it is done
			w.rounds = slices.DeleteFunc(w.rounds, func(r *commitRound) bool { return r == rd })
			w.smu.Unlock()
		}
	}
	w.mu.Lock()
	if len(tail) > 0 {
		w.tailBusy--
		w.mcond.Broadcast()
	}
	if err != nil && w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	w.f.eng.Bufs.Put(rd.tbuf)
	return err
}

// snapshot starts a round under mu: the tail sectors not yet written (from
// the one the last round's write ended in), copied into a bounce buffer
// padded with zeroes, where they go, and the chunks written behind so far
// and whether any were since the last round. It records what the round
// covers in rd.
func (w *appender) snapshot(rd *commitRound) (off int64, tail []byte, chunks uint64, dirty bool, err error) {
	// The buffer before mu: the rounds in flight give theirs back after
	// they took mu.
	if rd.tbuf, err = w.f.eng.Bufs.Get(w.chunk); err != nil {
		return 0, nil, 0, false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.behind > 0 {
		w.mcond.Wait()
	}
	if err := w.usable(); err != nil {
		return 0, nil, 0, false, err
	}
	a := w.f.align.Offset
	rd.covered, rd.aligned = w.bufOff+w.n, w.n%a == 0
	chunks, dirty = w.chunks, w.dirty
	w.dirty = false
	if w.n > w.tailLen {
		from, m := w.tailLen&^(a-1), alignUp(w.n, a)
		k := copy(rd.tbuf, w.buf[from:w.n])
		clear(rd.tbuf[k : m-from])
		off, tail = w.bufOff+from, rd.tbuf[:m-from]
		w.tailLen = w.n
		w.tailBusy++
	}
	return off, tail, chunks, dirty, nil
}

func (w *appender) Close() error {
	w.smu.Lock()
	w.closing = true // no round starts; wait for those in flight
	for len(w.rounds) > 0 && !w.failed && !w.flush() {
		w.scond.Wait()
	}
	w.smu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.f.opErr("close", w.bufOff+w.n, 0, ErrClosed)
	}
	w.closed = true
	err := w.drain()
	size := w.bufOff + w.n
	if a := w.f.align.Offset; err == nil && w.n > w.tailLen {
		from, m := w.tailLen&^(a-1), alignUp(w.n, a)
		clear(w.buf[w.n:m])
		err = w.writeOut(w.buf[from:m], w.bufOff+from, 0)
	}
	if err == nil {
		err = w.f.spaceOp("truncate", size, 0)
	}
	if err == nil {
		if serr := w.f.syncRef(false); serr != nil {
			err = w.f.opErr("sync", size, 0, serr)
		}
	}
	w.releaseBufs()
	return err
}

// releaseBufs gives the Appender's buffers back.
func (w *appender) releaseBufs() {
	w.cmu.Lock()
	bufs := append(w.spare, w.buf)
	w.spare, w.buf = nil, nil
	w.cmu.Unlock()
	if !w.heap {
		w.f.eng.Bufs.Release(bufs)
	}
}

// readHead reads the bytes before the start offset in its sector into the
// chunk.
func (w *appender) readHead(a int64) error {
	if !w.heap {
		return w.f.readSector(context.Background(), w.buf[:a], w.bufOff)
	}
	b, err := w.f.eng.Bufs.Get(a)
	if err != nil {
		return err
	}
	defer w.f.eng.Bufs.Put(b)
	err = w.f.readSector(context.Background(), b[:a], w.bufOff)
	copy(w.buf, b[:a])
	return err
}

// writeOut writes b at off synchronously: straight from b, or through a
// bounce buffer where the chunk is Go memory (heap).
func (w *appender) writeOut(b []byte, off int64, fl Flags) error {
	if !w.heap {
		_, err := w.f.directIO(context.Background(), Write, b, off, fl, false)
		return err
	}
	buf, err := w.f.eng.Bufs.Get(int64(len(b)))
	if err != nil {
		return err
	}
	defer w.f.eng.Bufs.Put(buf)
	n := copy(buf, b)
	_, err = w.f.directIO(context.Background(), Write, buf[:n], off, fl, false)
	return err
}

// syncRef fsyncs (or fdatasyncs) the file with the descriptor held.
func (f *File) syncRef(data bool) error {
	if !f.acquire() {
		return ErrClosed
	}
	defer f.release()
	f.eng.C.Syncs.Add(1)
	return f.syncFds(data)
}
