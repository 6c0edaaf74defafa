//go:build linux

package devinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestKernelStructs checks the layouts and ioctl numbers the package
// writes down by hand against the kernel's (include/uapi/linux/btrfs.h)
// and against request numbers x/sys knows.
func TestKernelStructs(t *testing.T) {
	if s := unsafe.Sizeof(btrfsFSInfoArgs{}); s != 1024 {
		t.Errorf("btrfs_ioctl_fs_info_args: %d bytes, want 1024", s)
	}
	if o := unsafe.Offsetof(btrfsFSInfoArgs{}.SectorSize); o != 36 {
		t.Errorf("btrfs_ioctl_fs_info_args.sectorsize at %d, want 36", o)
	}
	if s := unsafe.Sizeof(btrfsSearchKey{}); s != 104 {
		t.Errorf("btrfs_ioctl_search_key: %d bytes, want 104", s)
	}
	if s := unsafe.Sizeof(btrfsSearchArgs{}); s != 4096 {
		t.Errorf("btrfs_ioctl_search_args: %d bytes, want 4096", s)
	}
	// _IOR('f', 1, long) and _IOR(0x12, 128, __u64), as x/sys has them.
	if r := ioc(iocRead, 'f', 1, unsafe.Sizeof(uintptr(0))); r != unix.FS_IOC_GETFLAGS {
		t.Errorf("ioc(FS_IOC_GETFLAGS) = %#x, want %#x", r, uint(unix.FS_IOC_GETFLAGS))
	}
	if r := ioc(iocRead, 0x12, 128, 8); r != unix.BLKGETDISKSEQ {
		t.Errorf("ioc(BLKGETDISKSEQ) = %#x, want %#x", r, uint(unix.BLKGETDISKSEQ))
	}
	if iocDirShift == 30 && (btrfsIocFSInfo != 0x8400941f || btrfsIocTreeSearch != 0xd0009411) {
		t.Errorf("BTRFS_IOC_FS_INFO %#x, BTRFS_IOC_TREE_SEARCH %#x; want 0x8400941f, 0xd0009411", btrfsIocFSInfo, btrfsIocTreeSearch)
	}
}

func TestDecideBtrfsDataSum(t *testing.T) {
	var (
		yes       = known(true, "x")
		no        = known(false, "x")
		noRoot    = unknown[bool]("needs CAP_SYS_ADMIN")
		notAsked  = Fact[bool]{}
		badIoctl  = unknown[bool]("FS_IOC_GETFLAGS: EIO")
		noMntInfo = unknown[bool]("no mountinfo")
	)
	for _, c := range []struct {
		name                    string
		nocow, nodatasum, mount Fact[bool]
		want                    Fact[bool]
		from                    string
	}{
		{"nocow", yes, notAsked, notAsked, known(false, ""), "NOCOW"},
		{"flag read: no checksums", no, yes, notAsked, known(false, ""), "has btrfs' NODATASUM"},
		{"flag read: checksums", no, no, notAsked, known(true, ""), "lacks btrfs' NODATASUM"},
		{"flag read, attribute not", badIoctl, no, notAsked, known(true, ""), "lacks"},
		{"not root, plain mount", no, noRoot, no, known(true, ""), "mount has no nodatasum"},
		{"not root, nodatasum mount", no, noRoot, yes, unknown[bool](""), "created under this mount"},
		{"not root, no mountinfo", no, noRoot, noMntInfo, unknown[bool](""), "no mountinfo"},
		{"nothing readable", badIoctl, noRoot, no, unknown[bool](""), "FS_IOC_GETFLAGS: EIO"},
	} {
		got := decideBtrfsDataSum(c.nocow, c.nodatasum, c.mount)
		if got.Known != c.want.Known || got.Value != c.want.Value || !strings.Contains(got.From, c.from) {
			t.Errorf("%s: %+v, want %+v from %q", c.name, got, c.want, c.from)
		}
	}
}

func TestDSyncCost(t *testing.T) {
	dev := func(name string, wc Fact[WriteCache], fua Fact[bool]) Fact[Device] {
		return known(Device{Major: 8, Name: name, WriteCache: wc, FUA: fua}, "sysfs")
	}
	wb, wt := known(WriteBack, "sysfs"), known(WriteThrough, "sysfs")
	for _, c := range []struct {
		dev  Fact[Device]
		want Fact[DSyncCost]
	}{
		{dev("sda", wb, known(true, "")), known(DSyncFUA, "")},
		{dev("sda", wb, known(false, "")), known(DSyncWriteFlush, "")},
		{dev("sda", wt, known(false, "")), known(DSyncWriteOnly, "")},
		{dev("sda", wt, unknown[bool]("gone")), known(DSyncWriteOnly, "")},
		{dev("sda", wb, unknown[bool]("gone")), unknown[DSyncCost]("")},
		{dev("sda", unknown[WriteCache]("gone"), known(true, "")), unknown[DSyncCost]("")},
		{known(Device{Major: loopMajor, Name: "loop0", WriteCache: wt}, "sysfs"), unknown[DSyncCost]("")},
		{unknown[Device]("tmpfs"), unknown[DSyncCost]("")},
	} {
		got := dsyncCost(c.dev)
		if got.Known != c.want.Known || got.Value != c.want.Value || got.From == "" {
			t.Errorf("%+v: %+v, want %v", c.dev, got, show(c.want, DSyncCost.String))
		}
	}
}

func TestMountOptions(t *testing.T) {
	const mi = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
47 26 0:39 / /mnt/b rw,relatime shared:7 master:2 - btrfs /dev/loop2 rw,nodatasum,space_cache=v2,subvolid=5,subvol=/
48 26 0:40 / /mnt/c rw - btrfs /dev/loop3 rw,space_cache=v2
`
	for _, c := range []struct {
		id   uint64
		want string
		ok   bool
	}{
		{22, "rw,relatime,rw,discard", true},
		{47, "rw,relatime,rw,nodatasum,space_cache=v2,subvolid=5,subvol=/", true},
		{4, "", false},
	} {
		if got, ok := mountOptions(mi, c.id); got != c.want || ok != c.ok {
			t.Errorf("mount %d: %q %v, want %q %v", c.id, got, ok, c.want, c.ok)
		}
	}
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte(mi), 0o644); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uint64]Fact[bool]{47: known(true, "mountinfo"), 48: known(false, "mountinfo")} {
		if got := readMountNoDataSum(p, id); got != want {
			t.Errorf("mount %d: nodatasum %+v, want %+v", id, got, want)
		}
	}
}

// TestReadDeviceResolvesPartitionsAndLoops runs readDevice on a made-up
// sysfs: a partition's queue facts are its disk's, a loop device names its
// backing file, and a missing file leaves that fact unknown, not the rest.
func TestReadDeviceResolvesPartitionsAndLoops(t *testing.T) {
	root := t.TempDir()
	write := func(rel, s string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	queue := func(disk, wc, fua string) {
		for f, v := range map[string]string{"logical_block_size": "512", "physical_block_size": "4096",
			"max_sectors_kb": "1280", "rotational": "0", "write_cache": wc, "fua": fua, "io_poll": "0"} {
			if v != "" {
				write("devices/"+disk+"/queue/"+f, v)
			}
		}
	}
	queue("nvme0n1", "write back", "1")
	write("devices/nvme0n1/nvme0n1p2/partition", "2")
	queue("loop3", "write back", "")
	write("devices/loop3/loop/backing_file", "/srv/img")
	for link, target := range map[string]string{"259:2": "nvme0n1/nvme0n1p2", "7:3": "loop3"} {
		if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../devices/"+target, filepath.Join(root, "dev", link)); err != nil {
			t.Fatal(err)
		}
	}
	defer func(s string) { sysBlock = s }(sysBlock)
	sysBlock = filepath.Join(root, "dev")

	d := readDevice(259, 2)
	if !d.Known || d.Value.Name != "nvme0n1p2" || d.Value.Disk != "nvme0n1" || d.Value.BackingFile != "" ||
		d.Value.LogicalBlockSize.Value != 512 || d.Value.PhysicalBlockSize.Value != 4096 ||
		d.Value.MaxIOBytes.Value != 1280<<10 || d.Value.FUA != known(true, "sysfs") {
		t.Errorf("partition: %+v", d)
	}
	if c := dsyncCost(d); c != known(DSyncFUA, c.From) {
		t.Errorf("partition of a FUA disk: DSync %+v", c)
	}
	l := readDevice(7, 3)
	if !l.Known || !l.Value.IsLoop() || l.Value.BackingFile != "/srv/img" || l.Value.FUA.Known ||
		!l.Value.WriteCache.Known || !strings.Contains(l.Value.FUA.From, "fua") {
		t.Errorf("loop: %+v", l)
	}
	if g := readDevice(8, 0); g.Known || !strings.Contains(g.From, "8:0") {
		t.Errorf("absent device: %+v", g)
	}
}

// TestSecondGatherReadsNoSysfs checks the per-device cache: after one
// Gather on a file, Gathers on other files of the same file system, from
// several goroutines at once, read no sysfs and agree.
func TestSecondGatherReadsNoSysfs(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) int {
		fd, err := unix.Open(filepath.Join(dir, name), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	devCache.Range(func(k, _ any) bool { devCache.Delete(k); return true })
	before := sysfsReads.Load()
	first := Gather(open("a"))
	if first.Device.Known && sysfsReads.Load() == before {
		t.Errorf("the first Gather on %s found the device without reading sysfs", first.Device.Value.Name)
	}
	if !first.Device.Known {
		t.Logf("no block device under %s (%s); the cache is checked all the same", dir, first.Device.From)
	}
	before = sysfsReads.Load()
	var wg sync.WaitGroup
	got := make([]string, 8)
	for g := range got {
		fd := open(fmt.Sprint("f", g))
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[g] = Gather(fd).String()
		}()
	}
	wg.Wait()
	if n := sysfsReads.Load() - before; n != 0 {
		t.Errorf("later Gathers read sysfs %d times", n)
	}
	for _, s := range got {
		if s != first.String() {
			t.Errorf("Gathers disagree:\n%s\nand\n%s", first, s)
			break
		}
	}
}
