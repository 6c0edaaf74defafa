//go:build linux

// Dioloop serves a disk image as a block device with its backing file's
// integrity: a loop device over a FUSE file opened with direct_io, whose
// reads and writes this process carries out with O_DIRECT through uringdio
// and whose flushes become fdatasync of the image (package target). No
// page cache holds the disk's data between the file system on the device
// and the image, so what that file system flushed is on the image's
// storage, as on a disk: the loop device of the 2009 "Page based O_DIRECT
// and O_DIRECT loop" thread, in user space.
//
//	go run ./examples/dioloop -image /var/tmp/disk.img -size 1G
//
// creates (or grows; never shrinks) the image, attaches a loop device and prints its path
// on the first line; mkfs and mount it as any disk. SIGINT or SIGTERM
// stops it: flush, detach the loop device (once its last user has closed
// it: unmount the file system on it first; a second signal stops anyway,
// and I/O its users still do then fails), unmount, exit 0.
//
//	go run ./examples/dioloop -bench -image /var/tmp/bench.img -size 4G
//
// runs fio on the device (4 KiB random reads at QD32, 1 MiB sequential
// reads and writes) and on the kernel's own direct-I/O loop device on the
// same image (as losetup --direct-io=on attaches it), and prints both with
// the ratios; SIGINT or SIGTERM stops it, both devices detached. It writes
// over the image: one that exists needs -overwrite. Run as root, with
// /dev/fuse and loop devices.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/examples/dioloop/target"
)

// config is what main's flags set.
type config struct {
	Image     string
	Size      int64
	Dir       string
	BlockSize int
	Bench     bool
	BenchTime time.Duration
	Overwrite bool // -bench may write over an image that exists
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Image, "image", "", "the disk image (created if -size is given and it is missing)")
	size := flag.String("size", "", "the disk's size: bytes, or with a K, M, G or T suffix (default: the image's size; -bench: 2G)")
	flag.StringVar(&cfg.Dir, "dir", "", "where to mount the FUSE file system (default: a new directory under "+os.TempDir()+")")
	flag.IntVar(&cfg.BlockSize, "bs", 4096, "the loop device's logical block size")
	flag.BoolVar(&cfg.Bench, "bench", false, "run fio on the device and on the kernel's loop driver in direct-I/O mode on the same image, then exit")
	flag.DurationVar(&cfg.BenchTime, "benchtime", 5*time.Second, "-bench: how long each fio job runs on each device (at least 1ms)")
	flag.BoolVar(&cfg.Overwrite, "overwrite", false, "-bench: write over the image even if it exists")
	flag.Parse()
	if cfg.Image == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: dioloop -image FILE [-size N] [-bench [-overwrite]]")
		flag.PrintDefaults()
		os.Exit(2)
	}
	var err error
	if cfg.Size, err = parseSize(*size); err != nil {
		fmt.Fprintln(os.Stderr, "dioloop: -size:", err)
		os.Exit(2)
	}
	if cfg.Bench {
		err = bench(cfg, os.Stdout)
	} else {
		err = serve(cfg, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dioloop:", err)
		os.Exit(1)
	}
}

// parseSize parses a size: bytes, or a number with a binary K, M, G or T
// suffix. "" is 0.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// serve serves the image until SIGINT or SIGTERM, then stops cleanly.
func serve(cfg config, out io.Writer) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	tg, dev, err := start(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, dev)
	mode := "direct I/O"
	if !tg.LoopDirectIO() {
		mode = "buffered (the loop driver refused direct I/O)"
	}
	fmt.Fprintf(out, "dioloop: %s (%d bytes) served as %s through %s, loop %s; stop with SIGINT or SIGTERM\n",
		cfg.Image, tg.Size(), dev, tg.File(), mode)
	sig := <-sigs
	fmt.Fprintf(out, "dioloop: %v: flush, detach %s, unmount\n", sig, dev)
	// A second signal stops the wait for the device's last user.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		select {
		case s := <-sigs:
			cancel(fmt.Errorf("a second signal (%v)", s))
		case <-ctx.Done():
		}
	}()
	waiting := time.AfterFunc(time.Second, func() {
		fmt.Fprintf(out, "dioloop: waiting for %s's users to close it (unmount what is mounted on it; a second signal stops anyway)\n", dev)
	})
	err = tg.Close(ctx)
	waiting.Stop()
	st := tg.Stats()
	fmt.Fprintf(out, "dioloop: served %d reads (%d bytes), %d writes (%d bytes, %d DSync), %d flushes (fdatasync), %d discards; %d errors; %d requests bounced\n",
		st.Reads, st.ReadBytes, st.Writes, st.WriteBytes, st.DSyncWrites, st.Datasyncs, st.Punches, st.Errors, st.Engine.Bounced)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "dioloop: stopped")
	return nil
}

// start starts a target on cfg's image and attaches a loop device to it.
func start(cfg config) (*target.Target, string, error) {
	tg, err := target.Start(target.Config{Image: cfg.Image, Size: cfg.Size, Dir: cfg.Dir, BlockSize: cfg.BlockSize})
	if err != nil {
		return nil, "", err
	}
	dev, err := tg.Attach()
	if err != nil {
		return nil, "", errors.Join(err, tg.Close(context.Background()))
	}
	return tg, dev, nil
}
