//go:build linux

// Callbacks keeps thousands of 4 KiB O_DIRECT random reads in flight from
// one goroutine and finishes each through a completion callback, once
// with the Inline policy and once with the Pool policy, and shows the
// difference: wall time, IOPS, latency from Submit to callback, and which
// goroutines ran the callbacks.
//
//   - Inline: the callback runs on the goroutine that reaped the CQE (the
//     engine's reaper), right after it: no hand-off, and a callback that
//     submits the next read has it batched into the reaper's next
//     io_uring_enter. The price: callbacks run one at a time on the
//     reaper and must not block, or they stall every completion behind
//     them.
//   - Pool: the reaper hands each finished request to the worker pool, and
//     a worker runs the callback. Callbacks may block (fsync, locks, more
//     synchronous I/O) and run in parallel, at the cost of one goroutine
//     hand-off per request.
//
// Which one finishes first depends on the device and the CPUs: on a
// device that keeps the CPUs busy the reaper can become the bottleneck
// for Inline; on a slower one the two are close.
//
// The submitting goroutine only starts the first wave: each callback
// resubmits its request at a new random offset until the total is done,
// so the queue depth stays at the number of requests in flight.
//
// Run it (a few seconds; a scratch file under os.TempDir(), removed at the
// end):
//
//	go run ./examples/callbacks
//	go run ./examples/callbacks -inflight 4096 -reads 200000 -size 256
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

const blockSize = 4096

// config is what main's flags set.
type config struct {
	Path     string // "" means a scratch file under os.TempDir()
	SizeMiB  int    // scratch file size
	Inflight int    // requests in flight
	Reads    int    // reads per policy
	Depth    int    // ring SQ entries
	Sample   int    // record the callback's goroutine every Sample completions
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Path, "file", "", "file to read (default: a scratch file under "+os.TempDir()+")")
	flag.IntVar(&cfg.SizeMiB, "size", 32, "scratch file size in MiB")
	flag.IntVar(&cfg.Inflight, "inflight", 2048, "reads in flight")
	flag.IntVar(&cfg.Reads, "reads", 40000, "reads per policy")
	flag.IntVar(&cfg.Depth, "qd", 512, "ring submission queue entries")
	flag.IntVar(&cfg.Sample, "sample", 64, "note the goroutine of every n-th callback")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "callbacks:", err)
		os.Exit(1)
	}
}

// result is what one policy's run measured.
type result struct {
	Policy     completion.Policy
	Reads      int
	Elapsed    time.Duration
	Lat        []time.Duration // sorted, Submit to callback
	Goroutines map[string]int  // sampled callbacks per goroutine ("pool worker (goroutine 12)")
	Submitter  int             // goroutine id of the submitting goroutine
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Sample <= 0 {
		cfg.Sample = 64
	}
	path := cfg.Path
	if path == "" {
		f, err := os.CreateTemp("", "callbacks-*.dat")
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
	devOpts.EngineOptions = &dio.EngineOptions{QueueDepth: cfg.Depth}
	f, err := dio.Open(path, os.O_RDONLY, 0, &devOpts)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return err
	}
	if size < blockSize {
		return fmt.Errorf("%s: file smaller than one block", path)
	}
	fmt.Fprintf(out, "%s: %d MiB, %d random %d-byte reads per policy, %d in flight, submitted from one goroutine\n",
		path, size>>20, cfg.Reads, blockSize, cfg.Inflight)
	var res [2]*result
	for i, p := range []completion.Policy{completion.Inline, completion.Pool} {
		if res[i], err = readAll(ctx, f, p, cfg); err != nil {
			return err
		}
		report(out, res[i])
	}
	in, pl := res[0], res[1]
	d := (pl.Lat[len(pl.Lat)/2] - in.Lat[len(in.Lat)/2]).Round(time.Microsecond)
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	fmt.Fprintf(out, "\npool took %.2fx the time of inline, median latency %s%v.\n"+
		"Inline spares a goroutine hand-off per completion but runs every callback, one after\n"+
		"another, on the reaper; Pool pays the hand-off and runs callbacks on %d workers at once.\n",
		pl.Elapsed.Seconds()/in.Elapsed.Seconds(), sign, d, runtime.GOMAXPROCS(0))
	return nil
}

// slot is one request in flight and its memory.
type slot struct {
	st    *state
	req   *dio.Request
	rng   *rand.Rand
	start time.Time
}

// state is one policy's run, shared by the callbacks.
type state struct {
	f         *dio.File
	blocks    int64
	total     int64
	sample    int64
	issued    atomic.Int64   // reads handed out (may overshoot total)
	completed atomic.Int64   // callbacks run
	stop      atomic.Bool    // no more resubmissions
	inflight  sync.WaitGroup // requests submitted and not yet called back
	lat       []time.Duration
	errOnce   sync.Once
	err       error
	mu        sync.Mutex
	seen      map[string]int
}

func (s *state) fail(err error) {
	s.errOnce.Do(func() { s.err = err })
	s.stop.Store(true)
}

// readAll runs cfg.Reads reads under policy p, cfg.Inflight at a time.
func readAll(ctx context.Context, f *dio.File, p completion.Policy, cfg config) (*result, error) {
	n := min(cfg.Inflight, cfg.Reads)
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	mem, err := ring.Alloc(n * blockSize) // off-heap: the kernel writes it
	if err != nil {
		return nil, err
	}
	defer ring.Free(mem) // after every request is back (inflight.Wait below)
	st := &state{
		f: f, blocks: size / blockSize, total: int64(cfg.Reads), sample: int64(cfg.Sample),
		lat: make([]time.Duration, cfg.Reads), seen: make(map[string]int),
	}
	slots := make([]*slot, n)
	for i := range slots {
		s := &slot{st: st, req: new(dio.Request), rng: rand.New(rand.NewPCG(uint64(i), uint64(p)))}
		s.req.Op = dio.Read
		s.req.Buf = mem[i*blockSize : (i+1)*blockSize : (i+1)*blockSize]
		s.req.Policy = p
		s.req.Callback = s.complete
		slots[i] = s
	}

	// The whole first wave from this goroutine; the callbacks keep it up.
	start := time.Now()
	for _, s := range slots {
		st.issued.Add(1)
		st.inflight.Add(1)
		if err := s.submit(); err != nil {
			st.inflight.Done()
			st.fail(err)
			break
		}
	}
	done := make(chan struct{})
	go func() { st.inflight.Wait(); close(done) }()
	var cerr error
	select {
	case <-done:
	case <-ctx.Done():
		cerr = ctx.Err()
		st.stop.Store(true)
		<-done // the memory is the kernel's until every read is back
	}
	elapsed := time.Since(start)
	if cerr != nil {
		return nil, cerr
	}
	if st.err != nil {
		return nil, st.err
	}
	k := min(st.completed.Load(), st.total)
	lat := st.lat[:k]
	slices.Sort(lat)
	return &result{Policy: p, Reads: int(k), Elapsed: elapsed, Lat: lat, Goroutines: st.seen, Submitter: goid()}, nil
}

// submit starts the slot's read at a random block.
func (s *slot) submit() error {
	s.req.Off = s.rng.Int64N(s.st.blocks) * blockSize
	s.start = time.Now()
	return s.st.f.Submit(s.req)
}

// complete is the callback: Inline, on the reaper; Pool, on a worker.
func (s *slot) complete(r *dio.Request) {
	st := s.st
	defer st.inflight.Done()
	k := st.completed.Add(1)
	if k <= st.total {
		st.lat[k-1] = time.Since(s.start)
	}
	if n, err := r.Result(); err != nil || n != blockSize {
		st.fail(fmt.Errorf("read at %d: %d bytes, %v", r.Off, n, err))
	}
	if k%st.sample == 0 {
		who := where()
		st.mu.Lock()
		st.seen[who]++
		st.mu.Unlock()
	}
	// Keep the queue full: the next read, from inside the callback (the
	// request is complete, so it may be reused right here).
	if !st.stop.Load() && st.issued.Add(1) <= st.total {
		st.inflight.Add(1)
		if err := s.submit(); err != nil {
			st.inflight.Done()
			st.fail(err)
		}
	}
}

// where names the goroutine running the caller: what it is (from the
// outermost frame of the library on its stack) and its id.
func where() string {
	pc := make([]uintptr, 64)
	n := runtime.Callers(2, pc)
	frames := runtime.CallersFrames(pc[:n])
	kind := "goroutine"
	for {
		fr, more := frames.Next()
		switch {
		case strings.Contains(fr.Function, "(*Engine).ownerMain"):
			kind = "engine reaper"
		case strings.Contains(fr.Function, "(*workers).loop"):
			kind = "pool worker"
		case strings.Contains(fr.Function, "(*Engine).await"):
			kind = "waiting caller"
		}
		if !more {
			break
		}
	}
	return fmt.Sprintf("%s (goroutine %d)", kind, goid())
}

// goid returns the current goroutine's id, parsed from its stack header.
// For display only.
func goid() int {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	var id int
	fmt.Sscanf(string(b), "goroutine %d ", &id)
	return id
}

func report(out io.Writer, r *result) {
	pct := func(q float64) time.Duration {
		if len(r.Lat) == 0 {
			return 0
		}
		return r.Lat[min(len(r.Lat)-1, int(q*float64(len(r.Lat))))]
	}
	fmt.Fprintf(out, "\n%s: %d reads in %v = %.0f IOPS; submit-to-callback latency p50 %v p99 %v max %v\n",
		r.Policy, r.Reads, r.Elapsed.Round(time.Millisecond), float64(r.Reads)/r.Elapsed.Seconds(),
		pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), r.Lat[len(r.Lat)-1].Round(time.Microsecond))
	type kv struct {
		k string
		v int
	}
	var gs []kv
	total := 0
	for k, v := range r.Goroutines {
		gs = append(gs, kv{k, v})
		total += v
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].v > gs[j].v || gs[i].v == gs[j].v && gs[i].k < gs[j].k })
	fmt.Fprintf(out, "  callbacks ran on %d goroutine(s) (sampled %d; the submitter is goroutine %d):\n", len(gs), total, r.Submitter)
	for i, g := range gs {
		if i == 8 {
			fmt.Fprintf(out, "    ... %d more\n", len(gs)-i)
			break
		}
		fmt.Fprintf(out, "    %5.1f%% %s\n", 100*float64(g.v)/float64(total), g.k)
	}
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

// writeScratch fills path with size bytes of random data, with O_DIRECT
// writes through the library.
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
	rng := rand.New(rand.NewPCG(1, 2))
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		k := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:k], off); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
