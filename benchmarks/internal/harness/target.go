//go:build linux

package harness

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// Target is the file or block device a run reads and writes.
type Target struct {
	Path    string
	Size    int64
	Block   bool
	Scratch bool // created by CreateScratch or CreateScratchFiles; Close removes it
	// Paths are the files of a many-files target (CreateScratchFiles), each
	// Size/len(Paths) bytes; Path is then their directory.
	Paths []string

	excl *os.File // exclusive open that keeps a written block device from being mounted meanwhile
}

// Close releases the target and removes a scratch file.
func (t *Target) Close() error {
	if t.excl != nil {
		t.excl.Close()
		t.excl = nil
	}
	if t.Scratch && t.Paths != nil {
		return os.RemoveAll(t.Path)
	}
	if t.Scratch {
		return os.Remove(t.Path)
	}
	return nil
}

// Apply sets the config's path, files, size and block-device flag from t.
func (t *Target) Apply(c *Config) {
	c.Path, c.Block, c.Files = t.Path, t.Block, t.Paths
	if c.Size <= 0 || c.Size > t.Size {
		c.Size = t.Size
	}
}

// CreateScratch creates a file of size bytes of random data in dir (the
// system temp directory if empty), written with O_DIRECT so the page cache
// holds none of it, and synced. progress, if not nil, sees the bytes
// written so far.
func CreateScratch(dir string, size int64, progress func(done, total int64)) (*Target, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	size = size &^ 4095
	if size <= 0 {
		return nil, fmt.Errorf("harness: scratch size must be at least 4k")
	}
	f, err := os.CreateTemp(dir, "diobench-*.dat")
	if err != nil {
		return nil, err
	}
	f.Close()
	t := &Target{Path: f.Name(), Size: size, Scratch: true}
	if err := fillRandom([]string{t.Path}, size, progress); err != nil {
		os.Remove(t.Path)
		return nil, fmt.Errorf("harness: scratch file %s: %w", t.Path, err)
	}
	return t, nil
}

// CreateScratchFiles creates n files of size/n bytes each (rounded down to
// 4k) of random data, written with O_DIRECT and synced, in a new directory
// in dir (the system temp directory if empty): the target of a many-files
// run. Close removes the directory. progress, if not nil, sees the bytes
// written so far over all files.
func CreateScratchFiles(dir string, n int, size int64, progress func(done, total int64)) (*Target, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	if n < 1 {
		return nil, fmt.Errorf("harness: %d files", n)
	}
	per := size / int64(n) &^ 4095
	if per <= 0 {
		return nil, fmt.Errorf("harness: %s over %d files is less than 4k per file", FormatSize(size), n)
	}
	d, err := os.MkdirTemp(dir, "diobench-files-*")
	if err != nil {
		return nil, err
	}
	t := &Target{Path: d, Size: per * int64(n), Scratch: true, Paths: make([]string, n)}
	for i := range t.Paths {
		t.Paths[i] = filepath.Join(d, fmt.Sprintf(scratchName, i))
	}
	if err := fillRandom(t.Paths, per, progress); err != nil {
		os.RemoveAll(d)
		return nil, fmt.Errorf("harness: scratch files in %s: %w", d, err)
	}
	return t, nil
}

// scratchName names CreateScratchFiles's files in their directory; fio's
// --filename_format can spell it (with $filenum, counting from 0).
const scratchName = "f%d.dat"

// fillRandom creates (or truncates) every path as a file of size bytes of
// random data: space reserved up front (contiguous extents where the file
// system can), then written with O_DIRECT by four writers taking 4 MiB
// chunks in turn, then synced.
func fillRandom(paths []string, size int64, progress func(done, total int64)) error {
	const chunk = 4 << 20
	files := make([]*os.File, len(paths))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i, p := range paths {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		err = unix.Fallocate(int(f.Fd()), 0, 0, size)
		f.Close()
		if err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
			return err
		}
		if files[i], err = os.OpenFile(p, os.O_WRONLY|syscall.O_DIRECT, 0); err != nil {
			return fmt.Errorf("O_DIRECT is not supported here: %w", err)
		}
	}
	perFile := (size + chunk - 1) / chunk
	total := size * int64(len(paths))
	var (
		next  int64 // chunk number over all files
		done  int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf, err := ring.Alloc(chunk)
			if err != nil {
				mu.Lock()
				first = cmpErr(first, err)
				mu.Unlock()
				return
			}
			defer ring.Free(buf)
			rng := rand.NewChaCha8([32]byte{byte(w), 'd', 'i', 'o'})
			for {
				mu.Lock()
				c := next
				next++
				stop := first != nil
				mu.Unlock()
				if stop || c >= perFile*int64(len(files)) {
					return
				}
				f, off := files[c/perFile], c%perFile*chunk
				n := min(int64(chunk), size-off)
				rng.Read(buf[:n])
				_, err := f.WriteAt(buf[:n], off)
				mu.Lock()
				first = cmpErr(first, err)
				done += n
				d := done
				mu.Unlock()
				if progress != nil {
					progress(d, total)
				}
			}
		}(w)
	}
	wg.Wait()
	if first != nil {
		return first
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return nil
}

func cmpErr(old, err error) error {
	if old != nil {
		return old
	}
	return err
}

// OpenTarget checks an existing file or block device for a run. size 0
// means all of it. A block device is never written unless write is set;
// then it must carry no file-system, partition-table or swap signature
// (unless force), and it stays opened exclusively (O_EXCL) until Close so
// it cannot be mounted meanwhile. A regular file that does not exist is
// created with random data (and kept).
func OpenTarget(path string, size int64, write, force bool) (*Target, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		if size <= 0 {
			size = 1 << 30
		}
		t, err := CreateScratch(dirOf(path), size, nil)
		if err != nil {
			return nil, err
		}
		if err := os.Rename(t.Path, path); err != nil {
			t.Close()
			return nil, err
		}
		t.Path, t.Scratch = path, false
		return t, nil
	}
	if err != nil {
		return nil, err
	}
	t := &Target{Path: path}
	switch {
	case st.Mode().IsRegular():
		t.Size = st.Size()
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		t.Block = true
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		t.Size, err = f.Seek(0, io.SeekEnd)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("harness: size of %s: %w", path, err)
		}
		if t.Size == 0 {
			return nil, fmt.Errorf("harness: block device %s has size 0 (a zram device needs its disksize set first: echo 4G > /sys/block/zram0/disksize)", path)
		}
	default:
		return nil, fmt.Errorf("harness: %s is neither a regular file nor a block device", path)
	}
	if size > 0 {
		if size > t.Size {
			return nil, fmt.Errorf("harness: -size %s is larger than %s (%s)", FormatSize(size), path, FormatSize(t.Size))
		}
		t.Size = size
	}
	if write && t.Block {
		if err := CheckWritable(path, force); err != nil {
			return nil, err
		}
		excl, err := os.OpenFile(path, os.O_RDONLY|syscall.O_EXCL, 0)
		if err != nil {
			return nil, fmt.Errorf("harness: %s is in use (mounted, swap, or held by another program), refusing to write: %w", path, err)
		}
		t.excl = excl
	}
	return t, nil
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i+1]
	}
	return "."
}

// CheckWritable refuses (unless force) to write over a device or file that
// starts like a file system, partition table, swap area or volume.
func CheckWritable(path string, force bool) error {
	sig, err := Signature(path)
	if err != nil {
		return err
	}
	if sig != "" && !force {
		return fmt.Errorf("harness: %s holds %s; refusing to write to it (pass -force to overwrite it anyway)", path, sig)
	}
	return nil
}

// Signature names what path starts with, if it looks like a file system,
// partition table, swap area or volume label, or "" if it looks like raw
// data. It checks the common magic numbers itself and asks blkid -p as well
// when blkid is installed.
func Signature(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 68<<10)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("harness: reading %s: %w", path, err)
	}
	if sig := magicSignature(head[:n]); sig != "" {
		return sig, nil
	}
	if blkid, err := exec.LookPath("blkid"); err == nil {
		out, err := exec.Command(blkid, "-p", "-o", "export", path).Output()
		if err == nil {
			for _, l := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(l, "TYPE="); ok {
					return v + " (blkid)", nil
				}
				if v, ok := strings.CutPrefix(l, "PTTYPE="); ok {
					return v + " partition table (blkid)", nil
				}
			}
		}
	}
	return "", nil
}

// magicSignature checks b (the first 68 KiB of a device) for well-known
// on-disk magic numbers.
func magicSignature(b []byte) string {
	at := func(off int, magic string) bool {
		return off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
	}
	le16 := func(off int) uint16 {
		if off+2 > len(b) {
			return 0
		}
		return binary.LittleEndian.Uint16(b[off:])
	}
	switch {
	case le16(1080) == 0xEF53:
		return "an ext2/3/4 file system"
	case at(0, "XFSB"):
		return "an XFS file system"
	case at(0x10040, "_BHRfS_M"):
		return "a btrfs file system"
	case at(0, "LUKS\xba\xbe"):
		return "a LUKS volume"
	case at(512, "LABELONE"):
		return "an LVM physical volume"
	case at(512, "EFI PART"):
		return "a GPT partition table"
	case at(0, "hsqs"):
		return "a squashfs image"
	case at(0x8001, "CD001"):
		return "an ISO 9660 file system"
	case at(4086, "SWAPSPACE2"), at(4086, "SWAP-SPACE"):
		return "a swap area"
	case at(0x400, "\x10\x20\xf5\xf2"):
		return "an F2FS file system"
	case at(3, "NTFS    "):
		return "an NTFS file system"
	case at(54, "FAT"), at(82, "FAT32"):
		return "a FAT file system"
	case le16(510) == 0xAA55 && !bytes.Equal(b[446:510], make([]byte, 64)):
		return "an MBR partition table"
	}
	return ""
}
