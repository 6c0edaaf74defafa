//go:build linux

package dio

import (
	"errors"
	"strconv"
	"syscall"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/internal/choose"
	"github.com/uringdio/uringdio/internal/durability"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

// errEmpty is returned by Submit for a request with no bytes.
var errEmpty = errors.New("dio: zero-length request")

// start validates r, maps it to pieces (iter.go's loop) and queues the
// pieces on the engine. An error means nothing was submitted.
func (f *File) start(r *Request, sync bool) error {
	length := r.totalLen()
	// The File's in-flight reference is taken before the closed check:
	// Close either sees it and waits, or start sees closed and backs out.
	// Taken after mapping, it let Close find nothing in flight and close
	// the descriptor under a request about to be queued with it.
	f.inflight.Add(1)
	bad := func(err error) error {
		f.release()
		return f.opErr(r.Op.String(), r.Off, length, err)
	}
	if f.closed.Load() || f.eng.closed.Load() {
		return bad(ErrClosed)
	}
	if f.eng.broken.Load() {
		return bad(ErrRingBroken)
	}
	if (r.Op == Write || r.Op == Preallocate) && !f.writable {
		return bad(readOnlyErr{})
	}
	if r.Op.control() {
		return f.startControl(r, sync, bad)
	}
	if r.Off < 0 {
		return bad(syscall.EINVAL)
	}
	if r.Flags&OverwriteOnly != 0 && f.vol == nil {
		return bad(unsupported("OverwriteOnly on a kernel file: whether a write allocates is the file system's to know (open with Options.Mapper to answer from a mapper)"))
	}
	if err := f.checkAlign(r); err != nil {
		return bad(err)
	}
	if r.Flags&Atomic != 0 && length > 0 {
		if err := f.checkAtomic(r, length); err != nil {
			return bad(err)
		}
	}

	r.file = f
	r.pieces = r.pieces[:0]
	r.next, r.submitted, r.curBuf, r.curOff = 0, 0, 0, 0
	r.errno, r.err, r.n = nil, nil, 0
	r.converted, r.convErr = false, nil
	r.cancelled.Store(false)
	r.fileDec = false
	r.subGen.Add(1)
	r.once.Reset()
	r.async = !sync
	r.length = length
	r.want = length
	r.stopAt = r.Off + length
	r.sizeAt = -1 // a kernel file: the kernel ends reads

	if length == 0 {
		if !sync {
			return bad(errEmpty)
		}
		r.policy = completion.Wait
		r.n = r.DoneBefore
		r.once.Claim() // completed here, without the file's in-flight ref: no runCompletion
		f.release()
		r.state.Store(stateComplete)
		return nil
	}
	if f.vol != nil {
		r.sizeAt = f.vol.size.Load()
		r.clipRead()
	}

	r.gateHeld = false
	r.gateAdmitted.Store(false)
	if f.gated(r) {
		// Requests on a volume pass its gate (gate.go) before they are
		// mapped: writes that need sub-block zeroing alone, the rest
		// together.
		var zbs int64
		if f.vol != nil {
			zbs = f.vol.zeroBS
		}
		r.gateExcl = r.Op == Write && zbs > 0 && (r.Off%zbs != 0 || (r.Off+length)%zbs != 0)
		r.gateSync = sync
		nowait := r.Flags&NoWait != 0
		// In flight before it is queued: once queued, whoever releases the
		// gate may launch and complete it. Wait waits for it meanwhile.
		prev := r.state.Swap(stateInflight)
		if !f.gate().enter(r, nowait) {
			if nowait {
				// Like the kernel's IOCB_NOWAIT on a contended inode lock.
				r.state.Store(prev)
				return bad(syscall.EAGAIN)
			}
			if !sync {
				return nil // launched when the gate admits it
			}
			if err := f.awaitAdmission(r); err != nil {
				r.state.Store(prev)
				return bad(err)
			}
		}
		if err := f.launch(r, sync, false); err != nil {
			r.state.Store(prev) // nothing submitted: the request is the caller's again
			return err
		}
		return nil
	}
	return f.launch(r, sync, false)
}

// startControl starts an Fsync, Fdatasync or Preallocate: one piece per
// target for a sync (a volume syncs every device), one on the file for a
// Preallocate, which a volume does through its map (File.Preallocate)
// instead.
func (f *File) startControl(r *Request, sync bool, bad func(error) error) error {
	if r.Op == Preallocate && (r.Off < 0 || r.Len <= 0) {
		return bad(syscall.EINVAL)
	}
	if r.Op == Preallocate && f.vol != nil {
		return bad(unsupported("an asynchronous Preallocate on a mapped file: use File.Preallocate"))
	}
	r.file = f
	r.pieces = r.pieces[:0]
	r.next, r.submitted, r.curBuf, r.curOff = 0, 0, 0, 0
	r.errno, r.err, r.n = nil, nil, 0
	r.converted, r.convErr = false, nil
	r.cancelled.Store(false)
	r.fileDec = false
	r.subGen.Add(1)
	r.once.Reset()
	r.async = !sync
	r.length, r.want, r.stopAt, r.sizeAt = 0, 0, r.Off, -1
	r.gateHeld = false
	for t := range f.targets {
		if r.Op != Preallocate && durability.SkipSync.Load() {
			break // the power-loss tests' counter-check: no sync at all
		}
		fd, reg, _ := f.target(t)
		r.pieces = append(r.pieces, piece{ctl: r.Op, ctlLen: r.Len, fd: fd, regFile: reg, off: r.Off, fileOff: r.Off})
		if r.Op == Preallocate {
			break
		}
	}
	return f.launch(r, sync, false)
}

// clipRead limits a read of a mapped file to its size: the mapper's size
// is the truth there. A kernel file's reads go to the kernel, which ends
// them at its own end of file.
func (r *Request) clipRead() {
	if r.Op != Read || r.owned {
		return
	}
	if r.Off >= r.sizeAt {
		// Entirely past EOF: no I/O; the request still completes through
		// its policy, with 0 bytes and io.EOF.
		r.want, r.stopAt = 0, r.Off
	} else if end := r.Off + r.length; end > r.sizeAt {
		// Read up to the alignment past EOF; the result is clipped at EOF.
		r.want = alignUp(r.sizeAt-r.Off, r.file.align.Offset)
	}
}

// launch maps r and queues its pieces: the second half of start, run by
// the submitter or, for a request that waited at the gate, by whoever let
// it through (deferred: its Submit has returned, and on error the request
// keeps the File's in-flight reference for the completion that reports
// it). An error means nothing was submitted.
func (f *File) launch(r *Request, sync, deferred bool) error {
	bad := func(err error) error {
		f.gateRelease(r)
		if !deferred {
			f.release()
		}
		return f.opErr(r.Op.String(), r.Off, r.length, err)
	}
	if r.gateHeld {
		// It may have waited at the gate: the world moved on meanwhile.
		if f.eng.broken.Load() {
			return bad(ErrRingBroken)
		}
		if f.vol != nil {
			r.sizeAt = f.vol.size.Load()
			r.want, r.stopAt = r.length, r.Off+r.length
			r.clipRead()
		}
	}
	pure := true
	if r.Op.control() {
		// mapped by startControl
	} else if f.vol == nil {
		f.mapKernel(r)
	} else {
		var err error
		pure, err = f.mapRequest(r)
		if err != nil && (r.Flags&Partial == 0 || r.submitted == 0) {
			return bad(err)
		}
		if err != nil {
			r.setErr(err, r.Off+r.submitted)
		}
	}
	if r.Op == Write && r.Flags&(NoWait|Partial) == NoWait && len(r.pieces) > 1 {
		// More than one SQE could half-complete: refuse up front, unless
		// the caller takes a partial result (Partial).
		return bad(syscall.EAGAIN)
	}

	// Durability. A kernel file's write is made durable by the kernel
	// (RWF_DSYNC/RWF_SYNC: a FUA write or a cache flush, plus whatever
	// metadata the write changed). On a mapped file, write-through when
	// every extent is a pure overwrite and the size does not move;
	// otherwise fdatasync/fsync after the data, once the mapper has
	// converted what the write allocated.
	extends := r.Op == Write && f.vol != nil && r.Off+r.submitted > r.sizeAt
	var needsSync, writeThrough bool
	if r.Op == Write && r.Flags&(DSync|Sync) != 0 && !durability.SkipSync.Load() {
		rwf := ring.RWFDSync
		switch {
		case f.vol == nil && r.Flags&Sync != 0:
			writeThrough, rwf = true, ring.RWFSync
		case f.vol == nil || (r.Flags&Sync == 0 && pure && !extends):
			writeThrough = true
		default:
			needsSync = true
		}
		if writeThrough {
			for i := range r.pieces {
				r.pieces[i].rwFlags |= rwf
			}
		}
	}
	if r.Flags&NoWait != 0 {
		for i := range r.pieces {
			r.pieces[i].rwFlags |= ring.RWFNoWait
		}
	}
	if r.Flags&Atomic != 0 {
		for i := range r.pieces {
			r.pieces[i].rwFlags |= ring.RWFAtomic
		}
	}
	r.facts = choose.Facts{
		Sync:          sync,
		Write:         r.Op == Write,
		PureOverwrite: pure,
		Extends:       extends,
		NeedsSync:     needsSync,
		WriteThrough:  writeThrough,
		SingleSQE:     len(r.pieces) <= 1,
		PolledRing:    f.eng.iopoll,
		HasEndIO:      f.endIO != nil,
	}
	f.choosePolicy(r, sync)

	r.refs.Store(int32(len(r.pieces)) + 1)
	r.state.Store(stateInflight)
	switch {
	case len(r.pieces) == 0:
	case f.pread:
		f.eng.pr.submit(f.eng, r, sync)
	case sync && f.eng.direct(f, r):
		f.eng.pr.run(f.eng, r)
		<-f.eng.directSem
	default:
		f.eng.enqueue(r)
	}
	f.eng.put(r, false) // the submitter's reference
	return nil
}

// mapKernel maps r on a kernel file: the identity, split at the maximum
// I/O size and at buffer boundaries, one piece per SQE.
func (f *File) mapKernel(r *Request) {
	fd, reg := f.fd, false
	if f.regIdx >= 0 {
		fd, reg = f.regIdx, true
	}
	write := r.Op == Write
	for pos, end := r.Off, r.Off+r.want; pos < end; {
		p, l, b := r.mem(pos - r.Off)
		l = min(l, end-pos, f.maxIO)
		_, fixed := f.eng.fixedIndex(b[:l])
		r.pieces = append(r.pieces, piece{
			fd: fd, regFile: reg, fixed: fixed, write: write,
			addr: p, n: uint32(l), off: pos, fileOff: pos,
		})
		pos += l
	}
	r.submitted = r.want
}

// choosePolicy picks r's completion policy from what it asked for and
// r.facts (choose.Choose), and whether it completes asynchronously.
func (f *File) choosePolicy(r *Request, sync bool) {
	requested := r.Policy
	if requested == completion.Default {
		requested = f.policy
	}
	var deferredWhy completion.Reason
	if requested == completion.Wait && !sync {
		// An asynchronous request that its caller will Wait for is deferred
		// completion like Caller, under the same rules: its completion
		// must do no I/O, since the caller may never come.
		if p, why := choose.Choose(completion.Caller, r.facts); p != completion.Caller {
			requested, deferredWhy = p, why
		}
	}
	r.policy, r.reason = choose.Choose(requested, r.facts)
	if deferredWhy != completion.NoDowngrade {
		r.reason = deferredWhy
	}
	if !r.async && r.policy != completion.Polled {
		r.policy = completion.Wait
	}
	if r.policy == completion.Wait || r.policy == completion.Polled {
		r.async = false
	}
}

func (f *File) checkAlign(r *Request) error {
	if r.totalLen() == 0 {
		return nil // nothing reaches the kernel
	}
	a := f.align
	if r.Off%a.Offset != 0 {
		return &alignError{What: "offset", Value: r.Off, Align: a.Offset}
	}
	check := func(b []byte) error {
		if len(b) == 0 {
			return nil
		}
		if p := int64(uintptr(addrOf(b))); p%a.Memory != 0 {
			return &alignError{What: "buffer address", Value: p, Align: a.Memory}
		}
		if int64(len(b))%a.Offset != 0 {
			return &alignError{What: "length", Value: int64(len(b)), Align: a.Offset}
		}
		return nil
	}
	if r.Buf != nil {
		return check(r.Buf)
	}
	for _, b := range r.Bufs {
		if err := check(b); err != nil {
			return err
		}
	}
	return nil
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
		switch m.Type {
		case iomap.Hole, iomap.Unwritten:
			r.zero(pos-r.Off, n) // no I/O: reads as zeroes
			return nil
		case iomap.Inline:
			if m.Data != nil {
				for done := int64(0); done < n; {
					_, l, b := r.mem(pos + done - r.Off)
					l = min(l, n-done)
					copy(b[:l], m.Data[pos+done-m.Offset:])
					done += l
				}
				return nil
			}
			// Data nil: the filesystem serves it through O_DIRECT itself.
		case iomap.Delalloc:
			return errDelalloc
		}
		return f.addPieces(r, m, pos, n, false)
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
	for n > 0 {
		p, l, b := r.mem(pos - r.Off)
		l = min(l, n, f.maxIO)
		sqeLen := l
		if a := f.align.Offset; !write && (pos+l)%a != 0 {
			// A mapping that ends at an unaligned EOF: read up to the
			// alignment; the kernel stops at EOF and returns the short count.
			sqeLen = min(alignUp(pos+l, a)-pos, int64(len(b)))
		}
		_, fixed := f.eng.fixedIndex(b[:sqeLen])
		if q := r.lastPiece(); write && q != nil && q.fileOff >= 0 && (q.fileOff+int64(q.n))%f.align.Offset != 0 &&
			q.fileOff+int64(q.n) == pos && q.off+int64(q.n) == addr && q.addr+uintptr(q.n) == p &&
			q.fd == fd && q.regFile == reg && q.fixed == fixed && int64(q.n) < f.maxIO && r.contiguous(q.fileOff, int64(q.n)+l) {
			// The previous mapping ended at an unaligned offset (the EOF of
			// a file whose size is not a multiple of the alignment): an SQE
			// ending there, and one starting there, would fail with EINVAL.
			// Carry the previous piece on instead, as one write.
			l = min(l, f.maxIO-int64(q.n))
			q.n += uint32(l)
			pos += l
			addr += l
			n -= l
			continue
		}
		r.pieces = append(r.pieces, piece{
			fd: fd, regFile: reg, fixed: fixed, write: write,
			addr: p, n: uint32(sqeLen), off: addr, fileOff: pos,
		})
		pos += l
		addr += l
		n -= l
	}
	return nil
}

// contiguous reports whether the request's memory from logical position
// fileOff on holds n bytes in one buffer.
func (r *Request) contiguous(fileOff, n int64) bool {
	_, l, _ := r.mem(fileOff - r.Off)
	return l >= n
}

// lastPiece returns the request's last piece, or nil.
func (r *Request) lastPiece() *piece {
	if len(r.pieces) == 0 {
		return nil
	}
	return &r.pieces[len(r.pieces)-1]
}

// addZero adds a write of zeroes over [pos, pos+n) of m.
func (f *File) addZero(r *Request, m *iomap.Mapping, pos, n int64) error {
	fd, reg, err := f.target(m.Target)
	if err != nil {
		return err
	}
	z, err := f.eng.zeroes(int(n))
	if err != nil {
		return err
	}
	r.pieces = append(r.pieces, piece{
		fd: fd, regFile: reg, write: true,
		addr: uintptr(addrOf(z)), n: uint32(n), off: m.Addr + (pos - m.Offset),
		fileOff: -1, // not part of the caller's data
	})
	return nil
}

func (f *File) target(t int) (int32, bool, error) {
	if t < 0 || t >= len(f.targets) {
		return 0, false, unsupported("mapping names target " + itoa(t) + " but the file has " + itoa(len(f.targets)) + " (see WithTargets)")
	}
	if t == 0 && f.regIdx >= 0 {
		return f.regIdx, true, nil
	}
	return f.targets[t], false, nil
}

func alignUp(v, a int64) int64 { return (v + a - 1) / a * a }

func itoa(v int) string { return strconv.Itoa(v) }
