//go:build linux

package harness

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
)

// openUringdio prepares a uringdio job: one dio.File, qd buffers, and either qd reusable Requests driven by
// completion callbacks (inline, caller, pool) or qd goroutines calling
// ReadAt/WriteAt (wait).
func openUringdio(j *Job) (JobRunner, error) {
	cfg := j.Cfg
	// What a user writes: dio.Open with no options, on the process's default
	// engine (a kernel file, block devices included, served by the ring or,
	// on a device that completes synchronously, the pread backend). Only the
	// experiments below, and depths past the default ring's 256 entries,
	// give the file an engine of its own.
	//
	// A many-files run (cfg.Files) opens every file that way and nothing
	// else: all of them share the default engine, which is the point.
	var eo *dio.EngineOptions
	if len(cfg.Files) > 0 {
		if cfg.SQPoll || cfg.IOPoll || cfg.FixedBufs || cfg.RingFlags != "" {
			return nil, skipf("-files opens every file with plain dio.Open: -sqpoll, -iopoll, -fixedbufs and -ringflags do not apply")
		}
	} else if cfg.QD > 256 || cfg.SQPoll || cfg.IOPoll || cfg.FixedBufs || cfg.RingFlags != "" {
		eo = &dio.EngineOptions{QueueDepth: 256}
		for eo.QueueDepth < cfg.QD {
			eo.QueueDepth *= 2
		}
		eo.SQPoll = cfg.SQPoll // the kernel's default idle, as fio's sqthread_poll
		eo.IOPoll = cfg.IOPoll
		if cfg.FixedBufs {
			eo.FixedBuffers, eo.FixedBufferSize = cfg.QD, cfg.BS
		}
		if cfg.RingFlags != "" {
			fl, err := parseRingFlags(cfg.RingFlags)
			if err != nil {
				return nil, err
			}
			eo.RingFlags = fl
		}
	}
	var o *dio.Options
	if eo != nil {
		o = &dio.Options{EngineOptions: eo}
	}
	flag := os.O_RDONLY
	if cfg.Writes() {
		flag = os.O_RDWR
	}
	paths := cfg.Files
	if len(paths) == 0 {
		paths = []string{cfg.Path}
	}
	u := &uringRunner{j: j, fixed: cfg.FixedBufs, pool: cfg.Completion == CompPool}
	for _, p := range paths {
		f, err := dio.Open(p, flag, 0, o)
		if err != nil {
			u.Close()
			return nil, err
		}
		u.files = append(u.files, f)
	}
	f := u.files[0]
	fixed := f.Engine().FixedBuffers()
	for i := range cfg.QD {
		var b []byte
		if u.fixed {
			if i >= len(fixed) {
				u.Close()
				return nil, fmt.Errorf("uringdio: no registered buffer left (asked for %d of %d bytes)", cfg.QD, cfg.BS)
			}
			b = fixed[i][:cfg.BS]
			j.FillBuffer(b)
		} else {
			var err error
			if b, err = j.AllocBuffer(); err != nil {
				u.Close()
				return nil, err
			}
		}
		u.bufs = append(u.bufs, b)
	}
	if cfg.Completion == CompWait {
		for range cfg.QD {
			u.workers = append(u.workers, j.NewWorker())
		}
		return u, nil
	}
	u.w = j.NewWorker()
	u.start = make([]int64, cfg.QD)
	u.next = make([]int, cfg.QD)
	u.done = make(chan struct{})
	policy := completion.Inline
	switch cfg.Completion {
	case CompCaller:
		policy = completion.Caller
		u.q = completion.NewQueue(cfg.QD)
	case CompPool:
		policy = completion.Pool
	}
	cb := u.complete // one method value for every request: no allocation per I/O
	for i := range cfg.QD {
		r := new(dio.Request)
		r.Buf, r.Tag, r.Policy, r.Callback, r.Queue = u.bufs[i], uint64(i), policy, cb, u.q
		u.reqs = append(u.reqs, r)
	}
	return u, nil
}

type uringRunner struct {
	j     *Job
	files []*dio.File // one, or those of a many-files run (Job.Locate picks)
	bufs  [][]byte
	fixed bool

	// async loop: one worker, qd requests resubmitted by their callbacks
	w     *Worker
	reqs  []*dio.Request
	start []int64 // nanotime each request was submitted
	next  []int   // the file each request's first I/O goes to
	live  atomic.Int64
	done  chan struct{}
	q     *completion.Queue // Caller: the job goroutine runs the callbacks
	pool  bool              // Pool: callbacks run concurrently, mu guards w
	mu    sync.Mutex

	// wait: qd goroutines, one worker each
	workers []*Worker
}

func (u *uringRunner) Run() {
	if u.workers != nil {
		var wg sync.WaitGroup
		for i, w := range u.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u.syncLoop(w, u.bufs[i])
			}()
		}
		wg.Wait()
		return
	}
	// Pick every request's first I/O before any is submitted: from the
	// first Submit on, callbacks use the worker.
	n := 0
	now := nanotime()
	for _, r := range u.reqs {
		write, off, ok := u.w.Next(now)
		if !ok {
			break
		}
		u.w.Prepare(r.Buf, write, off)
		u.next[r.Tag], r.Off = u.j.Locate(off)
		r.Op = opOf(write)
		n++
	}
	if n == 0 {
		return
	}
	u.live.Store(int64(n))
	for _, r := range u.reqs[:n] {
		u.start[r.Tag] = nanotime()
		if err := u.files[u.next[r.Tag]].Submit(r); err != nil {
			u.j.Fail(err)
			u.retire()
		}
	}
	if u.q != nil {
		for u.live.Load() > 0 {
			if u.q.Poll() == 0 {
				u.q.Wait(context.Background(), 1)
			}
		}
		return
	}
	<-u.done
}

// complete is every request's callback: record the I/O, pick the next one
// and resubmit the same request (Inline: on the reaper, batched into the
// reaper's next io_uring_enter).
func (u *uringRunner) complete(r *dio.Request) {
	if u.pool {
		u.mu.Lock()
	}
	now := nanotime()
	n, err := r.Result()
	u.w.Done(u.start[r.Tag], now, n, len(r.Buf), err)
	write, off, ok := u.w.Next(now)
	var f *dio.File
	if ok {
		u.w.Prepare(r.Buf, write, off)
		var fi int
		fi, r.Off = u.j.Locate(off)
		r.Op, f = opOf(write), u.files[fi]
		u.start[r.Tag] = nanotime()
	}
	if u.pool {
		u.mu.Unlock()
	}
	if ok {
		if err := f.Submit(r); err != nil {
			u.j.Fail(err)
			ok = false
		}
	}
	if !ok {
		u.retire()
	}
}

// retire takes one request out of the loop; the last one ends the run.
func (u *uringRunner) retire() {
	if u.live.Add(-1) == 0 {
		close(u.done)
	}
}

func (u *uringRunner) syncLoop(w *Worker, buf []byte) {
	t := nanotime()
	for {
		write, off, ok := w.Next(t)
		if !ok {
			return
		}
		if u.j.written != nil {
			w.Prepare(buf, write, off)
			t = nanotime()
		}
		fi, at := u.j.Locate(off)
		var n int
		var err error
		if write {
			n, err = u.files[fi].WriteAt(buf, at)
		} else {
			n, err = u.files[fi].ReadAt(buf, at)
		}
		e := nanotime()
		w.Done(t, e, n, len(buf), err)
		t = e
	}
}

func (u *uringRunner) Close() error {
	for _, b := range u.bufs {
		if !u.fixed { // registered buffers are the engine's, freed at its Close
			ring.Free(b)
		}
	}
	u.bufs = nil
	var first error
	for _, f := range u.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	u.files = nil
	return first
}

// parseRingFlags parses -ringflags.
func parseRingFlags(list string) (ring.SetupFlags, error) {
	var fl ring.SetupFlags
	for _, n := range strings.Split(list, ",") {
		switch strings.TrimSpace(n) {
		case "":
		case "coop":
			fl |= ring.SetupCoopTaskrun
		case "taskrun":
			fl |= ring.SetupTaskrunFlag
		case "single":
			fl |= ring.SetupSingleIssuer
		case "defer":
			fl |= ring.SetupDeferTaskrun
		case "submitall":
			fl |= ring.SetupSubmitAll
		default:
			return 0, fmt.Errorf("unknown ring flag %q (coop, taskrun, single, defer, submitall)", n)
		}
	}
	return fl, nil
}

func opOf(write bool) dio.Op {
	if write {
		return dio.Write
	}
	return dio.Read
}

// openPread prepares a pread job: one os.File opened with O_DIRECT, read
// and written with ReadAt/WriteAt (pread/pwrite) from qd goroutines, which
// is what a Go program does without io_uring.
func openPread(j *Job) (JobRunner, error) {
	cfg := j.Cfg
	if cfg.IOPoll || cfg.SQPoll || cfg.FixedBufs {
		return nil, skipf("pread has no io_uring ring: -sqpoll, -fixedbufs and -iopoll do not apply")
	}
	flag := os.O_RDONLY
	if cfg.Writes() {
		flag = os.O_RDWR
	}
	paths := cfg.Files
	if len(paths) == 0 {
		paths = []string{cfg.Path}
	}
	p := &preadRunner{}
	for _, path := range paths {
		f, err := os.OpenFile(path, flag|oDirect, 0)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.files = append(p.files, f)
	}
	for range cfg.QD {
		b, err := j.AllocBuffer()
		if err != nil {
			p.Close()
			return nil, err
		}
		p.bufs = append(p.bufs, b)
		p.workers = append(p.workers, j.NewWorker())
	}
	return p, nil
}

type preadRunner struct {
	files   []*os.File // one, or those of a many-files run (Job.Locate picks)
	bufs    [][]byte
	workers []*Worker
}

func (p *preadRunner) Run() {
	var wg sync.WaitGroup
	for i, w := range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := p.bufs[i]
			verify := w.job.written != nil
			t := nanotime()
			for {
				write, off, ok := w.Next(t)
				if !ok {
					return
				}
				if verify {
					w.Prepare(buf, write, off)
					t = nanotime()
				}
				fi, at := w.job.Locate(off)
				var n int
				var err error
				if write {
					n, err = p.files[fi].WriteAt(buf, at)
				} else {
					n, err = p.files[fi].ReadAt(buf, at)
				}
				e := nanotime()
				w.Done(t, e, n, len(buf), err)
				t = e
			}
		}()
	}
	wg.Wait()
}

func (p *preadRunner) Close() error {
	for _, b := range p.bufs {
		ring.Free(b)
	}
	p.bufs = nil
	var first error
	for _, f := range p.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	p.files = nil
	return first
}

// checkIOPoll fails early, with the library's explanation, when -iopoll is
// asked for on a device that cannot poll: polled I/O there would complete
// with EOPNOTSUPP (or, in a careless harness, spin forever).
func checkIOPoll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ok, err := ring.PolledIOSupported(int(f.Fd()))
	if ok {
		return nil
	}
	if err == nil {
		err = ring.ErrNoPolledIO
	}
	return fmt.Errorf("-iopoll on %s: %w", path, err)
}

// oDirect is O_DIRECT for os.OpenFile.
const oDirect = syscall.O_DIRECT
