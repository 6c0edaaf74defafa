//go:build linux

// Polledread does 4 KiB O_DIRECT random reads with polled completions,
// the way fio's io_uring engine does with hipri=1: nobody sleeps waiting
// for an interrupt.
//
//   - Where the file's block device supports polled I/O (queue/io_poll is
//     1, as on NVMe with poll queues), the ring is set up with IOPOLL and
//     completions are found by polling the device.
//   - Otherwise dio.Open with EngineOptions.IOPoll fails with the reason (it
//     wraps ring.ErrNoPolledIO), the example prints it, and runs the same
//     reads on an SQPOLL ring: a kernel thread picks up submissions, so
//     submitting needs no system call.
//
// Either way the requests complete through the Caller policy: the
// engine's owner reaps each CQE and pushes the request onto this
// goroutine's completion.Queue, and this goroutine spins on it with
// Queue.Poll, running each completion (record the latency, submit the next
// read) as soon as it is there. For comparison the example then runs the
// same reads on an ordinary ring where the caller sleeps until a
// completion arrives. It prints IOPS, latency percentiles, and voluntary
// context switches per read: a sleeping waiter costs about one per read,
// a spinning one about none.
//
// Run it (a few seconds; a scratch file under os.TempDir(), removed at the
// end; the SQPOLL thread and the spinning goroutine each keep a CPU busy
// while it runs):
//
//	go run ./examples/polledread
//	go run ./examples/polledread -qd 1 -duration 5s
//	go run ./examples/polledread -file /dev/nvme0n1   # read-only; needs poll queues for IOPOLL
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

const blockSize = 4096

// config is what main's flags set.
type config struct {
	Path     string        // "" means a scratch file under os.TempDir()
	SizeMiB  int           // scratch file size
	QD       int           // reads in flight
	Duration time.Duration // per run
	Mode     string        // "auto", "iopoll", "sqpoll"
	Baseline bool          // also run on an interrupt-driven ring
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Path, "file", "", "file or block device to read (default: a scratch file under "+os.TempDir()+")")
	flag.IntVar(&cfg.SizeMiB, "size", 64, "scratch file size in MiB")
	flag.IntVar(&cfg.QD, "qd", 16, "reads in flight")
	flag.DurationVar(&cfg.Duration, "duration", 2*time.Second, "length of each run")
	flag.StringVar(&cfg.Mode, "mode", "auto", "auto (IOPOLL if the device can, else SQPOLL), iopoll, or sqpoll")
	flag.BoolVar(&cfg.Baseline, "baseline", true, "also run on an interrupt-driven ring for comparison")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "polledread:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.QD <= 0 {
		cfg.QD = 1
	}
	path := cfg.Path
	if path == "" {
		f, err := os.CreateTemp("", "polledread-*.dat")
		if err != nil {
			return err
		}
		path = f.Name()
		f.Close()
		defer os.Remove(path)
		if err := writeScratch(path, int64(cfg.SizeMiB)<<20); err != nil {
			return err
		}
	}

	devOpts, err := fileOptions(path)
	if err != nil {
		return err
	}
	open := func(eo dio.EngineOptions) (*dio.File, error) {
		o := devOpts
		o.EngineOptions = &eo
		return dio.Open(path, os.O_RDONLY, 0, &o)
	}

	// Polled I/O if the device can; the library checks and says why not.
	var f *dio.File
	mode := "IOPOLL"
	if cfg.Mode == "auto" || cfg.Mode == "iopoll" {
		f, err = open(dio.EngineOptions{IOPoll: true, QueueDepth: 2 * cfg.QD})
		if err != nil {
			if cfg.Mode == "iopoll" || !errors.Is(err, errors.ErrUnsupported) {
				return err
			}
			fmt.Fprintf(out, "IOPOLL is not available for %s (device %s):\n  %v\n", path, deviceName(path), err)
			fmt.Fprintf(out, "  running the same reads on SQPOLL, with this goroutine spinning on the completion queue.\n")
		}
	}
	if f == nil {
		mode = "SQPOLL"
		f, err = open(dio.EngineOptions{SQPoll: true, SQPollIdle: time.Second, QueueDepth: 2 * cfg.QD})
		if err != nil {
			return err
		}
	}
	st, err := readSpin(ctx, f, cfg)
	f.Close()
	if err != nil {
		return err
	}
	report(out, mode+", spinning on the CQ", true, cfg, st)

	if cfg.Baseline {
		f, err := open(dio.EngineOptions{QueueDepth: 2 * cfg.QD})
		if err != nil {
			return err
		}
		st, err := readSleep(ctx, f, cfg)
		f.Close()
		if err != nil {
			return err
		}
		report(out, "interrupt-driven ring, sleeping in Queue.Wait", false, cfg, st)
	}
	return nil
}

// stats is what one run measured.
type stats struct {
	reads   int
	elapsed time.Duration
	lat     []time.Duration // sorted
	nvcsw   int64           // voluntary context switches of the process
	polls   int64           // Queue.Poll calls that ran a completion
}

// reader is the state shared by the two loops: QD requests and their
// buffers, all completing through one completion.Queue.
type reader struct {
	f      *dio.File
	blocks int64
	rng    *rand.Rand
	q      completion.Queue
	reqs   []*dio.Request
	start  []time.Time // per request: when it was submitted
	lat    []time.Duration
	mem    []byte
	stop   bool
	err    error
	out    int // requests submitted and not yet completed
}

func newReader(f *dio.File, cfg config) (*reader, error) {
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	mem, err := ring.Alloc(cfg.QD * blockSize)
	if err != nil {
		return nil, err
	}
	r := &reader{
		f: f, blocks: size / blockSize, rng: rand.New(rand.NewPCG(1, 2)),
		start: make([]time.Time, cfg.QD), lat: make([]time.Duration, 0, 1<<20), mem: mem,
	}
	if r.blocks == 0 {
		ring.Free(mem)
		return nil, fmt.Errorf("%s: smaller than one block", f.Name())
	}
	for i := range cfg.QD {
		q := new(dio.Request)
		q.Op, q.Buf, q.Tag = dio.Read, mem[i*blockSize:(i+1)*blockSize:(i+1)*blockSize], uint64(i)
		q.Policy, q.Queue, q.Callback = completion.Caller, &r.q, r.complete
		r.reqs = append(r.reqs, q)
	}
	return r, nil
}

func (r *reader) submit(q *dio.Request) {
	q.Off = r.rng.Int64N(r.blocks) * blockSize
	r.start[q.Tag] = time.Now()
	if err := r.f.Submit(q); err != nil {
		if r.err == nil {
			r.err = err
		}
		return
	}
	r.out++
}

// complete is the completion, run by Queue.Poll/Wait on the loop's
// goroutine (Caller): only that goroutine touches the reader.
func (r *reader) complete(q *dio.Request) {
	r.out--
	if len(r.lat) < cap(r.lat) {
		r.lat = append(r.lat, time.Since(r.start[q.Tag]))
	}
	if n, err := q.Result(); (err != nil || n != blockSize) && r.err == nil {
		r.err = fmt.Errorf("read at %d: %d bytes, %v", q.Off, n, err)
	}
	if !r.stop && r.err == nil {
		r.submit(q)
	}
}

// outstanding reports how many requests have not completed.
func (r *reader) outstanding() int { return r.out }

// readSpin runs the reads with this goroutine spinning on its Queue: the
// engine's owner reaps, and Queue.Poll runs each completion here as soon
// as it arrives.
func readSpin(ctx context.Context, f *dio.File, cfg config) (*stats, error) {
	r, err := newReader(f, cfg)
	if err != nil {
		return nil, err
	}
	defer ring.Free(r.mem)
	var st stats
	before := nvcsw()
	t0 := time.Now()
	for _, q := range r.reqs {
		r.submit(q)
	}
	deadline := t0.Add(cfg.Duration)
	for i := 0; ; i++ {
		if r.q.Poll() > 0 {
			st.polls++
		}
		if r.stop {
			if r.outstanding() == 0 {
				break
			}
			continue
		}
		if r.err != nil || i&1023 == 0 && (time.Now().After(deadline) || ctx.Err() != nil) {
			r.stop = true
			st.elapsed = time.Since(t0)
		}
	}
	st.nvcsw = nvcsw() - before
	st.reads, st.lat = len(r.lat), r.lat
	slices.Sort(st.lat)
	if r.err == nil {
		r.err = ctx.Err()
	}
	return &st, r.err
}

// readSleep runs the same reads the usual way: the goroutine sleeps in
// Queue.Wait until a completion arrives.
func readSleep(ctx context.Context, f *dio.File, cfg config) (*stats, error) {
	r, err := newReader(f, cfg)
	if err != nil {
		return nil, err
	}
	defer ring.Free(r.mem)
	var st stats
	before := nvcsw()
	t0 := time.Now()
	for _, q := range r.reqs {
		r.submit(q)
	}
	deadline := t0.Add(cfg.Duration)
	for {
		r.q.Wait(context.Background(), 1)
		if r.stop {
			if r.outstanding() == 0 {
				break
			}
			continue
		}
		if r.err != nil || time.Now().After(deadline) || ctx.Err() != nil {
			r.stop = true
			st.elapsed = time.Since(t0)
		}
	}
	st.nvcsw = nvcsw() - before
	st.reads, st.lat = len(r.lat), r.lat
	slices.Sort(st.lat)
	if r.err == nil {
		r.err = ctx.Err()
	}
	return &st, r.err
}

func report(out io.Writer, what string, spinning bool, cfg config, st *stats) {
	if st.reads == 0 {
		fmt.Fprintf(out, "\n%s: no reads completed\n", what)
		return
	}
	p := func(q float64) time.Duration {
		return st.lat[min(len(st.lat)-1, int(q*float64(len(st.lat))))].Round(100 * time.Nanosecond)
	}
	fmt.Fprintf(out, "\n%s, QD %d: %d reads in %v = %.0f IOPS, %.2f voluntary context switches per read\n",
		what, cfg.QD, st.reads, st.elapsed.Round(time.Millisecond), float64(st.reads)/st.elapsed.Seconds(),
		float64(st.nvcsw)/float64(st.reads))
	fmt.Fprintf(out, "  latency p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n", p(0.5), p(0.9), p(0.99), p(0.999), st.lat[len(st.lat)-1])
	if spinning {
		fmt.Fprintf(out, "  Queue.Poll calls that found completions: %d for %d reads\n", st.polls, st.reads)
	}
}

// nvcsw returns the process's voluntary context switches so far.
func nvcsw() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Nvcsw
}

// fileOptions returns what dio.Open needs for path beyond the defaults:
// for a block device, its size (fstat says 0) and the WholeFile mapper
// (the default mapper reads a regular file's extents, and a device has
// none).
func fileOptions(path string) (dio.Options, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return dio.Options{}, err
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return dio.Options{}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return dio.Options{}, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return dio.Options{}, err
	}
	return dio.Options{Size: size, Mapper: iomap.NewWholeFile(size)}, nil
}

// deviceName names the block device a file lives on ("vda"), for the
// message that says why IOPOLL is not available.
func deviceName(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "?"
	}
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev)))
	if err != nil {
		return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	}
	return filepath.Base(link)
}

// writeScratch fills path with size bytes of random data.
func writeScratch(path string, size int64) error {
	f, err := dio.Open(path, os.O_RDWR|os.O_TRUNC, 0o600, nil)
	if err != nil {
		return err
	}
	buf, err := ring.Alloc(1 << 20)
	if err != nil {
		f.Close()
		return err
	}
	defer ring.Free(buf)
	rng := rand.New(rand.NewPCG(3, 4))
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		k := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:k], off); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
