//go:build linux

package dio_test

// The model checker: fsx rewritten for uringdio. Random aligned and
// unaligned reads and writes (synchronous, and asynchronous at queue
// depths up to 128 under each completion policy), truncate, fallocate,
// hole punching, fdatasync and reopen, checked byte for byte against an
// in-memory model (internal/fsx). A failure prints the seed, the
// configuration, the command that replays the operation sequence, such as
//
//	UIRINGDIO_FSX_SEED=<seed> UIRINGDIO_FSX_OPS=<ops> go test -race -run '^TestFSX$/^qd16-wait$' ./dio/
//
// and the last operations (with queue depth above 1 the interleaving of
// completions, and so the faults injected, may differ between runs; the
// operations do not). So does a run that makes no progress for the hang
// watchdog's limit (reliability_hang_test.go), with every goroutine's and
// thread's stack.
// Ops per configuration: 4k by default, 1M with UIRINGDIO_LONG=1, or
// UIRINGDIO_FSX_OPS; the fault-injecting configuration (2% of CQEs, 2% of
// enters refused, 2% of SQE requests told the SQ is full) runs five times
// as many.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
)

// fsxConfig is one configuration of the model checker.
type fsxConfig struct {
	name string
	qd   int // requests in flight at most; 1 means synchronous calls only
	// policy is what asynchronous requests ask for; mixed picks one of
	// Default, Inline, Caller, Pool and Wait per request.
	policy completion.Policy
	mixed  bool
	// shared runs the file on an engine of its own making (Options.Engine),
	// which survives reopen; fixed takes the buffers from the engine's
	// registered buffers (needs shared).
	shared bool
	fixed  bool
	eo     *dio.EngineOptions // nil: the default engine (or, shared, a default one of its own)
	// faults, if set, injects CQE faults at this rate, of these kinds.
	faultRate  float64
	faultKinds []faultring.Fault
	ops        int
	maxLen     int64  // longest request
	maxSize    int64  // file size bound
	dir        string // where the file goes (default: a temporary directory)
}

func fsxConfigs() []fsxConfig {
	return []fsxConfig{
		{name: "qd1-sync", qd: 1},
		{name: "qd8-inline", qd: 8, policy: completion.Inline},
		{name: "qd32-caller", qd: 32, policy: completion.Caller},
		{name: "qd128-pool", qd: 128, policy: completion.Pool},
		{name: "qd16-wait", qd: 16, policy: completion.Wait},
		{name: "qd64-mixed-fixed-regfiles", qd: 64, mixed: true, shared: true, fixed: true,
			eo: &dio.EngineOptions{QueueDepth: 32, RegisteredFiles: 4, MaxInflight: 48}},
		{name: "qd24-mixed-sqpoll", qd: 24, mixed: true, eo: &dio.EngineOptions{SQPoll: true, SQPollIdle: 20 * time.Millisecond}},
		{name: "qd32-mixed-faults", qd: 32, mixed: true, shared: true, faultRate: 0.02,
			faultKinds: []faultring.Fault{faultring.EIO, faultring.ENOSPC, faultring.EAGAIN, faultring.EINTR,
				faultring.ECANCELED, faultring.Short, faultring.Zero, faultring.Delay}},
	}
}

func TestFSX(t *testing.T) {
	only := os.Getenv("UIRINGDIO_FSX_CONFIG")
	seed := uint64(envInt("UIRINGDIO_FSX_SEED", time.Now().UnixNano()))
	ops := int(envInt("UIRINGDIO_FSX_OPS", 4000))
	if longMode() && os.Getenv("UIRINGDIO_FSX_OPS") == "" {
		ops = 1000000
	}
	for i, c := range fsxConfigs() {
		if only != "" && c.name != only {
			continue
		}
		c := c
		c.ops = ops
		if c.faultRate > 0 && os.Getenv("UIRINGDIO_FSX_OPS") == "" {
			c.ops = ops * 5 // 20k in CI, 5M in long mode
		}
		s := seed + uint64(i)
		if os.Getenv("UIRINGDIO_FSX_SEED") != "" {
			s = seed
		}
		t.Run(c.name, func(t *testing.T) { runFSX(t, c, s) })
	}
}

// fsxReq is one request slot of the checker: a Request and its buffer.
type fsxReq struct {
	x      *fsxRun
	idx    int
	req    *dio.Request
	buf    []byte
	id     int // operation number
	op     dio.Op
	off, n int64
	flags  dio.Flags
	pol    completion.Policy
	eof    bool  // touches the end of file (reads past VSize, extending writes)
	lo, hi int64 // conflict range
	calls  atomic.Int32
	faults atomic.Uint32 // bit per faultring.Fault injected on its CQEs
	start  time.Time
}

type fsxRun struct {
	t    testing.TB
	cfg  fsxConfig
	seed uint64
	rnd  *rand.Rand
	path string
	eng  *dio.Engine
	f    *dio.File
	// Two more handles on the same file, as a database has them: another
	// dio File (its own engine) and a plain buffered os.File. Synchronous
	// reads, writes and truncates go through them at random; every read
	// through any handle must see what the model says.
	g      *dio.File
	o      *os.File
	fr     *faultring.Ring
	m      *fsx.Model
	log    *fsx.Log
	align  int64
	reqs   []*fsxReq // all slots; the last is for synchronous calls
	free   []*fsxReq
	inflt  []*fsxReq
	done   chan *fsxReq
	q      *completion.Queue
	byAddr []*fsxReq // sorted by buffer address, for the fault plan
	bad    atomic.Pointer[string]
	hang   *hangWatch
	// wakeMu guards wake: the cancel of the context that reapOne waits on
	// in Queue.Wait, for Caller completions. A completion that arrives on
	// done instead cancels it.
	wakeMu sync.Mutex
	wake   context.CancelFunc
	stats  struct {
		reads, writes, async, sync, eofReads, errs, faulted, unaligned, truncs, punches, allocs, syncs, reopens, cancels int
	}
	syncOp atomic.Pointer[fsxReq] // the synchronous call in progress, for faults on bounce buffers
}

func (x *fsxRun) failf(format string, args ...any) {
	x.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(x.cfg.name, "loop-") {
		// An error the kernel made up (EIO from a loop file system) is
		// explained in its log: a CI run once failed a read with EIO on
		// loop-xfs that its replay did not repeat.
		msg += "\nkernel log:\n" + kernelLogTail(20)
	}
	x.t.Fatalf("fsx %s seed %d: %s\nreplay: %s\nlast operations:\n%s", x.cfg.name, x.seed, msg, x.replay(), x.log)
}

// kernelLogTail returns the last n lines of the kernel log (dmesg), or why
// it cannot.
func kernelLogTail(n int) string {
	out, err := exec.Command("dmesg").Output()
	if err != nil {
		return fmt.Sprintf("(dmesg: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// replay returns the command that runs this configuration again with the
// same operations.
func (x *fsxRun) replay() string {
	env := fmt.Sprintf("UIRINGDIO_FSX_SEED=%d UIRINGDIO_FSX_OPS=%d", x.seed, x.cfg.ops)
	if os.Getenv("UIRINGDIO_FSX_COOP") != "" {
		env += " UIRINGDIO_FSX_COOP=1"
	}
	return fmt.Sprintf("%s go test -race -run '%s' ./dio/", env, runPattern(x.t.Name()))
}

// hangReport is what the hang watchdog prints of the run.
func (x *fsxRun) hangReport() string {
	return fmt.Sprintf("fsx %s seed %d, after %d logged operations%s\nreplay: %s\nlast operations:\n%s",
		x.cfg.name, x.seed, x.log.Len(), x.faultState(), x.replay(), x.log)
}

// asyncFail records a failure seen on another goroutine (a callback).
func (x *fsxRun) asyncFail(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	x.bad.CompareAndSwap(nil, &s)
}

func runFSX(t *testing.T, cfg fsxConfig, seed uint64) {
	if cfg.maxLen == 0 {
		cfg.maxLen = 256 << 10
	}
	if cfg.maxSize == 0 {
		cfg.maxSize = 8 << 20
	}
	if cfg.dir == "" {
		cfg.dir = t.TempDir()
	}
	x := &fsxRun{t: t, cfg: cfg, seed: seed, rnd: rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1)),
		path: filepath.Join(cfg.dir, "fsx"), m: fsx.NewModel(), log: fsx.NewLog(400),
		done: make(chan *fsxReq, cfg.qd+1), q: completion.NewQueue(cfg.qd)}
	t.Logf("seed %d, %d ops", seed, cfg.ops)
	if cfg.shared {
		var eo dio.EngineOptions
		if cfg.eo != nil {
			eo = *cfg.eo
		}
		if cfg.fixed {
			eo.FixedBuffers, eo.FixedBufferSize = cfg.qd+1, int(cfg.maxLen)
		}
		if cfg.faultRate > 0 {
			ringhook.Attach(&eo, ringhook.Hooks{WrapRing: x.wrap})
		}
		e, err := dio.NewEngine(&eo)
		if err != nil {
			t.Fatal(err)
		}
		x.eng = e
		defer e.Close()
	}
	x.open(os.O_CREATE | os.O_TRUNC)
	x.align = dio.AlignForTest(x.f).Offset
	for i := 0; i <= cfg.qd; i++ {
		r := &fsxReq{x: x, idx: i, req: new(dio.Request)}
		if cfg.fixed {
			if bufs := x.eng.FixedBuffers(); i < len(bufs) {
				r.buf = bufs[i]
			}
			if r.buf == nil {
				t.Fatal("no registered buffer")
			}
		} else {
			r.buf = relBuf(t, int(cfg.maxLen))
		}
		r.req.Tag = uint64(i)
		r.req.Callback = r.callback
		x.reqs = append(x.reqs, r)
		if i < cfg.qd {
			x.free = append(x.free, r)
		}
	}
	x.byAddr = append([]*fsxReq(nil), x.reqs...)
	sort.Slice(x.byAddr, func(i, j int) bool { return addr(x.byAddr[i].buf) < addr(x.byAddr[j].buf) })

	x.hang = watchHang(t, x.hangReport)
	for i := 0; i < cfg.ops; i++ {
		x.step(i)
		x.hang.Progress()
		if p := x.bad.Load(); p != nil {
			x.failf("%s", *p)
		}
	}
	x.barrier()
	x.verifyAll()
	if err := x.f.Close(); err != nil {
		x.failf("Close: %v", err)
	}
	x.closeOthers()
	x.checkCoverage()
}

// checkCoverage fails the run if it did not exercise what it is for: each
// common kind of operation (of a run long enough to have them), and with
// faults, faults on each side of the ring.
func (x *fsxRun) checkCoverage() {
	if x.cfg.ops < 2000 {
		return // a short replay
	}
	s := x.stats
	if s.reads == 0 || s.writes == 0 || s.sync == 0 || s.unaligned == 0 || s.truncs == 0 || (x.cfg.qd > 1 && s.async == 0) {
		x.failf("%d ops, but some kind never ran: %+v", x.cfg.ops, s)
	}
	if x.fr != nil {
		st := x.fr.Stats()
		if st.Injected() == 0 || st.SubmitErrs == 0 || st.SQFull == 0 || s.faulted == 0 {
			x.failf("faults injected: %d of %d CQEs (%v), %d enters refused, %d SQ-full answers, %d operations faulted: some kind never",
				st.Injected(), st.DataCQEs, st.Faults, st.SubmitErrs, st.SQFull, s.faulted)
		}
	}
}

// wrap installs the fault plan on the engine's ring.
func (x *fsxRun) wrap(r ringhook.Ring) ringhook.Ring {
	rnd := rand.New(rand.NewPCG(x.seed, 7))
	cfg := faultring.Config{Seed: x.seed, ShortAlign: 512,
		// The submission side too: enter refusing with EBUSY or EAGAIN
		// (the SQEs stay queued), and the SQ pretending to be full.
		SubmitErrRate: x.cfg.faultRate, SQFullRate: x.cfg.faultRate}
	cfg.Decide = func(c faultring.CQE) faultring.Fault {
		if rnd.Float64() >= x.cfg.faultRate {
			return faultring.None
		}
		f := x.cfg.faultKinds[rnd.IntN(len(x.cfg.faultKinds))]
		if r := x.owner(c.SQE.Addr); r != nil {
			r.faults.Or(1 << f)
		} else if r := x.syncOp.Load(); r != nil {
			// A bounce buffer of the synchronous call in progress (a write
			// past the end zeroes the old last block's tail through one).
			r.faults.Or(1 << f)
		}
		return f
	}
	x.fr = faultring.New(r, cfg)
	return x.fr
}

// owner finds the slot whose buffer holds a.
func (x *fsxRun) owner(a uintptr) *fsxReq {
	i := sort.Search(len(x.byAddr), func(i int) bool { return addr(x.byAddr[i].buf) > a }) - 1
	if i < 0 {
		return nil
	}
	if r := x.byAddr[i]; a < addr(r.buf)+uintptr(len(r.buf)) {
		return r
	}
	return nil
}

func (x *fsxRun) open(flag int) {
	o := &dio.Options{EngineOptions: x.cfg.eo}
	if x.eng != nil {
		o = &dio.Options{Engine: x.eng}
	}
	f, err := dio.Open(x.path, os.O_RDWR|flag, 0o600, o)
	if err != nil {
		x.failf("Open: %v", err)
	}
	x.f = f
	if x.g, err = dio.Open(x.path, os.O_RDWR, 0, nil); err != nil {
		x.failf("Open (second handle): %v", err)
	}
	if x.o, err = os.OpenFile(x.path, os.O_RDWR, 0); err != nil {
		x.failf("open (os.File handle): %v", err)
	}
}

// closeOthers closes the second dio handle and the os.File handle.
func (x *fsxRun) closeOthers() {
	if err := x.g.Close(); err != nil {
		x.failf("Close (second handle): %v", err)
	}
	if err := x.o.Close(); err != nil {
		x.failf("close (os.File handle): %v", err)
	}
}

// callback runs wherever the request completes.
func (r *fsxReq) callback(req *dio.Request) {
	if n := r.calls.Add(1); n != 1 {
		r.x.asyncFail("op %d: completion ran %d times", r.id, n)
		return
	}
	if fr := r.x.fr; fr != nil {
		if s, ok := fr.InFlightSQE(addr(r.buf), int(r.n)); ok {
			r.x.asyncFail("op %d completed while its buffer is still in flight: %+v", r.id, s)
		}
	}
	r.x.done <- r
	r.x.wakeMu.Lock()
	if wake := r.x.wake; wake != nil {
		wake()
	}
	r.x.wakeMu.Unlock()
}

// ---- operation generation ----

func (x *fsxRun) randLen() int64 {
	a := x.align
	max := x.cfg.maxLen / a
	switch x.rnd.IntN(4) {
	case 0:
		return a * (1 + x.rnd.Int64N(8))
	case 1:
		return a * (1 + x.rnd.Int64N(max))
	default:
		return a * (1 + x.rnd.Int64N(min(max, 64)))
	}
}

func (x *fsxRun) randOff(n int64) int64 {
	a := x.align
	var lim int64
	switch x.rnd.IntN(8) {
	case 0: // around the end of file
		base := max(x.m.VSize-n, 0) / a
		return a * (base + x.rnd.Int64N(3*n/a+1))
	default:
		lim = x.cfg.maxSize - n
	}
	if lim <= 0 {
		return 0
	}
	return a * x.rnd.Int64N(lim/a+1)
}

func (x *fsxRun) step(i int) {
	if x.m.VSize > x.cfg.maxSize {
		x.barrier()
		x.truncate(x.rnd.Int64N(x.cfg.maxSize / 2))
		return
	}
	switch w := x.rnd.IntN(1000); {
	case w < 400:
		x.rw(i, dio.Read)
	case w < 780:
		x.rw(i, dio.Write)
	case w < 800:
		x.unaligned(i)
	case w < 830:
		x.barrier()
		x.truncate(x.rnd.Int64N(x.cfg.maxSize))
	case w < 860:
		x.fallocate(i, true)
	case w < 880:
		x.fallocate(i, false)
	case w < 895:
		if err := x.f.Datasync(); err != nil {
			x.failf("Datasync: %v", err)
		}
		x.stats.syncs++
		x.log.Add("datasync")
	case w < 905:
		x.cancelled(i)
	case w < 908:
		x.reopen()
	case w < 912:
		x.zeroLen()
	default:
		x.rw(i, dio.Read)
	}
}

// conflicts reports whether [lo, hi) (write or not, touching EOF or not)
// conflicts with an operation in flight.
func (x *fsxRun) conflicts(lo, hi int64, write, eof bool) bool {
	for _, r := range x.inflt {
		if (write || r.op == dio.Write) && lo < r.hi && r.lo < hi {
			return true
		}
		if eof && r.eof && (write || r.op == dio.Write) {
			return true
		}
	}
	return false
}

func (x *fsxRun) rw(i int, op dio.Op) {
	n := x.randLen()
	off := x.randOff(n)
	write := op == dio.Write
	var eof bool
	async := x.cfg.qd > 1 && x.rnd.IntN(10) < 9
	var flags dio.Flags
	if write && x.rnd.IntN(10) == 0 {
		flags |= dio.DSync
	}
	if !write && x.rnd.IntN(40) == 0 {
		flags |= dio.NoWait
	}
	for {
		eof = off+n > x.m.VSize // the size may move while we wait
		if !x.conflicts(off, off+n, write, eof) && (!async || len(x.free) > 0) {
			break
		}
		x.reapOne()
	}
	var r *fsxReq
	if async {
		r = x.free[len(x.free)-1]
		x.free = x.free[:len(x.free)-1]
	} else {
		r = x.reqs[len(x.reqs)-1]
	}
	r.id, r.op, r.off, r.n, r.flags, r.eof = i, op, off, n, flags, eof
	r.lo, r.hi = off, off+n
	r.faults.Store(0)
	r.calls.Store(0)
	if write {
		fillRand(x.rnd, r.buf[:n])
		x.stats.writes++
	} else {
		x.stats.reads++
	}
	if !async {
		x.syncRW(r)
		return
	}
	x.stats.async++
	pol := x.cfg.policy
	if x.cfg.mixed {
		pol = []completion.Policy{completion.Default, completion.Inline, completion.Caller, completion.Pool, completion.Wait}[x.rnd.IntN(5)]
	}
	r.pol = pol
	q := r.req
	q.Op, q.Off, q.Flags, q.Policy, q.Queue, q.DoneBefore = op, off, flags, pol, nil, 0
	q.Buf, q.Bufs = nil, nil
	x.setBufs(q, r.buf[:n])
	if pol == completion.Caller || x.cfg.mixed {
		q.Queue = x.q
	}
	x.log.Add("submit %s off=%d len=%d flags=%s policy=%s slot=%d bufs=%d", op, off, n, flagStr(flags), pol, r.idx, max(len(q.Bufs), 1))
	r.start = time.Now()
	x.inflt = append(x.inflt, r)
	if err := x.f.Submit(q); err != nil {
		// NoWait may refuse up front (the mapper would block): nothing was
		// submitted, and the error says to retry.
		if flags&dio.NoWait == 0 || !errors.Is(err, syscall.EAGAIN) {
			x.failf("op %d: Submit: %v", i, err)
		}
		if s := checkOpError(err, op.String(), x.path, off, n); s != "" {
			x.failf("op %d: %s", i, s)
		}
		x.log.Add("  refused op %d: %v", i, err)
		x.inflt = x.inflt[:len(x.inflt)-1]
		x.free = append(x.free, r)
		x.stats.errs++
	}
}

// setBufs gives q the data as one buffer or as up to four aligned pieces
// (several SQEs).
func (x *fsxRun) setBufs(q *dio.Request, b []byte) {
	k := int64(1 + x.rnd.IntN(4))
	units := int64(len(b)) / x.align
	if k == 1 || units < 2 {
		q.Buf = b
		return
	}
	k = min(k, units)
	cuts := map[int64]bool{}
	for int64(len(cuts)) < k-1 {
		cuts[1+x.rnd.Int64N(units-1)] = true
	}
	var bs [][]byte
	prev := int64(0)
	for u := int64(1); u <= units; u++ {
		if cuts[u] || u == units {
			bs = append(bs, b[prev*x.align:u*x.align])
			prev = u
		}
	}
	q.Bufs = bs
}

func (x *fsxRun) syncRW(r *fsxReq) {
	x.stats.sync++
	x.syncOp.Store(r)
	defer x.syncOp.Store(nil)
	ctx := context.Background()
	var n int
	var err error
	b := r.buf[:r.n]
	f, handle := x.f, ""
	switch x.rnd.IntN(8) {
	case 0:
		f, handle = x.g, " (second handle)"
	case 1:
		// The os.File handle: buffered, through the page cache. Only with
		// no direct I/O in flight: the kernel does not keep buffered and
		// direct I/O to the same pages coherent (and readahead reaches
		// pages well past the range asked for). A direct write that finds
		// a page cached after it began logs "Page cache invalidation
		// failure on direct I/O" and sets the file's writeback error, which
		// the next fsync, or DSync write, of every open file returns as
		// EIO.
		x.barrier()
		r.flags = 0
		x.log.Add("sync %s off=%d len=%d (os.File)", r.op, r.off, r.n)
		if r.op == dio.Read {
			n, err = x.o.ReadAt(b, r.off)
		} else {
			n, err = x.o.WriteAt(b, r.off)
		}
		if err != nil && err != io.EOF {
			x.failf("op %d: os.File %s off=%d len=%d: %d, %v", r.id, r.op, r.off, r.n, n, err)
		}
		x.check(r, int64(n), err)
		return
	}
	x.log.Add("sync %s off=%d len=%d flags=%s%s", r.op, r.off, r.n, flagStr(r.flags), handle)
	switch {
	case r.op == dio.Read && r.flags == 0 && x.rnd.IntN(2) == 0:
		n, err = f.ReadAt(b, r.off)
	case r.op == dio.Read:
		n, err = f.ReadAtContext(ctx, b, r.off, r.flags)
	case r.flags == 0 && x.rnd.IntN(2) == 0:
		n, err = f.WriteAt(b, r.off)
	default:
		n, err = f.WriteAtContext(ctx, b, r.off, r.flags)
	}
	if x.fr != nil {
		if s, ok := x.fr.InFlightSQE(addr(b), len(b)); ok {
			x.failf("sync op %d returned while its buffer is in flight: %+v", r.id, s)
		}
	}
	x.check(r, int64(n), err)
}

// reapOne waits for one asynchronous completion and checks it.
func (x *fsxRun) reapOne() {
	if len(x.inflt) == 0 {
		return
	}
	for {
		select {
		case r := <-x.done:
			x.finish(r)
			return
		default:
		}
		if x.q.Poll() > 0 {
			continue
		}
		if r := x.oldestWaiter(); r != nil {
			// A Wait-policy request completes only in Wait.
			r.req.Wait(context.Background())
			continue
		}
		// Run Caller completions as they come, until one has run or a
		// completion of another policy arrives on done (its callback
		// cancels ctx).
		ctx, cancel := context.WithCancel(context.Background())
		x.wakeMu.Lock()
		x.wake = cancel
		x.wakeMu.Unlock()
		if len(x.done) == 0 {
			x.q.Wait(ctx, 1)
		}
		x.wakeMu.Lock()
		x.wake = nil
		x.wakeMu.Unlock()
		cancel()
	}
}

func (x *fsxRun) faultState() string {
	if x.fr == nil {
		return ""
	}
	return fmt.Sprintf(", wrapper: %d outstanding, %+v", x.fr.Outstanding(), x.fr.Stats())
}

func (x *fsxRun) oldestWaiter() *fsxReq {
	for _, r := range x.inflt {
		if p, _ := r.req.EffectivePolicy(); p == completion.Wait && !dio.DoneForTest(r.req) {
			return r
		}
	}
	return nil
}

func (x *fsxRun) barrier() {
	for len(x.inflt) > 0 {
		x.reapOne()
	}
}

func (x *fsxRun) finish(r *fsxReq) {
	for i, q := range x.inflt {
		if q == r {
			x.inflt = append(x.inflt[:i], x.inflt[i+1:]...)
			break
		}
	}
	x.free = append(x.free, r)
	n, err := r.req.Result()
	if err == dio.ErrInProgress {
		x.failf("op %d: callback ran before the result was final", r.id)
	}
	if p, _ := r.req.EffectivePolicy(); p == completion.Default {
		x.failf("op %d: effective policy Default", r.id)
	}
	x.check(r, int64(n), err)
}

// check verifies one read or write result against the model and updates
// the model.
func (x *fsxRun) check(r *fsxReq, n int64, err error) {
	x.hang.Progress()
	faults := r.faults.Load()
	has := func(f faultring.Fault) bool { return faults&(1<<f) != 0 }
	hardFault := has(faultring.EIO) || has(faultring.ENOSPC) || has(faultring.ECANCELED) || has(faultring.Zero) ||
		has(faultring.ShortUnaligned) || (has(faultring.EAGAIN) && r.flags&dio.NoWait != 0)
	if faults != 0 {
		x.stats.faulted++
	}
	x.log.Add("  done op %d %s off=%d len=%d -> n=%d err=%v faults=%#x", r.id, r.op, r.off, r.n, n, err, faults)
	if errors.Is(err, syscall.EINTR) {
		x.failf("op %d: EINTR reached the caller: %v", r.id, err)
	}
	if errors.Is(err, syscall.EAGAIN) && r.flags&dio.NoWait == 0 {
		x.failf("op %d: EAGAIN without NoWait reached the caller: %v", r.id, err)
	}
	if n < 0 || n > r.n {
		x.failf("op %d: n=%d out of [0, %d]", r.id, n, r.n)
	}
	opName := r.op.String()
	if r.op == dio.Read {
		wantN, eof := x.m.ExpectRead(r.off, r.n)
		if err == nil || err == io.EOF {
			if !hardFault || n == wantN {
				if n != wantN || (err == io.EOF) != eof {
					x.failf("op %d: read off=%d len=%d = %d, %v; model says %d, eof=%v (VSize %d)", r.id, r.off, r.n, n, err, wantN, eof, x.m.VSize)
				}
			} else if err != io.EOF || n > wantN {
				x.failf("op %d: faulted read = %d, %v; want an error or a short count with io.EOF (model %d)", r.id, n, err, wantN)
			}
		} else {
			x.stats.errs++
			if !hardFault && !(r.flags&dio.NoWait != 0 && errors.Is(err, syscall.EAGAIN)) {
				x.failf("op %d: read failed without a fault: %d, %v", r.id, n, err)
			}
			if s := checkOpError(err, opName, x.path, r.off, r.n); s != "" {
				x.failf("op %d: %s", r.id, s)
			}
			if n > wantN {
				x.failf("op %d: failed read reports %d bytes, more than the %d there are", r.id, n, wantN)
			}
		}
		if eof {
			x.stats.eofReads++
		}
		if d := x.m.Check(r.off, readBack(r)[:n]); d != "" {
			x.failf("op %d: read off=%d len=%d returned wrong data: %s", r.id, r.off, r.n, d)
		}
		return
	}
	data := r.buf[:r.n]
	if err == nil {
		if n != r.n {
			x.failf("op %d: write of %d returned %d with no error", r.id, r.n, n)
		}
		x.m.Write(r.off, data)
		if r.eof && dio.SizeForTest(x.t, x.f) < r.off+r.n {
			x.failf("op %d: File.Size %d after a write ending at %d", r.id, dio.SizeForTest(x.t, x.f), r.off+r.n)
		}
		return
	}
	x.stats.errs++
	if !hardFault && !(r.flags&dio.NoWait != 0 && errors.Is(err, syscall.EAGAIN)) {
		x.failf("op %d: write failed without a fault: %d, %v", r.id, n, err)
	}
	if s := checkOpError(err, opName, x.path, r.off, r.n); s != "" {
		x.failf("op %d: %s", r.id, s)
	}
	// What is on disk now: the first n bytes are new; every sector after
	// is old or new.
	disk := preadAll(x.t, x.path, r.off, r.n)
	disk = append(disk, make([]byte, r.n-int64(len(disk)))...)
	old := x.m.Bytes(r.off, r.n)
	if d := fsx.Diff(r.off, disk[:n], data[:n]); d != "" {
		x.failf("op %d: failed write reported %d bytes done, but they are not on disk: %s", r.id, n, d)
	}
	for s := n; s < r.n; s += 512 {
		e := min(s+512, r.n)
		if string(disk[s:e]) != string(old[s:e]) && string(disk[s:e]) != string(data[s:e]) {
			x.failf("op %d: sector at %d after a failed write is neither old nor new", r.id, r.off+s)
		}
	}
	x.m.Set(r.off, disk)
	if r.eof {
		// No other operation at the end of file is in flight (conflicts):
		// the sizes are this write's doing.
		x.m.KSize = fileSize(x.t, x.path)
		x.m.VSize = dio.SizeForTest(x.t, x.f)
		if x.m.VSize > x.m.KSize {
			x.failf("op %d: File.Size %d is past the kernel's size %d", r.id, x.m.VSize, x.m.KSize)
		}
	}
}

// eofInFlight reports whether an operation that may move the size is in
// flight.
func (x *fsxRun) eofInFlight() bool {
	for _, r := range x.inflt {
		if r.eof && r.op == dio.Write {
			return true
		}
	}
	return false
}

// readBack returns the bytes a read request produced, in logical order.
func readBack(r *fsxReq) []byte { return r.buf[:r.n] }

// unaligned reads or writes at an unaligned offset, length or buffer,
// through the engine's bounce buffers, and checks the result against the
// model. A write holds the file's gate alone: the checker waits for the
// I/O in flight first (its conflicts are too broad to know).
func (x *fsxRun) unaligned(i int) {
	x.stats.unaligned++
	x.barrier()
	b := x.reqs[len(x.reqs)-1].buf
	a := x.align
	n := 1 + x.rnd.Int64N(min(x.cfg.maxLen-a, 3*a))
	off := x.rnd.Int64N(max(x.m.VSize+2*a, 1))
	if x.rnd.IntN(3) > 0 {
		off = x.randOff(n) + x.rnd.Int64N(a)
	}
	boff := x.rnd.Int64N(a)
	p := b[boff : boff+n]
	write := x.rnd.IntN(2) == 0
	f := x.f
	if x.rnd.IntN(4) == 0 || x.fr != nil { // the second handle has no faults to answer for
		f = x.g
	}
	var got int
	var err error
	if write {
		fillRand(x.rnd, p)
		got, err = f.WriteAt(p, off)
	} else {
		got, err = f.ReadAt(p, off)
	}
	x.log.Add("unaligned write=%v off=%d len=%d buf+%d -> %d, %v", write, off, n, boff, got, err)
	if write {
		if got != int(n) || err != nil {
			x.failf("op %d: unaligned write off=%d len=%d buf+%d = %d, %v", i, off, n, boff, got, err)
		}
		x.m.Write(off, p)
		if s := fileSize(x.t, x.path); s != x.m.KSize {
			x.failf("op %d: unaligned write off=%d len=%d left the file %d bytes long, want %d", i, off, n, s, x.m.KSize)
		}
		return
	}
	wantN, eof := x.m.ExpectRead(off, n)
	if int64(got) != wantN || (err == io.EOF) != eof || (err != nil && err != io.EOF) {
		x.failf("op %d: unaligned read off=%d len=%d buf+%d = %d, %v; model %d eof=%v", i, off, n, boff, got, err, wantN, eof)
	}
	if d := x.m.Check(off, p[:got]); d != "" {
		x.failf("op %d: unaligned read returned wrong data: %s", i, d)
	}
}

func (x *fsxRun) truncate(size int64) {
	x.stats.truncs++
	if x.rnd.IntN(2) == 0 {
		size = size / x.align * x.align
	}
	var err error
	switch x.rnd.IntN(3) {
	case 0:
		x.log.Add("truncate %d", size)
		err = x.f.Truncate(size)
	case 1:
		x.log.Add("truncate %d (second handle)", size)
		err = x.g.Truncate(size)
	default:
		x.log.Add("truncate %d (os.File)", size)
		err = x.o.Truncate(size)
	}
	if err != nil {
		x.failf("Truncate(%d): %v", size, err)
	}
	x.m.Truncate(size)
	if dio.SizeForTest(x.t, x.f) != size {
		x.failf("Size %d after Truncate(%d)", dio.SizeForTest(x.t, x.f), size)
	}
}

// fallocate punches a hole or allocates, while I/O elsewhere is in flight
// (ranges rounded out to 64 KiB: the file system zeroes partial blocks
// through the page cache).
func (x *fsxRun) fallocate(i int, punch bool) {
	off := x.rnd.Int64N(x.cfg.maxSize)
	n := 1 + x.rnd.Int64N(x.cfg.maxLen)
	lo, hi := off&^(64<<10-1), (off+n+64<<10-1)&^(64<<10-1)
	eof := !punch && off+n > x.m.VSize
	if eof {
		x.barrier()
	}
	for x.conflicts(lo, hi, true, eof) {
		x.reapOne()
	}
	if punch {
		x.stats.punches++
		x.log.Add("punch off=%d len=%d", off, n)
		if err := x.f.Punch(off, n); err != nil {
			x.failf("Punch(%d, %d): %v", off, n, err)
		}
		x.m.Punch(off, n)
		return
	}
	x.stats.allocs++
	x.log.Add("allocate off=%d len=%d", off, n)
	if err := x.f.Allocate(off, n); err != nil {
		x.failf("Allocate(%d, %d): %v", off, n, err)
	}
	x.m.Allocate(off, n)
	if !x.eofInFlight() && dio.SizeForTest(x.t, x.f) != x.m.VSize {
		x.failf("Size %d after Allocate(%d, %d), model %d", dio.SizeForTest(x.t, x.f), off, n, x.m.VSize)
	}
}

// cancelled reads with a context that is already done, or ends during the
// read: the result is the data, or ECANCELED; never a hang or EINTR.
func (x *fsxRun) cancelled(i int) {
	x.stats.cancels++
	r := x.reqs[len(x.reqs)-1]
	n := x.randLen()
	off := x.randOff(n)
	for x.conflicts(off, off+n, false, off+n > x.m.VSize) {
		x.reapOne()
	}
	r.faults.Store(0)
	ctx, cancel := context.WithCancel(context.Background())
	if x.rnd.IntN(2) == 0 {
		cancel()
	} else {
		go func() { runtime.Gosched(); cancel() }()
	}
	got, err := x.f.ReadAtContext(ctx, r.buf[:n], off, 0)
	cancel()
	x.log.Add("cancelled read off=%d len=%d -> %d, %v", off, n, got, err)
	wantN, eof := x.m.ExpectRead(off, n)
	if err != nil && err != io.EOF {
		if !errors.Is(err, syscall.ECANCELED) && !errors.Is(err, context.Canceled) && r.faults.Load() == 0 {
			x.failf("op %d: cancelled read: %d, %v", i, got, err)
		}
		if s := checkOpError(err, "read", x.path, off, n); s != "" {
			x.failf("op %d: %s", i, s)
		}
	} else if r.faults.Load()&(1<<faultring.Zero) != 0 && int64(got) < wantN && err == io.EOF {
		// an injected zero count reads as end of file
	} else if int64(got) != wantN || (err == io.EOF) != eof {
		x.failf("op %d: cancelled read = %d, %v; model %d eof=%v", i, got, err, wantN, eof)
	}
	if d := x.m.Check(off, r.buf[:got]); d != "" {
		x.failf("op %d: cancelled read returned wrong data: %s", i, d)
	}
}

func (x *fsxRun) reopen() {
	x.barrier()
	x.stats.reopens++
	x.log.Add("reopen")
	if err := x.f.Close(); err != nil {
		x.failf("Close: %v", err)
	}
	x.closeOthers()
	if _, err := x.f.ReadAt(x.reqs[0].buf[:x.align], 0); !errors.Is(err, dio.ErrClosed) {
		x.failf("ReadAt after Close: %v, want ErrClosed", err)
	}
	x.open(0)
	x.m.Reopen()
	if got := fileSize(x.t, x.path); got != x.m.KSize {
		x.failf("kernel size %d after reopen, model %d", got, x.m.KSize)
	}
	if dio.SizeForTest(x.t, x.f) != x.m.VSize {
		x.failf("Size %d after reopen, model %d", dio.SizeForTest(x.t, x.f), x.m.VSize)
	}
}

func (x *fsxRun) zeroLen() {
	if n, err := x.f.ReadAt(nil, x.rnd.Int64N(x.cfg.maxSize)/x.align*x.align); n != 0 || err != nil {
		x.failf("zero-length ReadAt = %d, %v", n, err)
	}
}

// verifyAll compares the whole file, as the kernel has it, with the model,
// and reads it back through the engine too.
func (x *fsxRun) verifyAll() {
	if got := fileSize(x.t, x.path); got != x.m.KSize {
		x.failf("final kernel size %d, model %d", got, x.m.KSize)
	}
	disk := preadAll(x.t, x.path, 0, x.m.KSize)
	if d := fsx.Diff(0, disk, x.m.Content()); d != "" {
		x.failf("final content: %s", d)
	}
}

func fillRand(r *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func flagStr(f dio.Flags) string {
	s := ""
	for _, x := range []struct {
		f dio.Flags
		n string
	}{{dio.NoWait, "nowait"}, {dio.OverwriteOnly, "overwrite"}, {dio.Partial, "partial"}, {dio.DSync, "dsync"}, {dio.Sync, "sync"}} {
		if f&x.f != 0 {
			if s != "" {
				s += "|"
			}
			s += x.n
		}
	}
	if s == "" {
		return "-"
	}
	return s
}
