//go:build linux

package dio

import (
	"context"
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
// Concurrent SyncData (and Sync) calls are a group commit: a sync that
// starts after a caller's bytes were handed to the kernel covers that
// caller too, so one fdatasync serves all who wait for it (or, when every
// byte not yet durable is in the last chunk, one write of it with
// RWF_DSYNC, and no fdatasync). Errors are sticky: after a failed write or
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

// appender is the Appender.
type appender struct {
	f     *File
	chunk int64
	max   int

	mu      sync.Mutex // the chunk being filled and the Appender's state
	buf     []byte     // the chunk being filled, from the engine's pool
	heap    bool       // buf is Go memory: the pool had no room (writeOut)
	bufOff  int64      // its file offset (aligned)
	n       int64      // bytes in it
	err     error      // sticky
	closed  bool
	dirty   bool // chunks written since the last sync
	tailLen int64

	// Chunks written behind: requests, their completion state, and the
	// buffers not in use (one per free request).
	cmu      sync.Mutex
	ccond    sync.Cond
	inflight int
	werr     error
	free     []*Request
	spare    [][]byte

	// Group commit.
	smu     sync.Mutex
	scond   sync.Cond
	syncing bool
	synced  int64 // every byte below is durable
}

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
	w.ccond.L, w.scond.L = &w.cmu, &w.smu
	if len(bufs) == 0 {
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
	if w.max == 0 {
		// One buffer: write it now and fill it again.
		if err := w.writeOut(w.buf, w.bufOff, 0); err != nil {
			w.err = err
			return err
		}
		w.dirty = true
		w.bufOff += w.chunk
		w.n, w.tailLen = 0, 0
		return nil
	}
	w.cmu.Lock()
	for len(w.free) == 0 && w.werr == nil {
		w.ccond.Wait()
	}
	if w.werr != nil {
		w.err = w.werr
		w.cmu.Unlock()
		return w.err
	}
	r := w.free[len(w.free)-1]
	w.free = w.free[:len(w.free)-1]
	next := w.spare[len(w.spare)-1]
	w.spare = w.spare[:len(w.spare)-1]
	w.inflight++
	w.cmu.Unlock()
	r.Off, r.Buf, r.Flags = w.bufOff, w.buf, 0
	if err := w.f.submit(r); err != nil {
		w.cmu.Lock()
		w.inflight--
		w.free = append(w.free, r)
		w.spare = append(w.spare, next)
		w.cmu.Unlock()
		w.err = err
		return err
	}
	w.dirty = true
	w.bufOff += w.chunk
	w.n, w.tailLen = 0, 0
	w.buf = next
	return nil
}

// written is the completion of a chunk written behind (Inline, on the
// reaper): it gives the buffer back and records an error.
func (w *appender) written(r *Request) {
	_, err := r.Result()
	w.cmu.Lock()
	w.spare = append(w.spare, r.Buf)
	r.Buf = nil
	if err != nil && w.werr == nil {
		w.werr = err
	}
	w.inflight--
	w.free = append(w.free, r)
	w.ccond.Broadcast()
	w.cmu.Unlock()
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

func (w *appender) sync(data bool) error {
	w.mu.Lock()
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return err
	}
	target := w.bufOff + w.n
	w.mu.Unlock()
	w.smu.Lock()
	for {
		if w.synced >= target && data {
			w.smu.Unlock()
			return w.stickyErr()
		}
		if !w.syncing {
			break
		}
		w.scond.Wait()
	}
	w.syncing = true
	w.smu.Unlock()
	covered, err := w.flushAndSync(data)
	w.smu.Lock()
	w.syncing = false
	if err == nil {
		w.synced = max(w.synced, covered)
	}
	w.scond.Broadcast()
	w.smu.Unlock()
	return err
}

func (w *appender) stickyErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.usable()
}

// flushAndSync writes every chunk and the padded tail and makes them
// durable: the group commit's one sync. It returns the size it covered.
func (w *appender) flushAndSync(data bool) (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return 0, err
	}
	covered := w.bufOff + w.n
	if err := w.drain(); err != nil {
		return 0, err
	}
	if durability.EarlyAck.Load() {
		// The power-loss tests' counter-check: acknowledge now, sync later.
		if w.n > w.tailLen {
			if err := w.writeTail(0); err != nil {
				return 0, err
			}
		}
		w.dirty = false
		go w.f.syncRef(data)
		return covered, nil
	}
	// Only the last chunk is not yet durable: one RWF_DSYNC write of it
	// is the whole sync.
	through := data && !w.dirty && w.n > w.tailLen
	if w.n > w.tailLen {
		var fl Flags
		if through {
			fl = DSync
		}
		if err := w.writeTail(fl); err != nil {
			return 0, err
		}
	}
	if !through {
		if err := w.f.syncRef(data); err != nil {
			w.err = w.f.opErr("sync", covered, 0, err)
			return 0, w.err
		}
	}
	w.dirty = false
	return covered, nil
}

// writeTail writes the chunk being filled, padded with zeroes to the
// alignment. Called with mu held.
//
// Only the sectors from the one the last tail write ended in are written:
// those before it are on disk already, unchanged since (the chunk only
// grows), so a log of small commits writes a sector or two per commit,
// not the whole chunk again.
func (w *appender) writeTail(fl Flags) error {
	a := w.f.align.Offset
	m := alignUp(w.n, a)
	from := w.tailLen &^ (a - 1)
	clear(w.buf[w.n:m])
	if err := w.writeOut(w.buf[from:m], w.bufOff+from, fl); err != nil {
		w.err = err
		return err
	}
	w.tailLen = w.n
	return nil
}

func (w *appender) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.f.opErr("close", w.bufOff+w.n, 0, ErrClosed)
	}
	w.closed = true
	err := w.drain()
	size := w.bufOff + w.n
	if err == nil && w.n > w.tailLen {
		err = w.writeTail(0)
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
