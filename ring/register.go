//go:build linux

package ring

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RegisterBuffers registers bufs as fixed buffers 0..len(bufs)-1 for
// PrepReadFixed and PrepWriteFixed. The memory must stay mapped until
// UnregisterBuffers or Close; off-heap memory (Alloc) is the safe
// choice. The kernel pins the pages and charges them to RLIMIT_MEMLOCK.
func (r *Ring) RegisterBuffers(bufs [][]byte) error {
	if r.closed {
		return ErrClosed
	}
	if len(bufs) == 0 {
		return opErr("register buffers", errorf(unix.EINVAL, "no buffers"))
	}
	iov := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		if len(b) == 0 {
			return opErr("register buffers", errorf(unix.EINVAL, "buffer %d is empty", i))
		}
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
	}
	err := register(r.fd, regBuffers, unsafe.Pointer(&iov[0]), uint32(len(iov)))
	runtime.KeepAlive(bufs)
	return opErr("register buffers", err)
}

// UnregisterBuffers drops every registered buffer.
func (r *Ring) UnregisterBuffers() error {
	if r.closed {
		return ErrClosed
	}
	return opErr("unregister buffers", register(r.fd, unregBuffers, nil, 0))
}

// RegisterFiles registers fds as fixed files 0..len(fds)-1, used by SQEs
// with SQEFixedFile (SetFixedFile). An fd of -1 leaves the slot empty for a
// later UpdateFiles.
func (r *Ring) RegisterFiles(fds []int32) error {
	if r.closed {
		return ErrClosed
	}
	if len(fds) == 0 {
		return opErr("register files", errorf(unix.EINVAL, "no files"))
	}
	return opErr("register files", register(r.fd, regFiles, unsafe.Pointer(&fds[0]), uint32(len(fds))))
}

// UpdateFiles replaces the registered files from slot off on with fds (-1
// empties a slot). In-flight operations keep the file they started with.
func (r *Ring) UpdateFiles(off uint32, fds []int32) error {
	if r.closed {
		return ErrClosed
	}
	if len(fds) == 0 {
		return nil
	}
	// struct io_uring_files_update: offset, resv, then a u64 pointer.
	upd := struct {
		off  uint32
		resv uint32
		fds  uint64
	}{off: off, fds: uint64(uintptr(unsafe.Pointer(&fds[0])))}
	err := register(r.fd, regFilesUpdate, unsafe.Pointer(&upd), uint32(len(fds)))
	runtime.KeepAlive(fds)
	return opErr("update files", err)
}

// UnregisterFiles drops every registered file.
func (r *Ring) UnregisterFiles() error {
	if r.closed {
		return ErrClosed
	}
	return opErr("unregister files", register(r.fd, unregFiles, nil, 0))
}

// Arena is registered-buffer memory: one off-heap arena registered as
// fixed buffer 0, cut in pieces a caller shares out. An SQE whose memory
// lies in it can be read_fixed or write_fixed with BufIndex 0.
type Arena struct {
	mem  []byte
	bufs [][]byte
}

// NewArena allocates count buffers of size bytes (1 MiB if size is 0) in
// one arena and registers it with the ring (anything that registers
// buffers the way *Ring does). Free it after the ring is closed.
func NewArena(r interface{ RegisterBuffers([][]byte) error }, count, size int) (*Arena, error) {
	if size <= 0 {
		size = 1 << 20
	}
	mem, err := Alloc(count * size)
	if err != nil {
		return nil, fmt.Errorf("fixed buffers of %d bytes: %w", count*size, err)
	}
	a := &Arena{mem: mem}
	if err := r.RegisterBuffers([][]byte{mem}); err != nil {
		Free(mem)
		return nil, fmt.Errorf("register buffers of %d bytes: %w", len(mem), err)
	}
	for i := range count {
		a.bufs = append(a.bufs, mem[i*size:(i+1)*size:(i+1)*size])
	}
	return a, nil
}

// Bufs returns the arena's buffers (nil for a nil Arena).
func (a *Arena) Bufs() [][]byte {
	if a == nil {
		return nil
	}
	return a.bufs
}

// Contains reports whether b lies in the arena.
func (a *Arena) Contains(b []byte) bool {
	if a == nil || len(b) == 0 {
		return false
	}
	base, p := uintptr(unsafe.Pointer(&a.mem[0])), uintptr(unsafe.Pointer(&b[0]))
	return p >= base && p+uintptr(len(b)) <= base+uintptr(len(a.mem))
}

// Free unmaps the arena.
func (a *Arena) Free() {
	if a != nil {
		Free(a.mem)
	}
}
