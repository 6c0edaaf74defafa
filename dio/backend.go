//go:build linux

package dio

import (
	"sync"
	"syscall"
	"time"

	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// chooseBackend decides whether a file is served by the ring or by the
// pread backend, and says why. An engine without a ring has only the
// latter. Otherwise the device decides, once per device (st_dev; the
// device itself for a block device): where it cannot take a request
// without blocking (RWF_NOWAIT refused), io_uring would hand every request
// to its io-wq worker threads, and pread in the calling goroutine is
// faster.
func (e *Engine) chooseBackend(fd int, st *unix.Stat_t) (pread bool, why string) {
	if e.ring == nil {
		return true, "no io_uring: " + e.noRing.Error()
	}
	if e.noProbe {
		return false, "io_uring (the engine's options choose the ring)"
	}
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	if v, ok := syncDevices.Load(dev); ok {
		d := v.(deviceVerdict)
		return d.sync, d.why
	}
	d, conclusive := probeDevice(fd, st)
	if conclusive {
		syncDevices.Store(dev, d)
	}
	return d.sync, d.why
}

type deviceVerdict struct {
	sync bool
	why  string
}

// syncDevices holds the verdict per device.
var syncDevices sync.Map

// probeDevice asks the device to read the file's first sector without
// blocking (preadv2 RWF_NOWAIT), a few times: a device that can queue a
// read does so at least once (the first try may find the file's mapping
// not yet cached); one that completes synchronously refuses every time.
// A file too short to hold a sector tells nothing.
func probeDevice(fd int, st *unix.Stat_t) (deviceVerdict, bool) {
	size := st.Size
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if n, err := unix.Seek(fd, 0, 2); err == nil {
			size = n
		}
	}
	if size < 4096 {
		return deviceVerdict{why: "io_uring (not probed yet: the file holds less than a sector)"}, false
	}
	buf, err := ring.Alloc(4096)
	if err != nil {
		return deviceVerdict{why: "io_uring (no memory to probe the device)"}, false
	}
	defer ring.Free(buf)
	var last error
	for try := range 4 {
		_, err := rw(int32(fd), buf, 0, false, unix.RWF_NOWAIT)
		switch err {
		case nil:
			return deviceVerdict{why: "io_uring (the device queues reads without blocking: RWF_NOWAIT accepted)"}, true
		case syscall.EOPNOTSUPP:
			return deviceVerdict{sync: true, why: "pread (the file does not take RWF_NOWAIT: io_uring would hand every request to its io-wq threads)"}, true
		case syscall.EAGAIN:
			last = err
			time.Sleep(time.Duration(try+1) * 100 * time.Microsecond)
		default:
			return deviceVerdict{why: "io_uring (probe: " + err.Error() + ")"}, false
		}
	}
	return deviceVerdict{sync: true, why: "pread (the device completes synchronously: every RWF_NOWAIT read came back " + last.Error() + ", so io_uring would hand each request to its io-wq threads)"}, true
}

// direct reports whether a synchronous request of f may skip the owner and
// go to the kernel with pread/pwrite in the calling goroutine: when the
// ring is idle (nothing in flight, nothing queued) the hand-offs to the
// owner and back are most of a single request's latency, and a system
// call in the caller has none. One such call at a time (it holds
// directSem; the caller releases it): the others go to the ring, whose
// owner is awake by then. Not for engines shaped by their options (they
// asked for the ring), files with a submit hook (it must see every SQE),
// mapped files or control ops.
func (e *Engine) direct(f *File, r *Request) bool {
	if e.noProbe || f.hook != nil || f.vol != nil || r.Op.control() ||
		e.inflight.Load() != 0 || e.o.head.Load() != nil {
		return false
	}
	select {
	case e.directSem <- struct{}{}:
		return true
	default:
		return false
	}
}

// waitPread waits for a request of the pread backend to finish its I/O; if
// done ends first, the pieces not yet run end with ECANCELED.
func (e *Engine) waitPread(req *Request, done <-chan struct{}) {
	for req.state.Load() < stateIODone {
		select {
		case <-req.wake:
		case <-done:
			e.cancel(req)
			done = nil
		}
	}
}
