//go:build linux

// Command pebblebench compares Pebble on vfs.Default with Pebble on
// pebblevfs (direct I/O through uringdio) inside one memory cgroup, so that
// the page cache vfs.Default leans on counts against the same limit as
// everything else, and both get the same block cache.
//
// It loads a DB of -size bytes once (through vfs.Default, inside the
// cgroup), then for each workload (point reads, scans, writes without and
// with Sync) and each FS runs a child process (this program re-executed)
// in the cgroup, with the cgroup's page cache emptied before each, and
// prints a markdown table:
// ops/s, p50 and p99 latency, and CPU time per op (user+system of the
// child, io_uring workers included, over the measured window).
//
//	pebblebench -dir /var/tmp/pebblebench -size 4GiB -mem 1GiB -cache 512MiB
//
// It needs root and the cgroup v1 memory controller at
// /sys/fs/cgroup/memory.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
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

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/uringdio/uringdio/examples/pebblevfs"
)

const cgroupRoot = "/sys/fs/cgroup/memory"

// current is the child running now, for the signal handler.
var current atomic.Pointer[os.Process]

type config struct {
	dir         string
	size        int64
	mem         int64
	cache       int64
	valueSize   int
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	workloads   string
	fss         string
	reload      bool
	scanLen     int
	profile     string
	maxOpen     int
	walChunk    int
	rounds      int
}

// result is what a child reports.
type result struct {
	FS       string  `json:"fs"`
	Workload string  `json:"workload"`
	Ops      int64   `json:"ops"`
	Seconds  float64 `json:"seconds"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	CPUus    float64 `json:"cpu_us_per_op"`
	Errors   int64   `json:"errors"`
	PeakMiB  float64 `json:"peak_mib"`  // the cgroup's peak usage (parent fills it)
	CacheMiB float64 `json:"cache_mib"` // its page cache at the end (parent fills it)
}

func main() {
	var c config
	var size, mem, cache string
	flag.StringVar(&c.dir, "dir", "/var/tmp/pebblebench", "DB directory (on the file system to measure)")
	flag.StringVar(&size, "size", "4GiB", "DB size to load (keys × (key+value))")
	flag.StringVar(&mem, "mem", "1GiB", "memory cgroup limit for each run")
	flag.StringVar(&cache, "cache", "512MiB", "Pebble block cache")
	flag.IntVar(&c.valueSize, "value", 1000, "value size in bytes")
	flag.DurationVar(&c.duration, "duration", 20*time.Second, "measured time per workload and FS")
	flag.DurationVar(&c.warmup, "warmup", 5*time.Second, "unmeasured time before each measurement")
	flag.IntVar(&c.concurrency, "concurrency", 16, "goroutines issuing operations")
	flag.StringVar(&c.workloads, "workloads", "get,scan,write,syncwrite", "workloads to run (get, scan, write: NoSync sets, syncwrite: Sync sets, a group commit across the goroutines)")
	flag.StringVar(&c.fss, "fs", "default,pebblevfs", "file systems to compare")
	flag.BoolVar(&c.reload, "reload", false, "load the DB again even if -dir holds one of the same size")
	flag.IntVar(&c.scanLen, "scan", 100, "keys per scan")
	flag.IntVar(&c.maxOpen, "maxopenfiles", 1000, "Pebble's MaxOpenFiles (its table cache; 1000 is Pebble's default)")
	flag.IntVar(&c.rounds, "rounds", 1, "runs of each workload and FS, alternating which FS goes first; the table shows the median run")
	flag.IntVar(&c.walChunk, "walchunk", 0, "pebblevfs: the WAL Writers' chunk size (0: pebblevfs.DefaultLogChunk)")
	flag.StringVar(&c.profile, "cpuprofile", "", "write a CPU profile of each measured run to this directory")
	child := flag.String("child", "", "internal: run one workload (fs:workload) in this process")
	cgroup := flag.String("cgroup", "", "internal: the cgroup a child joins")
	flag.Parse()
	var err error
	for _, p := range []struct {
		s string
		v *int64
	}{{size, &c.size}, {mem, &c.mem}, {cache, &c.cache}} {
		if *p.v, err = parseBytes(p.s); err != nil {
			fatal(err)
		}
	}
	if *child != "" {
		if err := runChild(c, *child, *cgroup); err != nil {
			fatal(err)
		}
		return
	}
	if err := run(c); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "pebblebench:", err)
	os.Exit(1)
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(f * float64(mult)), nil
}

func (c config) keys() int64 { return c.size / int64(16+c.valueSize) }

func key(i int64) []byte { return fmt.Appendf(make([]byte, 0, 16), "k%015d", i) }

// run is the parent: the cgroup, the load, a child per workload and FS,
// the table.
func run(c config) error {
	cg := filepath.Join(cgroupRoot, fmt.Sprintf("pebblebench-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		return fmt.Errorf("memory cgroup (v1, root needed): %w", err)
	}
	defer os.Remove(cg)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		if p := current.Load(); p != nil {
			p.Kill()
			p.Wait()
		}
		os.Remove(cg)
		os.Exit(1)
	}()
	if err := writeFile(filepath.Join(cg, "memory.limit_in_bytes"), strconv.FormatInt(c.mem, 10)); err != nil {
		return err
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("pebblebench: dir %s, %d keys × %d B values (%s), cgroup limit %s, block cache %s, MaxOpenFiles %d, %d goroutines, %v per run after %v warm-up; %d CPUs; load %s\n",
		c.dir, c.keys(), c.valueSize, human(c.size), human(c.mem), human(c.cache), c.maxOpen, c.concurrency, c.duration, c.warmup, runtime.NumCPU(), strings.TrimSpace(string(load)))

	if c.reload || !loaded(c) {
		os.RemoveAll(c.dir)
		start := time.Now()
		if _, err := spawn(c, cg, "default:load"); err != nil {
			return fmt.Errorf("load: %w", err)
		}
		fmt.Printf("loaded in %v\n", time.Since(start).Round(time.Second))
		os.WriteFile(filepath.Join(c.dir, "pebblebench.size"), []byte(strconv.FormatInt(c.size, 10)), 0o644)
	}
	var results []result
	fss := strings.Split(c.fss, ",")
	for _, w := range strings.Split(c.workloads, ",") {
		for round := range max(c.rounds, 1) {
			order := slices.Clone(fss)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, fs := range order {
				r, err := spawn(c, cg, fs+":"+w)
				if err != nil {
					return fmt.Errorf("%s %s: %w", fs, w, err)
				}
				fmt.Printf("  %-9s %-9s %10.0f ops/s  p50 %8.1f µs  p99 %8.1f µs  CPU %6.1f µs/op  errors %d  cgroup peak %.0f MiB, page cache %.0f MiB\n",
					r.FS, r.Workload, float64(r.Ops)/r.Seconds, r.P50us, r.P99us, r.CPUus, r.Errors, r.PeakMiB, r.CacheMiB)
				results = append(results, r)
			}
		}
	}
	load, _ = os.ReadFile("/proc/loadavg")
	fmt.Printf("\nload at the end: %s\n\n", strings.TrimSpace(string(load)))
	table(results)
	return nil
}

func loaded(c config) bool {
	b, err := os.ReadFile(filepath.Join(c.dir, "pebblebench.size"))
	return err == nil && strings.TrimSpace(string(b)) == strconv.FormatInt(c.size, 10)
}

// spawn runs one child in the cgroup, after emptying the cgroup's page
// cache, and returns its result with the cgroup's peak and page cache.
func spawn(c config, cg, what string) (result, error) {
	writeFile(filepath.Join(cg, "memory.force_empty"), "0")
	writeFile(filepath.Join(cg, "memory.max_usage_in_bytes"), "0")
	args := append([]string{"-child", what, "-cgroup", cg}, os.Args[1:]...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	current.Store(cmd.Process)
	defer current.Store(nil)
	var r result
	var got bool
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			got = true
		}
	}
	if err := cmd.Wait(); err != nil {
		return r, err
	}
	if !got && !strings.HasSuffix(what, ":load") {
		return r, errors.New("the child reported nothing")
	}
	r.PeakMiB = float64(readInt(filepath.Join(cg, "memory.max_usage_in_bytes"))) / (1 << 20)
	r.CacheMiB = float64(statField(filepath.Join(cg, "memory.stat"), "cache")) / (1 << 20)
	return r, nil
}

func writeFile(name, s string) error { return os.WriteFile(name, []byte(s), 0o644) }

func readInt(name string) int64 {
	b, _ := os.ReadFile(name)
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func statField(name, field string) int64 {
	b, _ := os.ReadFile(name)
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == field {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}

// table prints the results side by side, one row per workload: of
// several runs, the one with the median ops/s.
func table(rs []result) {
	runs := map[string]map[string][]result{}
	var order []string
	for _, r := range rs {
		if runs[r.Workload] == nil {
			runs[r.Workload] = map[string][]result{}
			order = append(order, r.Workload)
		}
		runs[r.Workload][r.FS] = append(runs[r.Workload][r.FS], r)
	}
	by := map[string]map[string]result{}
	for w, m := range runs {
		by[w] = map[string]result{}
		for fs, l := range m {
			slices.SortFunc(l, func(a, b result) int {
				return cmp.Compare(float64(a.Ops)/a.Seconds, float64(b.Ops)/b.Seconds)
			})
			by[w][fs] = l[len(l)/2]
		}
	}
	fmt.Println("| workload | ops/s vfs.Default | ops/s pebblevfs | ratio | p99 vfs.Default | p99 pebblevfs | CPU/op vfs.Default | CPU/op pebblevfs | page cache at end (Default / pebblevfs) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, w := range order {
		d, p := by[w]["default"], by[w]["pebblevfs"]
		dops, pops := float64(d.Ops)/d.Seconds, float64(p.Ops)/p.Seconds
		fmt.Printf("| %s | %.0f | %.0f | %.2f× | %.0f µs | %.0f µs | %.1f µs | %.1f µs | %.0f / %.0f MiB |\n",
			w, dops, pops, pops/dops, d.P99us, p.P99us, d.CPUus, p.CPUus, d.CacheMiB, p.CacheMiB)
	}
}

// runChild joins the cgroup, opens the DB on the named FS and runs one
// workload (or the load), printing its result as JSON.
func runChild(c config, what, cg string) error {
	if cg != "" {
		if err := writeFile(filepath.Join(cg, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	fsName, workload, _ := strings.Cut(what, ":")
	var fs vfs.FS = vfs.Default
	var pfs *pebblevfs.FS
	if fsName == "pebblevfs" {
		var err error
		po := []pebblevfs.Option{pebblevfs.WithLogf(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })}
		if c.walChunk > 0 {
			po = append(po, pebblevfs.WithLogWriterOptions(pebblevfs.WriterOptions{ChunkSize: c.walChunk}))
		}
		if pfs, err = pebblevfs.New(po...); err != nil {
			return err
		}
		fs = pfs
	}
	cache := pebble.NewCache(c.cache)
	defer cache.Unref()
	opts := &pebble.Options{FS: fs, Cache: cache, Logger: quietLogger{}, MaxOpenFiles: c.maxOpen}
	if workload == "load" {
		opts.DisableWAL = true
	}
	db, err := pebble.Open(c.dir, opts)
	if err != nil {
		return err
	}
	r := result{FS: fsName, Workload: workload}
	if workload == "load" {
		err = loadDB(c, db)
	} else {
		err = measure(c, db, workload, &r)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if pfs != nil {
		if cerr := pfs.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)      {}
func (quietLogger) Errorf(f string, a ...any) { fmt.Fprintf(os.Stderr, "pebble: "+f+"\n", a...) }
func (quietLogger) Fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "pebble fatal: "+f+"\n", a...)
	os.Exit(2)
}

// loadDB writes the keys in order (no overlap, so flushes move down
// without rewriting), with random values.
func loadDB(c config, db *pebble.DB) error {
	rng := rand.New(rand.NewPCG(1, 1))
	v := make([]byte, c.valueSize)
	b := db.NewBatch()
	for i := int64(0); i < c.keys(); i++ {
		for j := 0; j < len(v); j += 8 {
			x := rng.Uint64()
			for k := 0; k < 8 && j+k < len(v); k++ {
				v[j+k] = byte(x >> (8 * k))
			}
		}
		b.Set(key(i), v, nil)
		if b.Len() > 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b = db.NewBatch()
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	if err := db.Flush(); err != nil {
		return err
	}
	// Let the compactions the load started finish, so that no measured run
	// inherits them: wait until none has run or started for 5 seconds.
	last, quiet := int64(-1), 0
	for deadline := time.Now().Add(15 * time.Minute); quiet < 5 && time.Now().Before(deadline); time.Sleep(time.Second) {
		m := db.Metrics()
		if n := m.Compact.Count; m.Compact.NumInProgress == 0 && n == last {
			quiet++
		} else {
			last, quiet = n, 0
		}
	}
	return nil
}

// measure runs the workload with c.concurrency goroutines: c.warmup
// unmeasured, then c.duration measured.
func measure(c config, db *pebble.DB, workload string, r *result) error {
	n := c.keys()
	var measuring, stop atomic.Bool
	var errs atomic.Int64
	lat := make([][]time.Duration, c.concurrency)
	var wg sync.WaitGroup
	for g := range c.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			v := make([]byte, c.valueSize)
			mine := make([]time.Duration, 0, 1<<16)
			for !stop.Load() {
				i := rng.Int64N(n)
				t0 := time.Now()
				var err error
				switch workload {
				case "get":
					var cl interface{ Close() error }
					_, cl, err = db.Get(key(i))
					if err == nil {
						cl.Close()
					}
				case "scan":
					var it *pebble.Iterator
					it, err = db.NewIter(nil)
					if err == nil {
						k := 0
						for valid := it.SeekGE(key(i)); valid && k < c.scanLen; valid = it.Next() {
							_ = it.Value()
							k++
						}
						err = it.Close()
					}
				case "write", "syncwrite":
					for j := range v {
						v[j] = byte(rng.Uint32())
					}
					err = db.Set(key(i), v, &pebble.WriteOptions{Sync: workload == "syncwrite"})
				default:
					err = fmt.Errorf("unknown workload %q", workload)
				}
				d := time.Since(t0)
				if err != nil {
					if errs.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "pebblebench:", workload, err)
					}
					if !measuring.Load() {
						continue
					}
				}
				if measuring.Load() {
					mine = append(mine, d)
				}
			}
			lat[g] = mine
		}()
	}
	time.Sleep(c.warmup)
	if c.profile != "" {
		f, err := os.Create(filepath.Join(c.profile, r.FS+"-"+workload+".pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	measuring.Store(true)
	time.Sleep(c.duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	stop.Store(true)
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r.Ops = int64(len(all))
	r.Seconds = elapsed.Seconds()
	r.Errors = errs.Load()
	if len(all) > 0 {
		r.P50us = float64(all[len(all)/2]) / 1e3
		r.P99us = float64(all[len(all)*99/100]) / 1e3
		cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
		r.CPUus = float64(cpu) / 1e3 / float64(len(all))
	}
	return nil
}
