//go:build iceber

// Command icebench runs one diobench measurement with
// github.com/iceber/iouring-go's request API. diobench builds it on demand
// (go build -tags iceber -ldflags=-checklinkname=0: iouring-go's top-level
// package uses go:linkname into the standard library, which Go 1.23+
// refuses to link by default) and runs it as a subprocess: a harness.Config
// as JSON on stdin, a harness.Result as one JSON line on stdout.
package main

import (
	"os"
	"syscall"

	"github.com/iceber/iouring-go"
	"github.com/uringdio/uringdio/benchmarks/internal/harness"
	"github.com/uringdio/uringdio/ring"
)

func main() { harness.ServeHelper(open) }

// open prepares one job: its own IOURing (iouring-go starts a goroutine
// that reaps completions and sends each on the result channel), one O_DIRECT
// file and qd aligned buffers.
func open(j *harness.Job) (harness.JobRunner, error) {
	cfg := j.Cfg
	var opts []iouring.IOURingOption
	if cfg.SQPoll {
		opts = append(opts, iouring.WithSQPoll())
	}
	entries := uint(256)
	for entries < uint(cfg.QD) {
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
	iour, err := iouring.New(entries, opts...)
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &runner{iour: iour, f: f, w: j.NewWorker(), ch: make(chan iouring.Result, cfg.QD)}
	for range cfg.QD {
		b, err := j.AllocBuffer()
		if err != nil {
			r.Close()
			return nil, err
		}
		r.slots = append(r.slots, &slot{buf: b})
	}
	return r, nil
}

type slot struct {
	buf   []byte
	start int64
}

type runner struct {
	iour  *iouring.IOURing
	f     *os.File
	w     *harness.Worker
	ch    chan iouring.Result
	slots []*slot
}

// Run keeps qd requests in flight from one goroutine: submit, take a result
// from the channel, record it, submit the next. This is iouring-go's
// intended asynchronous use.
func (r *runner) Run() {
	fd := int(r.f.Fd())
	submit := func(s *slot, now int64) bool {
		write, off, ok := r.w.Next(now)
		if !ok {
			return false
		}
		r.w.Prepare(s.buf, write, off)
		var prep iouring.PrepRequest
		if write {
			prep = iouring.Pwrite(fd, s.buf, uint64(off))
		} else {
			prep = iouring.Pread(fd, s.buf, uint64(off))
		}
		s.start = harness.Nanotime()
		if _, err := r.iour.SubmitRequest(prep.WithInfo(s), r.ch); err != nil {
			r.w.Job().Fail(err)
			return false
		}
		return true
	}
	live := 0
	now := harness.Nanotime()
	for _, s := range r.slots {
		if submit(s, now) {
			live++
		}
	}
	for live > 0 {
		res := <-r.ch
		now := harness.Nanotime()
		s := res.GetRequestInfo().(*slot)
		n, err := res.ReturnInt()
		r.w.Done(s.start, now, n, len(s.buf), err)
		if !submit(s, now) {
			live--
		}
	}
}

func (r *runner) Close() error {
	err := r.iour.Close()
	for _, s := range r.slots {
		ring.Free(s.buf)
	}
	r.slots = nil
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}
