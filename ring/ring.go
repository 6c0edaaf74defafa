//go:build linux

package ring

import (
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

// Params configures a new ring. The zero value is a 128-entry ring with no
// setup flags.
type Params struct {
	// Entries is the SQ size, rounded up to a power of two (the kernel's
	// rule). 0 means 128. Above MaxEntries is an error unless Flags has
	// SetupClamp.
	Entries uint32
	// CQEntries is the CQ size; 0 means twice the SQ (the kernel's default).
	// It must not be smaller than Entries.
	CQEntries uint32
	// Flags are the setup flags. SetupCQSize, SetupSQAff and SetupAttachWQ
	// are implied by CQEntries, SQThreadCPU and AttachWQ and need not be set.
	Flags SetupFlags
	// SQThreadIdle is how long an SQPOLL thread spins before it sleeps
	// (millisecond resolution; 0 is the kernel's default of one second).
	SQThreadIdle time.Duration
	// SQThreadCPU pins the SQPOLL thread to a CPU when SQThreadCPUSet.
	SQThreadCPU    uint32
	SQThreadCPUSet bool
	// AttachWQ shares the async worker pool (and, with SQPOLL, the poll
	// thread) of another ring.
	AttachWQ *Ring
}

// Ring is one io_uring instance. It is owned by one goroutine at a time and
// is not safe for concurrent use (see the package documentation).
type Ring struct {
	fd       int
	flags    SetupFlags
	features Features
	closed   bool

	// Submission queue. khead and kflags are written by the kernel; ktail is
	// written by us with a release store that publishes the SQEs before it.
	sq struct {
		khead, ktail, kflags, kdropped *uint32
		mask, entries                  uint32
		sqes                           []SQE
		// sqeTail is the next SQE we hand out; sqeHead is what we have
		// published to the kernel (liburing's sqe_head/sqe_tail).
		sqeHead, sqeTail uint32
	}
	// Completion queue. ktail is written by the kernel (we load-acquire it
	// so the CQEs before it are visible); khead is written by us with a
	// release store that gives the slots back.
	cq struct {
		khead, ktail, koverflow *uint32
		mask, entries           uint32
		cqes                    []CQE
	}

	sqMem, cqMem, sqeMem []byte
}

// New creates a ring. Flags the kernel does not know fail with an error
// naming them (see Probe for what this kernel offers).
func New(p Params) (*Ring, error) {
	entries := p.Entries
	if entries == 0 {
		entries = 128
	}
	if entries > MaxEntries && p.Flags&SetupClamp == 0 {
		return nil, opErr("setup", errorf(syscall.EINVAL, "entries %d above the kernel's limit %d (set SetupClamp to clamp)", entries, MaxEntries))
	}
	var kp params
	kp.Flags = uint32(p.Flags)
	if p.CQEntries != 0 {
		if p.CQEntries < entries {
			return nil, opErr("setup", errorf(syscall.EINVAL, "CQ entries %d below SQ entries %d", p.CQEntries, entries))
		}
		if p.CQEntries > MaxCQEntries && p.Flags&SetupClamp == 0 {
			return nil, opErr("setup", errorf(syscall.EINVAL, "CQ entries %d above the kernel's limit %d", p.CQEntries, MaxCQEntries))
		}
		kp.Flags |= uint32(SetupCQSize)
		kp.CQEntries = p.CQEntries
	}
	if p.Flags&SetupSQPoll != 0 {
		kp.SQThreadIdle = uint32(p.SQThreadIdle / time.Millisecond)
		if p.SQThreadCPUSet {
			kp.Flags |= uint32(SetupSQAff)
			kp.SQThreadCPU = p.SQThreadCPU
		}
	}
	if p.AttachWQ != nil {
		if p.AttachWQ.closed {
			return nil, opErr("setup", ErrClosed)
		}
		kp.Flags |= uint32(SetupAttachWQ)
		kp.WQFd = uint32(p.AttachWQ.fd)
	}
	fd, err := setup(entries, &kp)
	if err != nil {
		return nil, setupError(SetupFlags(kp.Flags), err)
	}
	r := &Ring{fd: fd, flags: SetupFlags(kp.Flags), features: Features(kp.Features)}
	if err := r.mmap(&kp); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return r, nil
}

// setupError turns a refused setup into an error that names the flags the
// kernel may lack.
func setupError(flags SetupFlags, err error) error {
	if err == syscall.EINVAL && flags&^(SetupCQSize|SetupSQAff) != 0 {
		if pr, perr := Probe(); perr == nil {
			if missing := flags &^ pr.SetupFlags &^ (SetupCQSize | SetupSQAff | SetupAttachWQ); missing != 0 {
				return Unsupported("setup", "kernel does not support setup flags "+missing.String(), syscall.EINVAL)
			}
		}
		if flags&SetupDeferTaskrun != 0 && flags&SetupSingleIssuer == 0 {
			return opErr("setup", errorf(syscall.EINVAL, "DEFER_TASKRUN requires SINGLE_ISSUER"))
		}
		if flags&SetupCoopTaskrun != 0 && flags&SetupSQPoll != 0 {
			return opErr("setup", errorf(syscall.EINVAL, "COOP_TASKRUN has no meaning with SQPOLL"))
		}
	}
	if err == syscall.ENOMEM {
		return opErr("setup", errorf(syscall.ENOMEM, "cannot allocate the ring (RLIMIT_MEMLOCK, or too many entries)"))
	}
	if err == syscall.EPERM {
		return opErr("setup", errorf(syscall.EPERM, "io_uring is disabled for this process (kernel.io_uring_disabled sysctl, or seccomp)"))
	}
	return opErr("setup", err)
}

// mmap maps the SQ ring, the CQ ring (one mapping with FEAT_SINGLE_MMAP) and
// the SQE array, and points the ring's fields into them. It is the one place
// ring memory is mapped; unmap is the one place it is released.
func (r *Ring) mmap(p *params) error {
	sqSize := uintptr(p.SQOffset.Array) + uintptr(p.SQEntries)*4
	cqSize := uintptr(p.CQOffset.Cqes) + uintptr(p.CQEntries)*unsafe.Sizeof(CQE{})
	if r.features&FeatSingleMmap != 0 && cqSize > sqSize {
		sqSize = cqSize
	}
	var err error
	r.sqMem, err = unix.Mmap(r.fd, int64(iosys.IORING_OFF_SQ_RING), int(sqSize),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return opErr("mmap sq ring", err)
	}
	r.cqMem = r.sqMem
	if r.features&FeatSingleMmap == 0 {
		r.cqMem, err = unix.Mmap(r.fd, int64(iosys.IORING_OFF_CQ_RING), int(cqSize),
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			r.unmap()
			return opErr("mmap cq ring", err)
		}
	}
	sqeSize := uintptr(p.SQEntries) * unsafe.Sizeof(SQE{})
	r.sqeMem, err = unix.Mmap(r.fd, int64(iosys.IORING_OFF_SQES), int(sqeSize),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.unmap()
		return opErr("mmap sqes", err)
	}

	sq, o := unsafe.Pointer(&r.sqMem[0]), p.SQOffset
	r.sq.khead = (*uint32)(unsafe.Add(sq, o.Head))
	r.sq.ktail = (*uint32)(unsafe.Add(sq, o.Tail))
	r.sq.kflags = (*uint32)(unsafe.Add(sq, o.Flags))
	r.sq.kdropped = (*uint32)(unsafe.Add(sq, o.Dropped))
	r.sq.mask = *(*uint32)(unsafe.Add(sq, o.RingMask))
	r.sq.entries = *(*uint32)(unsafe.Add(sq, o.RingEntries))
	r.sq.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMem[0])), p.SQEntries)
	// The SQ index array maps ring slots to SQEs; like liburing we make it
	// the identity once, so submission never touches it again.
	array := unsafe.Slice((*uint32)(unsafe.Add(sq, o.Array)), r.sq.entries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.sq.sqeHead = atomic.LoadUint32(r.sq.ktail)
	r.sq.sqeTail = r.sq.sqeHead

	cq, c := unsafe.Pointer(&r.cqMem[0]), p.CQOffset
	r.cq.khead = (*uint32)(unsafe.Add(cq, c.Head))
	r.cq.ktail = (*uint32)(unsafe.Add(cq, c.Tail))
	r.cq.koverflow = (*uint32)(unsafe.Add(cq, c.Overflow))
	r.cq.mask = *(*uint32)(unsafe.Add(cq, c.RingMask))
	r.cq.entries = *(*uint32)(unsafe.Add(cq, c.RingEntries))
	r.cq.cqes = unsafe.Slice((*CQE)(unsafe.Add(cq, c.Cqes)), r.cq.entries)
	return nil
}

func (r *Ring) unmap() {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.cqMem != nil && &r.cqMem[0] != &r.sqMem[0] {
		unix.Munmap(r.cqMem)
	}
	if r.sqMem != nil {
		unix.Munmap(r.sqMem)
	}
	r.sqMem, r.cqMem, r.sqeMem = nil, nil, nil
	r.sq.sqes, r.cq.cqes = nil, nil
}

// Close unmaps the ring and closes its file descriptor. Operations still in
// flight are cancelled by the kernel, which waits for them; their buffers are
// no longer touched once Close returns. Close is idempotent.
func (r *Ring) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.unmap()
	return opErr("close", syscall.Close(r.fd))
}

// Fd returns the ring's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// Flags returns the setup flags the ring was created with.
func (r *Ring) Flags() SetupFlags { return r.flags }

// Features returns the features the kernel reported at setup.
func (r *Ring) Features() Features { return r.features }

// SQEntries and CQEntries return the sizes the kernel chose.
func (r *Ring) SQEntries() uint32 { return r.sq.entries }

// CQEntries returns the CQ size the kernel chose.
func (r *Ring) CQEntries() uint32 { return r.cq.entries }

// Closed reports whether Close has been called.
func (r *Ring) Closed() bool { return r.closed }

// ---- submission ----

// GetSQE returns the next free SQE, zeroed, or nil when the SQ is full (or
// the ring is closed). A full SQ is backpressure: Submit, reap, try again.
func (r *Ring) GetSQE() *SQE {
	if r.closed {
		return nil
	}
	// The kernel advances khead as it consumes SQEs; load-acquire pairs with
	// its store-release in io_commit_sqring so the slot is really free.
	head := atomic.LoadUint32(r.sq.khead)
	if r.sq.sqeTail-head >= r.sq.entries {
		return nil
	}
	sqe := &r.sq.sqes[r.sq.sqeTail&r.sq.mask]
	r.sq.sqeTail++
	*sqe = SQE{}
	return sqe
}

// SQSpace returns how many SQEs GetSQE can hand out now.
func (r *Ring) SQSpace() uint32 {
	if r.closed {
		return 0
	}
	return r.sq.entries - (r.sq.sqeTail - atomic.LoadUint32(r.sq.khead))
}

// Pending returns how many prepared SQEs the kernel has not consumed yet
// (prepared but not submitted, or waiting for an SQPOLL thread).
func (r *Ring) Pending() uint32 {
	if r.closed {
		return 0
	}
	return r.sq.sqeTail - atomic.LoadUint32(r.sq.khead)
}

// flush publishes the SQEs prepared since the last flush by moving the
// kernel-visible tail, and returns how many SQEs the kernel has yet to take.
func (r *Ring) flush() uint32 {
	if r.sq.sqeHead != r.sq.sqeTail {
		r.sq.sqeHead = r.sq.sqeTail
		// Store-release: the SQE contents written above become visible to
		// the kernel (or the SQPOLL thread) before the new tail; pairs with
		// the kernel's smp_load_acquire of sq.tail in io_sqring_entries.
		atomic.StoreUint32(r.sq.ktail, r.sq.sqeTail)
	}
	return r.sq.sqeTail - atomic.LoadUint32(r.sq.khead)
}

// Submit hands every prepared SQE to the kernel with at most one
// io_uring_enter and returns how many the kernel took. On an SQPOLL ring it
// enters only to wake a sleeping poll thread. EBUSY and EAGAIN (the kernel
// has no room to post more completions or no memory for requests) are
// returned as errors matching those errnos: nothing is lost, the SQEs stay
// queued, reap and Submit again.
func (r *Ring) Submit() (int, error) { return r.submit(0, 0) }

// SubmitAndWait submits like Submit and waits until at least wait
// completions are ready. It is one io_uring_enter.
func (r *Ring) SubmitAndWait(wait uint32) (int, error) { return r.submit(wait, enterGetEvents) }

func (r *Ring) submit(wait, flags uint32) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	pending := r.flush()
	toSubmit := pending
	if r.flags&SetupSQPoll != 0 {
		// The poll thread takes the SQEs; enter only to wake it, or to wait.
		// Load of the flags must follow the tail store (both are seq-cst
		// atomics here, the full barrier liburing uses for this check).
		if atomic.LoadUint32(r.sq.kflags)&sqNeedWakeup != 0 {
			flags |= enterSQWakeup
		}
		toSubmit = 0
	}
	if r.needFlushCQ() {
		flags |= enterGetEvents
	}
	if r.flags&SetupIOPoll != 0 && wait > 0 {
		flags |= enterGetEvents
	}
	if toSubmit == 0 && flags == 0 {
		return int(pending), nil
	}
	n, err := enter(r.fd, toSubmit, wait, flags)
	if err != nil {
		return 0, opErr("enter", err)
	}
	if r.flags&SetupSQPoll != 0 {
		return int(pending), nil
	}
	return n, nil
}

// needFlushCQ reports whether completions are held back in the kernel: CQ
// overflow entries (with FEAT_NODROP the kernel keeps them in a list and
// flushes them when we enter with GETEVENTS), or deferred task work.
func (r *Ring) needFlushCQ() bool {
	return atomic.LoadUint32(r.sq.kflags)&(sqCQOverflow|sqTaskrun) != 0
}

// ---- completion ----

// Ready returns how many CQEs can be peeked without entering the kernel.
func (r *Ring) Ready() uint32 {
	if r.closed {
		return 0
	}
	// Load-acquire of the tail pairs with the kernel's store-release in
	// io_commit_cqring: the CQEs before the tail are written.
	return atomic.LoadUint32(r.cq.ktail) - *r.cq.khead
}

// Peek copies up to len(dst) ready CQEs into dst, gives their slots back to
// the kernel with one store, and returns how many it copied. When none is
// ready but the kernel holds completions back (CQ overflow, deferred task
// work, or an IOPOLL ring that completes only when polled) it enters once
// with GETEVENTS to bring them in; it never blocks.
func (r *Ring) Peek(dst []CQE) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	n := r.peek(dst)
	if n == 0 && len(dst) > 0 && (r.needFlushCQ() || r.flags&(SetupIOPoll|SetupDeferTaskrun) != 0) {
		if _, err := enter(r.fd, 0, 0, enterGetEvents); err != nil {
			return 0, opErr("enter", err)
		}
		n = r.peek(dst)
	}
	return n, nil
}

func (r *Ring) peek(dst []CQE) int {
	head := *r.cq.khead
	avail := atomic.LoadUint32(r.cq.ktail) - head
	n := uint32(len(dst))
	if avail < n {
		n = avail
	}
	for i := uint32(0); i < n; i++ {
		dst[i] = r.cq.cqes[(head+i)&r.cq.mask]
	}
	if n > 0 {
		// Store-release: our reads of the CQEs happen before the kernel
		// may reuse the slots; pairs with its load-acquire of cq.head.
		atomic.StoreUint32(r.cq.khead, head+n)
	}
	return int(n)
}

// Wait submits what is prepared and blocks until at least n CQEs are ready
// (an IOPOLL ring polls for them), then returns how many are ready. EINTR
// is retried; it never reaches the caller.
func (r *Ring) Wait(n uint32) (uint32, error) {
	if r.closed {
		return 0, ErrClosed
	}
	for {
		if ready := r.Ready(); n > 0 && ready >= n && r.sq.sqeHead == r.sq.sqeTail && !r.needFlushCQ() {
			return ready, nil
		}
		if _, err := r.submit(n, enterGetEvents); err != nil {
			return r.Ready(), err
		}
		// The kernel returns early when it submitted SQEs and the wait was
		// interrupted (a signal): go round until n are really there.
		if ready := r.Ready(); ready >= n {
			return ready, nil
		}
	}
}

// WaitTimeout is Wait with a limit: it returns ErrTimeout (matching
// syscall.ETIME) if fewer than n CQEs are ready after d. It needs the
// kernel's EXT_ARG feature (5.11).
func (r *Ring) WaitTimeout(n uint32, d time.Duration) (uint32, error) {
	if r.closed {
		return 0, ErrClosed
	}
	if r.features&FeatExtArg == 0 {
		return 0, Unsupported("wait", "kernel lacks IORING_FEAT_EXT_ARG (timed waits need Linux 5.11)", 0)
	}
	if ready := r.Ready(); ready >= n && n > 0 {
		return ready, nil
	}
	toSubmit := r.flush()
	if r.flags&SetupSQPoll != 0 {
		toSubmit = 0
	}
	return r.waitArg(toSubmit, n, enterGetEvents|r.wakeFlag(), d)
}

// Flush publishes the prepared SQEs to the kernel without entering it and
// returns how many the kernel has not consumed yet. Submission side.
func (r *Ring) Flush() uint32 {
	if r.closed {
		return 0
	}
	return r.flush()
}

// EnterWait is one io_uring_enter that submits up to toSubmit published
// SQEs and waits until n CQEs are ready (n may be 0: submit only). It
// touches no submission-side state, so the completion side's owner may
// call it while another goroutine owns the submission side; the kernel
// takes at most the SQEs that are published, whoever published them. With
// a Flush before it, a goroutine that both submits and waits (a
// synchronous read at queue depth 1) needs one system call, not two.
func (r *Ring) EnterWait(toSubmit, n uint32) (uint32, error) {
	if r.closed {
		return 0, ErrClosed
	}
	flags := r.wakeFlag()
	if r.flags&SetupSQPoll != 0 {
		toSubmit = 0
	}
	// With DEFER_TASKRUN completions are posted only when the ring's task
	// asks for events: ask every time, so that the CQEs of what is done
	// are there for the Peek that follows.
	if n > 0 || r.flags&(SetupIOPoll|SetupDeferTaskrun) != 0 || r.needFlushCQ() {
		flags |= enterGetEvents
	}
	if toSubmit == 0 && flags == 0 {
		return r.Ready(), nil
	}
	for {
		if _, err := enter(r.fd, toSubmit, n, flags); err != nil {
			return r.Ready(), opErr("enter", err)
		}
		ready := r.Ready()
		if ready >= n {
			return ready, nil
		}
		toSubmit = 0 // interrupted after submitting: only wait now
	}
}

// WaitCQ blocks until at least n CQEs are ready, like Wait, but touches
// only the completion side: it submits nothing. One goroutine may call
// WaitCQ, WaitCQTimeout, Peek and Ready while another owns the submission
// side (GetSQE, Submit); package dio runs its reaper this way. On an SQPOLL
// ring it also wakes a sleeping poll thread.
func (r *Ring) WaitCQ(n uint32) (uint32, error) {
	if r.closed {
		return 0, ErrClosed
	}
	for {
		if ready := r.Ready(); n > 0 && ready >= n && !r.needFlushCQ() {
			return ready, nil
		}
		if _, err := enter(r.fd, 0, n, enterGetEvents|r.wakeFlag()); err != nil {
			return r.Ready(), opErr("enter", err)
		}
		if ready := r.Ready(); ready >= n {
			return ready, nil
		}
	}
}

// WaitCQTimeout is WaitCQ with a limit; it returns ErrTimeout when fewer
// than n CQEs are ready after d.
func (r *Ring) WaitCQTimeout(n uint32, d time.Duration) (uint32, error) {
	if r.closed {
		return 0, ErrClosed
	}
	if ready := r.Ready(); n > 0 && ready >= n {
		return ready, nil
	}
	return r.waitArg(0, n, enterGetEvents|r.wakeFlag(), d)
}

func (r *Ring) wakeFlag() uint32 {
	if r.flags&SetupSQPoll != 0 && atomic.LoadUint32(r.sq.kflags)&sqNeedWakeup != 0 {
		return enterSQWakeup
	}
	return 0
}

func (r *Ring) waitArg(toSubmit, n, flags uint32, d time.Duration) (uint32, error) {
	ts := unix.NsecToTimespec(int64(d))
	_, err := enterArg(r.fd, toSubmit, n, flags, &ts)
	ready := r.Ready()
	if err == syscall.ETIME {
		if ready >= n {
			return ready, nil
		}
		return ready, ErrTimeout
	}
	if err != nil {
		return ready, opErr("enter", err)
	}
	return ready, nil
}

// Dropped returns how many invalid SQEs the kernel dropped.
func (r *Ring) Dropped() uint32 {
	if r.closed {
		return 0
	}
	return atomic.LoadUint32(r.sq.kdropped)
}

// Overflow returns the kernel's count of completions it could not post and
// could not keep either. With FEAT_NODROP (Linux 5.5+) a full CQ does not
// lose completions: the kernel keeps them in a list (flagged in the SQ ring
// flags) and Peek and Wait flush them in; this counter moves only if that
// list could not be allocated, and a caller should treat it as fatal.
func (r *Ring) Overflow() uint32 {
	if r.closed {
		return 0
	}
	return atomic.LoadUint32(r.cq.koverflow)
}

// Err converts a CQE result into an error: nil for res >= 0, otherwise an
// error matching the errno. On an IOPOLL ring, EOPNOTSUPP becomes
// ErrNoPolledIO (the device cannot poll).
func (r *Ring) Err(res int32) error {
	if res >= 0 {
		return nil
	}
	e := syscall.Errno(-res)
	if e == syscall.EOPNOTSUPP && r.flags&SetupIOPoll != 0 {
		return ErrNoPolledIO
	}
	return e
}
