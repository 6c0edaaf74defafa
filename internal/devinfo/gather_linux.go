//go:build linux

package devinfo

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// fsNocowFl is FS_NOCOW_FL from include/uapi/linux/fs.h (x/sys has no
// name for it): the file is not copied on write, which on btrfs also means
// its data carries no checksums.
const fsNocowFl = 0x00800000

// statxMask is what Gather asks statx for.
const statxMask = unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_INO | unix.STATX_MNT_ID |
	unix.STATX_DIOALIGN | unix.STATX_DIO_READ_ALIGN | unix.STATX_WRITE_ATOMIC

// Gather describes direct I/O on fd, an open regular file or block device.
// It never fails: what it cannot read is unknown, with the reason.
//
// It costs statx, fstatfs, fcntl and a one-byte RWF_NOWAIT read past the
// end of the file (which reads nothing), plus an ioctl or two on btrfs.
// What sysfs says about the device is read at the first Gather for a
// device and kept for the life of the process, keyed by the device number
// and the file system's identity (statfs f_type and f_fsid; for a block
// device, its disk sequence number), so the second open of a file on the
// same device reads no sysfs. A change made through sysfs later (echo
// "write through" > queue/write_cache) is not seen until the process
// restarts.
//
// Gather is safe for concurrent use.
func Gather(fd int) Info {
	var i Info
	st, err := statx(fd)
	if err != nil {
		why := fmt.Sprintf("statx: %v", err)
		i.FSType = unknown[string](why)
		i.MemAlign, i.OffsetAlign, i.ReadOffsetAlign = unknown[uint32](why), unknown[uint32](why), unknown[uint32](why)
		i.Untorn, i.Device, i.NoWait = unknown[Untorn](why), unknown[Device](why), unknown[bool](why)
		i.MayBeBuffered, i.DSync = unknown[bool](why), unknown[DSyncCost](why)
		return i
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		i.Kind = KindRegular
	case unix.S_IFBLK:
		i.Kind = KindBlockDevice
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
		i.Direct = fl&unix.O_DIRECT != 0
	}

	var sfs unix.Statfs_t
	sfsErr := fstatfs(fd, &sfs)
	switch {
	case i.Kind == KindBlockDevice:
		i.FSType = known("block device", "statx")
	case sfsErr != nil:
		i.FSType = unknown[string](fmt.Sprintf("fstatfs: %v", sfsErr))
	default:
		i.FSType = known(fsName(int64(sfs.Type)), "statfs")
	}

	d := lookupDevice(fd, &st, &i, &sfs, sfsErr)
	i.Device, i.DSync = d.device, d.dsync
	i.MemAlign, i.OffsetAlign, i.ReadOffsetAlign = alignment(&st, &i, d, int64(sfs.Type))
	i.Untorn = untorn(&st)
	i.NoWait = probeNoWait(fd, i.Kind)
	i.MayBeBuffered, i.BufferedAdvice = mayBeBuffered(fd, &st, &i, int64(sfs.Type), sfsErr)
	return i
}

// statx asks for everything Gather uses. A kernel without statx (before
// 4.11) gets the same fields from fstat, which is all it knows.
func statx(fd int) (unix.Statx_t, error) {
	var st unix.Statx_t
	for {
		err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, statxMask, &st)
		if err == unix.EINTR {
			continue
		}
		if err != unix.ENOSYS {
			return st, err
		}
		var s unix.Stat_t
		if err := unix.Fstat(fd, &s); err != nil {
			return st, err
		}
		st.Mask = unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_INO
		st.Mode, st.Ino = uint16(s.Mode), uint64(s.Ino)
		st.Dev_major, st.Dev_minor = unix.Major(uint64(s.Dev)), unix.Minor(uint64(s.Dev))
		st.Rdev_major, st.Rdev_minor = unix.Major(uint64(s.Rdev)), unix.Minor(uint64(s.Rdev))
		return st, nil
	}
}

func fstatfs(fd int, sfs *unix.Statfs_t) error {
	for {
		if err := unix.Fstatfs(fd, sfs); err != unix.EINTR {
			return err
		}
	}
}

// alignment reads the direct I/O alignment from statx, or, for a file
// system that does not report it, from what the file system is known to
// check (btrfs: its sector size) or the traditional rule (the device's
// logical block size), which does not hold for FUSE, whose server does
// the I/O.
func alignment(st *unix.Statx_t, i *Info, d *devEntry, magic int64) (mem, off, rd Fact[uint32]) {
	switch {
	case st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_offset_align == 0:
		const from = "statx: no direct I/O on this file"
		return known(uint32(0), from), known(uint32(0), from), known(uint32(0), from)
	case st.Mask&unix.STATX_DIOALIGN != 0:
		mem, off = known(st.Dio_mem_align, "statx"), known(st.Dio_offset_align, "statx")
	case d.btrfsSector.Known:
		// btrfs checks both against its sector size (check_direct_IO in
		// fs/btrfs/direct-io.c), and does what fails the check buffered.
		from := "btrfs sector size; btrfs does unaligned direct I/O buffered"
		mem, off = known(d.btrfsSector.Value, from), known(d.btrfsSector.Value, from)
	case i.Device.Known && i.Device.Value.LogicalBlockSize.Known && (magic != unix.FUSE_SUPER_MAGIC || i.Kind == KindBlockDevice):
		from := "device logical block size; statx gives no STATX_DIOALIGN"
		lbs := i.Device.Value.LogicalBlockSize.Value
		mem, off = known(lbs, from), known(lbs, from)
	default:
		why := "statx gives no STATX_DIOALIGN"
		if d.btrfsSector.From != "" {
			why += "; " + d.btrfsSector.From
		} else if magic == unix.FUSE_SUPER_MAGIC {
			why += " and the FUSE server decides"
		} else if !i.Device.Known {
			why += " and " + i.Device.From
		} else {
			why += " and the device's logical block size is " + show(i.Device.Value.LogicalBlockSize, bytesStr)
		}
		return unknown[uint32](why), unknown[uint32](why), unknown[uint32](why)
	}
	// A zero read alignment, or none reported, means reads follow
	// OffsetAlign (statx(2), stx_dio_read_offset_align).
	rd = off
	if st.Mask&unix.STATX_DIO_READ_ALIGN != 0 && st.Dio_read_offset_align != 0 {
		rd = known(st.Dio_read_offset_align, "statx STATX_DIO_READ_ALIGN")
	}
	return mem, off, rd
}

// untorn reads the untorn-write limits. A kernel or file system that does
// not answer STATX_WRITE_ATOMIC has no untorn writes either: RWF_ATOMIC is
// refused on a file unless its file system reports the limits.
func untorn(st *unix.Statx_t) Fact[Untorn] {
	if st.Mask&unix.STATX_WRITE_ATOMIC == 0 {
		return known(Untorn{}, "statx does not report STATX_WRITE_ATOMIC")
	}
	return known(Untorn{
		Min:         st.Atomic_write_unit_min,
		Max:         st.Atomic_write_unit_max,
		MaxOpt:      st.Atomic_write_unit_max_opt,
		MaxSegments: st.Atomic_write_segments_max,
	}, "statx")
}

// noWaitProbeOff is where the NOWAIT probe reads: far past the end of any
// file or device (and below every file system's s_maxbytes check), so the
// read returns 0 bytes once the kernel has accepted its flags.
const noWaitProbeOff = 1 << 62

// probeNoWait asks the kernel whether the file takes RWF_NOWAIT. The
// kernel checks the flag (kiocb_set_rw_flags: EOPNOTSUPP without
// FMODE_NOWAIT) before it looks at the offset, but only for a read of at
// least one byte: a zero-length read returns 0 before the flags are
// checked, whatever the file. So the probe reads one byte at an offset
// past any end of file, where it reads nothing (though, like any read, it
// may update the access time).
func probeNoWait(fd int, kind Kind) Fact[bool] {
	if kind == KindOther {
		return unknown[bool]("not a regular file or block device, where a probing read could take data")
	}
	var b [1]byte
	for {
		_, err := unix.Preadv2(fd, [][]byte{b[:]}, noWaitProbeOff, unix.RWF_NOWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == nil || err == unix.EAGAIN:
			return known(true, "preadv2 with RWF_NOWAIT accepted")
		case err == unix.EOPNOTSUPP:
			return known(false, "preadv2 with RWF_NOWAIT: EOPNOTSUPP")
		case err == unix.EBADF:
			return unknown[bool]("the descriptor is not open for reading, so a read cannot probe")
		case err == unix.ENOSYS:
			return unknown[bool]("no preadv2 (Linux before 4.6)")
		}
		return unknown[bool](fmt.Sprintf("preadv2 with RWF_NOWAIT: %v", err))
	}
}

// mayBeBuffered says whether direct writes to the file may silently go
// through the page cache, and what to do about it.
func mayBeBuffered(fd int, st *unix.Statx_t, i *Info, magic int64, sfsErr error) (Fact[bool], string) {
	switch {
	case i.Kind == KindBlockDevice:
		return known(false, "a block device does direct I/O"), ""
	case i.Kind != KindRegular:
		return unknown[bool]("not a regular file"), ""
	case st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_offset_align == 0:
		// ext4 (data=journal, inline data, verity, encryption without
		// inline crypto) and f2fs report zero alignment exactly when
		// they do O_DIRECT I/O through the page cache.
		return known(true, "statx reports no direct I/O on this file, so O_DIRECT I/O goes through the page cache"),
			"on ext4 direct I/O needs a file without data journaling (mount option data=journal, chattr +j), inline data or fs-verity, and encryption only with inline crypto"
	case sfsErr != nil:
		return unknown[bool](fmt.Sprintf("fstatfs: %v", sfsErr)), ""
	}
	switch magic {
	case unix.BTRFS_SUPER_MAGIC:
		sum := btrfsDataSum(fd, st)
		if !sum.Known {
			return sum, ""
		}
		if !sum.Value {
			return known(false, sum.From), ""
		}
		return known(true, "btrfs writes files with data checksums through the page cache ("+sum.From+")"),
			"for real direct writes create the file in a directory with chattr +C (or chattr +C the empty file), or mount with nodatasum"
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
		return known(true, "tmpfs keeps files in the page cache; O_DIRECT reads and writes copy to and from it"),
			"use a file on a disk file system for direct I/O"
	case unix.FUSE_SUPER_MAGIC:
		return unknown[bool]("FUSE: the server decides how data is written"), ""
	case unix.OVERLAYFS_SUPER_MAGIC:
		return unknown[bool]("overlay: the upper or lower file system does the I/O"), ""
	case unix.NFS_SUPER_MAGIC, unix.CIFS_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC, unix.CEPH_SUPER_MAGIC, unix.V9FS_MAGIC:
		return unknown[bool]("network file system: the server decides how data is written"), ""
	}
	if st.Mask&unix.STATX_DIOALIGN != 0 {
		return known(false, "statx reports direct I/O alignment for this file"), ""
	}
	return unknown[bool](fsName(magic) + " reports no STATX_DIOALIGN and this package knows no rule for it"), ""
}

// btrfsDataSum says whether a btrfs file's data carries checksums, from
// what can be read: the NOCOW attribute (which on a regular file implies
// NODATASUM), then btrfs' own inode flags (a tree search, which needs
// CAP_SYS_ADMIN), then the mount options.
func btrfsDataSum(fd int, st *unix.Statx_t) Fact[bool] {
	flags, err := getFlags(fd)
	nocow := known(flags&fsNocowFl != 0, "FS_IOC_GETFLAGS")
	if err != nil {
		nocow = unknown[bool](fmt.Sprintf("FS_IOC_GETFLAGS: %v", err))
	}
	var tree Fact[bool]
	if !nocow.Known || !nocow.Value {
		tree = btrfsNoDataSum(fd, st.Ino)
	}
	var mnt Fact[bool]
	if !tree.Known && (!nocow.Known || !nocow.Value) {
		mnt = mountNoDataSum(st)
	}
	return decideBtrfsDataSum(nocow, tree, mnt)
}

// decideBtrfsDataSum is btrfsDataSum's decision, apart from the reading:
// nocow is the FS_NOCOW_FL attribute, noDataSum btrfs' NODATASUM inode
// flag, mountNoSum whether the mount has nodatasum or nodatacow.
func decideBtrfsDataSum(nocow, noDataSum, mountNoSum Fact[bool]) Fact[bool] {
	switch {
	case nocow.Known && nocow.Value:
		// btrfs sets NODATACOW on a regular file only together with
		// NODATASUM (btrfs_fileattr_set, btrfs_inherit_iflags).
		return known(false, "the file is NOCOW (chattr +C), so its data has no checksums")
	case noDataSum.Known && noDataSum.Value:
		return known(false, "the inode has btrfs' NODATASUM flag")
	case noDataSum.Known:
		return known(true, "the inode lacks btrfs' NODATASUM flag")
	case mountNoSum.Known && !mountNoSum.Value && nocow.Known:
		// The only other way to NODATASUM is creating the file while
		// mounted nodatasum; this mount is not.
		return known(true, "the file is not NOCOW and the mount has no nodatasum; NODATASUM not readable: "+noDataSum.From)
	case mountNoSum.Known && mountNoSum.Value:
		return unknown[bool]("mounted nodatasum, so the file has no checksums if it was created under this mount; NODATASUM not readable: " + noDataSum.From)
	}
	why := "NODATASUM not readable: " + noDataSum.From
	if !nocow.Known {
		why += "; " + nocow.From
	}
	if mountNoSum.From != "" && !mountNoSum.Known {
		why += "; " + mountNoSum.From
	}
	return unknown[bool](why)
}

func getFlags(fd int) (uint32, error) {
	for {
		f, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		if err != unix.EINTR {
			return f, err
		}
	}
}

// btrfsNoDataSum reads btrfs' NODATASUM flag of the inode.
func btrfsNoDataSum(fd int, ino uint64) Fact[bool] {
	flags, err := btrfsInodeFlags(fd, ino)
	switch {
	case err == unix.EPERM:
		return unknown[bool]("btrfs' tree search needs CAP_SYS_ADMIN")
	case err != nil:
		return unknown[bool](fmt.Sprintf("BTRFS_IOC_TREE_SEARCH: %v", err))
	}
	return known(flags&btrfsInodeNoDataSum != 0, "BTRFS_IOC_TREE_SEARCH")
}

// fsName names a statfs f_type.
func fsName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4" // also ext2 and ext3, which share the magic
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.BCACHEFS_SUPER_MAGIC:
		return "bcachefs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.CIFS_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC:
		return "cifs"
	case unix.CEPH_SUPER_MAGIC:
		return "ceph"
	case unix.V9FS_MAGIC:
		return "9p"
	case unix.EXFAT_SUPER_MAGIC:
		return "exfat"
	case unix.MSDOS_SUPER_MAGIC:
		return "vfat"
	case unix.ZONEFS_MAGIC:
		return "zonefs"
	case unix.SQUASHFS_MAGIC:
		return "squashfs"
	case unix.EROFS_SUPER_MAGIC_V1:
		return "erofs"
	case unix.PROC_SUPER_MAGIC:
		return "proc"
	case unix.SYSFS_MAGIC:
		return "sysfs"
	case unix.BDEVFS_MAGIC:
		return "bdev"
	case zfsSuperMagic:
		return "zfs"
	}
	return fmt.Sprintf("%#x", uint64(magic))
}

// zfsSuperMagic is ZFS_SUPER_MAGIC from OpenZFS include/sys/fs/zfs.h.
const zfsSuperMagic = 0x2fc12fc1
