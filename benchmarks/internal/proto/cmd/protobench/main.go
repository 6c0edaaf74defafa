//go:build linux

// Command protobench measures the sync-path prototypes of package proto
// against fio's io_uring engine, os.File.ReadAt and the library (dio), on
// the same files, in one run: for each shape it runs every design in
// alternating order (forward, backward, forward, ...) for several rounds,
// each design in a fresh child process (so thread counts and rusage are its
// own), and prints medians.
//
//	protobench -rounds 3 -dur 5s -out /var/tmp/protobench
//
// A child is the same binary with -child: it runs one design on one shape
// and prints one JSON result line.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/benchmarks/internal/proto"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// Shape is one workload: N goroutines of 4K random reads over files.
type Shape struct {
	Name  string
	Files []string
	Size  int64 // bytes read at random per file (from 0)
	N     int
	Block bool
}

var (
	vdaFile  = flag.String("file", "/var/tmp/proto-1g.dat", "1 GiB scratch file on vda, random data")
	zramDev  = flag.String("zram", "/dev/zram0", "zram device, first 1 GiB random data")
	manyDir  = flag.String("many", "/var/tmp/proto-many", "directory of 512 files f0..f511 of 2 MiB")
	shapesF  = flag.String("shapes", "vda1,vda32,vda128,zram1,zram32,zram128,many256", "shapes to run")
	designsF = flag.String("designs", "fio,osfile,pread,lib,owner-defer,owner-coop,evfd,evfd-percall,lf,sqpoll", "designs to run")
	rounds   = flag.Int("rounds", 3, "rounds per shape (order alternates)")
	dur      = flag.Duration("dur", 5*time.Second, "measured time per run")
	iowq     = flag.Uint("iowq", 0, "io-wq bounded worker cap for the prototypes (0: kernel default)")
	out      = flag.String("out", "", "directory for results.jsonl and table.md")
	child    = flag.Bool("child", false, "run one design (internal)")
	design   = flag.String("design", "", "design (child)")
	shapeF   = flag.String("shape", "", "shape (child)")
	render   = flag.String("render", "", "print the table of a results.jsonl (a run's raw results) and exit")
	burn     = flag.Int("burn", 0, "goroutines that spin (runtime.Gosched, no system calls) during the run, to show how each design behaves when the Ps are busy")
	bs       = 4096
)

func shapes() map[string]Shape {
	m := map[string]Shape{}
	for _, n := range []int{1, 32, 128} {
		m["vda"+strconv.Itoa(n)] = Shape{Name: "vda" + strconv.Itoa(n), Files: []string{*vdaFile}, Size: 1 << 30, N: n}
		m["zram"+strconv.Itoa(n)] = Shape{Name: "zram" + strconv.Itoa(n), Files: []string{*zramDev}, Size: 1 << 30, N: n, Block: true}
	}
	var many []string
	for i := 0; i < 512; i++ {
		many = append(many, filepath.Join(*manyDir, "f"+strconv.Itoa(i)))
	}
	m["many256"] = Shape{Name: "many256", Files: many, Size: 2 << 20, N: 256}
	return m
}

// Result is one run of one design on one shape.
type Result struct {
	Design, Shape string
	Round         int
	Ops           int64
	Secs          float64
	IOPS          float64
	CPUPerOp      float64 // µs, getrusage(RUSAGE_SELF) (fio: its rusage from wait4)
	ThrBase       int     // threads after setup, before the run
	ThrPeak       int
	ThrAfter      int // after the engine is closed
	EntersPerOp   float64
	WakesPerOp    float64
	ReapsPerOp    float64
	MaxLatMs      float64
	SlowOps       int64 // ops slower than 10 ms
	Verified      int64
	Mismatch      int64
	Load0, Load1  string
	Err           string `json:",omitempty"`
}

func main() {
	flag.Parse()
	if *child {
		res := runChild(*design, shapes()[*shapeF])
		json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	if *render != "" {
		renderFile(*render)
		return
	}
	runParent()
}

// ---- parent ----

func runParent() {
	all := shapes()
	designs := strings.Split(*designsF, ",")
	if *out != "" {
		os.MkdirAll(*out, 0o755)
	}
	var jl *os.File
	if *out != "" {
		jl, _ = os.Create(filepath.Join(*out, "results.jsonl"))
		defer jl.Close()
	}
	self, _ := os.Executable()
	load0 := loadavg()
	fmt.Printf("# protobench %s, rounds %d, %v per run, GOMAXPROCS %d, iowq cap %d, burn %d\n# load at start: %s\n",
		time.Now().Format(time.RFC3339), *rounds, *dur, runtime.GOMAXPROCS(0), *iowq, *burn, load0)
	var results []*Result
	for _, sn := range strings.Split(*shapesF, ",") {
		sh, ok := all[sn]
		if !ok {
			fmt.Fprintln(os.Stderr, "unknown shape", sn)
			os.Exit(2)
		}
		for r := 0; r < *rounds; r++ {
			order := slices.Clone(designs)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, d := range order {
				l0 := loadavg()
				var res *Result
				if d == "fio" {
					res = runFio(sh)
				} else {
					res = spawn(self, d, sh)
				}
				res.Round, res.Load0, res.Load1 = r, l0, loadavg()
				results = append(results, res)
				fmt.Fprintf(os.Stderr, "%-8s r%d %-13s %8.0f IOPS %6.1f µs/op thr %d/%d/%d enters/op %.2f maxlat %.1fms slow %d verify %d/%d load %s %s\n",
					sh.Name, r, d, res.IOPS, res.CPUPerOp, res.ThrBase, res.ThrPeak, res.ThrAfter,
					res.EntersPerOp, res.MaxLatMs, res.SlowOps, res.Verified-res.Mismatch, res.Verified, l0, res.Err)
				if jl != nil {
					json.NewEncoder(jl).Encode(res)
				}
			}
		}
	}
	table := renderTable(results, strings.Split(*shapesF, ","), designs)
	table += fmt.Sprintf("\nload at start: %s; at end: %s\n", load0, loadavg())
	fmt.Print(table)
	if *out != "" {
		os.WriteFile(filepath.Join(*out, "table.md"), []byte(table), 0o644)
	}
}

func spawn(self, d string, sh Shape) *Result {
	args := []string{"-child", "-design", d, "-shape", sh.Name, "-dur", dur.String(),
		"-iowq", strconv.Itoa(int(*iowq)), "-burn", strconv.Itoa(*burn), "-file", *vdaFile, "-zram", *zramDev, "-many", *manyDir}
	cmd := exec.Command(self, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res Result
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		res = Result{Design: d, Shape: sh.Name, Err: fmt.Sprintf("child: %v %v: %s", err, jerr, lastLines(stderr.String(), 8))}
	}
	return &res
}

func runFio(sh Shape) *Result {
	res := &Result{Design: "fio", Shape: sh.Name}
	// fio's options are at most 4096 bytes: name the files relative to
	// their directory and run fio there (with a list of names fio does not
	// apply --directory, and a read-only job on a missing file spins
	// forever on "refusing extend of file").
	dir := filepath.Dir(sh.Files[0])
	names := make([]string, len(sh.Files))
	for i, f := range sh.Files {
		if filepath.Dir(f) != dir {
			dir = ""
		}
		names[i] = strings.ReplaceAll(f, ":", `\:`)
	}
	if dir != "" && len(sh.Files) > 1 {
		for i, f := range sh.Files {
			names[i] = strings.ReplaceAll(filepath.Base(f), ":", `\:`)
		}
	} else {
		dir = ""
	}
	args := []string{"--name=proto", "--filename=" + strings.Join(names, ":"),
		"--rw=randread", "--bs=4k", "--ioengine=io_uring", "--direct=1",
		"--iodepth=" + strconv.Itoa(sh.N), "--numjobs=1", "--thread",
		"--time_based", "--runtime=" + strconv.FormatInt(dur.Milliseconds(), 10) + "ms",
		"--norandommap", "--randrepeat=0", "--readonly", "--allow_file_create=0",
		"--output-format=json", "--eta=never"}
	if len(sh.Files) > 1 {
		args = append(args, "--filesize="+strconv.FormatInt(sh.Size, 10), "--file_service_type=random")
	} else {
		args = append(args, "--size="+strconv.FormatInt(sh.Size, 10))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *dur+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "fio", args...) // killed if it outlives its run
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		res.Err = err.Error()
		return res
	}
	peak := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		path := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status"
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				peak = max(peak, threadsOf(path))
			}
		}
	}()
	err := cmd.Wait()
	close(stop)
	wg.Wait()
	o := stdout.Bytes()
	if i := bytes.IndexByte(o, '{'); i > 0 {
		o = o[i:]
	}
	var fo struct {
		Jobs []struct {
			Read struct {
				IOPS     float64 `json:"iops"`
				TotalIOs int64   `json:"total_ios"`
				Runtime  int64   `json:"runtime"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if jerr := json.Unmarshal(o, &fo); jerr != nil || len(fo.Jobs) == 0 {
		res.Err = fmt.Sprintf("fio: %v %v: %s", err, jerr, lastLines(stderr.String(), 4))
		return res
	}
	rd := fo.Jobs[0].Read
	res.Ops, res.IOPS, res.Secs = rd.TotalIOs, rd.IOPS, float64(rd.Runtime)/1e3
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if res.Ops > 0 {
		res.CPUPerOp = float64(cpu.Microseconds()) / float64(res.Ops)
	}
	res.ThrPeak = peak
	return res
}

// ---- child ----

type reader func(g, file int, buf []byte, off int64) (int, error)

func runChild(d string, sh Shape) (res *Result) {
	res = &Result{Design: d, Shape: sh.Name}
	if sh.N == 0 {
		res.Err = "unknown shape"
		return
	}
	flag := os.O_RDONLY | unix.O_DIRECT
	var osfs []*os.File
	var fds []int32
	for _, p := range sh.Files {
		f, err := os.OpenFile(p, flag, 0)
		if err != nil {
			res.Err = err.Error()
			return
		}
		osfs = append(osfs, f)
		fds = append(fds, int32(f.Fd()))
	}
	defer func() {
		for _, f := range osfs {
			f.Close()
		}
	}()
	cfg := proto.Config{IOWQMax: uint32(*iowq)}
	var eng proto.Engine
	var rd reader
	var closeFn func() error
	var err error
	switch d {
	case "osfile":
		rd = func(_, i int, b []byte, off int64) (int, error) { return osfs[i].ReadAt(b, off) }
	case "pread":
		eng = &proto.Pread{}
	case "lib":
		// What a user writes: dio.Open with no options (the process's
		// default engine, shared by every File), ReadAt from goroutines.
		var dfs []*dio.File
		for _, p := range sh.Files {
			f, err := dio.Open(p, os.O_RDONLY, 0, nil)
			if err != nil {
				res.Err = err.Error()
				return
			}
			dfs = append(dfs, f)
		}
		rd = func(_, i int, b []byte, off int64) (int, error) { return dfs[i].ReadAt(b, off) }
		closeFn = func() error {
			var first error
			for _, f := range dfs {
				if err := f.Close(); err != nil && first == nil {
					first = err
				}
			}
			return first
		}
	case "owner-defer":
		cfg.Flags = ring.SetupSingleIssuer | ring.SetupDeferTaskrun
		eng, err = proto.NewOwner(cfg)
	case "owner-coop":
		cfg.Flags = ring.SetupCoopTaskrun | ring.SetupTaskrunFlag
		eng, err = proto.NewOwner(cfg)
	case "owner-async":
		// IOSQE_ASYNC: io-wq runs the reads concurrently (cap with -iowq).
		cfg.Flags = ring.SetupSingleIssuer | ring.SetupDeferTaskrun
		cfg.ForceAsync = true
		eng, err = proto.NewOwner(cfg)
	case "owner-plain":
		eng, err = proto.NewOwner(cfg)
	case "evfd":
		eng, err = proto.NewEvfd(cfg)
	case "evfd-percall":
		cfg.PerCallEnter = true
		eng, err = proto.NewEvfd(cfg)
	case "evfd-coop":
		cfg.Flags = ring.SetupCoopTaskrun | ring.SetupTaskrunFlag
		eng, err = proto.NewEvfd(cfg)
	case "sqpoll":
		cfg.Flags = ring.SetupSQPoll
		eng, err = proto.NewEvfd(cfg)
	case "lf":
		eng, err = proto.NewLF(cfg)
	case "lf-coop":
		cfg.Flags = ring.SetupCoopTaskrun | ring.SetupTaskrunFlag
		eng, err = proto.NewLF(cfg)
	default:
		// "<design>-x<k>": k independent engines of that design, goroutine
		// g using engine g%k (several rings).
		base, ks, ok := strings.Cut(d, "-x")
		k, kerr := strconv.Atoi(ks)
		if !ok || kerr != nil || k < 1 {
			res.Err = "unknown design " + d
			return
		}
		var engs []proto.Engine
		for range k {
			var e proto.Engine
			switch base {
			case "owner-defer":
				e, err = proto.NewOwner(proto.Config{IOWQMax: cfg.IOWQMax, Flags: ring.SetupSingleIssuer | ring.SetupDeferTaskrun})
			case "owner-coop":
				e, err = proto.NewOwner(proto.Config{IOWQMax: cfg.IOWQMax, Flags: ring.SetupCoopTaskrun | ring.SetupTaskrunFlag})
			case "evfd":
				e, err = proto.NewEvfd(cfg)
			case "lf":
				e, err = proto.NewLF(cfg)
			default:
				err = errors.New("unknown design " + d)
			}
			if err != nil {
				res.Err = err.Error()
				return
			}
			engs = append(engs, e)
		}
		eng = multi(engs)
	}
	if err != nil {
		res.Err = err.Error()
		return
	}
	if m, ok := eng.(multi); ok {
		rd = func(g, i int, b []byte, off int64) (int, error) { return m[g%len(m)].ReadAt(fds[i], b, off) }
		closeFn = eng.Close
	} else if eng != nil {
		rd = func(_, i int, b []byte, off int64) (int, error) { return eng.ReadAt(fds[i], b, off) }
		closeFn = eng.Close
	}

	// Per-goroutine state, padded against false sharing.
	type gstate struct {
		ops    atomic.Int64
		maxLat atomic.Int64
		slow   atomic.Int64
		_      [40]byte
	}
	gs := make([]gstate, sh.N)
	bufs := make([][]byte, sh.N)
	for g := range bufs {
		if bufs[g], err = ring.Alloc(bs); err != nil {
			res.Err = err.Error()
			return
		}
	}
	blocks := sh.Size / int64(bs)
	var stop atomic.Bool
	var firstErr atomic.Value
	var wg sync.WaitGroup
	res.ThrBase = threads()
	for range *burn {
		go func() {
			for !stop.Load() {
				runtime.Gosched()
			}
		}()
	}
	for g := 0; g < sh.N; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(g)+1, uint64(time.Now().UnixNano())))
			st, buf := &gs[g], bufs[g]
			for !stop.Load() {
				file := 0
				if len(fds) > 1 {
					file = rng.IntN(len(fds))
				}
				off := rng.Int64N(blocks) * int64(bs)
				t0 := time.Now()
				n, err := rd(g, file, buf, off)
				lat := time.Since(t0)
				if err != nil || n != bs {
					if err == nil {
						err = fmt.Errorf("short read %d at %d", n, off)
					}
					firstErr.CompareAndSwap(nil, err)
					stop.Store(true)
					return
				}
				if l := int64(lat); l > st.maxLat.Load() {
					st.maxLat.Store(l)
				}
				if lat > 10*time.Millisecond {
					st.slow.Add(1)
				}
				st.ops.Add(1)
			}
		}(g)
	}
	total := func() int64 {
		var s int64
		for i := range gs {
			s += gs[i].ops.Load()
		}
		return s
	}
	// Watchdog: no progress for 10 s is a hang; dump the stacks and say so.
	hung := make(chan struct{})
	go func() {
		last, since := int64(-1), time.Now()
		for !stop.Load() {
			time.Sleep(250 * time.Millisecond)
			if t := total(); t != last {
				last, since = t, time.Now()
			} else if time.Since(since) > 10*time.Second {
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
				close(hung)
				return
			}
		}
	}()
	peak := 0
	sampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampler:
				return
			case <-t.C:
				peak = max(peak, threads())
			}
		}
	}()

	time.Sleep(300 * time.Millisecond) // warm up
	c0, ops0, t0, ru0 := counters(eng), total(), time.Now(), rusage()
	select {
	case <-time.After(*dur):
	case <-hung:
		res.Err = "HANG: no read completed for 10 s"
		res.Ops = total() - ops0
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(3)
	}
	c1, ops1, t1, ru1 := counters(eng), total(), time.Now(), rusage()
	stop.Store(true)
	wg.Wait()
	close(sampler)
	<-samplerDone
	if e := firstErr.Load(); e != nil {
		res.Err = e.(error).Error()
	}
	res.Ops = ops1 - ops0
	res.Secs = t1.Sub(t0).Seconds()
	res.IOPS = float64(res.Ops) / res.Secs
	res.CPUPerOp = float64((ru1 - ru0).Microseconds()) / float64(res.Ops)
	if eng != nil && res.Ops > 0 {
		n := float64(c1.Reads - c0.Reads)
		if n > 0 {
			res.EntersPerOp = float64(c1.Enters-c0.Enters) / n
			res.WakesPerOp = float64(c1.Wakes-c0.Wakes) / n
			res.ReapsPerOp = float64(c1.Reaps-c0.Reaps) / n
		}
	}
	for i := range gs {
		res.MaxLatMs = max(res.MaxLatMs, float64(gs[i].maxLat.Load())/1e6)
		res.SlowOps += gs[i].slow.Load()
	}
	res.ThrPeak = peak

	// Verify: every goroutine reads a sample through the design; pread
	// checks them once the thread count is taken.
	samples := readSamples(sh, rd, bufs, len(osfs))

	if closeFn != nil {
		if err := closeFn(); err != nil && res.Err == "" {
			res.Err = "close: " + err.Error()
		}
	}
	for _, b := range bufs {
		ring.Free(b)
	}
	time.Sleep(200 * time.Millisecond)
	res.ThrAfter = threads()
	res.Verified, res.Mismatch = checkSamples(samples, osfs)
	return res
}

// sample is one read made through the design, kept for checking.
type sample struct {
	file int
	off  int64
	n    int
	err  error
	data []byte
}

// readSamples has every goroutine read a sample through the design,
// concurrently; checkSamples compares them with pread later (after the
// thread count is taken: pread from many goroutines makes threads).
func readSamples(sh Shape, rd reader, bufs [][]byte, files int) []sample {
	var wg sync.WaitGroup
	out := make([][]sample, len(bufs))
	blocks := sh.Size / int64(bs)
	for g := range bufs {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(g)+99, 7))
			for i := 0; i < 16; i++ {
				s := sample{file: rng.IntN(files), off: rng.Int64N(blocks) * int64(bs)}
				clear(bufs[g])
				s.n, s.err = rd(g, s.file, bufs[g], s.off)
				s.data = bytes.Clone(bufs[g])
				out[g] = append(out[g], s)
			}
		}(g)
	}
	wg.Wait()
	return slices.Concat(out...)
}

func checkSamples(samples []sample, osfs []*os.File) (checked, bad int64) {
	ref, _ := ring.Alloc(bs)
	defer ring.Free(ref)
	for _, s := range samples {
		m, err := unix.Pread(int(osfs[s.file].Fd()), ref, s.off)
		checked++
		if s.err != nil || err != nil || s.n != m || !bytes.Equal(s.data[:s.n], ref[:m]) {
			bad++
		}
	}
	return checked, bad
}

// multi is several engines; the reader picks one per goroutine.
type multi []proto.Engine

func (m multi) ReadAt(fd int32, buf []byte, off int64) (int, error) { return m[0].ReadAt(fd, buf, off) }

func (m multi) Counters() proto.Counters {
	var c proto.Counters
	for _, e := range m {
		x := e.Counters()
		c.Reads += x.Reads
		c.Enters += x.Enters
		c.Wakes += x.Wakes
		c.Reaps += x.Reaps
	}
	return c
}

func (m multi) Close() error {
	var err error
	for _, e := range m {
		err = errors.Join(err, e.Close())
	}
	return err
}

func counters(e proto.Engine) proto.Counters {
	if e == nil {
		return proto.Counters{}
	}
	return e.Counters()
}

func rusage() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func threads() int { return threadsOf("/proc/self/status") }

func threadsOf(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

// ---- table ----

// renderFile prints the table of a results.jsonl, shapes and designs in
// the order they first appear.
func renderFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var results []*Result
	var shapeNames, designs []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		var r Result
		if json.Unmarshal(line, &r) != nil {
			continue
		}
		results = append(results, &r)
		if !slices.Contains(shapeNames, r.Shape) {
			shapeNames = append(shapeNames, r.Shape)
		}
		if !slices.Contains(designs, r.Design) {
			designs = append(designs, r.Design)
		}
	}
	fmt.Print(renderTable(results, shapeNames, designs))
	if len(results) > 0 {
		fmt.Printf("\nload before the first run: %s; after the last: %s\n", results[0].Load0, results[len(results)-1].Load1)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func renderTable(results []*Result, shapeNames, designs []string) string {
	type key struct{ s, d string }
	by := map[key][]*Result{}
	for _, r := range results {
		by[key{r.Shape, r.Design}] = append(by[key{r.Shape, r.Design}], r)
	}
	med := func(s, d string, f func(*Result) float64) float64 {
		var v []float64
		for _, r := range by[key{s, d}] {
			if r.Err == "" {
				v = append(v, f(r))
			}
		}
		return median(v)
	}
	iops := func(r *Result) float64 { return r.IOPS }
	var b strings.Builder
	b.WriteString("| shape | design | IOPS | ×fio | ×pread | CPU µs/op | threads peak/after | enters/op | wakes/op | max lat ms | verified | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range shapeNames {
		fio := med(s, "fio", iops)
		osf := med(s, "osfile", iops)
		for _, d := range designs {
			rs := by[key{s, d}]
			if len(rs) == 0 {
				continue
			}
			v := med(s, d, iops)
			ratio := func(base float64) string {
				if base == 0 {
					return "–"
				}
				return fmt.Sprintf("%.2f", v/base)
			}
			peak, after := 0, 0
			var errs []string
			var verified, bad int64
			for _, r := range rs {
				peak = max(peak, r.ThrPeak)
				after = max(after, r.ThrAfter)
				verified += r.Verified
				bad += r.Mismatch
				if r.Err != "" {
					e := r.Err
					if len(e) > 80 {
						e = e[:80] + "…"
					}
					errs = append(errs, e)
				}
			}
			thr := fmt.Sprintf("%d/%d", peak, after)
			if d == "fio" {
				thr = fmt.Sprintf("%d/–", peak)
			}
			fmt.Fprintf(&b, "| %s | %s | %.1fK | %s | %s | %.1f | %s | %.2f | %.2f | %.1f | %d/%d | %s |\n",
				s, d, v/1e3, ratio(fio), ratio(osf), med(s, d, func(r *Result) float64 { return r.CPUPerOp }), thr,
				med(s, d, func(r *Result) float64 { return r.EntersPerOp }),
				med(s, d, func(r *Result) float64 { return r.WakesPerOp }),
				med(s, d, func(r *Result) float64 { return r.MaxLatMs }),
				verified-bad, verified, strings.Join(errs, "; "))
		}
	}
	return b.String()
}
