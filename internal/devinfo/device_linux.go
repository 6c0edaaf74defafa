//go:build linux

package devinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// devEntry is what Gather keeps per device: the sysfs facts and what
// follows from them, and for btrfs what the volume's FS_INFO said. It is
// never changed once stored.
type devEntry struct {
	device      Fact[Device]
	dsync       Fact[DSyncCost]
	btrfsSector Fact[uint32] // the btrfs volume's sector size; zero Fact if not btrfs
}

// devKey identifies a device for the cache. The device number alone is
// not enough: anonymous device numbers (tmpfs, btrfs subvolumes) and loop
// devices are reused by the next mount or attach, which then has another
// file system (another f_fsid) or disk sequence number.
type devKey struct {
	dev     uint64
	magic   int64
	fsid    [2]int32
	diskseq uint64
}

// devCache maps devKey to *devEntry.
var devCache sync.Map

// sysfsReads counts the sysfs files and directories read, for the test
// that a second Gather on a device reads none.
var sysfsReads atomic.Int64

// lookupDevice returns the cached entry for the device under the file, or
// builds and caches it.
func lookupDevice(fd int, st *unix.Statx_t, i *Info, sfs *unix.Statfs_t, sfsErr error) *devEntry {
	var key devKey
	switch {
	case i.Kind == KindBlockDevice:
		key.dev = unix.Mkdev(st.Rdev_major, st.Rdev_minor)
		key.diskseq, _ = diskSeq(fd) // 0 before Linux 5.15
	case sfsErr != nil:
		why := fmt.Sprintf("fstatfs: %v", sfsErr)
		return &devEntry{device: unknown[Device](why), dsync: unknown[DSyncCost](why), btrfsSector: unknown[uint32](why)}
	default:
		key = devKey{dev: unix.Mkdev(st.Dev_major, st.Dev_minor), magic: int64(sfs.Type), fsid: sfs.Fsid.Val}
	}
	if e, ok := devCache.Load(key); ok {
		return e.(*devEntry)
	}
	e := buildDevice(fd, st, i.Kind, int64(sfs.Type))
	actual, _ := devCache.LoadOrStore(key, e)
	return actual.(*devEntry)
}

// buildDevice finds the block device under the file and reads sysfs.
func buildDevice(fd int, st *unix.Statx_t, kind Kind, magic int64) *devEntry {
	e := &devEntry{}
	maj, min := st.Dev_major, st.Dev_minor
	found := true
	switch {
	case kind == KindBlockDevice:
		maj, min = st.Rdev_major, st.Rdev_minor
	case magic == unix.BTRFS_SUPER_MAGIC:
		// st_dev is an anonymous device of the subvolume; the volume's
		// devices are listed under /sys/fs/btrfs/<fsid>/devices.
		fi, err := btrfsFSInfo(fd)
		if err != nil {
			why := fmt.Sprintf("BTRFS_IOC_FS_INFO: %v", err)
			e.device, e.btrfsSector, found = unknown[Device](why), unknown[uint32](why), false
			break
		}
		e.btrfsSector = known(fi.sectorSize, "BTRFS_IOC_FS_INFO")
		if fi.numDevices != 1 {
			e.device, found = unknown[Device](fmt.Sprintf("btrfs volume on %d devices", fi.numDevices)), false
			break
		}
		if maj, min, err = btrfsDevice(fi.fsid); err != nil {
			e.device, found = unknown[Device](err.Error()), false
		}
	case maj == 0:
		e.device, found = unknown[Device](noDeviceWhy(magic, maj, min)), false
	}
	if found {
		e.device = readDevice(maj, min)
	}
	e.dsync = dsyncCost(e.device)
	if magic == unix.FUSE_SUPER_MAGIC && kind == KindRegular {
		// fuseblk (ntfs-3g, ...) has a real device, but its server
		// decides how a DSync write reaches it.
		e.dsync = unknown[DSyncCost]("FUSE: the server decides how data reaches the device")
	}
	return e
}

// noDeviceWhy says why a file system with an anonymous device number has
// no block device to describe.
func noDeviceWhy(magic int64, maj, min uint32) string {
	switch magic {
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
		return "tmpfs keeps files in memory: no block device"
	case unix.FUSE_SUPER_MAGIC:
		return "FUSE: the server decides where data goes"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay: data lives on the upper or lower file system"
	case unix.NFS_SUPER_MAGIC, unix.CIFS_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC, unix.CEPH_SUPER_MAGIC, unix.V9FS_MAGIC:
		return "network file system: no local block device"
	}
	return fmt.Sprintf("%s has no block device (st_dev %d:%d)", fsName(magic), maj, min)
}

// btrfsDevice finds the one device of the btrfs volume fsid in sysfs.
func btrfsDevice(fsid [16]byte) (maj, min uint32, err error) {
	dir := "/sys/fs/btrfs/" + uuidString(fsid) + "/devices"
	sysfsReads.Add(1)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("btrfs devices: %w", err)
	}
	if len(ents) != 1 {
		return 0, 0, fmt.Errorf("%s lists %d devices", dir, len(ents))
	}
	s, err := readSysfs(filepath.Join(dir, ents[0].Name(), "dev"))
	if err != nil {
		return 0, 0, fmt.Errorf("btrfs device %s: %w", ents[0].Name(), err)
	}
	return parseDevNum(s)
}

func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func parseDevNum(s string) (maj, min uint32, err error) {
	a, b, ok := strings.Cut(s, ":")
	x, err1 := strconv.ParseUint(a, 10, 32)
	y, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bad device number %q", s)
	}
	return uint32(x), uint32(y), nil
}

// sysBlock is where sysfs links device numbers to block devices; a
// variable for the tests.
var sysBlock = "/sys/dev/block"

// readDevice describes block device maj:min from sysfs. A partition's
// queue facts are its disk's.
func readDevice(maj, min uint32) Fact[Device] {
	d := Device{Major: maj, Minor: min}
	base := fmt.Sprintf("%s/%d:%d", sysBlock, maj, min)
	sysfsReads.Add(1)
	target, err := os.Readlink(base)
	if err != nil {
		return unknown[Device](fmt.Sprintf("device %d:%d not in sysfs: %v", maj, min, err))
	}
	d.Name, d.Disk = filepath.Base(target), filepath.Base(target)
	disk := base
	sysfsReads.Add(1)
	if _, err := os.Stat(base + "/partition"); err == nil {
		d.Disk = filepath.Base(filepath.Dir(target))
		disk = base + "/.."
	}
	if b, err := readSysfs(disk + "/loop/backing_file"); err == nil {
		d.BackingFile = b
	}
	q := disk + "/queue/"
	d.LogicalBlockSize = sysfsUint(q+"logical_block_size", 1)
	d.PhysicalBlockSize = sysfsUint(q+"physical_block_size", 1)
	d.MaxIOBytes = sysfsUint(q+"max_sectors_kb", 1024)
	d.Rotational = sysfsBool(q + "rotational")
	d.FUA = sysfsBool(q + "fua")
	d.IOPoll = sysfsBool(q + "io_poll")
	switch s, err := readSysfs(q + "write_cache"); {
	case err != nil:
		d.WriteCache = unknown[WriteCache](err.Error())
	case s == "write back":
		d.WriteCache = known(WriteBack, "sysfs")
	case s == "write through":
		d.WriteCache = known(WriteThrough, "sysfs")
	default:
		d.WriteCache = unknown[WriteCache](fmt.Sprintf("queue/write_cache says %q", s))
	}
	return known(d, "sysfs")
}

// dsyncCost derives what a DSync overwrite costs from the device's cache
// and FUA support, as the block layer does: a FUA write where the device
// honours FUA, else the write and a flush; no flush without a volatile
// cache.
func dsyncCost(dev Fact[Device]) Fact[DSyncCost] {
	if !dev.Known {
		return unknown[DSyncCost](dev.From)
	}
	d := dev.Value
	switch {
	case d.IsLoop():
		why := "loop device: a flush becomes an fsync of its backing file"
		if d.BackingFile != "" {
			why += " " + d.BackingFile
		}
		return unknown[DSyncCost](why)
	case !d.WriteCache.Known:
		return unknown[DSyncCost]("write cache " + show(d.WriteCache, WriteCache.String))
	case d.WriteCache.Value == WriteThrough:
		return known(DSyncWriteOnly, "queue/write_cache: write through")
	case !d.FUA.Known:
		return unknown[DSyncCost]("write back cache, FUA " + show(d.FUA, yesNo))
	case d.FUA.Value:
		return known(DSyncFUA, "queue/write_cache: write back, queue/fua: 1")
	}
	return known(DSyncWriteFlush, "queue/write_cache: write back, queue/fua: 0")
}

func readSysfs(path string) (string, error) {
	sysfsReads.Add(1)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// sysfsUint reads a number from sysfs and multiplies it by unit.
func sysfsUint(path string, unit uint64) Fact[uint32] {
	s, err := readSysfs(path)
	if err != nil {
		return unknown[uint32](err.Error())
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n*unit > 1<<32-1 {
		return unknown[uint32](fmt.Sprintf("%s says %q", filepath.Base(path), s))
	}
	return known(uint32(n*unit), "sysfs")
}

func sysfsBool(path string) Fact[bool] {
	s, err := readSysfs(path)
	if err != nil {
		return unknown[bool](err.Error())
	}
	switch s {
	case "0":
		return known(false, "sysfs")
	case "1":
		return known(true, "sysfs")
	}
	return unknown[bool](fmt.Sprintf("%s says %q", filepath.Base(path), s))
}

// mountCache maps a mountKey to the Fact[bool] of mountNoDataSum.
var mountCache sync.Map

// mountKey identifies a mount: its id, with the device, since ids of
// unmounted file systems are reused.
type mountKey struct {
	id  uint64
	dev uint64
}

// mountNoDataSum says whether the file's mount has btrfs' nodatasum or
// nodatacow option (under which new files get no checksums), from
// /proc/self/mountinfo, once per mount.
func mountNoDataSum(st *unix.Statx_t) Fact[bool] {
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return unknown[bool]("statx gives no mount id (Linux before 5.8)")
	}
	key := mountKey{st.Mnt_id, unix.Mkdev(st.Dev_major, st.Dev_minor)}
	if f, ok := mountCache.Load(key); ok {
		return f.(Fact[bool])
	}
	f := readMountNoDataSum("/proc/self/mountinfo", st.Mnt_id)
	mountCache.Store(key, f)
	return f
}

func readMountNoDataSum(mountinfo string, id uint64) Fact[bool] {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return unknown[bool](err.Error())
	}
	opts, ok := mountOptions(string(b), id)
	if !ok {
		return unknown[bool](fmt.Sprintf("mount %d not in %s", id, mountinfo))
	}
	for _, o := range strings.Split(opts, ",") {
		if o == "nodatasum" || o == "nodatacow" {
			return known(true, "mountinfo")
		}
	}
	return known(false, "mountinfo")
}

// mountOptions returns the mount and super-block options of mount id in
// the text of a mountinfo file (proc_pid_mountinfo(5)), joined by a comma.
func mountOptions(mountinfo string, id uint64) (string, bool) {
	want := strconv.FormatUint(id, 10)
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[0] != want {
			continue
		}
		for j := 6; j+3 < len(f); j++ {
			if f[j] == "-" {
				return f[5] + "," + f[j+3], true
			}
		}
	}
	return "", false
}
