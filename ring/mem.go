//go:build linux

package ring

import "golang.org/x/sys/unix"

// Alloc returns n bytes of zeroed off-heap memory, aligned to the page size
// (which satisfies every O_DIRECT alignment up to a page), rounded up to
// whole pages. The garbage collector never moves or frees it: the caller
// releases it with Free once no operation uses it any more.
func Alloc(n int) ([]byte, error) {
	if n <= 0 {
		return nil, opErr("alloc", errorf(unix.EINVAL, "size %d", n))
	}
	pg := unix.Getpagesize()
	size := (n + pg - 1) &^ (pg - 1)
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, opErr("alloc", err)
	}
	return b[:n:size], nil
}

// Free releases memory from Alloc. b must be the slice Alloc returned
// (any length, same start).
func Free(b []byte) error {
	if cap(b) == 0 {
		return nil
	}
	return opErr("free", unix.Munmap(b[:cap(b)]))
}
