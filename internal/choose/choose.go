package choose

import "github.com/uringdio/uringdio/completion"

// Facts is what the engine knows about a request when it picks the policy.
// The engine fills it after mapping every extent and before dropping its
// submission reference, the point where __iomap_dio_rw has its final flags.
// The zero value is an asynchronous read on an ordinary ring.
type Facts struct {
	Sync          bool // a synchronous caller waits for it (ReadAt/WriteAt)
	Write         bool
	PureOverwrite bool // every extent MAPPED, no NEW/UNWRITTEN/SHARED, no zeroing
	Extends       bool // write ends past the size seen at submission
	NeedsSync     bool // DSYNC/SYNC that cannot be served by write-through (RWF_DSYNC) alone: needs fdatasync after
	WriteThrough  bool // DSYNC served by RWF_DSYNC on every SQE
	SingleSQE     bool
	PolledRing    bool // the ring was set up with IOPOLL
	HasEndIO      bool // an end-of-I/O hook that may block is installed (treat like needing the pool unless completion.Inline was explicitly safe)
}

// Choose returns the policy a request runs under and, when that is not the
// policy requested, why. It follows how the kernel's iomap direct I/O sets
// and clears its completion flags. The rules, in the order they apply:
//
//  1. An undefined requested policy is treated as Default
//     (DowngradeUnknownPolicy).
//  2. Wait is always honoured. Kernel: IOMAP_DIO_FORCE_WAIT makes even an
//     asynchronous kiocb wait_for_completion.
//  3. A synchronous caller (Facts.Sync) always completes on its own
//     goroutine: Polled when the ring polls and one SQE carries the request,
//     else Wait. Kernel: wait_for_completion is tested first in
//     iomap_dio_bio_end_io and overrides INLINE_COMP and CALLER_COMP; the
//     waiting task runs iomap_dio_complete, which may block. Asking for
//     Inline, Caller or Pool is DowngradeSync; Polled that cannot poll is
//     DowngradeNotPolledRing or DowngradeMultiSQE; Default on a polled ring
//     with several SQEs is DowngradeMultiSQE ("we can only poll for single
//     bio I/Os").
//  4. Pool is always allowed for an asynchronous request: it is where the
//     kernel sends everything else (queue_work on s_dio_done_wq).
//  5. A write may complete inline, deferred to the caller or polled only if
//     its completion does no I/O. Kernel: iomap_dio_bio_iter clears
//     CALLER_COMP when an extent needs zeroing or unwritten conversion
//     (DowngradeNotOverwrite; we also count SHARED, whose copy-on-write
//     remap is done at completion), when the write is at or past i_size
//     (DowngradeExtends), and when NEED_SYNC remains because the extent
//     could not be written through with FUA (DowngradeNeedsSync). NeedsSync
//     is checked as given: WriteThrough does not cancel it, because the
//     engine sets NeedsSync only when write-through is not enough (the
//     kernel clears NEED_SYNC when every bio kept WRITE_THROUGH). Such a
//     write goes to the Pool, checked in that order.
//  6. Caller is allowed for reads. The kernel never defers reads (they get
//     INLINE_COMP, which end_io tests before CALLER_COMP), but a read's
//     completion does no I/O, so handing it to the caller is safe; it costs
//     one hand-off the caller asked for.
//  7. Inline for a read is allowed, even with an end-of-I/O hook: asking for
//     Inline explicitly says the hook is safe on the reaper. Kernel: reads
//     always set INLINE_COMP, and iomap_dio_complete runs the fs end_io
//     inline. Inline for a write that passes rule 5 is allowed without a
//     hook; with one it goes to the Pool (DowngradeWrite): the kernel never
//     sets INLINE_COMP on a write, whose end_io converts extents and
//     updates the size.
//  8. Polled for an asynchronous request needs an IOPOLL ring
//     (DowngradeNotPolledRing) and one SQE (DowngradeMultiSQE; the kernel
//     clears IOCB_HIPRI as soon as a second bio is built); otherwise the
//     request falls back to what Default would give it, reporting the
//     polling reason. A polled write must also pass rule 5: the kernel
//     clears IOCB_HIPRI when neither INLINE_COMP nor CALLER_COMP survives.
//  9. Default for an asynchronous read is Inline (kernel: reads always get
//     INLINE_COMP), or Pool if an end-of-I/O hook is installed
//     (DowngradeEndIO). Default for an asynchronous write is Pool unless it
//     passes rule 5 and has no hook, then Inline. Here we diverge from the
//     kernel, which punts every write it cannot defer to the workqueue:
//     its completion also invalidates the page cache and calls the fs
//     end_io, while ours for a pure overwrite without a hook only records
//     the result, and on a fast device a hand-off to another goroutine
//     costs about as much as the I/O itself.
//
// Choose never returns Default, never allocates, and is safe for concurrent
// use.
func Choose(requested completion.Policy, f Facts) (completion.Policy, completion.Reason) {
	if !requested.Valid() {
		p, _ := Choose(completion.Default, f)
		return p, completion.DowngradeUnknownPolicy
	}
	if requested == completion.Wait {
		return completion.Wait, completion.NoDowngrade // rule 2
	}
	if f.Sync {
		return chooseSync(requested, f) // rule 3
	}

	switch requested {
	case completion.Pool:
		return completion.Pool, completion.NoDowngrade // rule 4
	case completion.Caller:
		if f.Write {
			if r := completionDoesIO(f); r != completion.NoDowngrade {
				return completion.Pool, r // rule 5
			}
		}
		return completion.Caller, completion.NoDowngrade // rules 5, 6
	case completion.Inline:
		if f.Write {
			if r := completionDoesIO(f); r != completion.NoDowngrade {
				return completion.Pool, r // rule 5
			}
			if f.HasEndIO {
				return completion.Pool, completion.DowngradeWrite // rule 7
			}
		}
		return completion.Inline, completion.NoDowngrade // rule 7
	case completion.Polled:
		if !f.PolledRing {
			p, _ := chooseDefaultAsync(f)
			return p, completion.DowngradeNotPolledRing // rule 8
		}
		if !f.SingleSQE {
			p, _ := chooseDefaultAsync(f)
			return p, completion.DowngradeMultiSQE // rule 8
		}
		if f.Write {
			if r := completionDoesIO(f); r != completion.NoDowngrade {
				return completion.Pool, r // rules 8, 5
			}
		}
		return completion.Polled, completion.NoDowngrade
	}
	return chooseDefaultAsync(f) // rule 9
}

// chooseSync is rule 3: the synchronous caller completes on its own
// goroutine, polling when it can.
func chooseSync(requested completion.Policy, f Facts) (completion.Policy, completion.Reason) {
	canPoll := f.PolledRing && f.SingleSQE
	switch requested {
	case completion.Default:
		if canPoll {
			return completion.Polled, completion.NoDowngrade
		}
		if f.PolledRing {
			return completion.Wait, completion.DowngradeMultiSQE
		}
		return completion.Wait, completion.NoDowngrade
	case completion.Polled:
		if canPoll {
			return completion.Polled, completion.NoDowngrade
		}
		if !f.PolledRing {
			return completion.Wait, completion.DowngradeNotPolledRing
		}
		return completion.Wait, completion.DowngradeMultiSQE
	default: // completion.Inline, completion.Caller, completion.Pool
		if canPoll {
			return completion.Polled, completion.DowngradeSync
		}
		return completion.Wait, completion.DowngradeSync
	}
}

// chooseDefaultAsync is rule 9.
func chooseDefaultAsync(f Facts) (completion.Policy, completion.Reason) {
	if f.Write {
		if r := completionDoesIO(f); r != completion.NoDowngrade {
			return completion.Pool, r
		}
	}
	if f.HasEndIO {
		return completion.Pool, completion.DowngradeEndIO
	}
	return completion.Inline, completion.NoDowngrade
}

// completionDoesIO is rule 5 for a write: the first reason its completion
// may do more I/O (and so may block), or NoDowngrade. The kernel's
// counterpart is the test in iomap_dio_bio_iter that clears CALLER_COMP.
func completionDoesIO(f Facts) completion.Reason {
	switch {
	case !f.PureOverwrite:
		return completion.DowngradeNotOverwrite
	case f.Extends:
		return completion.DowngradeExtends
	case f.NeedsSync:
		return completion.DowngradeNeedsSync
	}
	return completion.NoDowngrade
}
