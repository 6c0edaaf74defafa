//go:build linux

// Volume builds a small volume manager out of two files used as two
// devices behind one iomap.ExtentMap, and takes a copy-on-write snapshot
// of it:
//
//  1. dio.Open the first device file with Options{Mapper: vmap,
//     Targets: second device, Size: logical size}: the
//     File is now the volume. Its writes allocate space on either device
//     (first fit), its reads go wherever the map says.
//  2. Write the whole volume (version A).
//  3. Clone the map (vmap.Clone): the clone shares every extent.
//     Open a second dio.File over the clone, on the same devices and
//     engine.
//  4. Overwrite a range of the clone that straddles the two devices
//     (version B). Each block it touches is shared, so the write goes to
//     fresh space and the clone is remapped when the write completes; the
//     original keeps its blocks.
//  5. Read both volumes back: the original is all A, the clone is B where
//     it was overwritten and A elsewhere, sharing the A blocks.
//  6. Release the clone: the space only it used is freed.
//
// The extent map lives in memory; a real volume manager persists it (it is
// the metadata). Here it only has to outlive the Files.
//
// Run it (a second; device files under os.TempDir(), removed at the end):
//
//	go run ./examples/volume
//	go run ./examples/volume -dev 64 -volume 96 -overwrite 40:24
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

const (
	blockSize = 4096
	mib       = 1 << 20
)

// config is what main's flags set. Sizes in MiB.
type config struct {
	Dir              string // "" means a new directory under os.TempDir()
	DevMiB, VolMiB   int
	OverOff, OverLen int // the clone's overwrite
}

func main() {
	var cfg config
	over := "6:3"
	flag.StringVar(&cfg.Dir, "dir", "", "directory for the device files (default: a new one under "+os.TempDir()+", removed)")
	flag.IntVar(&cfg.DevMiB, "dev", 8, "size of each of the two devices, MiB")
	flag.IntVar(&cfg.VolMiB, "volume", 12, "logical size of the volume, MiB")
	flag.StringVar(&over, "overwrite", over, "range of the clone to overwrite, offset:length in MiB")
	flag.Parse()
	o, l, ok := strings.Cut(over, ":")
	var err1, err2 error
	cfg.OverOff, err1 = strconv.Atoi(o)
	cfg.OverLen, err2 = strconv.Atoi(l)
	if !ok || err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "volume: -overwrite wants offset:length in MiB")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "volume:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	devSize, volSize := int64(cfg.DevMiB)*mib, int64(cfg.VolMiB)*mib
	overOff, overLen := int64(cfg.OverOff)*mib, int64(cfg.OverLen)*mib
	switch {
	case volSize <= 0 || devSize <= 0 || overLen <= 0:
		return fmt.Errorf("sizes must be positive")
	case overOff+overLen > volSize:
		return fmt.Errorf("overwrite [%d, %d) MiB is past the volume's end", cfg.OverOff, cfg.OverOff+cfg.OverLen)
	case volSize+overLen > 2*devSize:
		return fmt.Errorf("two %d MiB devices cannot hold a %d MiB volume plus a %d MiB copy-on-write", cfg.DevMiB, cfg.VolMiB, cfg.OverLen)
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "volume-")
		if err != nil {
			return err
		}
		dir = d
		defer os.RemoveAll(dir)
	}

	// The devices: two files, preallocated, standing in for raw disks.
	var devs [2]*os.File
	for i := range devs {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("dev%d.img", i)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := unix.Fallocate(int(f.Fd()), 0, 0, devSize); err != nil {
			return fmt.Errorf("preallocating %s: %w", f.Name(), err)
		}
		devs[i] = f
	}
	vmap, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: blockSize, Devices: []int64{devSize, devSize}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "devices: %s and %s, %d MiB each (targets 0 and 1); volume: %d MiB in %d KiB blocks\n",
		filepath.Base(devs[0].Name()), filepath.Base(devs[1].Name()), cfg.DevMiB, cfg.VolMiB, blockSize>>10)

	// One engine for both volumes. Target 0 is the file dio.Open opens,
	// target 1 the other device.
	eng, err := dio.NewEngine(nil)
	if err != nil {
		return err
	}
	defer eng.Close()
	openVolume := func(m *iomap.ExtentMap) (*dio.File, error) {
		return dio.Open(devs[0].Name(), os.O_RDWR, 0,
			&dio.Options{Engine: eng, Mapper: m, Targets: []*os.File{devs[1]}, Size: volSize})
	}
	vol, err := openVolume(vmap)
	if err != nil {
		return err
	}
	defer vol.Close()

	buf, err := ring.Alloc(mib)
	if err != nil {
		return err
	}
	defer ring.Free(buf)

	// Version A, the whole volume. Each write into a hole allocates,
	// lands as unwritten space and is converted when it completes.
	if err := writeVersion(ctx, vol, buf, 'A', 0, volSize); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote version A over the whole volume:\n")
	printExtents(out, "  volume", vmap)

	// The snapshot: a clone of the map (no writes in flight), and a File
	// over it.
	cmap := vmap.Clone()
	snap, err := openVolume(cmap)
	if err != nil {
		return err
	}
	defer snap.Close()
	st := cmap.Stats()
	fmt.Fprintf(out, "\ncloned: %d MiB shared, %d MiB allocated\n", st.Shared/mib, st.Allocated/mib)

	// Version B into the clone, straddling the devices: copy on write.
	if err := writeVersion(ctx, snap, buf, 'B', overOff, overLen); err != nil {
		return err
	}
	st = cmap.Stats()
	fmt.Fprintf(out, "\noverwrote [%d, %d) MiB of the clone with version B: written to fresh space, the clone remapped\n",
		cfg.OverOff, cfg.OverOff+cfg.OverLen)
	printExtents(out, "  original", vmap)
	printExtents(out, "  clone   ", cmap)
	fmt.Fprintf(out, "  space: %d MiB allocated of %d, %d MiB shared\n", st.Allocated/mib, st.Total/mib, st.Shared/mib)

	// Read both back, block by block.
	fmt.Fprintf(out, "\nread back:\n")
	for _, v := range []struct {
		name string
		f    *dio.File
		want func(off int64) byte
	}{
		{"original", vol, func(int64) byte { return 'A' }},
		{"clone", snap, func(off int64) byte {
			if off >= overOff && off < overOff+overLen {
				return 'B'
			}
			return 'A'
		}},
	} {
		runs, err := readVersions(ctx, v.f, buf, volSize, v.want)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		fmt.Fprintf(out, "  %-8s %s: intact\n", v.name, runs)
	}

	// Dropping the snapshot frees what only it used.
	if err := snap.Close(); err != nil {
		return err
	}
	cmap.Release()
	st = vmap.Stats()
	fmt.Fprintf(out, "\nreleased the clone: %d MiB allocated, %d MiB shared\n", st.Allocated/mib, st.Shared/mib)
	if st.Allocated != volSize || st.Shared != 0 {
		return fmt.Errorf("after releasing the clone: %d bytes allocated (want %d), %d shared", st.Allocated, volSize, st.Shared)
	}
	return nil
}

// writeVersion writes [off, off+n) with blocks stamped (version, volume
// offset).
func writeVersion(ctx context.Context, f *dio.File, buf []byte, version byte, off, n int64) error {
	for done := int64(0); done < n; {
		k := min(int64(len(buf)), n-done)
		for b := int64(0); b < k; b += blockSize {
			stamp(buf[b:b+blockSize], version, off+done+b)
		}
		if _, err := f.WriteAtContext(ctx, buf[:k], off+done, 0); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// stamp fills a block: version, its volume offset, then the version again.
func stamp(b []byte, version byte, off int64) {
	for i := range b {
		b[i] = version
	}
	binary.LittleEndian.PutUint64(b[1:], uint64(off))
}

// readVersions reads the whole volume and checks each block's stamp
// against want; it returns the runs of versions, like "A[0,6M) B[6M,9M)".
func readVersions(ctx context.Context, f *dio.File, buf []byte, size int64, want func(int64) byte) (string, error) {
	var runs []string
	var cur byte
	var start int64
	for off := int64(0); off < size; off += int64(len(buf)) {
		k := min(int64(len(buf)), size-off)
		if _, err := f.ReadAtContext(ctx, buf[:k], off, 0); err != nil {
			return "", err
		}
		for b := int64(0); b < k; b += blockSize {
			blk, at := buf[b:b+blockSize], off+b
			v := blk[0]
			var check [blockSize]byte
			stamp(check[:], v, at)
			if v != want(at) || string(blk) != string(check[:]) {
				return "", fmt.Errorf("block at %d: version %q, stamped for offset %d; want version %q", at, v, binary.LittleEndian.Uint64(blk[1:]), want(at))
			}
			if v != cur {
				if cur != 0 {
					runs = append(runs, fmt.Sprintf("%c[%s,%s)", cur, size2(start), size2(at)))
				}
				cur, start = v, at
			}
		}
	}
	runs = append(runs, fmt.Sprintf("%c[%s,%s)", cur, size2(start), size2(size)))
	return strings.Join(runs, " "), nil
}

// printExtents prints a map's extents: volume range -> device range.
func printExtents(out io.Writer, name string, m *iomap.ExtentMap) {
	var parts []string
	m.Extents(func(x iomap.Mapping) bool {
		s := fmt.Sprintf("[%s,%s)->dev%d@%s", size2(x.Offset), size2(x.End()), x.Target, size2(x.Addr))
		if x.Type != iomap.Mapped {
			s += " " + x.Type.String()
		}
		if x.Flags&iomap.FlagShared != 0 {
			s += " shared"
		}
		parts = append(parts, s)
		return true
	})
	fmt.Fprintf(out, "%s: %s\n", name, strings.Join(parts, "  "))
}

// size2 formats a byte offset compactly: "6M", "8200K", "12345".
func size2(v int64) string {
	switch {
	case v == 0:
		return "0"
	case v%mib == 0:
		return strconv.FormatInt(v/mib, 10) + "M"
	case v%1024 == 0:
		return strconv.FormatInt(v/1024, 10) + "K"
	}
	return strconv.FormatInt(v, 10)
}
