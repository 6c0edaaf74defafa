//go:build linux

package dio

import (
	"io"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The pread backend: pread/pwrite (preadv2/pwritev2 where a request has
// RWF flags) instead of a ring. It serves files on devices that complete
// synchronously (zram, RAM disks, tmpfs: io_uring could only hand their
// requests to its io-wq threads, and a system call in the calling
// goroutine is several times faster), and every file of an engine that
// could not create a ring (a seccomp profile that blocks io_uring, the
// kernel.io_uring_disabled sysctl, an old kernel).
//
// A synchronous request runs in the calling goroutine. An asynchronous one
// runs on one of the engine's worker goroutines, so its Inline callback
// runs there too, concurrently with other requests' callbacks. At most
// preadSlots system calls are in progress at once, whatever the number of
// callers, which bounds the OS threads blocked in them.
type preadBackend struct {
	sem chan struct{} // one token per system call in progress
}

// preadSlots bounds the pread backend's system calls in progress.
func preadSlots() int { return 4 * runtime.GOMAXPROCS(0) }

func newPreadBackend() *preadBackend {
	return &preadBackend{sem: make(chan struct{}, preadSlots())}
}

// submit runs r's pieces: now, on this goroutine, if sync; otherwise on a
// worker.
func (b *preadBackend) submit(e *Engine, r *Request, sync bool) {
	if sync {
		b.run(e, r)
		return
	}
	e.workers.push(r, jobPread)
}

// run does every piece of r, then drops its pieces' references (the last
// completes it, through its policy; an Inline completion runs here).
func (b *preadBackend) run(e *Engine, r *Request) {
	for i := range r.pieces {
		p := &r.pieces[i]
		if r.cancelled.Load() {
			r.setErr(syscall.ECANCELED, p.dataOff(r))
		} else {
			b.sem <- struct{}{}
			b.piece(e, r, p)
			<-b.sem
		}
		e.stats.Completed.Add(1)
	}
	r.next = len(r.pieces)
	for range len(r.pieces) {
		e.put(r, true)
	}
}

// piece carries out one piece with the same rules as a CQE (reap.go):
// EINTR retried, EAGAIN retried unless NoWait, a short read at the end of
// the file is EOF, any other short transfer goes on for the rest.
func (b *preadBackend) piece(e *Engine, r *Request, p *piece) {
	fd := p.fd
	if p.regFile {
		fd = r.file.fd // registered files are target 0
	}
	if p.ctl != 0 {
		var err error
		for {
			switch p.ctl {
			case Fsync:
				err = unix.Fsync(int(fd))
			case Fdatasync:
				err = unix.Fdatasync(int(fd))
			case Preallocate:
				err = unix.Fallocate(int(fd), unix.FALLOC_FL_KEEP_SIZE, p.off, p.ctlLen)
			}
			if err != syscall.EINTR {
				break
			}
		}
		if err != nil {
			r.setErr(err, r.Off)
		}
		return
	}
	var mem []byte
	if p.fileOff < 0 {
		mem = e.zero // a zeroing piece
	} else {
		_, _, mem = r.mem(p.fileOff - r.Off)
	}
	mem = mem[:p.n]
	var done int64
	retries := 0
	for done < int64(p.n) {
		n, err := rw(fd, mem[done:], p.off+done, p.write, p.rwFlags)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN && r.Flags&NoWait == 0 && retries < maxRetries:
			retries++
			runtime.Gosched()
			continue
		case err != nil:
			r.setErr(err, p.fileOffAt(r, done))
			return
		}
		e.stats.Submitted.Add(1)
		done += int64(n)
		if done == int64(p.n) {
			return
		}
		if !p.write && r.readEnded(p.fileOff+done, n == 0) {
			r.eof(p.fileOff + done)
			return
		}
		if n == 0 {
			r.setErr(io.ErrShortWrite, p.fileOffAt(r, done))
			return
		}
	}
}

// rw is one pread/pwrite, or preadv2/pwritev2 with RWF flags, allocating
// nothing.
func rw(fd int32, b []byte, off int64, write bool, flags uint32) (int, error) {
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

// dataOff is the file offset of a piece's data, for error accounting (a
// zeroing piece has none: it counts as the start of the request).
func (p *piece) dataOff(r *Request) int64 {
	if p.fileOff < 0 {
		return r.Off
	}
	return p.fileOff
}

func (p *piece) fileOffAt(r *Request, done int64) int64 {
	if p.fileOff < 0 {
		return r.Off
	}
	return p.fileOff + done
}
