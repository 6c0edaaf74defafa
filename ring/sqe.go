//go:build linux

package ring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// prepRW fills the fields every operation shares; every Prep* funnels into
// it, as in liburing. The SQE came zeroed from GetSQE.
func (s *SQE) prepRW(op Op, fd int32, addr uint64, n uint32, off uint64) {
	s.Opcode = op
	s.Fd = fd
	s.Addr = addr
	s.Len = n
	s.Off = off
}

func addrOf(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

// PrepNop prepares a no-op.
func (s *SQE) PrepNop() { s.prepRW(OpNop, -1, 0, 0, 0) }

// PrepRead prepares a read of len(b) bytes at off into b. b must stay alive
// and unmoved until the CQE (see the package documentation).
func (s *SQE) PrepRead(fd int32, b []byte, off uint64) {
	s.prepRW(OpRead, fd, addrOf(b), uint32(len(b)), off)
}

// PrepWrite prepares a write of b at off.
func (s *SQE) PrepWrite(fd int32, b []byte, off uint64) {
	s.prepRW(OpWrite, fd, addrOf(b), uint32(len(b)), off)
}

// PrepReadAddr and PrepWriteAddr take a raw address, for off-heap memory.
func (s *SQE) PrepReadAddr(fd int32, addr uintptr, n uint32, off uint64) {
	s.prepRW(OpRead, fd, uint64(addr), n, off)
}

// PrepWriteAddr prepares a write of n bytes at addr to off.
func (s *SQE) PrepWriteAddr(fd int32, addr uintptr, n uint32, off uint64) {
	s.prepRW(OpWrite, fd, uint64(addr), n, off)
}

// PrepReadv prepares a vectored read. iov and the memory it points to must
// stay alive until the CQE (the kernel may read iov after submission when
// the operation goes async without FEAT_SUBMIT_STABLE).
func (s *SQE) PrepReadv(fd int32, iov []unix.Iovec, off uint64) {
	s.prepRW(OpReadv, fd, iovAddr(iov), uint32(len(iov)), off)
}

// PrepWritev prepares a vectored write.
func (s *SQE) PrepWritev(fd int32, iov []unix.Iovec, off uint64) {
	s.prepRW(OpWritev, fd, iovAddr(iov), uint32(len(iov)), off)
}

func iovAddr(iov []unix.Iovec) uint64 {
	if len(iov) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&iov[0])))
}

// PrepReadFixed prepares a read into registered buffer bufIndex; b must lie
// inside that buffer.
func (s *SQE) PrepReadFixed(fd int32, b []byte, off uint64, bufIndex uint16) {
	s.prepRW(OpReadFixed, fd, addrOf(b), uint32(len(b)), off)
	s.BufIndex = bufIndex
}

// PrepWriteFixed prepares a write from registered buffer bufIndex.
func (s *SQE) PrepWriteFixed(fd int32, b []byte, off uint64, bufIndex uint16) {
	s.prepRW(OpWriteFixed, fd, addrOf(b), uint32(len(b)), off)
	s.BufIndex = bufIndex
}

// PrepFsync prepares an fsync, or an fdatasync with FsyncDatasync.
func (s *SQE) PrepFsync(fd int32, flags uint32) {
	s.prepRW(OpFsync, fd, 0, 0, 0)
	s.OpFlags = flags
}

// PrepFallocate prepares fallocate(fd, mode, off, length). The kernel takes
// the length in the addr field and the mode in len.
func (s *SQE) PrepFallocate(fd int32, mode uint32, off, length uint64) {
	s.prepRW(OpFallocate, fd, length, mode, off)
}

// PrepTimeout prepares a timeout that completes after ts, or once count
// other completions have been posted (0: time only). ts must stay alive
// until the SQE is submitted (on an SQPOLL ring: until the CQE).
func (s *SQE) PrepTimeout(ts *unix.Timespec, count uint32, flags uint32) {
	s.prepRW(OpTimeout, -1, uint64(uintptr(unsafe.Pointer(ts))), 1, uint64(count))
	s.OpFlags = flags
}

// PrepLinkTimeout prepares a timeout for the SQE linked before it (which
// must carry SQEIOLink): if it has not completed after ts it is cancelled.
func (s *SQE) PrepLinkTimeout(ts *unix.Timespec, flags uint32) {
	s.prepRW(OpLinkTimeout, -1, uint64(uintptr(unsafe.Pointer(ts))), 1, 0)
	s.OpFlags = flags
}

// PrepCancel prepares a cancel of the in-flight operation whose user_data
// is target. Its own CQE has res 0 (found), -ENOENT (not found, or already
// done) or -EALREADY (running, cancel attempted).
func (s *SQE) PrepCancel(target uint64, flags uint32) {
	s.prepRW(OpAsyncCancel, -1, target, 0, 0)
	s.OpFlags = flags
}

// SetFixedFile makes Fd an index into the registered files.
func (s *SQE) SetFixedFile() { s.Flags |= SQEFixedFile }

// SetFlags adds SQE flags (SQEIOLink, SQEIODrain, SQEAsync, ...).
func (s *SQE) SetFlags(f uint8) { s.Flags |= f }

// PrepPollAdd prepares a one-shot poll of fd for events (POLLIN, ...): it
// completes with the events that are ready.
func (s *SQE) PrepPollAdd(fd int32, events uint32) {
	s.prepRW(OpPollAdd, fd, 0, 0, 0)
	s.OpFlags = events // poll32_events
}
