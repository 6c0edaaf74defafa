//go:build linux

package harness

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/uringdio/uringdio/ring"
)

var epoch = time.Now()

// nanotime is monotonic nanoseconds since the package started.
func nanotime() int64 { return int64(time.Since(epoch)) }

// Nanotime is the clock workers' start and end times are read from:
// monotonic nanoseconds since the harness started.
func Nanotime() int64 { return nanotime() }

// Job is one independent I/O stream (fio's job): its own file handle and,
// for io_uring engines, its own ring, with Cfg.QD I/Os in flight. Workers
// draw offsets from it and record into their own histograms.
type Job struct {
	ID  int
	Cfg *Config

	blocks   int64 // blocks of BS in the region
	perFile  int64 // bytes of each file of a many-files run (Cfg.PerFile), 0 for one file
	seqBase  int64 // first block of this job's sequential stream
	seq      atomic.Int64
	deadline atomic.Int64 // nanotime at which no new I/O starts
	budget   atomic.Int64 // I/Os left when Cfg.Ops > 0
	gen      atomic.Uint64
	written  []atomic.Uint64 // blocks written, for -verify

	mu       sync.Mutex
	workers  []*Worker
	errs     int64 // errors outside any worker (a refused Submit)
	firstErr error
}

func newJob(cfg *Config, id int) *Job {
	j := &Job{ID: id, Cfg: cfg, blocks: cfg.Size / int64(cfg.BS), perFile: cfg.PerFile()}
	if j.perFile > 0 {
		j.blocks = j.perFile / int64(cfg.BS) * int64(len(cfg.Files))
	}
	j.seqBase = int64(id) * j.blocks / int64(cfg.Jobs)
	j.deadline.Store(math.MaxInt64)
	j.budget.Store(cfg.Ops)
	j.gen.Store(cfg.Seed<<20 | uint64(id)<<8)
	if cfg.Verify && cfg.Writes() {
		j.written = make([]atomic.Uint64, (j.blocks+63)/64)
	}
	return j
}

// NewWorker returns a worker of the job with its own histogram and random
// stream. Call it before the clock starts: it allocates.
func (j *Job) NewWorker() *Worker {
	j.mu.Lock()
	defer j.mu.Unlock()
	id := uint64(len(j.workers))
	w := &Worker{job: j, hist: newHist(), write: j.Cfg.RW == RandWrite || j.Cfg.RW == SeqWrite}
	w.rng.Seed(j.Cfg.Seed^0x9e3779b97f4a7c15, uint64(j.ID)<<32|id)
	j.workers = append(j.workers, w)
	return w
}

// Fail records an error that no worker owns. Safe for concurrent use.
func (j *Job) Fail(err error) {
	j.mu.Lock()
	j.errs++
	if j.firstErr == nil {
		j.firstErr = err
	}
	j.mu.Unlock()
}

// Stop makes the job start no new I/O.
func (j *Job) Stop() { j.deadline.Store(0) }

// Worker issues I/O for one job and records it. It is not safe for
// concurrent use: a goroutine (or a lock) owns it.
type Worker struct {
	job      *Job
	hist     *hdrhistogram.Histogram
	rng      rand.PCG
	write    bool // every I/O writes (randrw picks per I/O)
	ops      int64
	bytes    int64
	errs     int64
	firstErr error
}

// Job returns the worker's job.
func (w *Worker) Job() *Job { return w.job }

// Next returns the next I/O to issue, or ok false once the job is over
// (deadline passed or op budget spent). now is nanotime().
func (w *Worker) Next(now int64) (write bool, off int64, ok bool) {
	j := w.job
	if now >= j.deadline.Load() {
		return false, 0, false
	}
	if j.Cfg.Ops > 0 && j.budget.Add(-1) < 0 {
		return false, 0, false
	}
	var blk int64
	write = w.write
	switch j.Cfg.RW {
	case RandRead, RandWrite:
		blk = int64(w.rng.Uint64() % uint64(j.blocks))
	case RandRW:
		v := w.rng.Uint64()
		blk = int64((v >> 1) % uint64(j.blocks))
		write = v&1 == 1
	default:
		blk = (j.seqBase + j.seq.Add(1) - 1) % j.blocks
	}
	return write, blk * int64(j.Cfg.BS), true
}

// Locate maps an offset from Next, which runs over the files of a
// many-files run laid end to end, to a file (an index of Cfg.Files) and
// the offset in it. A uniform offset is thus a uniformly random file and a
// uniformly random block in it. For one file it returns 0 and off.
func (j *Job) Locate(off int64) (file int, fileOff int64) {
	if j.perFile == 0 {
		return 0, off
	}
	return int(off / j.perFile), off % j.perFile
}

// AllocBuffer returns an aligned off-heap I/O buffer of the job's block
// size (free it with ring.Free). For a job that writes, it holds random
// data, as fio's buffers do: zero pages would let a device such as zram
// store them as "same-filled" pages and make writes and later reads
// unrealistically cheap.
func (j *Job) AllocBuffer() ([]byte, error) {
	b, err := ring.Alloc(j.Cfg.BS)
	if err == nil {
		j.FillBuffer(b)
	}
	return b, err
}

// FillBuffer fills buf with random data if the job writes.
func (j *Job) FillBuffer(buf []byte) {
	if j.Cfg.Writes() {
		rng := rand.NewChaCha8([32]byte{byte(j.ID), byte(j.Cfg.Seed), 'b', 'u', 'f'})
		rng.Read(buf)
	}
}

// Prepare readies buf for a write at off: with -verify it fills it with a
// self-checking pattern and marks its blocks written.
func (w *Worker) Prepare(buf []byte, write bool, off int64) {
	j := w.job
	if !write || j.written == nil {
		return
	}
	fillPattern(buf, off, j.gen.Add(1))
	blk := off / int64(j.Cfg.BS)
	j.written[blk/64].Or(1 << (blk % 64))
}

// Done records an I/O that started at start and ended at end (nanotime)
// and moved n bytes of want, or failed with err. It does not allocate
// unless the I/O failed.
func (w *Worker) Done(start, end int64, n, want int, err error) {
	lat := max(end-start, histLow)
	if lat > histHigh {
		lat = histHigh
	}
	_ = w.hist.RecordValue(lat)
	if err != nil || n != want {
		w.errs++
		if w.firstErr == nil {
			if err == nil {
				err = fmt.Errorf("short I/O: %d of %d bytes", n, want)
			}
			w.firstErr = err
		}
		return
	}
	w.ops++
	w.bytes += int64(n)
}

// JobRunner runs one prepared job.
type JobRunner interface {
	// Run issues I/O until the job ends and returns when none is in flight.
	Run()
	// Close releases what the opener took (file, ring, buffers).
	Close() error
}

// Opener prepares job j before the clock starts (opens its file and ring,
// allocates buffers and workers) and returns its runner.
type Opener func(j *Job) (JobRunner, error)

// Hooks let a Go benchmark bracket exactly the timed part of a run.
type Hooks struct {
	OnStart, OnStop func()
}

// RunJobs runs cfg.Jobs jobs prepared by open at the same time and measures
// them: throughput, latency histograms merged over every worker, process
// and machine CPU over the timed window. ctx ends the run early (the result
// then has a note). It is how every in-process engine runs.
func RunJobs(ctx context.Context, cfg *Config, open Opener, hooks *Hooks) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tasks0 := taskSnap()
	peak := startThreadPeak(os.Getpid(), 10*time.Millisecond)
	jobs := make([]*Job, cfg.Jobs)
	runners := make([]JobRunner, 0, cfg.Jobs)
	closeAll := func() error {
		var first error
		for _, r := range runners {
			if err := r.Close(); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	for i := range jobs {
		jobs[i] = newJob(cfg, i)
		r, err := open(jobs[i])
		if err != nil {
			closeAll()
			peak.Stop()
			return nil, err
		}
		runners = append(runners, r)
	}

	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			for _, j := range jobs {
				j.Stop()
			}
		case <-stopped:
		}
	}()
	if hooks != nil && hooks.OnStart != nil {
		hooks.OnStart()
	}
	c0 := snapCPU()
	start := nanotime()
	if cfg.Duration > 0 {
		for _, j := range jobs {
			j.deadline.Store(start + int64(cfg.Duration))
		}
	}
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Run()
		}()
	}
	wg.Wait()
	end := nanotime()
	c1 := snapCPU()
	if hooks != nil && hooks.OnStop != nil {
		hooks.OnStop()
	}
	close(stopped)
	peakThreads := peak.Stop()
	threads := threadsUsed(tasks0, taskSnap())
	cerr := closeAll()

	res := baseResult(cfg)
	res.Threads, res.PeakThreads = threads, peakThreads
	h := newHist()
	var bytes int64
	for _, j := range jobs {
		res.Errors += j.errs
		if j.firstErr != nil && res.FirstError == "" {
			res.FirstError = j.firstErr.Error()
		}
		for _, w := range j.workers {
			h.Merge(w.hist)
			res.Ops += w.ops
			bytes += w.bytes
			res.Errors += w.errs
			if w.firstErr != nil && res.FirstError == "" {
				res.FirstError = w.firstErr.Error()
			}
		}
	}
	res.Seconds = float64(end-start) / 1e9
	if res.Seconds > 0 {
		res.IOPS = float64(res.Ops) / res.Seconds
		res.MBps = float64(bytes) / res.Seconds / 1e6
	}
	res.fillLatency(h)
	if all := res.Ops + res.Errors; all > 0 {
		res.CPUPerOp = float64((c1.proc - c0.proc).Nanoseconds()) / 1e3 / float64(all)
		res.SysCPUPerOp = float64((c1.machine - c0.machine).Nanoseconds()) / 1e3 / float64(all)
	}
	if ctx.Err() != nil {
		res.Note = "interrupted"
	}
	if cfg.Verify && cfg.Writes() {
		for _, j := range jobs {
			n, bad, err := j.verify()
			res.Verified += n
			res.Errors += bad
			if err != nil && res.FirstError == "" {
				res.FirstError = err.Error()
			}
		}
	}
	if cerr != nil && res.FirstError == "" {
		res.FirstError = "close: " + cerr.Error()
	}
	return res, nil
}

// ---- -verify: a self-checking pattern, as fio's verify header does ----

const sector = 512

// fillPattern writes, in every 512-byte sector of buf (at file offset off),
// the sector's own offset, a generation number and 62 words derived from
// both. A sector read back proves where it was written and that it is whole.
func fillPattern(buf []byte, off int64, gen uint64) {
	for s := 0; s+sector <= len(buf); s += sector {
		o := uint64(off) + uint64(s)
		p := buf[s : s+sector]
		binary.LittleEndian.PutUint64(p[0:], o)
		binary.LittleEndian.PutUint64(p[8:], gen)
		x := o ^ gen*0x9e3779b97f4a7c15
		for i := 16; i < sector; i += 8 {
			x += 0x9e3779b97f4a7c15
			binary.LittleEndian.PutUint64(p[i:], mix64(x))
		}
	}
}

// checkPattern returns the offset of the first sector of buf (at off) that
// does not hold fillPattern's pattern for its own offset, or -1.
func checkPattern(buf []byte, off int64) int64 {
	for s := 0; s+sector <= len(buf); s += sector {
		o := uint64(off) + uint64(s)
		p := buf[s : s+sector]
		if binary.LittleEndian.Uint64(p[0:]) != o {
			return int64(o)
		}
		gen := binary.LittleEndian.Uint64(p[8:])
		x := o ^ gen*0x9e3779b97f4a7c15
		for i := 16; i < sector; i += 8 {
			x += 0x9e3779b97f4a7c15
			if binary.LittleEndian.Uint64(p[i:]) != mix64(x) {
				return int64(o)
			}
		}
	}
	return -1
}

func mix64(z uint64) uint64 { // splitmix64's finalizer
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// verify reads back every block the job wrote (O_DIRECT, so from the
// device, not the page cache) and checks its pattern. It returns the
// blocks checked and the bad ones.
func (j *Job) verify() (checked, bad int64, err error) {
	paths := j.Cfg.Files
	if len(paths) == 0 {
		paths = []string{j.Cfg.Path}
	}
	files := make([]*os.File, len(paths))
	for i, p := range paths {
		if files[i], err = os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0); err != nil {
			for _, f := range files[:i] {
				f.Close()
			}
			return 0, 0, fmt.Errorf("verify: %w", err)
		}
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	buf, err := ring.Alloc(j.Cfg.BS)
	if err != nil {
		return 0, 0, err
	}
	defer ring.Free(buf)
	var first error
	for i := range j.written {
		word := j.written[i].Load()
		for word != 0 {
			bit := int64(bits.TrailingZeros64(word))
			word &^= 1 << bit
			blk := int64(i)*64 + bit
			off := blk * int64(j.Cfg.BS)
			checked++
			fi, at := j.Locate(off)
			if _, rerr := files[fi].ReadAt(buf, at); rerr != nil && !errors.Is(rerr, io.EOF) {
				bad++
				first = cmpErr(first, fmt.Errorf("verify: read %s at %d: %w", paths[fi], at, rerr))
				continue
			}
			if at := checkPattern(buf, off); at >= 0 {
				bad++
				first = cmpErr(first, fmt.Errorf("verify: sector at %d does not hold what was written there", at))
			}
		}
	}
	return checked, bad, first
}
