//go:build linux

package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fioArgs is the fio command line with the same workload as cfg: the
// io_uring engine, O_DIRECT, same file, size, mode, block size, depth and
// jobs, time based, uniform random offsets with repeats (norandommap, as
// diobench draws them), latency percentiles over the whole I/O (issue to
// completion, as diobench measures).
//
// A many-files run names every file in one colon list (fio splits --size
// evenly between them: each gets Config.PerFile) and picks a uniformly
// random file for each I/O (--file_service_type=random). fio takes at most
// 4096 characters of an option's value, so a longer list of files named as
// CreateScratchFiles names them (DIR/f0.dat, DIR/f1.dat, ...) is given as
// --directory, --nrfiles and --filename_format instead.
func fioArgs(cfg *Config) []string {
	files := []string{"--filename=" + fioEscape(cfg.Path)}
	size := cfg.Size
	if len(cfg.Files) > 0 {
		size = cfg.PerFile() * int64(len(cfg.Files))
		names := make([]string, len(cfg.Files))
		for i, p := range cfg.Files {
			names[i] = fioEscape(p)
		}
		files = []string{"--filename=" + strings.Join(names, ":")}
		if len(files[0]) > fioMaxValue && scratchNamed(cfg.Path, cfg.Files) {
			files = []string{"--directory=" + fioEscape(cfg.Path), "--nrfiles=" + strconv.Itoa(len(cfg.Files)),
				"--filename_format=" + strings.ReplaceAll(scratchName, "%d", "$filenum")}
		}
	}
	a := append([]string{"--name=diobench"}, files...)
	a = append(a, []string{
		"--size=" + strconv.FormatInt(size, 10),
		"--rw=" + cfg.RW,
		"--bs=" + strconv.Itoa(cfg.BS),
		"--iodepth=" + strconv.Itoa(cfg.QD),
		"--numjobs=" + strconv.Itoa(cfg.Jobs),
		"--ioengine=io_uring",
		"--direct=1",
		"--time_based",
		"--runtime=" + strconv.FormatInt(cfg.Duration.Milliseconds(), 10) + "ms",
		"--group_reporting",
		"--norandommap",
		"--randrepeat=0",
		"--allow_file_create=0",
		"--lat_percentiles=1",
		"--percentile_list=50:99:99.9",
		"--output-format=json",
		"--eta=never",
	}...)
	if len(cfg.Files) > 0 {
		a = append(a, "--file_service_type=random")
	}
	if !cfg.Writes() {
		a = append(a, "--readonly")
	}
	if cfg.RW == RandRW {
		a = append(a, "--rwmixread=50", "--unified_rw_reporting=mixed")
	}
	if cfg.SQPoll {
		a = append(a, "--sqthread_poll=1")
	}
	if cfg.FixedBufs {
		a = append(a, "--fixedbufs=1")
	}
	if cfg.IOPoll {
		a = append(a, "--hipri=1")
	}
	return a
}

// fioMaxValue is the longest option value fio accepts.
const fioMaxValue = 4096

// scratchNamed reports whether files are dir's files named scratchName
// with 0, 1, 2, ... in order.
func scratchNamed(dir string, files []string) bool {
	for i, p := range files {
		if p != filepath.Join(dir, fmt.Sprintf(scratchName, i)) {
			return false
		}
	}
	return true
}

// fioEscape escapes the colons of a path, which fio's --filename reads as
// a separator.
func fioEscape(path string) string { return strings.ReplaceAll(path, ":", `\:`) }

type fioOutput struct {
	Version     string   `json:"fio version"`
	TimestampMs int64    `json:"timestamp_ms"`
	Jobs        []fioJob `json:"jobs"`
}

type fioJob struct {
	Error      int     `json:"error"`
	JobRuntime int64   `json:"job_runtime"` // ms, summed over the jobs of the group
	UsrCPU     float64 `json:"usr_cpu"`     // percent of job_runtime
	SysCPU     float64 `json:"sys_cpu"`
	Read       fioDir  `json:"read"`
	Write      fioDir  `json:"write"`
	Mixed      *fioDir `json:"mixed"`
}

type fioDir struct {
	IOBytes  int64   `json:"io_bytes"`
	IOPS     float64 `json:"iops"`
	BwBytes  float64 `json:"bw_bytes"`
	Runtime  int64   `json:"runtime"` // ms, wall
	TotalIOs int64   `json:"total_ios"`
	ShortIOs int64   `json:"short_ios"`
	DropIOs  int64   `json:"drop_ios"`
	Lat      fioLat  `json:"lat_ns"`
	Clat     fioLat  `json:"clat_ns"`
}

type fioLat struct {
	N          int64              `json:"N"`
	Percentile map[string]float64 `json:"percentile"`
}

// FioVersion returns fio's version string, or "" if fio is missing.
func FioVersion() string {
	out, err := exec.Command("fio", "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// runFio runs fio with cfg's workload and turns its JSON into a Result.
// Process CPU is fio's own usr+sys over its job runtime; machine CPU is
// /proc/stat over the window fio's jobs ran (sampled, then interpolated).
func runFio(ctx context.Context, cfg *Config) (*Result, error) {
	bin, err := exec.LookPath("fio")
	if err != nil {
		return nil, skipf("fio is not installed (apt-get install fio)")
	}
	if cfg.Ops > 0 || cfg.Duration < time.Millisecond {
		return nil, skipf("fio runs time based only (give a -duration)")
	}
	args := fioArgs(cfg)
	if len(args[1]) > fioMaxValue {
		return nil, skipf("fio takes at most %d characters of --filename, too few for these %d files (CreateScratchFiles's are named so fio can count them)", fioMaxValue, len(cfg.Files))
	}
	sampler := startSampler(20 * time.Millisecond)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Start()
	var threads int
	if runErr == nil {
		peak := startThreadPeak(cmd.Process.Pid, 20*time.Millisecond)
		runErr = cmd.Wait()
		threads = peak.Stop()
	}
	exited := time.Now()
	sampler.Stop()
	out := stdout.Bytes()
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:] // fio prints warnings before its JSON
	}
	var fo fioOutput
	if err := json.Unmarshal(out, &fo); err != nil || len(fo.Jobs) == 0 {
		msg := strings.TrimSpace(stderr.String())
		if runErr != nil {
			return nil, fmt.Errorf("fio: %v: %s", runErr, lastLines(msg, 5))
		}
		return nil, fmt.Errorf("fio: cannot parse its JSON output: %v (%s)", err, lastLines(msg, 5))
	}
	job := fo.Jobs[0]
	res := baseResult(cfg)
	res.Threads, res.PeakThreads = threads, threads // a process of its own: nothing left from earlier runs
	dirs := []*fioDir{&job.Read, &job.Write}
	if job.Mixed != nil {
		dirs = []*fioDir{job.Mixed}
	}
	var bytesMoved int64
	var wall int64
	var lat *fioLat
	for _, d := range dirs {
		res.Ops += d.TotalIOs
		res.IOPS += d.IOPS
		bytesMoved += d.IOBytes
		res.Errors += d.ShortIOs + d.DropIOs
		wall = max(wall, d.Runtime)
		if d.TotalIOs > 0 && (lat == nil || d.TotalIOs > lat.N) {
			l := d.Lat
			if len(l.Percentile) == 0 {
				l = d.Clat
			}
			l.N = d.TotalIOs
			lat = &l
		}
	}
	if wall > 0 {
		res.Seconds = float64(wall) / 1e3
		res.MBps = float64(bytesMoved) / res.Seconds / 1e6
	}
	if lat != nil {
		us := func(k string) float64 { return lat.Percentile[k] / 1e3 }
		res.LatP50, res.LatP99, res.LatP999 = us("50.000000"), us("99.000000"), us("99.900000")
	}
	if res.Ops > 0 {
		// Process CPU: the rusage of fio and its job processes (wait4), every
		// thread, as getrusage(RUSAGE_SELF) is for the in-process engines.
		// fio's own usr_cpu/sys_cpu count only its job thread (RUSAGE_THREAD),
		// not the io-wq workers that run reads the device cannot do without
		// blocking (zram): that number is kept apart.
		if ps := cmd.ProcessState; ps != nil {
			res.CPUPerOp = float64((ps.UserTime() + ps.SystemTime()).Nanoseconds()) / 1e3 / float64(res.Ops)
		}
		own := (job.UsrCPU + job.SysCPU) / 100 * float64(job.JobRuntime) * 1e3 // µs
		res.FioThreadCPU = own / float64(res.Ops)
		end := exited
		if fo.TimestampMs > 0 {
			end = time.UnixMilli(fo.TimestampMs)
		}
		begin := end.Add(-time.Duration(wall) * time.Millisecond)
		res.SysCPUPerOp = float64(sampler.busy(begin, end).Nanoseconds()) / 1e3 / float64(res.Ops)
	}
	if job.Error != 0 {
		res.Errors++
		res.FirstError = fmt.Sprintf("fio job error %d: %s", job.Error, lastLines(stderr.String(), 3))
	}
	if runErr != nil && res.FirstError == "" {
		res.FirstError = fmt.Sprintf("fio: %v: %s", runErr, lastLines(stderr.String(), 3))
		res.Errors++
	}
	if cfg.Verify && cfg.Writes() {
		res.Note = "-verify is not applied to fio"
	}
	return res, nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}
