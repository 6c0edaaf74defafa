//go:build linux

// Command diobench measures uringdio against the peers a Go user would pick
// instead, in one run, on the same file: fio's io_uring engine (the C
// reference), os.File.ReadAt/WriteAt on an O_DIRECT file from qd goroutines
// (pread), and github.com/iceber/iouring-go's request API.
//
// With no flags it creates a 1 GiB scratch file of random data in the
// system temp directory, runs a short suite (4k random reads at QD1 and
// QD32, 128k and 1m sequential reads, 4k random writes), prints a table and
// removes the file:
//
//	go run ./benchmarks/diobench
//
// Flags select one workload instead (-rw, -bs and -qd take comma lists;
// the run is their product), an existing file or block device (-file),
// engines, completion mode and ring options; -json prints one JSON object
// per result line; -plot draws IOPS and p99 latency by queue depth;
// -report PATH runs the full comparison and writes benchmarks/RESULTS.md.
//
// -files N spreads the I/O over N files of size/N bytes each (scratch
// files of random data, made in the temp directory or in the directory
// -file names, removed at the end): every I/O goes to a uniformly random
// file, as a database's reads do over its many files; uringdio opens each
// with plain dio.Open. The threads column counts the OS threads each
// engine's process used.
//
// -info FILE runs no benchmark: it prints what the kernel says about
// direct I/O on FILE (alignment, untorn writes, the device and its cache,
// NOWAIT, whether O_DIRECT may silently be buffered, what a DSync write
// costs) and exits.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/uringdio/uringdio/benchmarks/internal/harness"
	"golang.org/x/term"
)

type options struct {
	file       string
	size       string
	rw         string
	bs         string
	qd         string
	jobs       int
	duration   time.Duration
	engines    string
	completion string
	sqpoll     bool
	fixedbufs  bool
	iopoll     bool
	json       bool
	verify     bool
	plot       string
	report     string
	force      bool
	rounds     int
	zram       string
	seed       uint64
	ringflags  string
	batch      int
	cpuprofile string
	info       string
	files      int
	commit     string
	record     string
	logs       string
}

func main() {
	var o options
	flag.StringVar(&o.file, "file", "", "existing file or block device to use (default: a scratch file of random data in the temp directory, removed at the end); never written unless -rw asks for writes")
	flag.IntVar(&o.files, "files", 1, "spread the I/O over this many scratch files of size/N bytes each, a uniformly random file per I/O (uringdio opens each with plain dio.Open; iceber and ring do not run); with -file, that directory holds them; removed at the end")
	flag.StringVar(&o.size, "size", "", "bytes of the file to use (with -files: of all of them together; default: 1g for scratch files, all of -file)")
	flag.StringVar(&o.rw, "rw", "", "randread|randwrite|read|write|randrw, or a comma list (default: the short suite)")
	flag.StringVar(&o.bs, "bs", "", "block size(s), e.g. 4k or 4k,128k,1m (default 4k)")
	flag.StringVar(&o.qd, "qd", "", "queue depth(s): I/Os in flight per job, e.g. 32 or 1,8,32,128 (default 32)")
	flag.IntVar(&o.jobs, "jobs", 1, "independent jobs, each with its own file handle and ring (fio's numjobs)")
	flag.DurationVar(&o.duration, "duration", 0, "time per run (default 3s; -report: 5s)")
	flag.StringVar(&o.engines, "engine", "uringdio,pread,iceber,fio", "comma list of uringdio, pread, iceber, fio (uringdio/wait etc. picks a completion mode per entry; ring is a diagnostic floor: ring.Ring driven directly, fio-style)")
	flag.StringVar(&o.completion, "completion", "inline", "uringdio completion: inline|caller|pool (async loop of qd requests resubmitted by their callbacks) or wait (qd goroutines calling ReadAt/WriteAt)")
	flag.BoolVar(&o.sqpoll, "sqpoll", false, "kernel submission-queue polling thread (uringdio, iceber, fio)")
	flag.BoolVar(&o.fixedbufs, "fixedbufs", false, "registered buffers (read_fixed/write_fixed)")
	flag.BoolVar(&o.iopoll, "iopoll", false, "polled completions (IORING_SETUP_IOPOLL; fio --hipri); the device must support polled I/O")
	flag.BoolVar(&o.json, "json", false, "print one JSON object per result line instead of the table")
	flag.BoolVar(&o.verify, "verify", false, "writes carry a self-checking pattern that is read back and checked after the run")
	flag.StringVar(&o.plot, "plot", "", "write IOPS and p99 latency by queue depth, per engine, to this .png or .svg")
	flag.StringVar(&o.report, "report", "", "run the full comparison (vda file and zram, every engine, 3 rounds) and write the markdown report to this path (benchmarks/RESULTS.md)")
	flag.BoolVar(&o.force, "force", false, "write to a block device even if it holds a file-system or partition signature")
	flag.IntVar(&o.rounds, "rounds", 0, "repeat each shape's engines this many times in alternating order and keep each engine's median (default 1; -report: 3)")
	flag.StringVar(&o.zram, "zram", "/dev/zram0", "-report: the zram device for the RAM-bound comparison (filled with random data first unless it holds a signature); empty to leave it out")
	flag.Uint64Var(&o.seed, "seed", 1, "random seed of offsets and data")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a Go CPU profile of the runs to this file (go tool pprof)")
	flag.IntVar(&o.batch, "submit-batch", 0, "diagnostic engine ring only: enter the kernel once this many SQEs are prepared (0: once per reaped batch of completions)")
	flag.StringVar(&o.info, "info", "", "print what the kernel says about direct I/O on this file or block device (alignment, untorn writes, device cache, NOWAIT, buffered fallback, DSync cost) and exit without benchmarking")
	flag.StringVar(&o.commit, "commit", "", "run the commit benchmark instead: goroutines each appending a record and waiting until it is durable, for these numbers of goroutines (comma list, e.g. 1,4,16,64); engines uringdio (Appender + SyncData), osfile (buffered os.File with a leader/follower group commit), fio-dsync and fio-fdatasync (one committer)")
	flag.StringVar(&o.record, "record", "256,4k", "-commit: record sizes (comma list)")
	flag.StringVar(&o.logs, "logs", "new,reused", "-commit: logs to run on: new (empty), reused (written and synced before: commits are pure overwrites)")
	flag.StringVar(&o.ringflags, "ringflags", "", "extra io_uring setup flags, for experiments: comma list of coop, taskrun, single, defer, submitall (the ring engine takes them all; uringdio's engine refuses coop, taskrun, single and defer: its owner sets SINGLE_ISSUER and DEFER_TASKRUN itself)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: diobench [flags]\n\nMeasures uringdio against fio (io_uring), Go's os.File pread/pwrite and iceber/iouring-go on the same file.\nWith no flags: 1 GiB scratch file in %s, a short suite, a table.\n\n", os.TempDir())
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if o.info != "" {
		s, err := harness.DescribeFile(o.info)
		if err != nil {
			fmt.Fprintln(os.Stderr, "diobench:", err)
			os.Exit(1)
		}
		fmt.Print(s)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if o.commit != "" {
		err = runCommit(ctx, &o)
	} else {
		err = run(ctx, &o)
	}
	stop()
	harness.IceberCleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "diobench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	custom := o.rw != "" || o.bs != "" || o.qd != ""
	if o.files < 1 {
		return fmt.Errorf("-files %d: want at least 1", o.files)
	}
	if o.report != "" {
		if custom || o.file != "" || o.files != 1 {
			return errors.New("-report runs its own suite; -file, -files, -rw, -bs and -qd do not combine with it")
		}
		if o.duration == 0 {
			o.duration = 5 * time.Second
		}
		if o.rounds == 0 {
			o.rounds = 3
		}
		if o.engines == "uringdio,pread,iceber,fio" {
			o.engines = "uringdio,uringdio/wait,pread,iceber,fio"
		}
	}
	if o.duration == 0 {
		o.duration = 3 * time.Second
	}
	engines, err := harness.ParseEngines(o.engines, o.completion)
	if err != nil {
		return err
	}
	base := harness.Config{
		Duration: o.duration, Completion: o.completion, SQPoll: o.sqpoll, FixedBufs: o.fixedbufs,
		IOPoll: o.iopoll, Verify: o.verify, Seed: o.seed, RingFlags: o.ringflags, SubmitBatch: o.batch,
	}
	var size int64
	if o.size != "" {
		if size, err = harness.ParseSize(o.size); err != nil {
			return err
		}
	}

	// The workload shapes (before the target exists, to know whether it
	// will be written).
	type shape struct {
		rw     string
		bs, qd int
	}
	var shapes []shape
	if custom {
		rws := splitList(o.rw, harness.RandRead)
		bss := splitList(o.bs, "4k")
		qds := splitList(o.qd, "32")
		for _, rw := range rws {
			for _, b := range bss {
				bs, err := harness.ParseSize(b)
				if err != nil {
					return err
				}
				for _, q := range qds {
					qd, err := strconv.Atoi(q)
					if err != nil || qd <= 0 {
						return fmt.Errorf("bad -qd %q", q)
					}
					shapes = append(shapes, shape{rw, int(bs), qd})
				}
			}
		}
	} else if o.report == "" && o.files > 1 {
		shapes = []shape{{harness.RandRead, 4 << 10, harness.ReportFilesQD}} // the report's many-files shape
	} else if o.report == "" {
		shapes = []shape{
			{harness.RandRead, 4 << 10, 1},
			{harness.RandRead, 4 << 10, 32},
			{harness.SeqRead, 128 << 10, 8},
			{harness.SeqRead, 1 << 20, 8},
		}
		if o.file == "" {
			shapes = append(shapes, shape{harness.RandWrite, 4 << 10, 32}) // only on our own scratch file
		}
	}
	writes := false
	for _, s := range shapes {
		c := harness.Config{RW: s.rw}
		writes = writes || c.Writes()
	}

	// -iopoll on a device that cannot poll: say so before anything runs.
	if o.iopoll && o.files > 1 {
		return errors.New("-iopoll does not combine with -files (uringdio opens each file with plain dio.Open)")
	}
	if o.iopoll {
		where := o.file
		if where == "" {
			where = os.TempDir()
		}
		if err := harness.CheckIOPoll(where); err != nil {
			return err
		}
	}

	// The target: -file as given, scratch files (in -file, a directory, if
	// given), or a scratch file.
	var target *harness.Target
	if o.files > 1 {
		dir := o.file
		if dir != "" {
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return fmt.Errorf("-files %d -file %s: with -files, -file names the directory to make the scratch files in", o.files, dir)
			}
		}
		if size == 0 {
			size = 1 << 30
		}
		if target, err = createScratchFiles(dir, o.files, size); err != nil {
			return err
		}
	} else if o.file != "" {
		if target, err = harness.OpenTarget(o.file, size, writes, o.force); err != nil {
			return err
		}
	} else {
		if size == 0 {
			size = 1 << 30
		}
		if target, err = createScratch(size); err != nil {
			return err
		}
	}
	defer target.Close()
	dev := harness.DeviceName(target.Path)

	if slicesContain(engines, harness.EngineIceber) && o.files == 1 {
		stopSpin := spinner("building the iceber/iouring-go helper (go build -ldflags=-checklinkname=0)")
		harness.PrepareIceber(ctx)
		stopSpin()
	}

	plan := &harness.Plan{Base: base, Engines: engines, Rounds: o.rounds}
	var zram *harness.Target
	if o.report != "" {
		files, err := createScratchFiles("", harness.ReportFiles, harness.ReportFilesSize)
		if err != nil {
			return err
		}
		defer files.Close()
		if o.zram != "" {
			z, note, err := harness.PrepareZram(o.zram, 1<<30, progressBytes("filling "+o.zram+" with random data"))
			if err != nil {
				fmt.Fprintln(os.Stderr, "diobench: leaving zram out of the report:", err)
			} else if note != "" {
				fmt.Fprintln(os.Stderr, "diobench:", note)
			}
			zram = z
		}
		if zram != nil {
			defer zram.Close()
		}
		plan.Shapes = harness.ReportShapes(target, dev, zram, harness.DeviceName(o.zram), files)
	} else {
		for _, s := range shapes {
			plan.Shapes = append(plan.Shapes, harness.Shape{Device: dev, Target: target, RW: s.rw, BS: s.bs, QD: s.qd, Jobs: o.jobs})
		}
	}

	var emit func(*harness.Result)
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		emit = func(r *harness.Result) { enc.Encode(r) }
	}
	if o.cpuprofile != "" {
		pf, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	started := time.Now()
	load0 := harness.LoadAvg()
	results := plan.Run(ctx, newProgress(), emit)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "diobench: interrupted; results so far:")
	}
	if !o.json {
		fmt.Println()
		if err := harness.WriteTable(os.Stdout, results); err != nil {
			return err
		}
	}
	if o.plot != "" {
		if err := harness.WritePlot(o.plot, results); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "diobench: wrote", o.plot)
	}
	if o.report != "" && ctx.Err() == nil {
		info := harness.GatherInfo(started, load0, target, zram)
		info.Command = "go run ./benchmarks/diobench " + strings.Join(os.Args[1:], " ")
		info.Plan = plan
		if err := harness.WriteReportFile(o.report, info, results); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "diobench: wrote", o.report)
	}
	for _, r := range results {
		if r.Errors > 0 {
			return fmt.Errorf("%s %s: %d errors (first: %s)", r.Label(), r.RW, r.Errors, r.FirstError)
		}
	}
	return ctx.Err()
}

func splitList(s, def string) []string {
	if s == "" {
		s = def
	}
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func slicesContain(es []harness.EngineSpec, name string) bool {
	for _, e := range es {
		if e.Engine == name {
			return true
		}
	}
	return false
}

func createScratchFiles(dir string, n int, size int64) (*harness.Target, error) {
	return harness.CreateScratchFiles(dir, n, size, progressBytes(fmt.Sprintf("writing %d scratch files of %s", n, harness.FormatSize(size/int64(n)&^4095))))
}

func createScratch(size int64) (*harness.Target, error) {
	return harness.CreateScratch("", size, progressBytes(fmt.Sprintf("writing %s scratch file", harness.FormatSize(size))))
}

// ---- progress on stderr: a bar on a terminal, plain lines otherwise ----

func isTerminal() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

func progressBytes(desc string) func(done, total int64) {
	if !isTerminal() {
		fmt.Fprintln(os.Stderr, "diobench:", desc)
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(done, total int64) {
		if bar == nil {
			bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionSetDescription(desc), progressbar.OptionShowBytes(true),
				progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetWidth(30))
		}
		bar.Set64(done)
		if done >= total {
			bar.Finish()
		}
	}
}

func spinner(desc string) (stop func()) {
	if !isTerminal() {
		fmt.Fprintln(os.Stderr, "diobench:", desc)
		return func() {}
	}
	bar := progressbar.NewOptions(-1, progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc), progressbar.OptionClearOnFinish(),
		progressbar.OptionSpinnerType(14))
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				bar.Add(1)
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); bar.Finish() }
}

// progress shows the whole plan as one bar that advances with time: each
// run is expected to take its -duration.
type progress struct {
	mu    sync.Mutex // step and begun: Step writes, the ticker reads
	bar   *progressbar.ProgressBar
	per   time.Duration
	step  int
	begun time.Time
	stop  chan struct{}
	done  chan struct{}
	out   io.Writer
}

func newProgress() harness.Progress { return &progress{out: os.Stderr} }

func (p *progress) Begin(runs int, per time.Duration) {
	p.per = per
	if !isTerminal() {
		return
	}
	p.bar = progressbar.NewOptions64(int64(runs)*per.Milliseconds(), progressbar.OptionSetWriter(p.out),
		progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWidth(30), progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionThrottle(100*time.Millisecond))
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.tick()
			case <-p.stop:
				return
			}
		}
	}()
}

func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.step == 0 {
		return
	}
	in := min(time.Since(p.begun), p.per)
	p.bar.Set64(int64(p.step-1)*p.per.Milliseconds() + in.Milliseconds())
}

func (p *progress) Step(desc string) {
	if p.bar == nil {
		fmt.Fprintf(p.out, "diobench: %s\n", desc)
		return
	}
	p.bar.Describe(desc)
	p.mu.Lock()
	p.step++
	p.begun = time.Now()
	p.mu.Unlock()
}

func (p *progress) Done() {
	if p.bar == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.bar.Finish()
}
