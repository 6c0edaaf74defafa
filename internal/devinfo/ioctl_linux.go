//go:build linux

package devinfo

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The raw ioctls Gather uses that x/sys has no wrapper for. All unsafe
// code of the package is here.

// ioc encodes an ioctl request number as _IOC in the kernel's
// include/uapi/asm-generic/ioctl.h, with the direction bits of this
// architecture (iocRead, iocWrite, iocDirShift).
func ioc(dir, typ, nr, size uintptr) uint {
	return uint(dir<<iocDirShift | size<<16 | typ<<8 | nr)
}

// btrfsIoctlMagic is BTRFS_IOCTL_MAGIC from include/uapi/linux/btrfs.h.
const btrfsIoctlMagic = 0x94

// btrfsFSInfoArgs is struct btrfs_ioctl_fs_info_args from
// include/uapi/linux/btrfs.h (the fields Gather reads, padded to 1 KiB).
type btrfsFSInfoArgs struct {
	MaxID          uint64
	NumDevices     uint64
	FSID           [16]byte
	NodeSize       uint32
	SectorSize     uint32
	CloneAlignment uint32
	_              [1024 - 44]byte
}

// btrfsSearchKey is struct btrfs_ioctl_search_key.
type btrfsSearchKey struct {
	TreeID      uint64
	MinObjectID uint64
	MaxObjectID uint64
	MinOffset   uint64
	MaxOffset   uint64
	MinTransID  uint64
	MaxTransID  uint64
	MinType     uint32
	MaxType     uint32
	NrItems     uint32
	_           uint32
	_           [4]uint64
}

// btrfsSearchArgs is struct btrfs_ioctl_search_args: the key, then a
// buffer of results, each a struct btrfs_ioctl_search_header (native byte
// order) followed by the item as it is on disk (little-endian).
type btrfsSearchArgs struct {
	Key btrfsSearchKey
	Buf [4096 - unsafe.Sizeof(btrfsSearchKey{})]byte
}

// Layout of a search result and of struct btrfs_inode_item
// (include/uapi/linux/btrfs_tree.h).
const (
	btrfsSearchHeaderSize = 32 // transid, objectid, offset u64; type, len u32
	btrfsInodeItemKey     = 1  // BTRFS_INODE_ITEM_KEY
	btrfsInodeFlagsOff    = 64 // btrfs_inode_item.flags
	btrfsInodeNoDataSum   = 1  // BTRFS_INODE_NODATASUM
)

var (
	btrfsIocFSInfo     = ioc(iocRead, btrfsIoctlMagic, 31, unsafe.Sizeof(btrfsFSInfoArgs{}))
	btrfsIocTreeSearch = ioc(iocRead|iocWrite, btrfsIoctlMagic, 17, unsafe.Sizeof(btrfsSearchArgs{}))
)

func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

// diskSeq returns the disk sequence number of block device fd
// (BLKGETDISKSEQ), which changes whenever the device gets new media, such
// as a loop device attached to another file.
func diskSeq(fd int) (uint64, error) {
	var seq uint64
	err := ioctlPtr(fd, unix.BLKGETDISKSEQ, unsafe.Pointer(&seq))
	return seq, err
}

// btrfsInfo is what Gather uses of BTRFS_IOC_FS_INFO.
type btrfsInfo struct {
	numDevices uint64
	fsid       [16]byte
	sectorSize uint32
}

// btrfsFSInfo asks btrfs about the volume that holds fd. It needs no
// privilege.
func btrfsFSInfo(fd int) (btrfsInfo, error) {
	var a btrfsFSInfoArgs
	if err := ioctlPtr(fd, btrfsIocFSInfo, unsafe.Pointer(&a)); err != nil {
		return btrfsInfo{}, err
	}
	return btrfsInfo{numDevices: a.NumDevices, fsid: a.FSID, sectorSize: a.SectorSize}, nil
}

// btrfsInodeFlags reads the flags of inode ino from its item in the
// subvolume tree of fd (BTRFS_IOC_TREE_SEARCH with tree id 0, which is the
// subvolume fd is in). It needs CAP_SYS_ADMIN.
//
// The item is read from the live tree. btrfs writes a changed inode into
// the tree through delayed items, so a flag changed since the file was
// created (chattr +C or -C) may not be there yet; the NOCOW attribute,
// which FS_IOC_GETFLAGS reads from the inode in memory, covers the first.
func btrfsInodeFlags(fd int, ino uint64) (uint64, error) {
	var a btrfsSearchArgs
	a.Key = btrfsSearchKey{
		MinObjectID: ino, MaxObjectID: ino,
		MinType: btrfsInodeItemKey, MaxType: btrfsInodeItemKey,
		MaxOffset: ^uint64(0), MaxTransID: ^uint64(0),
		NrItems: 1,
	}
	if err := ioctlPtr(fd, btrfsIocTreeSearch, unsafe.Pointer(&a)); err != nil {
		return 0, err
	}
	if a.Key.NrItems < 1 {
		return 0, unix.ENOENT
	}
	h := a.Buf[:btrfsSearchHeaderSize]
	typ := binary.NativeEndian.Uint32(h[24:])
	n := binary.NativeEndian.Uint32(h[28:])
	if binary.NativeEndian.Uint64(h[8:]) != ino || typ != btrfsInodeItemKey || n < btrfsInodeFlagsOff+8 {
		return 0, unix.ENOENT
	}
	item := a.Buf[btrfsSearchHeaderSize:]
	return binary.LittleEndian.Uint64(item[btrfsInodeFlagsOff:]), nil
}
