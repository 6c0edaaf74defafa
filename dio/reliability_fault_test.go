//go:build linux

package dio_test

// Fault injection at the ring boundary (internal/faultring): a sweep that
// fails the k-th CQE of a fixed workload with each kind of fault, and the
// faults that break the ring (duplicate, late and lost CQEs) or the
// submission side (EBUSY/EAGAIN from enter, a full SQ). The random 2%
// fault run over many operations is the model checker's
// qd32-mixed-faults configuration (reliability_fsx_test.go).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/faultring"
	"github.com/uringdio/uringdio/internal/fsx"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

const (
	swReqs   = 24
	swPieces = 3
	swPiece  = 4096
	swStride = 32 << 10
	swSize   = swReqs * swStride
)

// sweepReq is one request of the sweep workload: three separately
// allocated buffers, so three SQEs.
type sweepReq struct {
	env    *sweepEnv
	i      int
	req    *dio.Request
	bufs   [][]byte
	off    int64
	op     dio.Op
	nowait bool
	pol    completion.Policy
	calls  atomic.Int32
	hit    atomic.Int64 // file offset of the SQE that got the fault, -1 if none
	canary atomic.Pointer[string]
	done   chan struct{}
	// refused is Submit's error, for a request refused because the ring
	// was declared broken before it was submitted (lost-CQE runs only).
	refused error
}

type sweepEnv struct {
	t      *testing.T
	path   string
	f      *dio.File
	fr     *faultring.Ring
	kind   faultring.Fault
	target atomic.Uint64 // the N of the CQE to fail
	reqs   []*sweepReq
	byAddr []struct {
		a, n uintptr
		r    *sweepReq
	}
	q     *completion.Queue
	model *fsx.Model
	eo    dio.EngineOptions // the engine's options, with the sweep's ring wrapper
	hang  *hangWatch
}

// newSweepEnv is newSweepEnvC with the combined submit-and-wait.
func newSweepEnv(t *testing.T, kind faultring.Fault, eo dio.EngineOptions) *sweepEnv {
	return newSweepEnvC(t, kind, true, eo, 0)
}

// newSweepEnvC sets up the sweep workload under the fault kind. With
// combine the engine submits and waits in one call (Flush, EnterWait), as
// on a plain ring; without, the wrapper makes that call of two (Submit,
// then WaitCQ: faultring.TwoCall), through its Submit path.
// lostAfter > 0 turns on the engine's lost-completion audits.
func newSweepEnvC(t *testing.T, kind faultring.Fault, combine bool, eo dio.EngineOptions, lostAfter time.Duration) *sweepEnv {
	e := &sweepEnv{t: t, kind: kind, q: completion.NewQueue(swReqs), model: fsx.NewModel(), eo: eo}
	e.path = filepath.Join(t.TempDir(), "sweep")
	init := make([]byte, swSize)
	fillRand(newRand(1), init)
	// Written back before the run: a NoWait read of a range with dirty
	// page cache fails with EAGAIN (the kernel would have to write it back
	// first).
	writeSynced(t, e.path, init)
	e.model.Write(0, init)
	ringhook.Attach(&e.eo, ringhook.Hooks{LostAfter: lostAfter, WrapRing: func(r ringhook.Ring) ringhook.Ring {
		e.fr = faultring.New(r, faultring.Config{Seed: uint64(kind), Decide: e.decide})
		if !combine {
			return faultring.TwoCall(e.fr)
		}
		return e.fr
	}})
	f, err := dio.Open(e.path, os.O_RDWR, 0, &dio.Options{EngineOptions: &e.eo})
	if err != nil {
		t.Fatal(err)
	}
	e.f = f
	t.Cleanup(func() { closeWithin(t, f, 10*time.Second) })
	e.hang = watchHang(t, func() string {
		return fmt.Sprintf("%v at data CQE %d (combined-submit-wait=%v), wrapper %+v", kind, e.target.Load(), combine, e.fr.Stats())
	})
	pols := []completion.Policy{completion.Inline, completion.Pool, completion.Caller, completion.Wait}
	for i := 0; i < swReqs; i++ {
		r := &sweepReq{env: e, i: i, off: int64(i) * swStride, req: new(dio.Request), pol: pols[i%4]}
		r.op = dio.Read
		if i%2 == 1 {
			r.op = dio.Write
		}
		r.nowait = i%4 == 2
		for j := 0; j < swPieces; j++ {
			b := relBuf(t, swPiece)
			r.bufs = append(r.bufs, b)
			e.byAddr = append(e.byAddr, struct {
				a, n uintptr
				r    *sweepReq
			}{addr(b), swPiece, r})
		}
		r.req.Callback = r.callback
		e.reqs = append(e.reqs, r)
	}
	sort.Slice(e.byAddr, func(i, j int) bool { return e.byAddr[i].a < e.byAddr[j].a })
	return e
}

// decide fails the target CQE with the sweep's fault, and records which
// request (and which of its pieces) it hit.
func (e *sweepEnv) decide(c faultring.CQE) faultring.Fault {
	if c.N != e.target.Load() {
		return faultring.None
	}
	i := sort.Search(len(e.byAddr), func(i int) bool { return e.byAddr[i].a > c.SQE.Addr }) - 1
	if i >= 0 && c.SQE.Addr < e.byAddr[i].a+e.byAddr[i].n {
		e.byAddr[i].r.hit.Store(int64(c.SQE.Off))
	}
	return e.kind
}

func (r *sweepReq) callback(*dio.Request) {
	if n := r.calls.Add(1); n != 1 {
		s := fmt.Sprintf("request %d: completion ran %d times", r.i, n)
		r.canary.CompareAndSwap(nil, &s)
		return
	}
	for _, b := range r.bufs {
		if s, ok := r.env.fr.InFlightSQE(addr(b), len(b)); ok {
			m := fmt.Sprintf("request %d completed while its buffer is in flight: %+v", r.i, s)
			r.canary.CompareAndSwap(nil, &m)
		}
	}
	r.env.hang.Progress()
	close(r.done)
}

// run submits the workload with the k-th CQE (counted from now) failed,
// waits for every request and checks each result. It returns how many
// data CQEs the run took.
func (e *sweepEnv) run(k uint64, round int) uint64 {
	t := e.t
	before := e.fr.Stats().DataCQEs
	e.target.Store(before + k)
	for _, r := range e.reqs {
		r.calls.Store(0)
		r.hit.Store(-1)
		r.canary.Store(nil)
		r.refused = nil
		r.done = make(chan struct{})
		q := r.req
		q.Op, q.Off, q.Bufs, q.Policy, q.Queue, q.Flags = r.op, r.off, r.bufs, r.pol, nil, 0
		if r.pol == completion.Caller {
			q.Queue = e.q
		}
		if r.nowait {
			q.Flags = dio.NoWait
		}
		if r.op == dio.Write {
			for j, b := range r.bufs {
				for x := range b {
					b[x] = byte(round*131 + r.i*17 + j*5 + x>>9)
				}
			}
		}
		if err := e.f.Submit(q); err != nil {
			// A lost CQE of a request submitted earlier may be found (the
			// audit runs after 20ms without completions) while this loop
			// still submits: from then on the ring refuses work.
			if e.kind != faultring.Drop || !errors.Is(err, dio.ErrRingBroken) {
				t.Fatalf("k=%d: Submit %d: %v", k, r.i, err)
			}
			if s := checkOpError(err, r.op.String(), e.path, r.off, swPieces*swPiece); s != "" {
				t.Fatalf("k=%d: Submit %d: %s", k, r.i, s)
			}
			r.refused = err
			close(r.done)
		}
	}
	// A request that never completes is the hang watchdog's to report.
	for _, r := range e.reqs {
		if r.pol == completion.Wait && r.refused == nil {
			r.req.Wait(context.Background())
		}
	}
	for _, r := range e.reqs {
		e.waitDone(r)
	}
	hits := 0
	for _, r := range e.reqs {
		if p := r.canary.Load(); p != nil {
			t.Fatalf("%v at CQE %d: %s", e.kind, k, *p)
		}
		if r.hit.Load() >= 0 {
			hits++
		}
		if r.refused == nil {
			e.check(r, k)
		}
	}
	used := e.fr.Stats().DataCQEs - before
	if k <= used && hits != 1 {
		t.Fatalf("%v at CQE %d of %d: %d requests hit", e.kind, k, used, hits)
	}
	return used
}

// waitDone waits until r has completed. A Caller-policy request completes
// in the Queue's Wait, which runs whichever Caller completion is ready.
func (e *sweepEnv) waitDone(r *sweepReq) {
	if r.pol != completion.Caller {
		<-r.done
		return
	}
	for {
		select {
		case <-r.done:
			return
		default:
		}
		e.q.Wait(context.Background(), 1)
	}
}

func (e *sweepEnv) check(r *sweepReq, k uint64) {
	t := e.t
	n64, err := r.req.Result()
	n := int64(n64)
	full := int64(swPieces * swPiece)
	hit := r.hit.Load()
	where := fmt.Sprintf("%v at CQE %d: request %d (%s at %d, policy %s, nowait %v, hit %d)", e.kind, k, r.i, r.op, r.off, r.pol, r.nowait, hit)
	if errors.Is(err, syscall.EINTR) || (errors.Is(err, syscall.EAGAIN) && !r.nowait) {
		t.Fatalf("%s: %v reached the caller", where, err)
	}
	var wantErr error
	wantN := full
	if hit >= 0 {
		piece := (hit - r.off) / swPiece * swPiece // bytes before the faulted piece
		switch e.kind {
		case faultring.EIO, faultring.ENOSPC, faultring.ECANCELED:
			wantErr, wantN = e.kind.Errno(), piece
		case faultring.EAGAIN:
			if r.nowait {
				wantErr, wantN = syscall.EAGAIN, piece
			}
		case faultring.Zero:
			if r.op == dio.Read {
				wantErr, wantN = io.EOF, piece // the engine takes a 0-byte read for EOF
			} else {
				wantErr, wantN = io.ErrShortWrite, piece
			}
		case faultring.Drop:
			wantErr, wantN = dio.ErrLostCompletionForTest, piece
		case faultring.ShortUnaligned:
			// A read the kernel ends short of an aligned boundary has run
			// into the end of a kernel file (the kernel ends reads only
			// there): the bytes before and io.EOF.
			// (A short count that happens to be aligned is resubmitted for
			// the rest, and the request succeeds.)
			if r.op == dio.Read && err != nil {
				if n <= hit-r.off || n >= hit-r.off+swPiece {
					t.Fatalf("%s: n=%d, want a short count within the faulted piece", where, n)
				}
				wantErr, wantN = io.EOF, n
				break
			}
			// The remainder of an unaligned short write is unaligned: the
			// kernel refuses it, or the request succeeds.
			if err != nil {
				wantErr, wantN = syscall.EINVAL, n
				if n > hit-r.off+swPiece {
					t.Fatalf("%s: n=%d past the faulted piece", where, n)
				}
			}
		}
	}
	if wantErr == nil && e.kind == faultring.Drop && errors.Is(err, dio.ErrRingBroken) && !errors.Is(err, dio.ErrLostCompletionForTest) {
		// In flight when the ring was declared broken: reports so, with
		// the bytes it moved, checked below.
		wantErr, wantN = dio.ErrRingBroken, n
	}
	switch {
	case wantErr == nil:
		if err != nil || n != full {
			t.Fatalf("%s: = %d, %v; want %d, nil", where, n, err, full)
		}
	case wantErr == io.EOF:
		if err != io.EOF || n != wantN {
			t.Fatalf("%s: = %d, %v; want %d, io.EOF", where, n, err, wantN)
		}
	default:
		if !errors.Is(err, wantErr) || n != wantN {
			t.Fatalf("%s: = %d, %v; want %d, %v", where, n, err, wantN, wantErr)
		}
		if s := checkOpError(err, r.op.String(), e.path, r.off, full); s != "" {
			t.Fatalf("%s: %s", where, s)
		}
	}
	if r.op == dio.Read {
		got := make([]byte, 0, full)
		for _, b := range r.bufs {
			got = append(got, b...)
		}
		if d := e.model.Check(r.off, got[:n]); d != "" {
			t.Fatalf("%s: wrong data: %s", where, d)
		}
		return
	}
	data := make([]byte, 0, full)
	for _, b := range r.bufs {
		data = append(data, b...)
	}
	if err == nil {
		e.model.Write(r.off, data)
		return
	}
	disk := preadAll(t, e.path, r.off, full)
	if d := fsx.Diff(r.off, disk[:n], data[:n]); d != "" {
		t.Fatalf("%s: the %d bytes reported written are not on disk: %s", where, n, d)
	}
	old := e.model.Bytes(r.off, full)
	for s := (n + 511) &^ 511; s < full; s += 512 {
		if string(disk[s:s+512]) != string(old[s:s+512]) && string(disk[s:s+512]) != string(data[s:s+512]) {
			t.Fatalf("%s: sector at %d is neither old nor new", where, r.off+s)
		}
	}
	e.model.Set(r.off, disk)
}

// TestFaultSweepKthCQE fails the k-th CQE of a workload of 24 requests of
// three SQEs each (reads and writes, NOWAIT reads, every completion
// policy) with each kind of fault, for every k: exactly the request that
// owned that CQE fails, with an *OpError naming its op, path, offset,
// length and the errno, reporting the bytes before the failed piece;
// retryable faults (EINTR, EAGAIN, short counts, reordering) never reach
// the caller; no request completes while the kernel may still use its
// buffers, and none completes twice.
func TestFaultSweepKthCQE(t *testing.T) {
	kinds := []faultring.Fault{faultring.EIO, faultring.ENOSPC, faultring.ECANCELED, faultring.EINTR,
		faultring.EAGAIN, faultring.Short, faultring.ShortUnaligned, faultring.Zero, faultring.Delay}
	for _, combine := range []bool{false, true} {
		for _, kind := range kinds {
			t.Run(fmt.Sprintf("%v/combined-submit-wait=%v", kind, combine), func(t *testing.T) {
				e := newSweepEnvC(t, kind, combine, dio.EngineOptions{}, 0)
				used := e.run(1<<62, 0) // no fault: how many CQEs the workload takes
				if used < swReqs*swPieces {
					t.Fatalf("workload took %d CQEs, want at least %d", used, swReqs*swPieces)
				}
				for k := uint64(1); k <= used; k++ {
					e.run(k, int(k))
				}
				st := e.fr.Stats()
				if st.Faults[kind] == 0 {
					t.Fatalf("no %v injected: %+v", kind, st)
				}
			})
		}
	}
}

// TestFaultSweepLostCQE loses the k-th CQE of the sweep workload, for
// every k, on a fresh engine each time (a lost CQE breaks the ring): the
// request that owned it fails with errLostCompletion and the bytes before
// the lost piece, the ring is declared broken, every other request
// completes exactly once (with its data, or ErrRingBroken and what it
// moved), none while its buffer is in flight, and nothing hangs: the
// background reaper's watchdog audits the ring, and so does a waiter whose
// deadline passes.
func TestFaultSweepLostCQE(t *testing.T) {
	for _, combine := range []bool{false, true} {
		t.Run(fmt.Sprintf("combined-submit-wait=%v", combine), func(t *testing.T) {
			const check = 20 * time.Millisecond
			used := newSweepEnvC(t, faultring.Drop, combine, dio.EngineOptions{}, check).run(1<<62, 0)
			// Every k in long mode; otherwise every fourth, from a seeded
			// start, so that successive CI runs cover them all.
			step, first := uint64(4), 1+uint64(envInt("UIRINGDIO_SWEEP_SEED", time.Now().UnixNano()))%4
			if longMode() {
				step, first = 1, 1
			}
			t.Logf("losing CQE %d, %d, ... of %d (UIRINGDIO_SWEEP_SEED=%d replays)", first, first+step, used, first-1)
			for k := first; k <= used; k += step {
				t.Run(fmt.Sprint(k), func(t *testing.T) {
					e := newSweepEnvC(t, faultring.Drop, combine, dio.EngineOptions{}, check)
					e.run(k, int(k))
					st := e.f.Engine().Stats()
					if st.LostCQEs != 1 {
						t.Fatalf("lost CQE %d: engine counted %d lost", k, st.LostCQEs)
					}
					if _, err := e.f.ReadAt(e.reqs[0].bufs[0], 0); !errors.Is(err, dio.ErrRingBroken) {
						t.Fatalf("lost CQE %d: ReadAt afterwards = %v, want ErrRingBroken", k, err)
					}
				})
			}
		})
	}
}

// TestFaultSweepFixedBuffersRegisteredFiles is the EIO and short-count
// sweep on registered buffers and files (read_fixed/write_fixed SQEs).
func TestFaultSweepFixedBuffersRegisteredFiles(t *testing.T) {
	for _, kind := range []faultring.Fault{faultring.EIO, faultring.Short} {
		t.Run(kind.String(), func(t *testing.T) {
			e := newSweepEnv(t, kind, dio.EngineOptions{RegisteredFiles: 2, QueueDepth: 16})
			used := e.run(1<<62, 0)
			for k := uint64(1); k <= used; k += 3 {
				e.run(k, int(k))
			}
		})
	}
}

// ---- faults that the engine must survive without a hang ----

// submitStall runs a synchronous read and write on an engine whose
// submissions are refused (or whose SQ is full) a few times in a row,
// and fails if they do not complete.
func submitStall(t *testing.T, cfg faultring.Config, combine bool) {
	f, path := openRel(t, nil)
	init := make([]byte, 64<<10)
	fillRand(newRand(2), init)
	os.WriteFile(path, init, 0o600)
	f.Close()
	var fr *faultring.Ring
	f, err := dio.Open(path, os.O_RDWR, 0, wrapped(func(r ringhook.Ring) ringhook.Ring {
		fr = faultring.New(r, cfg)
		if !combine {
			return faultring.TwoCall(fr)
		}
		return fr
	}))
	if err != nil {
		t.Fatal(err)
	}
	b := relBuf(t, 8192)
	done := make(chan string, 1)
	go func() {
		for i := 0; i < 4; i++ {
			n, err := f.ReadAt(b, int64(i)*8192)
			if n != len(b) || err != nil {
				done <- fmt.Sprintf("ReadAt %d = %d, %v", i, n, err)
				return
			}
			if string(b) != string(init[i*8192:(i+1)*8192]) {
				done <- "ReadAt returned wrong data"
				return
			}
			if n, err := f.WriteAt(b, int64(i)*8192); n != len(b) || err != nil {
				done <- fmt.Sprintf("WriteAt %d = %d, %v", i, n, err)
				return
			}
		}
		done <- ""
	}()
	select {
	case s := <-done:
		if s != "" {
			t.Fatal(s)
		}
		closeWithin(t, f, 10*time.Second)
	case <-time.After(10 * time.Second):
		t.Fatalf("a synchronous call hangs when the ring refuses submissions (wrapper %+v, engine %d SQEs in flight): "+
			"did reapBatch wait in WaitCQ without a timeout while SQEs were still unsubmitted?", fr.Stats(), f.Engine().Stats().Inflight)
	}
}

// io_uring_enter may fail with EBUSY or EAGAIN (CQ overflow backlog, no
// memory for requests): the SQEs stay queued and a later enter takes
// them. A synchronous caller whose submission was refused twice in a row
// waited in WaitCQ for completions of SQEs the kernel never received.
func TestRefusedSubmitsDoNotStallWaiter(t *testing.T) {
	for _, combine := range []bool{false, true} {
		t.Run(fmt.Sprintf("combined-submit-wait=%v", combine), func(t *testing.T) {
			var left atomic.Int32
			left.Store(6)
			submitStall(t, faultring.Config{SubmitErr: func(uint64) error {
				if left.Add(-1) >= 0 {
					return syscall.EAGAIN
				}
				return nil
			}}, combine)
		})
	}
}

// A full SQ is backpressure: the request waits in the backlog. A
// synchronous caller whose request was backlogged with nothing else in
// flight waited in WaitCQ for a completion that could never come.
func TestSQFullBacklogDoesNotStallWaiter(t *testing.T) {
	for _, combine := range []bool{false, true} {
		t.Run(fmt.Sprintf("combined-submit-wait=%v", combine), func(t *testing.T) {
			var left atomic.Int32
			left.Store(6)
			submitStall(t, faultring.Config{SQFull: func() bool { return left.Add(-1) >= 0 }}, combine)
		})
	}
}

// Random EBUSY/EAGAIN from enter and SQ-full answers under asynchronous
// load: everything completes, correctly.
func TestFaultSubmitSideRandom(t *testing.T) {
	f, path := openRel(t, nil)
	f.Close()
	var fr *faultring.Ring
	f, err := dio.Open(path, os.O_RDWR, 0, hooked(dio.EngineOptions{QueueDepth: 8}, ringhook.Hooks{WrapRing: func(r ringhook.Ring) ringhook.Ring {
		fr = faultring.New(r, faultring.Config{Seed: 3, SubmitErrRate: 0.2, SQFullRate: 0.2})
		return fr
	}}))
	if err != nil {
		t.Fatal(err)
	}
	defer closeWithin(t, f, 10*time.Second)
	const n = 64
	bufs := make([][]byte, n)
	var wg sync.WaitGroup
	var bad atomic.Pointer[string]
	for round := 0; round < 20; round++ {
		for i := range n {
			if bufs[i] == nil {
				bufs[i] = relBuf(t, 4096)
			}
			for j := range bufs[i] {
				bufs[i][j] = byte(round + i + j>>9)
			}
			wg.Add(1)
			r := &dio.Request{Op: dio.Write, Off: int64(i) * 4096, Buf: bufs[i], Policy: completion.Inline,
				Callback: func(r *dio.Request) {
					defer wg.Done()
					if n, err := r.Result(); n != 4096 || err != nil {
						s := fmt.Sprintf("write %d: %d, %v", r.Off, n, err)
						bad.CompareAndSwap(nil, &s)
					}
				}}
			if err := f.Submit(r); err != nil {
				t.Fatal(err)
			}
		}
		waitGroupWithin(t, &wg, 20*time.Second, func() string { return fmt.Sprintf("wrapper %+v", fr.Stats()) })
		if p := bad.Load(); p != nil {
			t.Fatal(*p)
		}
		disk := preadAll(t, path, 0, n*4096)
		for i := range n {
			if string(disk[i*4096:(i+1)*4096]) != string(bufs[i]) {
				t.Fatalf("round %d: block %d differs", round, i)
			}
		}
	}
	if st := fr.Stats(); st.SubmitErrs == 0 || st.SQFull == 0 {
		t.Fatalf("no submit-side faults injected: %+v", st)
	}
}

func waitGroupWithin(t *testing.T, wg *sync.WaitGroup, d time.Duration, state func() string) {
	t.Helper()
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
	case <-time.After(d):
		t.Fatalf("requests did not complete in %v: %s", d, state())
	}
}

// ---- faults that break the ring ----

// brokenEnv submits n asynchronous reads on an engine whose fault plan is
// decide, and records, for each, how often it completed and whether its
// buffer was still in flight at completion.
type brokenEnv struct {
	t     *testing.T
	f     *dio.File
	fr    *faultring.Ring
	reqs  []*dio.Request
	calls []atomic.Int32
	early atomic.Int32 // completions while the buffer was in flight
	wg    sync.WaitGroup
	gate  atomic.Bool // pretend the SQ is full
}

func newBrokenEnv(t *testing.T, n int, cfg faultring.Config) *brokenEnv {
	f, path := openRel(t, nil)
	os.WriteFile(path, make([]byte, max(n*4096, 64<<10)), 0o600)
	f.Close()
	b := &brokenEnv{t: t, calls: make([]atomic.Int32, n)}
	if cfg.SQFull == nil {
		cfg.SQFull = b.gate.Load
	}
	f, err := dio.Open(path, os.O_RDWR, 0, wrapped(func(r ringhook.Ring) ringhook.Ring {
		b.fr = faultring.New(r, cfg)
		return b.fr
	}))
	if err != nil {
		t.Fatal(err)
	}
	b.f = f
	for i := 0; i < n; i++ {
		buf := relBuf(t, 4096)
		b.wg.Add(1)
		r := &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: buf, Policy: completion.Inline, Tag: uint64(i),
			Callback: func(r *dio.Request) {
				if b.calls[r.Tag].Add(1) == 1 {
					if b.fr.InFlight(addr(r.Buf), len(r.Buf)) {
						b.early.Add(1)
					}
					b.wg.Done()
				}
			}}
		b.reqs = append(b.reqs, r)
	}
	return b
}

// submitAll submits every request, holding the SQ "full" meanwhile so
// that they all reach the kernel in one batch, after the last Submit.
func (b *brokenEnv) submitAll() {
	b.gate.Store(true)
	for _, r := range b.reqs {
		if err := b.f.Submit(r); err != nil {
			b.t.Fatal(err)
		}
	}
	b.gate.Store(false)
}

// A CQE delivered twice, at once or after its slot was reused (a late
// CQE), matches nothing in flight: the engine must say so loudly
// (ErrRingBroken on the requests it cannot vouch for and on every later
// submission), complete every request exactly once, and still never hand
// a buffer back while the kernel may use it. It did the first two, but
// failed the requests still in flight at once, with their SQEs still in
// the kernel: a caller reusing such a buffer races the kernel's DMA.
func TestRingBrokenKeepsBuffersUntilTheirCQEs(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("late=%v", late), func(t *testing.T) {
			const n = 16
			var dupAt uint64 = 1
			cfg := faultring.Config{Seed: 5, MaxDelay: 1, Decide: func(c faultring.CQE) faultring.Fault {
				switch {
				case c.N == dupAt:
					return faultring.Duplicate
				case c.N > dupAt:
					return faultring.Delay // still in flight when the stray arrives
				}
				return faultring.None
			}}
			if late {
				cfg.MaxDelay = 8
			}
			b := newBrokenEnv(t, n, cfg)
			b.submitAll()
			waitGroupWithin(t, &b.wg, 10*time.Second, func() string { return fmt.Sprintf("%+v", b.fr.Stats()) })
			broken := 0
			for i, r := range b.reqs {
				if c := b.calls[i].Load(); c != 1 {
					t.Fatalf("request %d completed %d times", i, c)
				}
				n, err := r.Result()
				if errors.Is(err, dio.ErrRingBroken) {
					broken++
					if s := checkOpError(err, "read", b.f.Name(), r.Off, 4096); s != "" {
						t.Fatal(s)
					}
				} else if err != nil || n != 4096 {
					t.Fatalf("request %d: %d, %v", i, n, err)
				}
			}
			if broken == 0 {
				t.Fatal("no request reported ErrRingBroken after a stray CQE")
			}
			if err := b.f.Submit(&dio.Request{Op: dio.Read, Buf: relBuf(t, 4096)}); !errors.Is(err, dio.ErrRingBroken) {
				t.Fatalf("Submit after a stray CQE: %v, want ErrRingBroken", err)
			}
			if st := b.f.Engine().Stats(); st.StrayCQEs == 0 {
				t.Fatal("StrayCQEs not counted")
			}
			early := b.early.Load()
			b.f.Close()
			if early > 0 {
				t.Fatalf("%d of %d requests completed (ErrRingBroken) while their SQEs were still in the kernel", early, n)
			}
		})
	}
}

// When the ring broke while a short completion waited in e.resub for SQ
// room, fail freed that slot (req = nil) but left it in e.resub: the next
// flush prepared an SQE for it and dereferenced the nil request (a panic
// on the reaper: the whole process dies). It runs in a child process.
func TestRingBrokenDropsPendingResubmit(t *testing.T) {
	if os.Getenv("UIRINGDIO_CHILD") == "resubpanic" {
		ringBrokenWithPendingResubmit(t)
		return
	}
	out, err := runChild(t, "^TestRingBrokenDropsPendingResubmit$", "UIRINGDIO_CHILD=resubpanic")
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestRingBrokenDropsPendingResubmit") {
		t.Fatalf("the child did not run the test:\n%s", out)
	}
}

func ringBrokenWithPendingResubmit(t *testing.T) {
	var fullSince atomic.Int64 // the SQ is "full" from then until the stray CQE
	var gate atomic.Bool
	var b *brokenEnv
	cfg := faultring.Config{
		DupDelay: 1, // the copy comes in a later batch than the short CQE
		SQFull: func() bool {
			return gate.Load() || (fullSince.Load() != 0 && b.f.Engine().Stats().StrayCQEs == 0)
		},
		Decide: func(c faultring.CQE) faultring.Fault {
			if c.SQE.Len == 16384 && fullSince.Load() == 0 {
				fullSince.Store(time.Now().UnixNano()) // the resubmission of the rest must wait
				return faultring.Short
			}
			if c.SQE.Len == 4096 {
				return faultring.Duplicate
			}
			return faultring.None
		},
	}
	b = newBrokenEnv(t, 2, cfg)
	b.reqs[0].Buf = relBuf(t, 16384)
	gate.Store(true)
	b.submitAll()
	gate.Store(false)
	waitGroupWithin(t, &b.wg, 10*time.Second, func() string { return fmt.Sprintf("%+v", b.fr.Stats()) })
	// The owner's flush of the SQE it prepared for the freed slot.
	waitUntil(t, "the engine to have nothing in flight", func() bool { return b.f.Engine().Stats().Inflight == 0 })
	st := b.fr.Stats()
	if st.Faults[faultring.Short] != 1 || st.Faults[faultring.Duplicate] == 0 || b.f.Engine().Stats().StrayCQEs == 0 {
		t.Fatalf("the ring did not break with a short completion pending: wrapper %+v, %d stray CQEs", st, b.f.Engine().Stats().StrayCQEs)
	}
	// In flight when the ring broke (its rest waiting for SQ room, or
	// resubmitted just before): ErrRingBroken, with what it moved.
	if n, err := b.reqs[0].Result(); !errors.Is(err, dio.ErrRingBroken) || n > 16384 || n%512 != 0 {
		t.Fatalf("short request in flight when the ring broke = %d, %v; want ErrRingBroken", n, err)
	}
	if n := b.f.Engine().Stats().Inflight; n != 0 {
		t.Fatalf("%d SQEs in flight after the ring broke and every request completed", n)
	}
	closeWithin(t, b.f, 5*time.Second)
}

// A lost CQE (the kernel never posts it) left its request in flight for
// ever: the engine could not notice, and cancelling (a context deadline)
// did not help, because the kernel no longer knows the request either;
// the File could not be closed. Now, with lost-completion audits on, the
// waiter audits the ring (a drained NOP) once its cancel has had 100ms:
// the request fails with errLostCompletion, the ring is declared broken,
// Close returns.
func TestLostCQEFailsItsRequest(t *testing.T) {
	var fr *faultring.Ring
	f, path := openRel(t, nil)
	os.WriteFile(path, make([]byte, 4096), 0o600)
	f.Close()
	f, err := dio.Open(path, os.O_RDWR, 0, hooked(dio.EngineOptions{}, ringhook.Hooks{LostAfter: time.Hour, WrapRing: func(r ringhook.Ring) ringhook.Ring {
		fr = faultring.New(r, faultring.Config{Nth: 1, NthFault: faultring.Drop})
		return fr
	}})) // no watchdog in time: the deadline must do it
	if err != nil {
		t.Fatal(err)
	}
	b := relBuf(t, 4096)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := f.ReadAtContext(ctx, b, 0, 0)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, dio.ErrLostCompletionForTest) || !errors.Is(err, dio.ErrRingBroken) {
			t.Fatalf("read whose CQE was lost = %v; want errLostCompletion (an ErrRingBroken)", err)
		}
		if msg := checkOpError(err, "read", path, 0, 4096); msg != "" {
			t.Fatal(msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request whose CQE is lost never completes, even with a context deadline")
	}
	st := f.Engine().Stats()
	if st.LostCQEs != 1 || st.Audits == 0 {
		t.Fatalf("stats: %d lost, %d audits; want 1 lost", st.LostCQEs, st.Audits)
	}
	if _, err := f.ReadAt(b, 0); !errors.Is(err, dio.ErrRingBroken) {
		t.Fatalf("ReadAt on a broken ring = %v, want ErrRingBroken", err)
	}
	closeWithin(t, f, 5*time.Second)
}

// A CQE the kernel drops (a CQ overflow it could not keep) shows in the CQ
// ring's overflow counter: with audits off (the default), the engine still
// notices, declares the ring broken and audits it to find whose CQE it
// was; that request fails with errLostCompletion, without any context.
func TestKernelDroppedCQEBreaksRing(t *testing.T) {
	dropped := make(chan struct{})
	f := openNumbered(t, 4, wrapped(func(r ringhook.Ring) ringhook.Ring {
		return faultring.New(r, faultring.Config{Decide: dropNth(2, dropped), DropsCounted: true})
	}))
	b := relBuf(t, 4096)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(b, 4096) // its CQE is dropped
		done <- err
	}()
	// The dropped CQE leaves nothing to wake the reader: the next reaper
	// to look sees the counter. Another read, once the CQE is gone, wakes
	// it.
	<-dropped
	r := &dio.Request{Op: dio.Read, Off: 8192, Buf: relBuf(t, 4096), Policy: completion.Pool}
	if err := f.Submit(r); err != nil && !errors.Is(err, dio.ErrRingBroken) {
		t.Fatal(err)
	} else if err == nil {
		r.Wait(context.Background())
	}
	select {
	case err := <-done:
		if !errors.Is(err, dio.ErrLostCompletionForTest) {
			t.Fatalf("read whose CQE the kernel dropped = %v, want errLostCompletion", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read whose CQE the kernel dropped (and counted) never completed")
	}
	st := f.Engine().Stats()
	if st.DroppedCQEs != 1 || st.LostCQEs != 1 {
		t.Fatalf("stats: %d dropped, %d lost; want 1, 1", st.DroppedCQEs, st.LostCQEs)
	}
	closeWithin(t, f, 5*time.Second)
}

// dropNth is a fault plan that drops the nth data CQE and closes dropped
// when it has.
func dropNth(n uint64, dropped chan struct{}) func(faultring.CQE) faultring.Fault {
	return func(c faultring.CQE) faultring.Fault {
		if c.N != n {
			return faultring.None
		}
		close(dropped)
		return faultring.Drop
	}
}

// sqFullAfterDrop answers SQ-full to the first n SQE requests after a
// counted drop: the audit that would find the dropped CQE's owner.
type sqFullAfterDrop struct {
	*faultring.Ring
	n atomic.Int32
}

func (w *sqFullAfterDrop) GetSQE() *ring.SQE {
	if w.Ring.Overflow() > 0 && w.n.Add(-1) >= 0 {
		return nil
	}
	return w.Ring.GetSQE()
}

// When the audit owed for a dropped CQE found no SQE, nothing tried
// again: the counter had been noted, audits are off by default, and the
// reader of the dropped CQE waited for ever. The audit is now owed until
// it is queued, and reapers do not wait without a limit meanwhile.
func TestDroppedCQEAuditRetriedUntilQueued(t *testing.T) {
	dropped := make(chan struct{})
	f := openNumbered(t, 4, wrapped(func(r ringhook.Ring) ringhook.Ring {
		w := &sqFullAfterDrop{Ring: faultring.New(r, faultring.Config{Decide: dropNth(2, dropped), DropsCounted: true})}
		w.n.Store(2) // the audit's GetSQE and its retry after Submit
		return w
	}))
	b := relBuf(t, 4096)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := f.ReadAt(b, 4096); done <- err }() // its CQE is dropped
	<-dropped
	r := &dio.Request{Op: dio.Read, Off: 8192, Buf: relBuf(t, 4096), Policy: completion.Pool}
	if err := f.Submit(r); err == nil {
		r.Wait(context.Background())
	}
	select {
	case err := <-done:
		if !errors.Is(err, dio.ErrLostCompletionForTest) {
			t.Fatalf("read whose CQE was dropped = %v, want errLostCompletion", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read whose CQE was dropped never completed: the owed audit was not retried")
	}
	closeWithin(t, f, 5*time.Second)
}

// Audits are off by default: a request stuck in flight (a read of an
// empty pipe, redirected by a submit hook) must not hold back the I/O
// submitted after it, as a drained audit NOP behind it would.
func TestStuckRequestDoesNotStallOthers(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	var o dio.Options
	dio.SetSubmitHook(&o, func(r *dio.Request, sqe *ring.SQE) {
		if r.Tag == 1 {
			sqe.Fd, sqe.Off = int32(p[0]), 0
		}
	})
	f := openNumbered(t, 4, &o)
	if d := dio.LostAfterForTest(f.Engine()); d != 0 {
		t.Fatalf("audits are on by default (every %v)", d)
	}
	stuck := &dio.Request{Op: dio.Read, Buf: relBuf(t, 4096), Policy: completion.Pool, Tag: 1}
	if err := f.Submit(stuck); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := f.ReadAtContext(ctx, relBuf(t, 4096), 4096, 0)
		cancel()
		if n != 4096 || err != nil {
			t.Fatalf("healthy read beside a stuck one = %d, %v", n, err)
		}
	}
	if a := f.Engine().Stats().Audits; a != 0 {
		t.Fatalf("%d audits ran with audits off", a)
	}
	syscall.Write(p[1], make([]byte, 4096))
	if _, err := stuck.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	closeWithin(t, f, 5*time.Second)
}

// openNumbered opens a scratch file of n 4 KiB blocks, block i filled with
// byte i, with opts.
func openNumbered(t *testing.T, n int, o *dio.Options) *dio.File {
	t.Helper()
	f, path := openRel(t, nil)
	f.Close()
	init := make([]byte, n*4096)
	for i := range init {
		init[i] = byte(i / 4096)
	}
	if err := os.WriteFile(path, init, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := dio.Open(path, os.O_RDWR, 0, o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Without a context, the background reaper's watchdog finds a lost
// completion: an asynchronous request's callback gets errLostCompletion,
// the requests beside it finish with their data or ErrRingBroken, and
// nothing hangs.
func TestLostCQEWatchdog(t *testing.T) {
	const n = 32
	f := openNumbered(t, n, hooked(dio.EngineOptions{}, ringhook.Hooks{LostAfter: 50 * time.Millisecond, WrapRing: func(r ringhook.Ring) ringhook.Ring {
		return faultring.New(r, faultring.Config{Nth: 7, NthFault: faultring.Drop})
	}}))
	results := make(chan *dio.Request, n)
	for i := 0; i < n; i++ {
		r := &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: relBuf(t, 4096), Policy: completion.Pool,
			Callback: func(r *dio.Request) { results <- r }}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
	}
	lost := 0
	for i := 0; i < n; i++ {
		select {
		case r := <-results:
			got, err := r.Result()
			switch {
			case errors.Is(err, dio.ErrLostCompletionForTest):
				lost++
			case err == nil:
				if got != 4096 || r.Buf[0] != byte(r.Off/4096) {
					t.Fatalf("read at %d = %d bytes of %#x", r.Off, got, r.Buf[0])
				}
			case errors.Is(err, dio.ErrRingBroken):
			default:
				t.Fatalf("read at %d: %v", r.Off, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d requests never completed: the lost completion was not found", n-i, n)
		}
	}
	if lost != 1 {
		t.Fatalf("%d requests reported a lost completion, want 1", lost)
	}
	closeWithin(t, f, 5*time.Second)
}

// Audits never accuse a request that is merely slow or whose CQE the ring
// reorders: under load with delayed CQEs and an audit every 100µs, every
// request completes with its data and the ring stays healthy.
func TestAuditsUnderLoadFindNothing(t *testing.T) {
	const n, qd = 64, 32
	ops := 20000
	if testing.Short() {
		ops = 4000
	}
	f := openNumbered(t, n, wrapped(func(r ringhook.Ring) ringhook.Ring {
		return faultring.New(r, faultring.Config{Seed: 1, Rate: 0.2, Kinds: []faultring.Fault{faultring.Delay}})
	}))
	defer closeWithin(t, f, 5*time.Second)
	stop := make(chan struct{})
	auditorDone := make(chan struct{})
	go func() {
		defer close(auditorDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			dio.AuditForTest(f.Engine())
			// Paces the audits; the test waits for no event here.
			time.Sleep(100 * time.Microsecond)
		}
	}()
	free := make(chan []byte, qd)
	for i := 0; i < qd; i++ {
		free <- relBuf(t, 4096)
	}
	errs := make(chan error, qd)
	var wg sync.WaitGroup
	var completed atomic.Int64
	hang := watchHang(t, func() string {
		return fmt.Sprintf("%d of %d reads completed; engine stats: %d audits, %d CQEs", completed.Load(), ops,
			f.Engine().Stats().Audits, f.Engine().Stats().Completed)
	})
	for i := 0; i < ops; i++ {
		buf := <-free
		wg.Add(1)
		off := int64(i%n) * 4096
		pol := []completion.Policy{completion.Inline, completion.Pool, completion.Caller}[i%3]
		r := &dio.Request{Op: dio.Read, Off: off, Buf: buf, Policy: pol}
		r.Callback = func(r *dio.Request) {
			defer wg.Done()
			completed.Add(1)
			hang.Progress()
			if got, err := r.Result(); err != nil || got != 4096 || r.Buf[0] != byte(r.Off/4096) {
				select {
				case errs <- fmt.Errorf("read at %d = %d, %v (byte %#x)", r.Off, got, err, r.Buf[0]):
				default:
				}
			}
			free <- r.Buf
		}
		if err := f.Submit(r); err != nil {
			t.Fatal(err)
		}
		if pol == completion.Caller {
			go r.Wait(context.Background()) // Caller: the completion runs in Wait
		}
	}
	wg.Wait()
	close(stop)
	<-auditorDone
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := f.Engine().Stats()
	if st.LostCQEs != 0 {
		t.Fatalf("audits accused %d healthy requests", st.LostCQEs)
	}
	if st.Audits == 0 {
		t.Fatal("no audit ran")
	}
}

// The engine retries EINTR and EAGAIN completions, but at most 16 times
// per SQE, with no pause; the 17th in a row reached the caller as EINTR
// (or EAGAIN without NOWAIT), which the engine promises never to return.
func TestRepeatedEINTRNeverReachesCaller(t *testing.T) {
	for _, kind := range []faultring.Fault{faultring.EINTR, faultring.EAGAIN} {
		t.Run(kind.String(), func(t *testing.T) {
			f, path := openRel(t, nil)
			os.WriteFile(path, make([]byte, 4096), 0o600)
			f.Close()
			f, err := dio.Open(path, os.O_RDWR, 0, wrapped(func(r ringhook.Ring) ringhook.Ring {
				return faultring.New(r, faultring.Config{Decide: func(c faultring.CQE) faultring.Fault {
					if c.N <= 20 {
						return kind
					}
					return faultring.None
				}})
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer closeWithin(t, f, 5*time.Second)
			n, err := f.ReadAt(relBuf(t, 4096), 0)
			if errors.Is(err, kind.Errno()) {
				t.Fatalf("20 %v completions in a row reached the caller as %d, %v", kind, n, err)
			}
			if n != 4096 || err != nil {
				t.Fatalf("ReadAt = %d, %v", n, err)
			}
		})
	}
}

// Cancelling asynchronous requests through Wait's context while their
// CQEs are delayed, duplicated by nothing, and some requests still sit in
// the backlog: each completes exactly once, with its data or ECANCELED,
// never while its buffer is in flight.
func TestCancelRacingCompletion(t *testing.T) {
	const n = 64
	var fr *faultring.Ring
	f, path := openRel(t, nil)
	init := make([]byte, n*4096)
	fillRand(newRand(9), init)
	os.WriteFile(path, init, 0o600)
	f.Close()
	var gate atomic.Bool // SQ "full": requests wait in the backlog
	f, err := dio.Open(path, os.O_RDWR, 0, hooked(dio.EngineOptions{QueueDepth: 8, MaxInflight: 16},
		ringhook.Hooks{WrapRing: func(r ringhook.Ring) ringhook.Ring {
			fr = faultring.New(r, faultring.Config{Seed: 4, Rate: 0.5, Kinds: []faultring.Fault{faultring.Delay}, MaxDelay: 6,
				SQFull: gate.Load})
			return fr
		}}))
	if err != nil {
		t.Fatal(err)
	}
	defer closeWithin(t, f, 10*time.Second)
	rnd := newRand(4)
	rounds := 30
	if longMode() {
		rounds = 3000
	}
	ok, cancelled := 0, 0
	var at atomic.Int64 // round*n + request
	hang := watchHang(t, func() string {
		return fmt.Sprintf("round %d of %d, waiting for request %d; wrapper %+v", at.Load()/n, rounds, at.Load()%n, fr.Stats())
	})
	for round := 0; round < rounds; round++ {
		reqs := make([]*dio.Request, n)
		calls := make([]atomic.Int32, n)
		var early atomic.Int32
		hold := rnd.IntN(n) // the SQ is "full" until this request's Wait
		for i := range reqs {
			if i == n-hold {
				gate.Store(true)
			}
			pol := []completion.Policy{completion.Wait, completion.Inline, completion.Pool}[rnd.IntN(3)]
			reqs[i] = &dio.Request{Op: dio.Read, Off: int64(i) * 4096, Buf: relBuf(t, 4096), Policy: pol, Tag: uint64(i),
				Callback: func(r *dio.Request) {
					calls[r.Tag].Add(1)
					if fr.InFlight(addr(r.Buf), 4096) {
						early.Add(1)
					}
				}}
			if err := f.Submit(reqs[i]); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range reqs {
			if i == hold {
				gate.Store(false)
			}
			ctx, cancel := context.WithCancel(context.Background())
			k := rnd.IntN(3)
			if gate.Load() {
				k = rnd.IntN(2) // it may be in the backlog for good: cancel it
			}
			switch k {
			case 0:
				cancel()
			case 1:
				// Only spreads when the cancel lands against the completion;
				// the test waits for no event here.
				d := time.Duration(rnd.IntN(200)) * time.Microsecond
				go func() { time.Sleep(d); cancel() }()
			}
			at.Store(int64(round*n + i))
			got, err := r.Wait(ctx)
			cancel()
			hang.Progress()
			switch {
			case err == nil && got == 4096:
				ok++
				if string(r.Buf) != string(init[i*4096:(i+1)*4096]) {
					t.Fatalf("round %d: request %d returned wrong data", round, i)
				}
			case errors.Is(err, syscall.ECANCELED) || errors.Is(err, context.Canceled):
				cancelled++
				if s := checkOpError(err, "read", path, r.Off, 4096); s != "" {
					t.Fatalf("round %d: %s", round, s)
				}
			default:
				t.Fatalf("round %d: request %d: %d, %v", round, i, got, err)
			}
		}
		// Wait returns once the request's callback has returned.
		for i := range reqs {
			if !dio.DoneForTest(reqs[i]) {
				t.Fatalf("round %d: request %d not done after Wait returned", round, i)
			}
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("round %d: request %d completed %d times", round, i, c)
			}
		}
		if e := early.Load(); e > 0 {
			t.Fatalf("round %d: %d requests completed while their buffers were in flight", round, e)
		}
	}
	// Requests the SQ kept in the backlog and whose contexts were
	// cancelled fail; most of the others complete.
	if ok == 0 || cancelled == 0 {
		t.Fatalf("%d completed, %d cancelled: the test exercised only one outcome", ok, cancelled)
	}
}
