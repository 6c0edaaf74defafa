//go:build linux

package harness

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uringdio/uringdio/ring"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"4k", 4096, false}, {"4K", 4096, false}, {"128k", 128 << 10, false}, {"1m", 1 << 20, false},
		{"1MiB", 1 << 20, false}, {"1g", 1 << 30, false}, {"512", 512, false}, {"2T", 2 << 40, false},
		{"", 0, true}, {"k", 0, true}, {"-4k", 0, true}, {"4x", 0, true},
	} {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, bad %v", tc.in, got, err, tc.want, tc.bad)
		}
		if !tc.bad {
			if back, _ := ParseSize(FormatSize(got)); back != got {
				t.Errorf("FormatSize(%d) = %q does not parse back", got, FormatSize(got))
			}
		}
	}
}

func TestPattern(t *testing.T) {
	buf := make([]byte, 8192)
	fillPattern(buf, 1<<20, 42)
	if at := checkPattern(buf, 1<<20); at != -1 {
		t.Fatalf("fresh pattern fails at %d", at)
	}
	if at := checkPattern(buf, 1<<20+8192); at != 1<<20+8192 {
		t.Errorf("pattern read at the wrong offset: bad sector %d", at)
	}
	buf[512*3+100] ^= 1
	if at := checkPattern(buf, 1<<20); at != 1<<20+512*3 {
		t.Errorf("corrupt sector found at %d, want %d", at, 1<<20+512*3)
	}
}

func TestSignature(t *testing.T) {
	dir := t.TempDir()
	img := make([]byte, 70<<10)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := write("raw", img)
	if sig, err := Signature(raw); err != nil || sig != "" {
		t.Errorf("zeroes: %q, %v", sig, err)
	}
	ext := append([]byte(nil), img...)
	binary.LittleEndian.PutUint16(ext[1080:], 0xEF53)
	p := write("ext4", ext)
	if sig, _ := Signature(p); !strings.Contains(sig, "ext") {
		t.Errorf("ext4 magic: %q", sig)
	}
	if err := CheckWritable(p, false); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Errorf("CheckWritable on an ext4 image: %v", err)
	}
	if err := CheckWritable(p, true); err != nil {
		t.Errorf("CheckWritable with force: %v", err)
	}
	swap := append([]byte(nil), img...)
	copy(swap[4086:], "SWAPSPACE2")
	if sig, _ := Signature(write("swap", swap)); !strings.Contains(sig, "swap") {
		t.Errorf("swap magic: %q", sig)
	}
}

// TestIOPollUnsupported: -iopoll where the device cannot poll fails at
// once with the library's explanation, for every engine.
func TestIOPollUnsupported(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ok, _ := ring.PolledIOSupported(int(f.Fd()))
	f.Close()
	if ok {
		t.Skip("this device supports polled I/O")
	}
	tg, err := CreateScratch(dir, 1<<20, nil)
	if err != nil {
		t.Skipf("no O_DIRECT scratch file: %v", err)
	}
	defer tg.Close()
	for _, e := range Engines {
		cfg := Config{Engine: e, RW: RandRead, BS: 4096, QD: 2, Duration: time.Second, IOPoll: true}
		tg.Apply(&cfg)
		start := time.Now()
		_, err := Run(context.Background(), &cfg, nil)
		if err == nil || !errors.Is(err, ring.ErrUnsupported) {
			t.Errorf("%s: -iopoll on a device that cannot poll: %v", e, err)
		}
		if time.Since(start) > 500*time.Millisecond {
			t.Errorf("%s: took %v to refuse", e, time.Since(start))
		}
	}
}

func TestOpenTargetRefusesOversize(t *testing.T) {
	tg, err := CreateScratch(t.TempDir(), 1<<20, nil)
	if err != nil {
		t.Skipf("no O_DIRECT scratch file: %v", err)
	}
	defer tg.Close()
	if _, err := OpenTarget(tg.Path, 2<<20, false, false); err == nil {
		t.Error("a -size larger than the file was accepted")
	}
	got, err := OpenTarget(tg.Path, 0, true, false)
	if err != nil || got.Size != 1<<20 || got.Block {
		t.Errorf("OpenTarget = %+v, %v", got, err)
	}
}

// TestLocateSpreadsBlocksOverFiles: a many-files job's offsets, laid end
// to end over the files, map one to one onto aligned blocks that lie
// wholly inside one file, including when the size does not split evenly.
func TestLocateSpreadsBlocksOverFiles(t *testing.T) {
	for _, tc := range []struct {
		files int
		size  int64
		bs    int
	}{{3, 1 << 20, 4096}, {4, 4 << 20, 128 << 10}, {5, 1<<20 + 12345, 4096}, {1, 1 << 20, 4096}} {
		cfg := &Config{Files: make([]string, tc.files), Size: tc.size, BS: tc.bs, Jobs: 1}
		j := newJob(cfg, 0)
		per := cfg.PerFile()
		if per%int64(tc.bs) != 0 || per*int64(tc.files) > tc.size || j.blocks != per/int64(tc.bs)*int64(tc.files) {
			t.Fatalf("%+v: per file %d, blocks %d", tc, per, j.blocks)
		}
		seen := map[[2]int64]bool{}
		hits := make([]int, tc.files)
		for b := range j.blocks {
			f, off := j.Locate(b * int64(tc.bs))
			if f < 0 || f >= tc.files || off < 0 || off%int64(tc.bs) != 0 || off+int64(tc.bs) > per {
				t.Fatalf("%+v: block %d maps to file %d offset %d (per file %d)", tc, b, f, off, per)
			}
			k := [2]int64{int64(f), off}
			if seen[k] {
				t.Fatalf("%+v: block %d maps to file %d offset %d twice", tc, b, f, off)
			}
			seen[k] = true
			hits[f]++
		}
		for f, n := range hits {
			if int64(n) != per/int64(tc.bs) {
				t.Errorf("%+v: file %d gets %d blocks, want %d", tc, f, n, per/int64(tc.bs))
			}
		}
	}
}

// TestFioArgsManyFiles: fio reads the same files, each the same share,
// picking a random one per I/O.
func TestFioArgsManyFiles(t *testing.T) {
	cfg := &Config{Path: "/d", Files: []string{"/d/a", "/d/b:c", "/d/e"}, Size: 3<<20 + 5000, RW: RandRead, BS: 4096, QD: 8, Jobs: 1, Duration: time.Second}
	a := strings.Join(fioArgs(cfg), " ")
	for _, want := range []string{`--filename=/d/a:/d/b\:c:/d/e `, "--size=3145728 ", "--file_service_type=random"} {
		if !strings.Contains(a, want) {
			t.Errorf("fio args lack %q: %s", want, a)
		}
	}
	// Too many for one --filename: the scratch files' directory and names.
	cfg.Path, cfg.Files = "/tmp/x:y", make([]string, 512)
	for i := range cfg.Files {
		cfg.Files[i] = filepath.Join(cfg.Path, fmt.Sprintf(scratchName, i))
	}
	cfg.Size = 1 << 30
	a = strings.Join(fioArgs(cfg), " ")
	for _, want := range []string{`--directory=/tmp/x\:y `, "--nrfiles=512 ", "--filename_format=f$filenum.dat ", "--size=1073741824 ", "--file_service_type=random"} {
		if !strings.Contains(a, want) {
			t.Errorf("fio args lack %q: %s", want, a)
		}
	}
	if strings.Contains(a, "--filename=") {
		t.Errorf("fio args name 512 files in --filename: %.200s...", a)
	}
}

func TestNoAllocsPerIO(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("runs I/O; allocation counts are meaningless under -race")
	}
	tg, err := CreateScratch(t.TempDir(), 4<<20, nil)
	if err != nil {
		t.Skipf("no O_DIRECT scratch file: %v", err)
	}
	defer tg.Close()
	for _, c := range []string{CompInline, CompWait} {
		cfg := Config{Engine: EngineUringdio, Completion: c, RW: RandRead, BS: 4096, QD: 4, Ops: 5000}
		tg.Apply(&cfg)
		// Allocations during the timed part only (setup allocates).
		var before, after runtimeMem
		res, err := Run(context.Background(), &cfg, &Hooks{OnStart: before.read, OnStop: after.read})
		if err != nil || res.Errors > 0 {
			t.Fatalf("%s: %v %+v", c, err, res)
		}
		per := float64(after.mallocs-before.mallocs) / float64(res.Ops)
		t.Logf("%s: %.3f allocations per I/O", c, per)
		if per > 0.05 {
			t.Errorf("%s: %.3f allocations per I/O in steady state", c, per)
		}
	}
	files, err := CreateScratchFiles(t.TempDir(), 4, 4<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	for _, e := range []string{EngineUringdio, EnginePread} {
		cfg := Config{Engine: e, Completion: CompWait, RW: RandRead, BS: 4096, QD: 4, Ops: 5000}
		files.Apply(&cfg)
		var before, after runtimeMem
		res, err := Run(context.Background(), &cfg, &Hooks{OnStart: before.read, OnStop: after.read})
		if err != nil || res.Errors > 0 {
			t.Fatalf("%s over 4 files: %v %+v", e, err, res)
		}
		if per := float64(after.mallocs-before.mallocs) / float64(res.Ops); per > 0.05 {
			t.Errorf("%s over 4 files: %.3f allocations per I/O in steady state", e, per)
		}
	}
}

// TestRefuseWriteToBlockDeviceWithSignature: a block device that starts
// like a file system is read, but not written without force. It needs root
// and a free loop device.
func TestRefuseWriteToBlockDeviceWithSignature(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("losetup not installed")
	}
	img := make([]byte, 8<<20)
	binary.LittleEndian.PutUint16(img[1080:], 0xEF53)
	p := filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(p, img, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", p).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command(losetup, "-d", dev).Run()

	tg, err := OpenTarget(dev, 0, false, false)
	if err != nil || !tg.Block || tg.Size != 8<<20 {
		t.Fatalf("read-only OpenTarget(%s) = %+v, %v", dev, tg, err)
	}
	tg.Close()
	if _, err := OpenTarget(dev, 0, true, false); err == nil || !strings.Contains(err.Error(), "ext2/3/4") {
		t.Errorf("writing to %s with an ext4 signature: %v", dev, err)
	}
	tg, err = OpenTarget(dev, 0, true, true)
	if err != nil {
		t.Fatalf("with -force: %v", err)
	}
	tg.Close()
}
