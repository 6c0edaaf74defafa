//go:build linux

package devinfo

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// What dio asks of a file at every Open: its direct-I/O alignment and the
// device's largest I/O, and (the engine) whether its device completes
// synchronously.

// errNoDirectIO: statx says the file takes no direct I/O.
var errNoDirectIO = errors.New("the filesystem does not support O_DIRECT on this file (statx DIOALIGN is 0)")

// DirectIO returns the file's direct-I/O alignment, memory and offset, and
// where it came from: statx (STATX_DIOALIGN), or the logical block size of
// the file's device where statx lacks it.
func DirectIO(fd int, st *unix.Stat_t) (mem, off int64, source string, err error) {
	var sx unix.Statx_t
	err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx)
	if err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 {
		if sx.Dio_mem_align == 0 {
			return 0, 0, "", errNoDirectIO
		}
		return int64(sx.Dio_mem_align), int64(sx.Dio_offset_align), "statx", nil
	}
	lbs := int64(512)
	if v, ok := sysfsInt(devOf(st), "queue/logical_block_size"); ok && v > 0 {
		lbs = v
	}
	return lbs, lbs, "logical block size", nil
}

// MaxIO returns the device's largest I/O (max_sectors_kb; 1 MiB if
// unknown), kept per device: a database opens files by the thousand, and
// sysfs says the same for every one on a device.
func MaxIO(st *unix.Stat_t) int64 {
	dev := devOf(st)
	if v, ok := maxIOByDev.Load(dev); ok {
		return v.(int64)
	}
	n := int64(1 << 20)
	if kb, ok := sysfsInt(dev, "queue/max_sectors_kb"); ok && kb >= 4 {
		n = kb << 10
	}
	maxIOByDev.Store(dev, n)
	return n
}

var maxIOByDev sync.Map

// devOf is the device a file's I/O goes to (the device itself for a
// block device).
func devOf(st *unix.Stat_t) uint64 {
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		return st.Rdev
	}
	return st.Dev
}

func sysfsInt(dev uint64, attr string) (int64, bool) {
	base := fmt.Sprintf("/sys/dev/block/%d:%d/", unix.Major(dev), unix.Minor(dev))
	for _, p := range []string{base + attr, base + "../" + attr} {
		if b, err := os.ReadFile(p); err == nil {
			if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// SyncDevice reports whether the file's device completes synchronously
// (zram, a RAM disk, tmpfs), and why: it asks it to read the file's first
// sector without blocking (preadv2 RWF_NOWAIT), a few times; a device that
// can queue a read does so at least once (the first try may find the
// file's mapping not yet cached), one that completes synchronously
// refuses every time. The verdict is kept per device; a file too short to
// hold a sector tells nothing, and is asked again next time.
func SyncDevice(fd int, st *unix.Stat_t) (sync bool, why string) {
	dev := devOf(st)
	if v, ok := syncDevices.Load(dev); ok {
		d := v.(syncVerdict)
		return d.sync, d.why
	}
	d, conclusive := probeSync(fd, st)
	if conclusive {
		syncDevices.Store(dev, d)
	}
	return d.sync, d.why
}

type syncVerdict struct {
	sync bool
	why  string
}

var syncDevices sync.Map

func probeSync(fd int, st *unix.Stat_t) (syncVerdict, bool) {
	size := st.Size
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if n, err := unix.Seek(fd, 0, 2); err == nil {
			size = n
		}
	}
	if size < 4096 {
		return syncVerdict{why: "not probed yet: the file holds less than a sector"}, false
	}
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return syncVerdict{why: "no memory to probe the device"}, false
	}
	defer unix.Munmap(buf)
	// A direct read of a range the page cache holds dirty waits for its
	// writeback, so RWF_NOWAIT refuses it whatever the device: write the
	// sector back first (a file just written through the page cache).
	unix.SyncFileRange(fd, 0, 4096, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	var last error
	for try := range 4 {
		_, err := unix.Preadv2(fd, [][]byte{buf}, 0, unix.RWF_NOWAIT)
		switch err {
		case nil:
			return syncVerdict{why: "the device queues reads without blocking: RWF_NOWAIT accepted"}, true
		case unix.EOPNOTSUPP:
			return syncVerdict{sync: true, why: "the file does not take RWF_NOWAIT: io_uring would hand every request to its io-wq threads"}, true
		case unix.EAGAIN:
			last = err
			time.Sleep(time.Duration(try+1) * 100 * time.Microsecond)
		default:
			return syncVerdict{why: "probe: " + err.Error()}, false
		}
	}
	return syncVerdict{sync: true, why: "the device completes synchronously: every RWF_NOWAIT read came back " + last.Error() + ", so io_uring would hand each request to its io-wq threads"}, true
}
