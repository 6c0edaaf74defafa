//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// benchJob is one fio job of the comparison.
type benchJob struct {
	name string
	rw   string // fio's rw
	bs   string
	qd   int
}

var benchJobs = []benchJob{
	{"4K randread QD32", "randread", "4k", 32},
	{"1M read QD8", "read", "1m", 8},
	{"1M write QD8", "write", "1m", 8},
}

// fioResult is what the table shows of one fio run.
type fioResult struct {
	iops, bw float64 // IO/s, bytes/s
	p99      float64 // completion latency, µs
}

// bench compares the target's loop device with the kernel's loop driver in
// its own direct-I/O mode on the same image: the same fio jobs on each, in
// one run, alternating devices job by job.
func bench(cfg config, out io.Writer) (err error) {
	if _, err := exec.LookPath("fio"); err != nil {
		return errors.New("-bench needs fio")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return errors.New("-bench needs losetup")
	}
	if cfg.Size == 0 {
		cfg.Size = 2 << 30
	}
	if err := prefill(cfg.Image, cfg.Size, out); err != nil {
		return err
	}
	tg, dev, err := start(cfg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := tg.Close(context.Background()); err == nil {
			err = cerr
		}
	}()
	if !tg.LoopDirectIO() {
		fmt.Fprintf(out, "note: the loop driver refused direct I/O on %s\n", dev)
	}
	kdev, err := losetup(cfg)
	if err != nil {
		return err
	}
	defer exec.Command("losetup", "-d", kdev).Run()

	fmt.Fprintf(out, "image %s, %d MiB, block size %d; dioloop: %s (FUSE direct_io, dio O_DIRECT through io_uring); loop-dio: %s (losetup --direct-io=on)\n",
		cfg.Image, cfg.Size>>20, cfg.BlockSize, dev, kdev)
	fmt.Fprintf(out, "%s, --ioengine=io_uring --direct=1, %v per job, the devices alternating job by job\n\n", fioVersion(), cfg.BenchTime)
	fmt.Fprintln(out, "| job | dioloop IOPS | MiB/s | p99 µs | loop-dio IOPS | MiB/s | p99 µs | dioloop / loop-dio |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|")
	before := tg.Stats()
	for _, j := range benchJobs {
		ours, err := runFio(dev, j, cfg.BenchTime)
		if err != nil {
			return err
		}
		theirs, err := runFio(kdev, j, cfg.BenchTime)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f× |\n", j.name,
			ours.iops, ours.bw/(1<<20), ours.p99, theirs.iops, theirs.bw/(1<<20), theirs.p99, ours.bw/theirs.bw)
	}
	st := tg.Stats()
	fmt.Fprintf(out, "\ndioloop served %d reads, %d writes; %d requests went through bounce buffers\n",
		st.Reads-before.Reads, st.Writes-before.Writes, st.Engine.Bounced-before.Engine.Bounced)
	return nil
}

// prefill writes the whole image once (fio, 1 MiB direct writes) unless
// every block of it is allocated already: reads of holes cost no I/O.
func prefill(image string, size int64, out io.Writer) error {
	var st syscall.Stat_t
	if err := syscall.Stat(image, &st); err == nil && st.Size >= size && st.Blocks*512 >= size {
		return nil
	}
	fmt.Fprintf(out, "writing %s (%d MiB) once, so that reads find data\n", image, size>>20)
	cmd := exec.Command("fio", "--name=prefill", "--filename="+image, "--size="+strconv.FormatInt(size, 10),
		"--rw=write", "--bs=1m", "--iodepth=8", "--ioengine=io_uring", "--direct=1", "--output-format=terse")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("fio prefill: %v: %s", err, bytes.TrimSpace(b))
	}
	return nil
}

// losetup attaches the kernel's loop driver, direct-I/O mode, to the image.
func losetup(cfg config) (string, error) {
	b, err := exec.Command("losetup", "--direct-io=on", "--sector-size", strconv.Itoa(cfg.BlockSize),
		"-f", "--show", cfg.Image).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup --direct-io=on: %v: %s", err, bytes.TrimSpace(b))
	}
	dev := strings.TrimSpace(string(b))
	if d, _ := os.ReadFile("/sys/block/" + strings.TrimPrefix(dev, "/dev/") + "/loop/dio"); strings.TrimSpace(string(d)) != "1" {
		exec.Command("losetup", "-d", dev).Run()
		return "", fmt.Errorf("losetup --direct-io=on: %s is not in direct-I/O mode", dev)
	}
	return dev, nil
}

func fioVersion() string {
	b, _ := exec.Command("fio", "--version").Output()
	return strings.TrimSpace(string(b))
}

// runFio runs job j on dev for d and returns its numbers.
func runFio(dev string, j benchJob, d time.Duration) (fioResult, error) {
	args := []string{"--name=" + j.rw, "--filename=" + dev, "--rw=" + j.rw, "--bs=" + j.bs,
		"--iodepth=" + strconv.Itoa(j.qd), "--ioengine=io_uring", "--direct=1",
		"--time_based", "--runtime=" + strconv.Itoa(int(d.Seconds())) + "s", "--randrepeat=0",
		"--output-format=json"}
	b, err := exec.Command("fio", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fioResult{}, fmt.Errorf("fio %s on %s: %v: %s", j.name, dev, err, bytes.TrimSpace(ee.Stderr))
		}
		return fioResult{}, fmt.Errorf("fio %s on %s: %w", j.name, dev, err)
	}
	// fio may print notes before the JSON.
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	var r struct {
		Jobs []struct {
			Read, Write fioSide
		}
	}
	if err := json.Unmarshal(b, &r); err != nil || len(r.Jobs) != 1 {
		return fioResult{}, fmt.Errorf("fio %s on %s: unexpected output (%v)", j.name, dev, err)
	}
	s := r.Jobs[0].Read
	if strings.Contains(j.rw, "write") {
		s = r.Jobs[0].Write
	}
	return fioResult{iops: s.IOPS, bw: float64(s.BWBytes),
		p99: s.Clat.Percentile["99.000000"] / 1e3}, nil
}

// fioSide is one direction of a fio job's JSON output.
type fioSide struct {
	IOPS    float64 `json:"iops"`
	BWBytes int64   `json:"bw_bytes"`
	Clat    struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}
