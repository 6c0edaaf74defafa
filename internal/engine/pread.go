//go:build linux

package engine

import (
	"io"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/uringdio/uringdio/internal/devinfo"
	"golang.org/x/sys/unix"
)

// The pread backend: pread/pwrite (preadv2/pwritev2 with RWF flags)
// instead of a ring, for devices that complete synchronously (io_uring
// would only punt to its io-wq threads) and engines without a ring. A
// synchronous request runs in the calling goroutine, an asynchronous one
// on a worker (its Inline callback too); preadSem bounds the calls in
// progress.

// preadRun does every piece of r, then drops their references (the last
// completes it; an Inline completion runs here).
func (e *Engine) preadRun(r *Req) {
	for i := range r.Pieces {
		p := &r.Pieces[i]
		if r.cancelled.Load() {
			r.SetErr(syscall.ECANCELED, p.dataOff(r, 0))
		} else {
			e.preadSem <- struct{}{}
			e.preadPiece(r, p)
			<-e.preadSem
		}
		e.C.Completed.Add(1)
	}
	r.next = len(r.Pieces)
	for range len(r.Pieces) {
		e.put(r, true)
	}
}

// piece carries out one piece with the rules of a CQE (reap.go): EINTR
// retried, EAGAIN retried unless NoWait, a short read at the end of the
// data ends it, any other short transfer goes on for the rest.
func (e *Engine) preadPiece(r *Req, p *Piece) {
	if p.Ctl != 0 {
		if err := ctl(p); err != nil {
			r.SetErr(err, r.Base)
		}
		return
	}
	mem := unsafe.Slice((*byte)(p.Addr), p.N)
	var done int64
	for retries := 0; done < int64(p.N); {
		n, err := RW(p.Fd, mem[done:], p.Off+done, p.Write, p.RWFlags)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN && !r.NoWait && retries < maxRetries:
			retries++
			runtime.Gosched()
			continue
		case err != nil:
			r.SetErr(err, p.dataOff(r, done))
			return
		}
		e.C.Submitted.Add(1)
		done += int64(n)
		switch {
		case done == int64(p.N):
		case !p.Write && r.Hooks.ReadEnded(p.LogOff+done, n == 0):
			r.Ended(p.LogOff + done)
			return
		case n == 0:
			r.SetErr(io.ErrShortWrite, p.dataOff(r, done))
			return
		}
	}
}

// ctl carries out a control piece.
func ctl(p *Piece) error {
	for {
		var err error
		switch p.Ctl {
		case Fsync:
			err = unix.Fsync(int(p.Fd))
		case Fdatasync:
			err = unix.Fdatasync(int(p.Fd))
		case Fallocate:
			err = unix.Fallocate(int(p.Fd), unix.FALLOC_FL_KEEP_SIZE, p.Off, p.CtlLen)
		}
		if err != syscall.EINTR {
			return err
		}
	}
}

// RW is one pread/pwrite, or preadv2/pwritev2 with RWF flags, allocating
// nothing.
func RW(fd int32, b []byte, off int64, write bool, flags uint32) (int, error) {
	if flags == 0 {
		if write {
			return unix.Pwrite(int(fd), b, off)
		}
		return unix.Pread(int(fd), b, off)
	}
	iov := unix.Iovec{Base: unsafe.SliceData(b)}
	iov.SetLen(len(b))
	nr := uintptr(unix.SYS_PREADV2)
	if write {
		nr = unix.SYS_PWRITEV2
	}
	// The offset goes in two halves (pos_l, pos_h) whatever the word size.
	n, _, errno := unix.Syscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, uintptr(off), uintptr(uint64(off)>>32), uintptr(flags))
	runtime.KeepAlive(b)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// direct reports whether a synchronous request may skip the owner and go
// to the kernel with pread/pwrite in the calling goroutine: when the ring
// is idle (nothing in flight, nothing queued) the hand-offs to the owner
// and back are most of a single request's latency. One such call at a
// time (it holds directSem; Launch releases it): the others go to the
// ring, whose owner is awake by then. Not for engines shaped by their
// options (they asked for the ring).
func (e *Engine) direct() bool {
	if e.noProbe || e.inflight.Load() != 0 || e.o.head.Load() != nil {
		return false
	}
	select {
	case e.directSem <- struct{}{}:
		return true
	default:
		return false
	}
}

// Backend decides whether a descriptor is served by the ring or by the
// pread backend, and says why. An engine without a ring has only the
// latter; options that shape the ring ask for it; otherwise the device
// decides (devinfo.SyncDevice): where it completes synchronously,
// io_uring would hand every request to its io-wq threads, and pread in the
// calling goroutine is faster.
func (e *Engine) Backend(fd int, st *unix.Stat_t) (pread bool, why string) {
	switch {
	case e.ring == nil:
		return true, "no io_uring: " + e.noRing.Error()
	case e.noProbe:
		return false, "io_uring (the engine's options choose the ring)"
	}
	sync, why := devinfo.SyncDevice(fd, st)
	if sync {
		return true, "pread (" + why + ")"
	}
	return false, "io_uring (" + why + ")"
}

func addrOf(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }
