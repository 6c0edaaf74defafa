//go:build linux

package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// PrepareIceber builds the iceber helper now (it otherwise builds on the
// first iceber run), so a progress bar is not stalled by the build.
func PrepareIceber(ctx context.Context) error {
	_, err := icebenchBinary(ctx)
	return err
}

// LoadAvg returns the 1, 5 and 15 minute load averages.
func LoadAvg() string { return loadAvg() }

// DeviceName names the block device a file lives on (or the device itself):
// "vda", "zram0", or "" if unknown.
func DeviceName(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev)))
	if err != nil {
		return ""
	}
	return filepath.Base(link)
}

// PrepareZram readies a zram device for the report's RAM-bound runs: it
// must be configured (disksize set); its first size bytes are filled with
// random data (incompressible, so reads copy real pages rather than
// returning the zero page) unless it holds a signature, in which case it is
// only read. The fill opens it exclusively, so a device in use is refused.
func PrepareZram(path string, size int64, progress func(done, total int64)) (*Target, string, error) {
	t, err := OpenTarget(path, 0, false, false)
	if err != nil {
		return nil, "", err
	}
	if !t.Block {
		return nil, "", fmt.Errorf("%s is not a block device", path)
	}
	t.Size = min(t.Size, size)
	sig, err := Signature(path)
	if err != nil {
		return nil, "", err
	}
	if sig != "" {
		return t, fmt.Sprintf("%s holds %s: reading it as is, not filling it", path, sig), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_EXCL|syscall.O_DIRECT, 0)
	if err != nil {
		return nil, "", fmt.Errorf("%s is in use or not writable: %w", path, err)
	}
	defer f.Close()
	const chunk = 1 << 20
	buf, err := ring.Alloc(chunk)
	if err != nil {
		return nil, "", err
	}
	defer ring.Free(buf)
	rng := rand.NewChaCha8([32]byte{'z', 'r', 'a', 'm'})
	for off := int64(0); off < t.Size; off += chunk {
		n := min(chunk, t.Size-off)
		rng.Read(buf[:n])
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return nil, "", fmt.Errorf("filling %s: %w", path, err)
		}
		if progress != nil {
			progress(off+n, t.Size)
		}
	}
	return t, "", nil
}

// Many-files shape of the report (issue 13): ReportFiles files of
// ReportFilesSize in all, 4k random reads from ReportFilesQD goroutines.
const (
	ReportFiles     = 512
	ReportFilesSize = 1 << 30 // 2 MiB a file
	ReportFilesQD   = 256
)

// ReportShapes is the report's suite: 4k random reads at QD1, 32 and 128
// and 1m sequential reads and writes at QD8 on the file; 4k random reads at
// QD32 and 128 on zram (if not nil); 4k random reads at ReportFilesQD over
// the files of files (a CreateScratchFiles target, if not nil).
func ReportShapes(file *Target, fileDev string, zram *Target, zramDev string, files *Target) []Shape {
	if fileDev == "" {
		fileDev = "file"
	}
	s := []Shape{
		{Device: fileDev, Target: file, RW: RandRead, BS: 4 << 10, QD: 1, Jobs: 1},
		{Device: fileDev, Target: file, RW: RandRead, BS: 4 << 10, QD: 32, Jobs: 1},
		{Device: fileDev, Target: file, RW: RandRead, BS: 4 << 10, QD: 128, Jobs: 1},
		{Device: fileDev, Target: file, RW: SeqRead, BS: 1 << 20, QD: 8, Jobs: 1},
		{Device: fileDev, Target: file, RW: SeqWrite, BS: 1 << 20, QD: 8, Jobs: 1},
	}
	if zram != nil {
		if zramDev == "" {
			zramDev = "zram"
		}
		s = append(s,
			Shape{Device: zramDev, Target: zram, RW: RandRead, BS: 4 << 10, QD: 32, Jobs: 1},
			Shape{Device: zramDev, Target: zram, RW: RandRead, BS: 4 << 10, QD: 128, Jobs: 1})
	}
	if files != nil {
		dev := DeviceName(files.Path)
		if dev == "" {
			dev = fileDev
		}
		s = append(s, Shape{Device: dev, Target: files, RW: RandRead, BS: 4 << 10, QD: ReportFilesQD, Jobs: 1})
	}
	return s
}

// ReportInfo is what the report says about the machine and the run.
type ReportInfo struct {
	Started  time.Time
	Finished time.Time
	Load0    string
	Load1    string
	Command  string
	Plan     *Plan
	Machine  [][2]string
	FileDev  string
	ZramDev  string
}

// GatherInfo describes the machine, the file and the zram device.
func GatherInfo(started time.Time, load0 string, file, zram *Target) *ReportInfo {
	in := &ReportInfo{Started: started, Finished: time.Now(), Load0: load0, Load1: loadAvg()}
	add := func(k, v string) {
		if v != "" {
			in.Machine = append(in.Machine, [2]string{k, v})
		}
	}
	add("CPU", fmt.Sprintf("%s × %d (GOMAXPROCS %d)", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0)))
	add("memory", memTotal())
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		add("kernel", unix.ByteSliceToString(u.Sysname[:])+" "+unix.ByteSliceToString(u.Release[:])+" "+unix.ByteSliceToString(u.Machine[:]))
	}
	add("Go", runtime.Version())
	if v := FioVersion(); v != "" {
		add("fio", v)
	} else {
		add("fio", "not installed")
	}
	if file != nil {
		in.FileDev = DeviceName(file.Path)
		desc := fmt.Sprintf("`%s`, %s", file.Path, humanSize(file.Size))
		if file.Scratch {
			desc = fmt.Sprintf("a %s scratch file of random data in %s, written with O_DIRECT and removed afterwards", humanSize(file.Size), filepath.Dir(file.Path))
		}
		desc += " on " + describeDevice(in.FileDev)
		if fs := fsType(file.Path); fs != "" {
			desc += ", file system " + fs
		}
		add("file", desc)
	}
	if zram != nil {
		in.ZramDev = DeviceName(zram.Path)
		add("zram", fmt.Sprintf("`%s`: %s; the first %s filled with random data before the runs", zram.Path, describeDevice(in.ZramDev), humanSize(zram.Size)))
	} else {
		add("zram", "not measured (no configured zram device; see \"Setting up zram\")")
	}
	add("load average", fmt.Sprintf("%s before, %s after (1/5/15 min)", load0, in.Load1))
	return in
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return ""
}

func sysBlock(dev, attr string) string {
	for _, p := range []string{"/sys/class/block/" + dev + "/" + attr, "/sys/class/block/" + dev + "/../" + attr} {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

func describeDevice(dev string) string {
	if dev == "" {
		return "an unknown device"
	}
	var parts []string
	if strings.HasPrefix(dev, "zram") {
		if n, err := ParseSize(sysBlock(dev, "disksize")); err == nil && n > 0 {
			parts = append(parts, "disksize "+humanSize(n))
		}
		if a := selected(sysBlock(dev, "comp_algorithm")); a != "" {
			parts = append(parts, "compression "+a)
		}
	} else {
		if strings.HasPrefix(dev, "vd") {
			parts = append(parts, "virtio-blk")
		}
		if s := selected(sysBlock(dev, "queue/scheduler")); s != "" {
			parts = append(parts, "scheduler "+s)
		}
		if r := sysBlock(dev, "queue/rotational"); r == "0" {
			parts = append(parts, "non-rotational")
		}
	}
	if p := sysBlock(dev, "queue/io_poll"); p != "" {
		parts = append(parts, "io_poll "+p)
	}
	if len(parts) == 0 {
		return dev
	}
	return dev + " (" + strings.Join(parts, ", ") + ")"
}

// selected picks the bracketed choice of a sysfs list ("none [mq-deadline] kyber").
func selected(s string) string {
	if _, rest, ok := strings.Cut(s, "["); ok {
		if v, _, ok := strings.Cut(rest, "]"); ok {
			return v
		}
	}
	return s
}

func humanSize(n int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.v {
			return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/float64(u.v)), "0"), ".") + " " + u.s
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

func fsType(path string) string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return ""
	}
	best, typ := "", ""
	abs, _ := filepath.Abs(path)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, typ = mp, f[2]
		}
	}
	return typ
}

// ---- targets of issues 5 and 13 ----

// Check is one target of the issue, evaluated on the results.
type Check struct {
	Target   string
	Measured string
	Status   string // met, missed, not measured, reported
}

// EvaluateTargets checks the targets of issues 5 (the asynchronous loop,
// uringdio) and 13 (the synchronous path, uringdio/wait) on the report's
// results.
func EvaluateTargets(results []*Result, fileDev, zramDev string) []Check {
	if fileDev == "" {
		fileDev = "file"
	}
	if zramDev == "" {
		zramDev = "zram"
	}
	findFiles := func(dev, rw string, bs, qd, files int, label string) *Result {
		for _, r := range results {
			if r.Device == dev && r.RW == rw && r.BS == bs && r.QD == qd && r.Files == files && r.Label() == label && r.Skipped == "" && r.Ops > 0 {
				return r
			}
		}
		return nil
	}
	find := func(dev, rw string, bs, qd int, label string) *Result {
		return findFiles(dev, rw, bs, qd, 0, label)
	}
	var out []Check
	cmp := func(target string, u, peer *Result, get func(*Result) float64, unit string, limit float64, atLeast bool) {
		c := Check{Target: target, Status: "not measured"}
		if u == nil || peer == nil || get(peer) == 0 {
			if u == nil {
				c.Measured = "uringdio did not run"
			} else {
				c.Measured = "peer did not run"
			}
			out = append(out, c)
			return
		}
		ratio := get(u) / get(peer)
		met := ratio >= limit
		if !atLeast {
			met = ratio <= limit
		}
		c.Measured = fmt.Sprintf("%.3f× (%s vs %s %s)", ratio, fmtNum(get(u)), fmtNum(get(peer)), unit)
		c.Status = "missed"
		if met {
			c.Status = "met"
		}
		out = append(out, c)
	}
	iops := func(r *Result) float64 { return r.IOPS }
	mbps := func(r *Result) float64 { return r.MBps }
	p50 := func(r *Result) float64 { return r.LatP50 }
	mcpu := func(r *Result) float64 { return r.SysCPUPerOp }
	u := EngineUringdio
	for _, qd := range []int{32, 128} {
		cmp(fmt.Sprintf("%s 4K randread QD%d: uringdio ≥ 0.95 × fio IOPS", fileDev, qd),
			find(fileDev, RandRead, 4096, qd, u), find(fileDev, RandRead, 4096, qd, EngineFio), iops, "IOPS", 0.95, true)
		cmp(fmt.Sprintf("%s 4K randread QD%d: uringdio ≥ 2 × pread IOPS", fileDev, qd),
			find(fileDev, RandRead, 4096, qd, u), find(fileDev, RandRead, 4096, qd, EnginePread), iops, "IOPS", 2, true)
	}
	for _, qd := range []int{32, 128} {
		cmp(fmt.Sprintf("%s 4K randread QD%d: uringdio ≥ 0.85 × fio IOPS", zramDev, qd),
			find(zramDev, RandRead, 4096, qd, u), find(zramDev, RandRead, 4096, qd, EngineFio), iops, "IOPS", 0.85, true)
		cmp(fmt.Sprintf("%s 4K randread QD%d: machine CPU per op ≤ 1.25 × fio's", zramDev, qd),
			find(zramDev, RandRead, 4096, qd, u), find(zramDev, RandRead, 4096, qd, EngineFio), mcpu, "µs/op", 1.25, false)
	}
	cmp(fmt.Sprintf("%s 4K randread QD1: p50 latency ≤ 1.1 × fio's", fileDev),
		find(fileDev, RandRead, 4096, 1, u), find(fileDev, RandRead, 4096, 1, EngineFio), p50, "µs", 1.1, false)
	cmp(fmt.Sprintf("%s 1M sequential read: ≥ 0.95 × fio MB/s", fileDev),
		find(fileDev, SeqRead, 1<<20, 8, u), find(fileDev, SeqRead, 1<<20, 8, EngineFio), mbps, "MB/s", 0.95, true)
	cmp(fmt.Sprintf("%s 1M sequential write: ≥ 0.95 × fio MB/s", fileDev),
		find(fileDev, SeqWrite, 1<<20, 8, u), find(fileDev, SeqWrite, 1<<20, 8, EngineFio), mbps, "MB/s", 0.95, true)
	// Many files (issue 13): the synchronous path over hundreds of files
	// opened with plain dio.Open, against pread, and its OS threads.
	var many *Result
	for _, r := range results {
		if r.Files > 1 && r.RW == RandRead && r.Label() == EngineUringdio+"/"+CompWait && r.Skipped == "" && r.Ops > 0 {
			many = r
			break
		}
	}
	if many == nil {
		out = append(out,
			Check{Target: "many files (issue 13): uringdio/wait ≥ 1.5 × pread IOPS", Measured: "uringdio/wait did not run with -files", Status: "not measured"},
			Check{Target: "many files (issue 13): uringdio/wait uses ≤ 16 OS threads", Measured: "uringdio/wait did not run with -files", Status: "not measured"})
	} else {
		shape := fmt.Sprintf("many files (issue 13), %s %s %s over %d files, %d goroutines", many.Device, many.RW, FormatSize(int64(many.BS)), many.Files, many.QD)
		cmp(shape+": uringdio/wait ≥ 1.5 × pread IOPS", many,
			findFiles(many.Device, many.RW, many.BS, many.QD, many.Files, EnginePread), iops, "IOPS", 1.5, true)
		c := Check{Target: shape + ": uringdio/wait uses ≤ 16 OS threads", Status: "not measured", Measured: "not counted"}
		if many.Threads > 0 {
			c.Measured = fmt.Sprintf("%d threads", many.Threads)
			for _, peer := range []string{EnginePread, EngineFio} {
				if p := findFiles(many.Device, many.RW, many.BS, many.QD, many.Files, peer); p != nil && p.Threads > 0 {
					c.Measured += fmt.Sprintf("; %s %d", peer, p.Threads)
				}
			}
			c.Status = "missed"
			if many.Threads <= 16 {
				c.Status = "met"
			}
		}
		out = append(out, c)
	}
	// Issue 13: the synchronous path (qd goroutines in ReadAt).
	w := EngineUringdio + "/" + CompWait
	cpu := func(r *Result) float64 { return r.CPUPerOp }
	for _, qd := range []int{32, 128} {
		cmp(fmt.Sprintf("%s 4K randread QD%d: uringdio/wait ≥ 0.95 × fio IOPS", fileDev, qd),
			find(fileDev, RandRead, 4096, qd, w), find(fileDev, RandRead, 4096, qd, EngineFio), iops, "IOPS", 0.95, true)
		cmp(fmt.Sprintf("%s 4K randread QD%d: uringdio/wait CPU per op ≤ 1.2 × fio's", fileDev, qd),
			find(fileDev, RandRead, 4096, qd, w), find(fileDev, RandRead, 4096, qd, EngineFio), cpu, "µs/op", 1.2, false)
	}
	cmp(fmt.Sprintf("%s 4K randread QD128: uringdio/wait ≥ 2 × pread IOPS", fileDev),
		find(fileDev, RandRead, 4096, 128, w), find(fileDev, RandRead, 4096, 128, EnginePread), iops, "IOPS", 2, true)
	better := func(a, b *Result) *Result {
		if a == nil || b != nil && b.IOPS > a.IOPS {
			return b
		}
		return a
	}
	zbest := better(find(zramDev, RandRead, 4096, 32, EngineFio), find(zramDev, RandRead, 4096, 32, EnginePread))
	for _, l := range []string{w, u} {
		cmp(fmt.Sprintf("%s 4K randread QD32: %s ≥ 0.9 × the better of fio and pread", zramDev, l),
			find(zramDev, RandRead, 4096, 32, l), zbest, iops, "IOPS", 0.9, true)
	}
	// iceber: reported, no target.
	var parts []string
	for _, r := range results {
		if r.Engine != EngineUringdio || r.Label() != u || r.Ops == 0 || r.Files > 0 {
			continue
		}
		if ic := find(r.Device, r.RW, r.BS, r.QD, EngineIceber); ic != nil && ic.IOPS > 0 {
			parts = append(parts, fmt.Sprintf("%s %s %s QD%d %.2f×", r.Device, r.RW, FormatSize(int64(r.BS)), r.QD, r.IOPS/ic.IOPS))
		}
	}
	c := Check{Target: "against iceber/iouring-go at the same settings: the ratio (uringdio ÷ iceber IOPS)", Status: "reported"}
	if len(parts) == 0 {
		c.Measured, c.Status = "iceber did not run", "not measured"
	} else {
		c.Measured = strings.Join(parts, "; ")
	}
	out = append(out, c)
	return out
}

func fmtNum(v float64) string {
	switch {
	case v >= 1000:
		return num(v, 0)
	case v >= 10:
		return num(v, 1)
	}
	return num(v, 2)
}

// ---- the markdown ----

const (
	analysisBegin = "<!-- analysis:begin (kept when the report is regenerated) -->"
	analysisEnd   = "<!-- analysis:end -->"
)

// WriteReportFile writes the report to path, keeping the hand-written
// analysis section of the file it replaces.
func WriteReportFile(path string, in *ReportInfo, results []*Result) error {
	analysis := "_No analysis written yet: see the targets above._\n"
	if old, err := os.ReadFile(path); err == nil {
		if _, rest, ok := bytes.Cut(old, []byte(analysisBegin)); ok {
			if body, _, ok := bytes.Cut(rest, []byte(analysisEnd)); ok {
				analysis = strings.Trim(string(body), "\n") + "\n"
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var b bytes.Buffer
	WriteReport(&b, in, results, analysis)
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// WriteReport writes the markdown report.
func WriteReport(w io.Writer, in *ReportInfo, results []*Result, analysis string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# diobench results\n\n")
	p("Measured on %s with\n\n```sh\n%s\n```\n\n", in.Started.UTC().Format("2006-01-02 15:04 MST"), in.Command)
	p("which regenerates this file (as root, for the zram device; it took %s). It keeps the analysis section below.\n\n",
		in.Finished.Sub(in.Started).Round(time.Second))
	p("## Machine\n\n| | |\n|---|---|\n")
	for _, kv := range in.Machine {
		p("| %s | %s |\n", kv[0], kv[1])
	}
	p("\n")
	if busy(in.Load0) || busy(in.Load1) {
		p("**Other work ran on the machine during the measurement** (the load averages above): absolute numbers are noisy; read the ratios, which come from engines run back to back in alternating order on the same file.\n\n")
	}

	pl := in.Plan
	p("## How it was measured\n\n")
	if pl != nil {
		p("- Every shape ran with every engine, %d round(s) of %s each, the engine order alternating between rounds (%s, then reversed) so that drift on a shared machine hits every engine alike; each line is the engine's median round by IOPS.\n",
			max(pl.Rounds, 1), pl.Base.Duration, engineList(pl.Engines))
	}
	p("- **uringdio**: one `dio.File` per job, opened as a user opens it (`dio.Open` with no options: the process's default engine, whose owner thread holds the ring; on a device that completes synchronously, such as zram, the pread backend serves the file), %s.\n", inlineLoop)
	p("- **uringdio/wait**: the same file, qd goroutines each calling `File.ReadAt`/`WriteAt` (synchronous: the caller parks until the owner has its completion; a caller that finds the ring idle reads with pread itself; on the pread backend the call runs in the caller).\n")
	p("- **pread**: `os.File.ReadAt`/`WriteAt` on an `O_DIRECT` file from qd goroutines: what a Go program does without io_uring.\n")
	p("- **iceber**: github.com/iceber/iouring-go's request API (`SubmitRequest(Pread(...), ch)`), one goroutine keeping qd requests in flight and taking results from the channel; run in a helper binary linked with `-ldflags=-checklinkname=0`.\n")
	p("- **fio**: fio's io_uring engine with the same file, size, mode, block size, depth and jobs, e.g.\n\n  ```sh\n  fio %s\n  ```\n", strings.Join(fioArgs(&Config{Path: "FILE", Size: 1 << 30, RW: RandRead, BS: 4096, QD: 32, Jobs: 1, Duration: 5 * time.Second}), " "))
	p("- **Many files** (issue 13): %d files of %s each (%s of random data written with `O_DIRECT` in a scratch directory, removed afterwards), %d goroutines each picking a uniformly random file and a uniformly random block in it. uringdio opens every file with plain `dio.Open` (no options: they share the process's default engine), pread opens them as `O_DIRECT` `os.File`s, fio gets them with `--directory`, `--nrfiles`, `--filename_format` and `--file_service_type=random`. **threads** is the OS threads the engine's process used: for the in-process engines the threads created or scheduled from the start of the run's opens to its end (a Go process keeps the idle threads of earlier runs, so the peak of `Threads:` in `/proc/self/status`, kept as `peak_threads` in the JSON, would count pread's leftovers), io_uring's io-wq workers included; for fio the peak of `Threads:` over its processes.\n",
		ReportFiles, humanSize(ReportFilesSize/ReportFiles), humanSize(ReportFilesSize), ReportFilesQD)
	p("- Offsets are uniform random with repeats (fio `--norandommap`); buffers are page-aligned off-heap memory. Latency is each I/O's time from issue to the completion being seen, recorded per I/O in HdrHistogram (fio: `lat_ns`, the same span).\n")
	p("- **CPU µs/op** is the engine's process per I/O (getrusage: every thread, including io_uring's io-wq workers and SQPOLL thread; fio: the rusage of the fio process and its job processes, every thread, from wait4 — fio's own usr_cpu/sys_cpu count only its job thread, not the io-wq workers that do zram's reads, and are kept as `fio_thread_cpu_us_per_op` in the JSON); **machine µs/op** is the busy time of all CPUs (/proc/stat: user, nice, system, irq, softirq, steal) over the run window per I/O, which also counts kernel work done outside the process (and anything else running).\n")
	p("- MB/s is 10^6 bytes per second. ×fio and ×pread are IOPS ratios to those engines' lines of the same shape.\n\n")

	p("## Results\n\n")
	writeMarkdownTable(w, results)
	p("\n## Targets (issue 5: the asynchronous loop; issue 13: the synchronous path and many files)\n\n| target | measured | status |\n|---|---|---|\n")
	for _, c := range EvaluateTargets(results, in.FileDev, in.ZramDev) {
		status := c.Status
		switch status {
		case "met":
			status = "**met**"
		case "missed":
			status = "**missed**"
		}
		p("| %s | %s | %s |\n", c.Target, c.Measured, status)
	}
	p("\n## Analysis\n\n%s\n%s%s\n\n", analysisBegin, analysis, analysisEnd)
	p("## Setting up zram\n\nThe RAM-bound comparison uses a zram block device (as root):\n\n")
	p("```sh\nmodprobe zram            # creates /dev/zram0\necho 4G > /sys/block/zram0/disksize\n```\n\n")
	p("`-report` fills the first 1 GiB of it with random data (after checking that it holds no file system, partition table or swap signature, and opening it exclusively) and reads it with `O_DIRECT`. To undo: `echo 1 > /sys/block/zram0/reset`. One zram run by hand:\n\n")
	p("```sh\ngo run ./benchmarks/diobench -file /dev/zram0 -size 1g -rw randread -bs 4k -qd 32,128\n```\n\n")
	p("diobench never writes to a `-file` unless `-rw` asks for writes, and refuses to write to a block device that holds a signature unless `-force` is given.\n")
}

func busy(load string) bool {
	var l1 float64
	fmt.Sscan(load, &l1)
	return l1 >= 0.5
}

func engineList(es []EngineSpec) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.String()
	}
	return strings.Join(s, ", ")
}

const inlineLoop = "the asynchronous loop: one goroutine submits qd reusable `dio.Request`s with the Inline policy, and each request's callback (run on the engine's owner goroutine) records the I/O and resubmits the same request, so the owner submits a whole reaped batch in its next `io_uring_enter`"

func writeMarkdownTable(w io.Writer, results []*Result) {
	fmt.Fprintln(w, "| engine | device | rw | bs | qd | jobs | files | IOPS | MB/s | p50 µs | p99 µs | p99.9 µs | CPU µs/op | machine µs/op | threads | errors | ×fio | ×pread |")
	fmt.Fprintln(w, "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	var notes []string
	for _, r := range results {
		head := fmt.Sprintf("| %s | %s | %s | %s | %d | %d | %d |", r.Label()+optSuffix(r), dash(r.Device), r.RW, FormatSize(int64(r.BS)), r.QD, r.Jobs, max(r.Files, 1))
		if r.Skipped != "" {
			fmt.Fprintf(w, "%s skipped: %s | | | | | | | | | | |\n", head, r.Skipped)
			continue
		}
		fmt.Fprintf(w, "%s %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s |\n", head,
			num(r.IOPS, 0), num(r.MBps, 1), num(r.LatP50, 1), num(r.LatP99, 1), num(r.LatP999, 1),
			num(r.CPUPerOp, 2), num(r.SysCPUPerOp, 2), count(r.Threads), r.Errors, ratio(r.VsFio), ratio(r.VsPread))
		if r.FirstError != "" {
			notes = append(notes, fmt.Sprintf("%s %s: %s", r.Label(), shapeKey(r), r.FirstError))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, "- "+n)
		}
	}
}
