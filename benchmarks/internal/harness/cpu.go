//go:build linux

package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is USER_HZ, the unit of /proc/stat (100 on every Linux ABI Go
// supports; sysconf(_SC_CLK_TCK) is not reachable without cgo).
const clockTick = 100

// cpuSnap is the CPU time used so far by this process (getrusage: every
// thread, which includes io_uring's io-wq workers and SQPOLL thread, since
// they belong to the process) and by the whole machine (/proc/stat, all
// CPUs: also other processes, interrupts and kernel threads).
type cpuSnap struct {
	proc    time.Duration
	machine time.Duration
	at      time.Time
}

func snapCPU() cpuSnap {
	s := cpuSnap{at: time.Now()}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		s.proc = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	s.machine, _ = machineBusy()
	return s
}

// machineBusy returns the busy CPU time of all CPUs since boot: user, nice,
// system, irq, softirq and steal (guest time is inside user; idle and
// iowait are not busy).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return 0, fmt.Errorf("harness: unexpected /proc/stat line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait, guest, guest_nice
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return 0, err
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTick, nil
}

// statSampler samples the machine's busy time periodically, so the CPU of
// a window known only afterwards (fio's job runtime, inside the lifetime of
// the fio process) can be read back by interpolation.
type statSampler struct {
	mu      sync.Mutex
	samples []cpuSnap
	stop    chan struct{}
	done    chan struct{}
}

func startSampler(every time.Duration) *statSampler {
	s := &statSampler{stop: make(chan struct{}), done: make(chan struct{})}
	s.add()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.add()
			case <-s.stop:
				s.add()
				return
			}
		}
	}()
	return s
}

func (s *statSampler) add() {
	b, err := machineBusy()
	if err != nil {
		return
	}
	s.mu.Lock()
	s.samples = append(s.samples, cpuSnap{machine: b, at: time.Now()})
	s.mu.Unlock()
}

func (s *statSampler) Stop() { close(s.stop); <-s.done }

// busy returns the machine's busy time between t0 and t1, interpolating
// linearly between the samples around each end.
func (s *statSampler) busy(t0, t1 time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at(t1) - s.at(t0)
}

func (s *statSampler) at(t time.Time) time.Duration {
	v := s.samples
	if len(v) == 0 {
		return 0
	}
	if !t.After(v[0].at) {
		return v[0].machine
	}
	for i := 1; i < len(v); i++ {
		if !t.After(v[i].at) {
			a, b := v[i-1], v[i]
			span := b.at.Sub(a.at)
			if span <= 0 {
				return b.machine
			}
			frac := float64(t.Sub(a.at)) / float64(span)
			return a.machine + time.Duration(frac*float64(b.machine-a.machine))
		}
	}
	return v[len(v)-1].machine
}

// loadAvg returns /proc/loadavg's first three fields.
func loadAvg() string {
	f, err := os.Open("/proc/loadavg")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if sc.Scan() {
		fs := bytes.Fields(sc.Bytes())
		if len(fs) >= 3 {
			return string(bytes.Join(fs[:3], []byte(" ")))
		}
	}
	return "?"
}
