//go:build linux

// Package faultring wraps the ring an engine uses (ringhook.Ring) and injects
// faults at the ring boundary: it rewrites CQE results (errnos, short and
// zero counts), duplicates, delays and drops CQEs, refuses submissions
// with EBUSY or EAGAIN and pretends the SQ is full. It also records every
// read and write SQE from submission until its CQE is handed to the
// engine, so a test can check that a request never completes while the
// kernel may still touch its buffer (the canary check, InFlight).
//
// It imports nothing from package dio: Inner has the method set of
// ringhook.Ring, so a *Ring satisfies ringhook.Ring and can be installed with
// ringhook.Attach(&engineOptions, ringhook.Hooks{WrapRing: func(r ringhook.Ring) ringhook.Ring {
// return faultring.New(r, cfg) }}).
//
// The engine submits on two paths: Submit and then WaitCQ, or, where the
// ring has them, Flush and then one EnterWait that submits and waits (the
// path of a synchronous call and of a reaper with nothing ready). A *Ring
// has both, and the fault plan applies on both: refused enters, SQ-full
// answers and CQE faults alike. TwoCall hides the combined pair, for a
// test that wants the engine on the two-call path.
//
// A Ring is safe for the engine's use: the submission side (GetSQE,
// Submit, Flush) and the completion side (Peek, WaitCQ, EnterWait) may
// run on different goroutines; InFlight and Stats may be called from
// anywhere.
package faultring

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

// Inner is the ring a Ring wraps: the engine's ring interface
// (ringhook.Ring, which *ring.Ring implements).
type Inner = ringhook.Ring

var (
	_ Inner = (*ring.Ring)(nil)
	_ Inner = (*Ring)(nil)
	_ Inner = twoCall{}
)

// Fault is what happens to one CQE.
type Fault uint8

// Faults. The errno faults replace the result; Short and ShortUnaligned
// report fewer bytes than the kernel moved (the engine must resubmit the
// rest); Zero reports 0 bytes; Duplicate delivers the CQE again later
// (a stray the engine must notice); Delay holds the CQE back for a few
// Peeks (reordering, legal); Drop loses it.
const (
	None Fault = iota
	EIO
	ENOSPC
	EAGAIN
	EINTR
	ECANCELED
	Short
	ShortUnaligned
	Zero
	Duplicate
	Delay
	Drop
	numFaults
)

var faultNames = [numFaults]string{"none", "EIO", "ENOSPC", "EAGAIN", "EINTR", "ECANCELED",
	"short", "short-unaligned", "zero", "duplicate", "delay", "drop"}

func (f Fault) String() string {
	if f < numFaults {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", uint8(f))
}

// Errno returns the errno an errno fault injects, or 0.
func (f Fault) Errno() syscall.Errno {
	switch f {
	case EIO:
		return syscall.EIO
	case ENOSPC:
		return syscall.ENOSPC
	case EAGAIN:
		return syscall.EAGAIN
	case EINTR:
		return syscall.EINTR
	case ECANCELED:
		return syscall.ECANCELED
	}
	return 0
}

// Retryable reports whether the engine is expected to retry the fault
// itself (EINTR always, EAGAIN unless the request asked for NOWAIT, short
// counts by resubmitting the rest, delays by waiting).
func (f Fault) Retryable() bool {
	return f == EINTR || f == EAGAIN || f == Short || f == Delay
}

// SQE is what the wrapper recorded of a read or write SQE at submission.
type SQE struct {
	UserData uint64
	Op       ring.Op
	Addr     uintptr
	Len      uint32
	Off      uint64
	Fd       int32
	RWFlags  uint32
}

// CQE describes one data CQE to Config.Decide.
type CQE struct {
	N   uint64 // 1-based count of data CQEs seen (cancel CQEs excluded)
	Res int32  // the kernel's result
	SQE SQE    // the SQE it completes
}

// Config says which faults to inject. The zero value injects nothing.
type Config struct {
	// Seed seeds the random choices.
	Seed uint64
	// Rate is the probability that a data CQE gets a fault, drawn
	// uniformly from Kinds.
	Rate  float64
	Kinds []Fault
	// Nth, if not 0, gives the Nth data CQE the fault NthFault (and no
	// other CQE a random one).
	Nth      uint64
	NthFault Fault
	// Decide, if set, chooses every data CQE's fault (overriding the
	// above). It runs on the reaping goroutine with the wrapper's lock
	// held: it must not call back into the Ring.
	Decide func(c CQE) Fault
	// SubmitErrRate is the probability that an enter (Submit, or
	// EnterWait) fails with EBUSY or EAGAIN without handing anything to
	// the kernel. SubmitErr, if set, decides instead, given the 1-based
	// count of enters (return nil to let the enter through).
	SubmitErrRate float64
	SubmitErr     func(n uint64) error
	// SQFullRate is the probability that GetSQE pretends the SQ is full.
	// SQFull, if set, decides instead.
	SQFullRate float64
	SQFull     func() bool
	// DropsCounted makes Drop model the kernel dropping a CQE it could not
	// keep: the drop shows in Overflow, as in the CQ ring's counter.
	DropsCounted bool
	// ShortAlign is the granularity of Short results (default 512).
	ShortAlign int32
	// MaxDelay is the most Peeks a Delay or a Duplicate's copy waits
	// (default 4). DupDelay, if not 0, is exactly how many Peeks a
	// Duplicate's copy waits.
	MaxDelay int
	DupDelay int
}

// Stats counts what the wrapper did.
type Stats struct {
	Submitted  uint64            // read/write SQEs recorded
	DataCQEs   uint64            // data CQEs received from the kernel
	Faults     [numFaults]uint64 // faults injected, by kind
	SubmitErrs uint64
	SQFull     uint64
	Unknown    uint64 // CQEs from the kernel that matched no recorded SQE
}

// Injected returns the total number of CQE faults injected.
func (s *Stats) Injected() uint64 {
	var n uint64
	for f := Fault(1); f < numFaults; f++ {
		n += s.Faults[f]
	}
	return n
}

// cancelUserData is the engine's tag on its own cancel SQEs (all ones);
// their CQEs pass through untouched.
const cancelUserData = ^uint64(0)

// auditUserData is the engine's tag on its lost-completion audits: NOPs
// with IOSQE_IO_DRAIN, whose CQE the kernel posts after every earlier
// SQE's. The wrapper keeps that order: a delayed CQE (or a duplicate's
// copy) is released before an audit's CQE, as it would have to be on a
// real ring. Only a dropped CQE stays lost.
const auditUserData = ^uint64(0) - 1

type held struct {
	c     ring.CQE
	peeks int
}

// Ring is a fault-injecting wrapper around an Inner ring.
type Ring struct {
	in  Inner
	cfg Config

	mu       sync.Mutex
	rnd      *rand.Rand
	prepared []*ring.SQE
	inflight map[uint64]SQE
	out      []ring.CQE // ready for the engine
	held     []held     // delayed CQEs and duplicate copies
	release  bool       // a wait returned early for held CQEs: release them
	stats    Stats
	submits  uint64
	tmp      []ring.CQE
	dropped  uint32 // counted drops (DropsCounted)
}

// New wraps in. Its Flush and EnterWait pass through to in's own.
func New(in Inner, cfg Config) *Ring {
	if cfg.ShortAlign <= 0 {
		cfg.ShortAlign = 512
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 4
	}
	return &Ring{in: in, cfg: cfg, rnd: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		inflight: make(map[uint64]SQE)}
}

// Inner returns the wrapped ring.
func (r *Ring) Inner() Inner { return r.in }

// GetSQE implements ringhook.Ring; it may pretend the SQ is full.
func (r *Ring) GetSQE() *ring.SQE {
	r.mu.Lock()
	defer r.mu.Unlock()
	full := false
	if r.cfg.SQFull != nil {
		full = r.cfg.SQFull()
	} else if r.cfg.SQFullRate > 0 {
		full = r.rnd.Float64() < r.cfg.SQFullRate
	}
	if full {
		r.stats.SQFull++
		return nil
	}
	s := r.in.GetSQE()
	if s != nil {
		r.prepared = append(r.prepared, s)
	}
	return s
}

// Submit implements ringhook.Ring: it records the prepared SQEs, then may fail
// without submitting them (they stay queued, as with a real EBUSY).
func (r *Ring) Submit() (int, error) {
	if err := r.recordAndDecide(); err != nil {
		return 0, err
	}
	return r.in.Submit()
}

// recordAndDecide records the SQEs prepared since the last submission and
// decides whether this submission fails.
func (r *Ring) recordAndDecide() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record()
	return r.submitFault()
}

// record notes the prepared read and write SQEs as in flight. r.mu held.
func (r *Ring) record() {
	for _, s := range r.prepared {
		switch s.Opcode {
		case ring.OpRead, ring.OpWrite, ring.OpReadFixed, ring.OpWriteFixed, ring.OpReadv, ring.OpWritev:
			r.inflight[s.UserData] = SQE{UserData: s.UserData, Op: s.Opcode, Addr: uintptr(s.Addr),
				Len: s.Len, Off: s.Off, Fd: s.Fd, RWFlags: s.OpFlags}
			r.stats.Submitted++
		}
	}
	r.prepared = r.prepared[:0]
}

// submitFault decides whether this submission fails. r.mu held.
func (r *Ring) submitFault() error {
	r.submits++
	var err error
	if r.cfg.SubmitErr != nil {
		err = r.cfg.SubmitErr(r.submits)
	} else if r.cfg.SubmitErrRate > 0 && r.rnd.Float64() < r.cfg.SubmitErrRate {
		err = syscall.EBUSY
		if r.rnd.IntN(2) == 0 {
			err = syscall.EAGAIN
		}
	}
	if err != nil {
		r.stats.SubmitErrs++
		return &ring.Error{Op: "enter", Err: err}
	}
	return nil
}

// Flush records the prepared SQEs, as Submit does, and publishes them
// with the inner ring's Flush, entering nothing.
func (r *Ring) Flush() uint32 {
	r.mu.Lock()
	r.record()
	r.mu.Unlock()
	return r.in.Flush()
}

// EnterWait may fail like Submit, submitting nothing (the published SQEs
// stay in the SQ for the next enter). It does not wait in the kernel while
// the wrapper holds CQEs back: they may be all there is to wait for.
func (r *Ring) EnterWait(toSubmit, n uint32) (uint32, error) {
	r.mu.Lock()
	err := r.submitFault()
	r.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if n > 0 && r.ready(n) {
		n = 0
	}
	return r.in.EnterWait(toSubmit, n)
}

// TwoCall returns r with its combined submit-and-wait made of two calls
// (Submit, then WaitCQ), the way a kernel without IORING_ENTER's combined
// call would be driven: the engine's one enter goes through the wrapper's
// Submit and WaitCQ paths. The fault plan is r's.
func TwoCall(r *Ring) Inner { return twoCall{Inner: r, r: r} }

type twoCall struct {
	Inner
	r *Ring
}

// Flush publishes nothing itself: EnterWait's Submit does.
func (w twoCall) Flush() uint32 { return w.r.Pending() }

func (w twoCall) EnterWait(toSubmit, n uint32) (uint32, error) {
	if toSubmit > 0 {
		if _, err := w.r.Submit(); err != nil {
			return 0, err
		}
	}
	if n == 0 {
		return 0, nil
	}
	return w.r.WaitCQ(n)
}

// Pending implements ringhook.Ring.
func (r *Ring) Pending() uint32 { return r.in.Pending() }

// Peek implements ringhook.Ring: CQEs from the kernel pass through the fault
// plan; delayed ones come out a few Peeks later.
func (r *Ring) Peek(dst []ring.CQE) (int, error) {
	if len(dst) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	want := len(dst) - len(r.out)
	r.mu.Unlock()
	var got int
	if want > 0 {
		if cap(r.tmp) < want {
			r.tmp = make([]ring.CQE, want)
		}
		var err error
		got, err = r.in.Peek(r.tmp[:want])
		if err != nil {
			return 0, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Age the CQEs held by earlier Peeks; release those due (all of them
	// if the kernel had nothing, so a held CQE can never wait for ever).
	kept := r.held[:0]
	for _, h := range r.held {
		h.peeks--
		if h.peeks <= 0 || r.release || got == 0 {
			r.out = append(r.out, h.c)
		} else {
			kept = append(kept, h)
		}
	}
	r.held = kept
	r.release = false
	for i := 0; i < got; i++ {
		r.process(r.tmp[i])
	}
	n := copy(dst, r.out)
	for _, c := range dst[:n] {
		delete(r.inflight, c.UserData)
	}
	r.out = append(r.out[:0], r.out[n:]...)
	return n, nil
}

// process applies the fault plan to one CQE from the kernel.
func (r *Ring) process(c ring.CQE) {
	if c.UserData == cancelUserData {
		r.out = append(r.out, c)
		return
	}
	if c.UserData == auditUserData {
		for _, h := range r.held {
			r.out = append(r.out, h.c)
		}
		r.held = r.held[:0]
		r.out = append(r.out, c)
		return
	}
	sqe, ok := r.inflight[c.UserData]
	if !ok {
		r.stats.Unknown++
		r.out = append(r.out, c)
		return
	}
	r.stats.DataCQEs++
	info := CQE{N: r.stats.DataCQEs, Res: c.Res, SQE: sqe}
	f := None
	switch {
	case r.cfg.Decide != nil:
		f = r.cfg.Decide(info)
	case r.cfg.Nth != 0:
		if info.N == r.cfg.Nth {
			f = r.cfg.NthFault
		}
	case r.cfg.Rate > 0 && len(r.cfg.Kinds) > 0:
		if r.rnd.Float64() < r.cfg.Rate {
			f = r.cfg.Kinds[r.rnd.IntN(len(r.cfg.Kinds))]
		}
	}
	switch f {
	case EIO, ENOSPC, EAGAIN, EINTR, ECANCELED:
		c.Res = -int32(f.Errno())
	case Short:
		if c.Res <= r.cfg.ShortAlign {
			f = None // nothing shorter to report that a kernel could
			break
		}
		c.Res = r.cfg.ShortAlign * (1 + r.rnd.Int32N((c.Res-1)/r.cfg.ShortAlign))
	case ShortUnaligned:
		if c.Res <= 1 {
			f = None
			break
		}
		c.Res = 1 + r.rnd.Int32N(c.Res-1)
	case Zero:
		if c.Res <= 0 {
			f = None
			break
		}
		c.Res = 0
	case Duplicate:
		r.out = append(r.out, c)
		d := r.cfg.DupDelay
		if d == 0 {
			d = r.rnd.IntN(r.cfg.MaxDelay + 1)
		}
		if d == 0 {
			r.out = append(r.out, c)
		} else {
			r.held = append(r.held, held{c, d})
		}
		r.stats.Faults[f]++
		return
	case Delay:
		r.held = append(r.held, held{c, 1 + r.rnd.IntN(r.cfg.MaxDelay)})
		r.stats.Faults[f]++
		return
	case Drop:
		delete(r.inflight, c.UserData)
		if r.cfg.DropsCounted {
			r.dropped++
		}
		r.stats.Faults[f]++
		return
	}
	r.stats.Faults[f]++
	r.out = append(r.out, c)
}

// ready reports whether CQEs are buffered in the wrapper; if some are only
// held, the next Peek releases them.
func (r *Ring) ready(n uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.out)+len(r.held) > 0 && len(r.out)+len(r.held) >= int(n) {
		r.release = true
		return true
	}
	return false
}

// WaitCQ implements ringhook.Ring; it returns at once if the wrapper holds CQEs.
func (r *Ring) WaitCQ(n uint32) (uint32, error) {
	if r.ready(n) {
		return n, nil
	}
	return r.in.WaitCQ(n)
}

// WaitCQTimeout implements ringhook.Ring.
func (r *Ring) WaitCQTimeout(n uint32, d time.Duration) (uint32, error) {
	if r.ready(n) {
		return n, nil
	}
	return r.in.WaitCQTimeout(n, d)
}

// Overflow reports the inner ring's count of CQEs the kernel dropped (0 if
// it has none), plus the drops injected with DropsCounted.
func (r *Ring) Overflow() uint32 {
	var n uint32
	if o, ok := r.in.(interface{ Overflow() uint32 }); ok {
		n = o.Overflow()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return n + r.dropped
}

// Err implements ringhook.Ring.
func (r *Ring) Err(res int32) error { return r.in.Err(res) }

// Flags implements ringhook.Ring.
func (r *Ring) Flags() ring.SetupFlags { return r.in.Flags() }

// RegisterBuffers implements ringhook.Ring.
func (r *Ring) RegisterBuffers(bufs [][]byte) error { return r.in.RegisterBuffers(bufs) }

// RegisterFiles implements ringhook.Ring.
func (r *Ring) RegisterFiles(fds []int32) error { return r.in.RegisterFiles(fds) }

// UpdateFiles implements ringhook.Ring.
func (r *Ring) UpdateFiles(off uint32, fds []int32) error { return r.in.UpdateFiles(off, fds) }

// Close implements ringhook.Ring.
func (r *Ring) Close() error { return r.in.Close() }

// InFlight reports whether any recorded read or write SQE whose CQE has
// not reached the engine overlaps [addr, addr+n): if a request's buffer
// is in flight when the request completes, the engine gave the buffer
// back before the kernel was done with it.
func (r *Ring) InFlight(addr uintptr, n int) bool {
	_, ok := r.InFlightSQE(addr, n)
	return ok
}

// InFlightSQE is InFlight that also returns the SQE found.
func (r *Ring) InFlightSQE(addr uintptr, n int) (SQE, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := addr + uintptr(n)
	for _, s := range r.inflight {
		if s.Addr < end && addr < s.Addr+uintptr(s.Len) {
			return s, true
		}
	}
	return SQE{}, false
}

// Outstanding returns how many recorded SQEs have not had their CQE
// delivered to the engine.
func (r *Ring) Outstanding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.inflight)
}

// Stats returns a copy of the counters.
func (r *Ring) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Of returns the *Ring that New returned, given it or TwoCall of it; nil
// for anything else.
func Of(i Inner) *Ring {
	switch r := i.(type) {
	case *Ring:
		return r
	case twoCall:
		return r.r
	}
	return nil
}
