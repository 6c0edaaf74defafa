//go:build linux

package dio

import (
	"context"
	"errors"
	"math"
	"sync"
	"syscall"
	"unsafe"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/choose"
	"github.com/uringdio/uringdio/internal/durability"
	"github.com/uringdio/uringdio/internal/engine"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

// Requests to the engine: a request is checked, takes its File's
// reference and (where it needs it) the I/O lock, is mapped to pieces
// (one SQE each: the kernel's identity mapping on a kernel file, iomap's
// loop over a mapped file), and launched.

// errEmpty is returned by Submit for a request with no bytes.
var errEmpty = errors.New("dio: zero-length request")

func init() {
	launchAdmitted = func(r *Request) { r.file.launchQueued(r) }
}

// submit is Submit below the API: Appender and ReadAhead use it.
func (f *File) submit(r *Request) error {
	// Idle, complete, or in its own callback (Result): the callback may
	// resubmit the request it was given.
	if s := r.x.State.Load(); s != engine.Idle && s != engine.Complete && s != engine.Result {
		return &OpError{Op: r.Op.String(), Path: f.path, Off: r.Off, Err: errors.New("request resubmitted while in flight")}
	}
	switch {
	case r.Op == Read || r.Op == Write:
		if err := f.checkRange(r.Op, r.Off, r.totalLen()); err != nil {
			return f.opErr(r.Op.String(), r.Off, r.totalLen(), err)
		}
	case r.Op == Preallocate && r.Len > 0 && r.Off > math.MaxInt64-r.Len:
		return f.opErr(r.Op.String(), r.Off, r.Len, syscall.EFBIG)
	case r.Op > Preallocate:
		return f.opErr(r.Op.String(), r.Off, 0, errUnknownOp)
	}
	return f.start(r, false)
}

// directIO is a synchronous request of aligned memory at an aligned
// offset: the kernel reads into or writes from p itself. owned marks the
// I/O of the lock's exclusive holder (volume.go).
func (f *File) directIO(ctx context.Context, op Op, p []byte, off int64, fl Flags, owned bool) (int, error) {
	r := getReq()
	r.Op, r.Off, r.Buf, r.Flags = op, off, p, fl
	r.owned = owned
	r.lk.done = ctx.Done()
	err := f.start(r, true)
	r.lk.done = nil
	if err != nil {
		putReq(r)
		return 0, err
	}
	f.eng.Await(&r.x, ctx.Done())
	n, err := int(r.n), r.err
	putReq(r)
	return n, err
}

// start checks r, takes the File's reference, and (through the lock where
// r needs it) maps and launches it. An error means nothing was submitted
// and r is the caller's again.
func (f *File) start(r *Request, sync bool) error {
	length := r.totalLen()
	// The reference is taken before the closed check: Close either sees
	// it and waits, or start sees closed and backs out.
	f.refs.n.Add(1)
	if err := f.admissible(r, length); err != nil {
		f.release()
		return f.opErr(r.Op.String(), r.Off, length, err)
	}
	f.begin(r, length, sync)
	switch {
	case r.Op.control():
		r.length, r.want, r.x.StopAt = 0, 0, r.Off
		if r.Op == Preallocate {
			return f.startLocked(r, sync) // a space change: the lock alone
		}
		return f.launch(r, sync, false)
	case length == 0:
		if !sync {
			f.release()
			return f.opErr(r.Op.String(), r.Off, 0, errEmpty)
		}
		r.x.Policy = completion.Wait
		r.n = r.DoneBefore
		f.release() // completed here: no completion runs
		r.x.Completed()
		return nil
	case f.gated(r):
		return f.startLocked(r, sync)
	}
	return f.launch(r, sync, false)
}

// admissible reports why r cannot start on f, if it cannot.
func (f *File) admissible(r *Request, length int64) error {
	switch {
	case f.refs.closed.Load() || f.eng.Closed():
		return ErrClosed
	case f.eng.Broken():
		return ErrRingBroken
	case (r.Op == Write || r.Op == Preallocate) && !f.mode.writable:
		return readOnlyErr{}
	case r.Op.control():
		if r.Op == Preallocate && (r.Off < 0 || r.Len <= 0) {
			return syscall.EINVAL
		}
		if r.Op == Preallocate && f.vol != nil {
			return unsupported("an asynchronous Preallocate on a mapped file: use File.Preallocate")
		}
		return nil
	case r.Off < 0:
		return syscall.EINVAL
	case r.Flags&OverwriteOnly != 0 && f.vol == nil:
		return unsupported("OverwriteOnly on a kernel file: whether a write allocates is the file system's to know (open with Options.Mapper to answer from a mapper)")
	}
	if err := f.checkAlign(r); err != nil {
		return err
	}
	if r.Flags&Atomic != 0 && length > 0 {
		return f.checkAtomic(r, length)
	}
	return nil
}

// begin readies r for this use: it belongs to f until it completes.
func (f *File) begin(r *Request, length int64, sync bool) {
	r.file = f
	r.x.Begin(r.Off + length)
	r.x.Base, r.x.NoWait, r.x.Pread = r.Off, r.Flags&NoWait != 0, f.mode.pread
	r.x.Hooks, r.x.SQEHook = (*reqHooks)(r), f.hooks.sqe
	r.x.Direct = sync && f.hooks.sqe == nil && f.vol == nil && !r.Op.control()
	r.submitted, r.cur = 0, memCursor{}
	r.n, r.err, r.conv, r.fileDec = 0, nil, conversion{}, false
	r.async = !sync
	r.length, r.want, r.sizeAt = length, length, -1 // -1: a kernel file, whose reads the kernel ends
	r.lk.w.Value, r.lk.w.Held = r, false
	r.lk.admitted.Store(false)
	if f.vol != nil && !r.Op.control() {
		r.sizeAt = f.vol.size.Load()
		r.clipRead()
	}
}

// startLocked takes the File's lock for r (exclusive for a volume write
// that needs sub-block zeroing), then launches it. An asynchronous r the
// lock cannot admit now is queued and launched when it is (never blocking
// Submit); a synchronous one waits here.
func (f *File) startLocked(r *Request, sync bool) error {
	zbs := int64(0)
	if f.vol != nil {
		zbs = f.vol.zeroBS
	}
	r.lk.w.Excl = r.Op == Preallocate || r.Op == Write && zbs > 0 && (r.Off%zbs != 0 || (r.Off+r.length)%zbs != 0)
	r.lk.sync = sync
	nowait := r.Flags&NoWait != 0
	// In flight before it is queued: once queued, whoever releases the
	// lock may launch and complete it. Wait waits for it meanwhile.
	prev := r.x.State.Swap(engine.Inflight)
	var err error
	switch {
	case nowait:
		if !f.lock.Enter(&r.lk.w, true) {
			err = syscall.EAGAIN // like the kernel's IOCB_NOWAIT on a contended inode lock
		}
	case sync:
		err = f.enterSync(r)
	case !f.lock.Enter(&r.lk.w, false):
		return nil // launched when the lock admits it
	}
	if err != nil {
		r.x.State.Store(prev)
		f.release()
		return f.opErr(r.Op.String(), r.Off, r.length, err)
	}
	if err := f.launch(r, sync, false); err != nil {
		r.x.State.Store(prev) // nothing submitted: the request is the caller's again
		return err
	}
	return nil
}

// mapControl maps an Fsync, Fdatasync or Preallocate: a piece per target
// for a sync (a volume syncs every device), one on the file for a
// Preallocate.
func (f *File) mapControl(r *Request) {
	ctl := engine.Fallocate
	switch r.Op {
	case Fsync:
		ctl = engine.Fsync
	case Fdatasync:
		ctl = engine.Fdatasync
	}
	for t := range f.targets {
		if r.Op != Preallocate && durability.SkipSync.Load() {
			break // the power-loss tests' counter-check: no sync at all
		}
		fd, reg, _ := f.target(t)
		r.x.Pieces = append(r.x.Pieces, engine.Piece{Ctl: ctl, CtlLen: r.Len, Fd: fd, RegFile: reg, Off: r.Off, LogOff: r.Off})
		if r.Op == Preallocate {
			break
		}
	}
}

// launchQueued launches an asynchronous request the lock admitted after
// its Submit returned. An error can no longer be returned to the
// submitter: the request completes with it, through its policy, having
// moved no data.
func (f *File) launchQueued(r *Request) {
	err := f.launch(r, false, true)
	if err == nil {
		return
	}
	var oe *OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	f.completeUnlaunched(r, err)
}

// clipRead limits a read of a mapped file to its size: the mapper's size
// is the truth there. A kernel file's reads go to the kernel, which ends
// them at its own end of file.
func (r *Request) clipRead() {
	if r.Op != Read || r.owned {
		return
	}
	if r.Off >= r.sizeAt {
		// Entirely past the end: no I/O; the request still completes
		// through its policy, with 0 bytes and io.EOF.
		r.want, r.x.StopAt = 0, r.Off
	} else if end := r.Off + r.length; end > r.sizeAt {
		// Read up to the alignment past the end; the result is clipped.
		r.want = alignUp(r.sizeAt-r.Off, r.file.align.Offset)
	}
}

// launch maps r and hands its pieces to the engine: the second half of
// start, run by the submitter or, for a request that waited for the lock,
// by whoever let it in (deferred: its Submit has returned, and on error
// it keeps the File's reference for the completion that reports it). An
// error means nothing was submitted.
func (f *File) launch(r *Request, sync, deferred bool) error {
	bad := func(err error) error {
		f.gateRelease(r)
		if !deferred {
			f.release()
		}
		return f.opErr(r.Op.String(), r.Off, r.length, err)
	}
	if r.lk.w.Held && f.vol != nil {
		// It may have waited for the lock: the world moved on meanwhile.
		r.sizeAt = f.vol.size.Load()
		r.want, r.x.StopAt = r.length, r.Off+r.length
		r.clipRead()
	}
	if r.lk.w.Held && f.eng.Broken() {
		return bad(ErrRingBroken)
	}
	pure := true
	switch {
	case r.Op.control():
		f.mapControl(r)
	case f.vol == nil:
		f.mapKernel(r)
	default:
		var err error
		if pure, err = f.mapRequest(r); err != nil {
			if r.Flags&Partial == 0 || r.submitted == 0 {
				return bad(err)
			}
			r.x.SetErr(err, r.Off+r.submitted)
		}
	}
	if r.Op == Write && r.Flags&(NoWait|Partial) == NoWait && len(r.x.Pieces) > 1 {
		// More than one SQE could half-complete: refuse up front, unless
		// the caller takes a partial result (Partial).
		return bad(syscall.EAGAIN)
	}
	f.setFlags(r, pure, sync)
	r.choosePolicy(sync)
	f.eng.Launch(&r.x, sync)
	return nil
}

// setFlags puts the request's RWF flags on its pieces and records the
// facts its completion policy is chosen from. Durability: a kernel file's
// write is made durable by the kernel (RWF_DSYNC/RWF_SYNC: a FUA write or
// a cache flush, plus whatever metadata the write changed). On a mapped
// file, write-through when every extent is a pure overwrite and the size
// does not move; otherwise fdatasync/fsync after the data, once the mapper
// has converted what the write allocated.
func (f *File) setFlags(r *Request, pure, sync bool) {
	extends := r.Op == Write && f.vol != nil && r.Off+r.submitted > r.sizeAt
	var needsSync, through bool
	var rwf uint32
	if r.Op == Write && r.Flags&(DSync|Sync) != 0 && !durability.SkipSync.Load() {
		rwf = ring.RWFDSync
		switch {
		case f.vol == nil && r.Flags&Sync != 0:
			through, rwf = true, ring.RWFSync
		case f.vol == nil || (r.Flags&Sync == 0 && pure && !extends):
			through = true
		default:
			needsSync, rwf = true, 0
		}
	}
	if r.Flags&NoWait != 0 {
		rwf |= ring.RWFNoWait
	}
	if r.Flags&Atomic != 0 {
		rwf |= ring.RWFAtomic
	}
	if rwf != 0 {
		for i := range r.x.Pieces {
			r.x.Pieces[i].RWFlags |= rwf
		}
	}
	r.facts = choose.Facts{
		Sync: sync, Write: r.Op == Write, PureOverwrite: pure, Extends: extends,
		NeedsSync: needsSync, WriteThrough: through, SingleSQE: len(r.x.Pieces) <= 1,
		PolledRing: f.eng.IOPoll(), HasEndIO: f.hooks.endIO != nil,
	}
}

// mapKernel maps r on a kernel file: the identity, split at the maximum
// I/O size and at buffer boundaries, one piece per SQE.
func (f *File) mapKernel(r *Request) {
	fd, reg := f.fd, false
	if f.regIdx >= 0 {
		fd, reg = f.regIdx, true
	}
	for pos, end := r.Off, r.Off+r.want; pos < end; {
		b := r.mem(pos - r.Off)
		l := min(int64(len(b)), end-pos, f.maxIO)
		r.x.Pieces = append(r.x.Pieces, engine.Piece{
			Fd: fd, RegFile: reg, Fixed: f.eng.Fixed(b[:l]), Write: r.Op == Write,
			Addr: addrOf(b), N: uint32(l), Off: pos, LogOff: pos,
		})
		pos += l
	}
	r.submitted = r.want
}

// mapRequest runs the iomap loop over the request and turns each mapping
// into pieces (or zero-fill, for reads of holes and unwritten extents). It
// reports whether every extent was a pure overwrite.
func (f *File) mapRequest(r *Request) (pure bool, err error) {
	op := iomap.OpDirect
	if r.Op == Write {
		op |= iomap.OpWrite
	}
	if r.Flags&NoWait != 0 {
		op |= iomap.OpNoWait
	}
	if r.Flags&OverwriteOnly != 0 {
		op |= iomap.OpOverwriteOnly
	}
	pure = true
	it := iomap.NewIter(r.Off, r.want, op)
	for it.Next(f.mapper) {
		m := it.Mapping()
		pos, n := it.Pos(), it.Len()
		if err := f.mapOne(r, m, pos, n, &pure); err != nil {
			it.SetErr(err)
			continue
		}
		r.submitted = pos + n - r.Off
		it.Advance(n)
	}
	return pure, it.Err()
}

// mapOne handles [pos, pos+n) of mapping m (iomap_dio_iter's switch).
func (f *File) mapOne(r *Request, m *iomap.Mapping, pos, n int64, pure *bool) error {
	if r.Op == Read {
		return f.mapRead(r, m, pos, n)
	}
	switch m.Type {
	case iomap.Delalloc:
		return errDelalloc
	case iomap.Hole:
		// Only a mapper that leaves allocation to the kernel returns a hole
		// for a write (a file through its filesystem).
		if m.Target != 0 {
			return unsupported("write to a hole on target " + itoa(m.Target) + ": the mapper must allocate")
		}
		*pure = false
	case iomap.Unwritten:
		*pure = false
	case iomap.Inline:
		if m.Data != nil {
			return unsupported("write to inline data")
		}
	}
	if m.Flags&(iomap.FlagNew|iomap.FlagShared|iomap.FlagDirty) != 0 {
		*pure = false
	}
	// Sub-block zeroing: where the mapper allocates in blocks larger than
	// the I/O alignment, a write into a new or unwritten block must zero
	// the parts of the block it does not cover.
	if bs := m.BlockSize; bs > f.align.Offset && (m.Flags&iomap.FlagNew != 0 || m.Type == iomap.Unwritten) {
		if m.Flags&iomap.FlagShared != 0 && (pos%bs != 0 || (pos+n)%bs != 0) {
			return unsupported("partial-block write to a shared (cloned) extent")
		}
		if head := pos &^ (bs - 1); head < pos && head >= m.Offset {
			if err := f.addZero(r, m, head, pos-head); err != nil {
				return err
			}
		}
		if end := pos + n; end%bs != 0 && (end|(bs-1))+1 <= m.Offset+m.Length {
			if err := f.addZero(r, m, end, ((end|(bs-1))+1)-end); err != nil {
				return err
			}
		}
	}
	return f.addPieces(r, m, pos, n, true)
}

// mapRead handles a read of [pos, pos+n) of mapping m.
func (f *File) mapRead(r *Request, m *iomap.Mapping, pos, n int64) error {
	switch m.Type {
	case iomap.Hole, iomap.Unwritten:
		r.zero(pos-r.Off, n) // no I/O: reads as zeroes
		return nil
	case iomap.Inline:
		if m.Data == nil {
			break // the filesystem serves it through O_DIRECT itself
		}
		for done := int64(0); done < n; {
			b := r.mem(pos + done - r.Off)
			l := min(int64(len(b)), n-done)
			copy(b[:l], m.Data[pos+done-m.Offset:])
			done += l
		}
		return nil
	case iomap.Delalloc:
		return errDelalloc
	}
	return f.addPieces(r, m, pos, n, false)
}

// addPieces splits [pos, pos+n) of m at the max I/O size and at buffer
// boundaries, one piece per SQE.
func (f *File) addPieces(r *Request, m *iomap.Mapping, pos, n int64, write bool) error {
	fd, reg, err := f.target(m.Target)
	if err != nil {
		return err
	}
	addr := m.Addr + (pos - m.Offset)
	if m.Addr == iomap.NoAddr {
		addr = pos
	}
	a := f.align.Offset
	for n > 0 {
		b := r.mem(pos - r.Off)
		l := min(int64(len(b)), n, f.maxIO)
		sqeLen := l
		if !write && (pos+l)%a != 0 {
			// A mapping that ends at an unaligned EOF: read up to the
			// alignment; the kernel stops at EOF and returns the short count.
			sqeLen = min(alignUp(pos+l, a)-pos, int64(len(b)))
		}
		fixed := f.eng.Fixed(b[:sqeLen])
		if q := r.lastPiece(); write && q != nil && q.LogOff >= 0 && (q.LogOff+int64(q.N))%a != 0 &&
			q.LogOff+int64(q.N) == pos && q.Off+int64(q.N) == addr && unsafe.Add(q.Addr, q.N) == addrOf(b) &&
			q.Fd == fd && q.RegFile == reg && q.Fixed == fixed && int64(q.N) < f.maxIO && r.contiguous(q.LogOff, int64(q.N)+l) {
			// The previous mapping ended at an unaligned offset (the EOF of
			// a file whose size is not a multiple of the alignment): an SQE
			// ending there, and one starting there, would fail with EINVAL.
			// Carry the previous piece on instead, as one write.
			l = min(l, f.maxIO-int64(q.N))
			q.N += uint32(l)
		} else {
			r.x.Pieces = append(r.x.Pieces, engine.Piece{Fd: fd, RegFile: reg, Fixed: fixed, Write: write,
				Addr: addrOf(b), N: uint32(sqeLen), Off: addr, LogOff: pos})
		}
		pos += l
		addr += l
		n -= l
	}
	return nil
}

// contiguous reports whether the request's memory from logical position
// off on holds n bytes in one buffer.
func (r *Request) contiguous(off, n int64) bool { return int64(len(r.mem(off-r.Off))) >= n }

// lastPiece returns the request's last piece, or nil.
func (r *Request) lastPiece() *engine.Piece {
	if len(r.x.Pieces) == 0 {
		return nil
	}
	return &r.x.Pieces[len(r.x.Pieces)-1]
}

// addZero adds a write of zeroes over [pos, pos+n) of m.
func (f *File) addZero(r *Request, m *iomap.Mapping, pos, n int64) error {
	fd, reg, err := f.target(m.Target)
	if err != nil {
		return err
	}
	z, err := zeroBytes(n)
	if err != nil {
		return err
	}
	r.x.Pieces = append(r.x.Pieces, engine.Piece{Fd: fd, RegFile: reg, Write: true,
		Addr: addrOf(z), N: uint32(n), Off: m.Addr + (pos - m.Offset), LogOff: -1}) // not the caller's data
	return nil
}

// target returns the descriptor (or registered slot) of target t.
func (f *File) target(t int) (int32, bool, error) {
	if t < 0 || t >= len(f.targets) {
		return 0, false, unsupported("mapping names target " + itoa(t) + " but the file has " + itoa(len(f.targets)) + " (see Options.Targets)")
	}
	if t == 0 && f.regIdx >= 0 {
		return f.regIdx, true, nil
	}
	return f.targets[t], false, nil
}

// zeroes is off-heap memory that holds only zeroes, for the pieces that
// zero sub-blocks: grown as a block needs, and kept for the process (an
// outgrown one may still be in flight).
var zeroes struct {
	mu  sync.Mutex
	b   []byte
	old [][]byte
}

func zeroBytes(n int64) ([]byte, error) {
	zeroes.mu.Lock()
	defer zeroes.mu.Unlock()
	if int64(len(zeroes.b)) < n {
		b, err := ring.Alloc(int(max(n, 64<<10)))
		if err != nil {
			return nil, err
		}
		zeroes.old, zeroes.b = append(zeroes.old, zeroes.b), b
	}
	return zeroes.b[:n], nil
}
