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
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/examples/dioloop/target"
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
//
// SIGINT (Ctrl-C) or SIGTERM stops it: fio is killed and the deferred
// cleanup detaches both devices and unmounts, so nothing is left behind.
// The kernel's loop device is attached as the target's is (AttachLoop:
// LOOP_CONFIGURE with LO_FLAGS_AUTOCLEAR, held open), so it goes away with
// this process even if it dies without cleaning up.
func bench(cfg config, out io.Writer) (err error) {
	// The run writes over the whole image (the prefill, the 1 MiB write
	// job): an image that holds something must be named on purpose.
	if _, err := os.Stat(cfg.Image); err == nil && !cfg.Overwrite {
		return fmt.Errorf("-bench writes over the whole image, and %s exists: pass -overwrite to use it anyway", cfg.Image)
	}
	if cfg.BenchTime < time.Millisecond {
		return fmt.Errorf("-benchtime %v: want at least 1ms", cfg.BenchTime)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := exec.LookPath("fio"); err != nil {
		return errors.New("-bench needs fio")
	}
	if cfg.Size == 0 {
		cfg.Size = 2 << 30
	}
	if err := prefill(ctx, cfg.Image, cfg.Size, out); err != nil {
		return err
	}
	tg, dev, err := start(cfg)
	if err != nil {
		return err
	}
	defer func() {
		// Nothing but fio, gone by now, opens the device: Close does
		// not wait long (a signal during it is caught, not fatal).
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if cerr := tg.Close(cctx); err == nil {
			err = cerr
		}
	}()
	if !tg.LoopDirectIO() {
		fmt.Fprintf(out, "note: the loop driver refused direct I/O on %s\n", dev)
	}
	kl, err := target.AttachLoop(cfg.Image, cfg.BlockSize)
	if err != nil {
		return fmt.Errorf("the kernel's loop device: %w", err)
	}
	defer func() {
		if cerr := kl.Close(); err == nil {
			err = cerr
		}
	}()
	kdev := kl.Device()
	if !kl.DirectIO() {
		return fmt.Errorf("the kernel's loop device %s is not in direct-I/O mode", kdev)
	}

	fmt.Fprintf(out, "image %s, %d MiB, block size %d; dioloop: %s (FUSE direct_io, dio O_DIRECT through io_uring); loop-dio: %s (the loop driver's direct-I/O mode, as losetup --direct-io=on)\n",
		cfg.Image, cfg.Size>>20, cfg.BlockSize, dev, kdev)
	fmt.Fprintf(out, "%s, --ioengine=io_uring --direct=1, %v per job and device, which device runs first alternating job by job (ABBA: dioloop first in odd jobs)\n\n", fioVersion(), cfg.BenchTime)
	fmt.Fprintln(out, "| job | dioloop IOPS | MiB/s | p99 µs | loop-dio IOPS | MiB/s | p99 µs | dioloop / loop-dio |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|")
	before := tg.Stats()
	for i, j := range benchJobs {
		devs := [2]string{dev, kdev}
		if !dioloopFirst(i) {
			devs = [2]string{kdev, dev}
		}
		var res [2]fioResult
		for k, d := range devs {
			if res[k], err = runFio(ctx, d, j, cfg.BenchTime); err != nil {
				return err
			}
		}
		ours, theirs := res[0], res[1]
		if !dioloopFirst(i) {
			ours, theirs = res[1], res[0]
		}
		fmt.Fprintf(out, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f× |\n", j.name,
			ours.iops, ours.bw/(1<<20), ours.p99, theirs.iops, theirs.bw/(1<<20), theirs.p99, ours.bw/theirs.bw)
	}
	st := tg.Stats()
	fmt.Fprintf(out, "\ndioloop served %d reads, %d writes; %d requests went through bounce buffers\n",
		st.Reads-before.Reads, st.Writes-before.Writes, st.Engine.Bounced-before.Engine.Bounced)
	return nil
}

// dioloopFirst reports whether dioloop's device runs before the kernel's
// in job i (from 0): in every other job, so that the order is ABBA..., and
// neither device always runs on a disk (its cache, its wear levelling,
// the host's page cache of a virtual disk) the other has just worked.
func dioloopFirst(i int) bool { return i%2 == 0 }

// fioRuntime is fio's --runtime for d, in milliseconds: a duration in
// seconds would make a sub-second -benchtime 0 (fio: no limit).
func fioRuntime(d time.Duration) string {
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// errInterrupted is bench's error when a signal stopped it.
var errInterrupted = errors.New("-bench: interrupted")

// runCmd runs cmd, and returns errInterrupted if ctx ended (a signal): fio
// is killed then, or has stopped itself (SIGINT from a terminal reaches it
// too) with partial numbers.
func runCmd(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	b, err := cmd.Output()
	if ctx.Err() != nil {
		return nil, errInterrupted
	}
	return b, err
}

// prefill writes the whole image once (fio, 1 MiB direct writes) unless
// every block of it is allocated already: reads of holes cost no I/O.
func prefill(ctx context.Context, image string, size int64, out io.Writer) error {
	var st syscall.Stat_t
	if err := syscall.Stat(image, &st); err == nil && st.Size >= size && st.Blocks*512 >= size {
		return nil
	}
	fmt.Fprintf(out, "writing %s (%d MiB) once, so that reads find data\n", image, size>>20)
	cmd := exec.CommandContext(ctx, "fio", "--name=prefill", "--filename="+image, "--size="+strconv.FormatInt(size, 10),
		"--rw=write", "--bs=1m", "--iodepth=8", "--ioengine=io_uring", "--direct=1", "--output-format=terse")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if _, err := runCmd(ctx, cmd); err != nil {
		return fmt.Errorf("fio prefill: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

func fioVersion() string {
	b, _ := exec.Command("fio", "--version").Output()
	return strings.TrimSpace(string(b))
}

// runFio runs job j on dev for d and returns its numbers.
func runFio(ctx context.Context, dev string, j benchJob, d time.Duration) (fioResult, error) {
	args := []string{"--name=" + j.rw, "--filename=" + dev, "--rw=" + j.rw, "--bs=" + j.bs,
		"--iodepth=" + strconv.Itoa(j.qd), "--ioengine=io_uring", "--direct=1",
		"--time_based", "--runtime=" + fioRuntime(d), "--randrepeat=0",
		"--output-format=json"}
	b, err := runCmd(ctx, exec.CommandContext(ctx, "fio", args...))
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
