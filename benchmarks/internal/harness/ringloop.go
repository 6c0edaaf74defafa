//go:build linux

package harness

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/uringdio/uringdio/ring"
)

// EngineRing is a diagnostic engine, not one of the peers: one
// goroutine locked to its OS thread drives a ring.Ring directly the way
// fio's io_uring engine does (submit what is ready and wait for one
// completion in a single io_uring_enter, reap every ready CQE, prepare one
// SQE per completion). It is the floor under uringdio on this machine,
// what the ring layer can reach in Go without dio's engine, so a gap to fio
// can be split into "Go and the ring" and "dio's engine". -ringflags
// applies (single,defer need the locked thread this engine has), and
// SubmitBatch caps how many SQEs wait for one io_uring_enter (fio's
// iodepth_batch_submit; fio's default is 1).
const EngineRing = "ring"

func openRingLoop(j *Job) (JobRunner, error) {
	cfg := j.Cfg
	if len(cfg.Files) > 0 {
		return nil, skipf("-files is not supported by the ring engine")
	}
	if cfg.Writes() && cfg.Verify {
		return nil, skipf("the ring engine does not -verify")
	}
	fl, err := parseRingFlags(cfg.RingFlags)
	if err != nil {
		return nil, err
	}
	if cfg.SQPoll {
		fl |= ring.SetupSQPoll
	}
	if cfg.IOPoll {
		fl |= ring.SetupIOPoll
	}
	entries := uint32(256)
	for entries < uint32(cfg.QD) {
		entries *= 2
	}
	flag := os.O_RDONLY
	if cfg.Writes() {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(cfg.Path, flag|syscall.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	l := &ringLoop{f: f, w: j.NewWorker(), start: make([]int64, cfg.QD), batch: cfg.SubmitBatch,
		ready: make(chan error), begin: make(chan struct{}), done: make(chan struct{})}
	for range cfg.QD {
		b, err := j.AllocBuffer()
		if err != nil {
			l.free()
			return nil, err
		}
		l.bufs = append(l.bufs, b)
	}
	// The ring is created, used and closed on one locked OS thread, which
	// SINGLE_ISSUER and DEFER_TASKRUN require.
	go l.thread(ring.Params{Entries: entries, Flags: fl})
	if err := <-l.ready; err != nil {
		l.free()
		return nil, err
	}
	return l, nil
}

type ringLoop struct {
	f     *os.File
	w     *Worker
	bufs  [][]byte
	start []int64
	ready chan error
	begin chan struct{}
	done  chan struct{}
	batch int // enter as soon as this many SQEs are prepared (0: once per reaped batch)
	quit  bool
	err   error
}

func (l *ringLoop) thread(p ring.Params) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, err := ring.New(p)
	l.ready <- err
	if err != nil {
		return
	}
	defer r.Close()
	<-l.begin
	if !l.quit {
		l.err = l.loop(r)
	}
	close(l.done)
}

func (l *ringLoop) loop(r *ring.Ring) error {
	fd := int32(l.f.Fd())
	cqes := make([]ring.CQE, 2*len(l.bufs))
	prep := func(i int, now int64) bool {
		write, off, ok := l.w.Next(now)
		if !ok {
			return false
		}
		sqe := r.GetSQE()
		if write {
			sqe.PrepWrite(fd, l.bufs[i], uint64(off))
		} else {
			sqe.PrepRead(fd, l.bufs[i], uint64(off))
		}
		sqe.UserData = uint64(i)
		l.start[i] = now
		if l.batch > 0 && r.Pending() >= uint32(l.batch) {
			r.Submit()
		}
		return true
	}
	live := 0
	now := nanotime()
	for i := range l.bufs {
		if prep(i, now) {
			live++
		}
	}
	for live > 0 {
		if _, err := r.SubmitAndWait(1); err != nil && err != syscall.EINTR {
			return err
		}
		n, err := r.Peek(cqes)
		if err != nil {
			return err
		}
		now := nanotime()
		for _, c := range cqes[:n] {
			i := int(c.UserData)
			var ioErr error
			got := int(c.Res)
			if c.Res < 0 {
				ioErr, got = syscall.Errno(-c.Res), 0
			}
			l.w.Done(l.start[i], now, got, len(l.bufs[i]), ioErr)
			if !prep(i, now) {
				live--
			}
		}
	}
	return nil
}

func (l *ringLoop) Run() {
	close(l.begin)
	<-l.done
	if l.err != nil {
		l.w.job.Fail(fmt.Errorf("ring: %w", l.err))
	}
}

func (l *ringLoop) Close() error {
	select {
	case <-l.begin:
	default:
		l.quit = true
		close(l.begin)
	}
	<-l.done
	l.free()
	return nil
}

func (l *ringLoop) free() {
	for _, b := range l.bufs {
		ring.Free(b)
	}
	l.bufs = nil
	l.f.Close()
}
