//go:build linux

package harness

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Threads are counted two ways, because a Go process never gives back an
// OS thread: a thread made for a goroutine blocked in pread stays, idle,
// until the process exits. The peak of Threads: in /proc/self/status
// therefore counts, in a run that follows a pread run, the threads that
// run left behind. What a run used is counted instead from the thread
// list: the threads created since the run began opening its files, and
// those that existed before and were scheduled during it (their count of
// timeslices in /proc/self/task/TID/schedstat moved). In a fresh process
// the two agree.

// taskSnap maps every thread of this process to its count of timeslices
// run so far (or, without schedstat, its context switches).
func taskSnap() map[int]uint64 {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	m := make(map[int]uint64, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		m[tid] = timeslices("/proc/self/task/" + e.Name())
	}
	return m
}

// timeslices reads the third field of a task's schedstat (timeslices run
// on a CPU) or, where the kernel has no schedstat, the sum of its
// voluntary and involuntary context switches.
func timeslices(dir string) uint64 {
	if b, err := os.ReadFile(dir + "/schedstat"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			n, _ := strconv.ParseUint(f[2], 10, 64)
			return n
		}
	}
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		return 0
	}
	var sum uint64
	for _, k := range []string{"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"} {
		if v, ok := statusField(b, k); ok {
			sum += uint64(v)
		}
	}
	return sum
}

// threadsUsed counts the threads of after that are not in before or ran
// since it was taken.
func threadsUsed(before, after map[int]uint64) int {
	n := 0
	for tid, s := range after {
		if s0, ok := before[tid]; !ok || s != s0 {
			n++
		}
	}
	return n
}

// statusField returns the number after key in a /proc status file.
func statusField(b []byte, key string) (int, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(key):]
	rest = bytes.TrimLeft(rest, " \t")
	v, j := 0, 0
	for ; j < len(rest) && rest[j] >= '0' && rest[j] <= '9'; j++ {
		v = v*10 + int(rest[j]-'0')
	}
	return v, j > 0
}

// threadPeak samples the Threads: line of a process, and of its child
// processes (fio runs a job in a process it forks), until stopped, and
// keeps the largest sum. Sampling this process allocates nothing, so a Go
// benchmark's allocation count does not see it.
type threadPeak struct {
	pid  int
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func startThreadPeak(pid int, every time.Duration) *threadPeak {
	p := &threadPeak{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	self := pid == os.Getpid()
	var status *os.File
	if self {
		status, _ = os.Open("/proc/self/status")
	}
	buf := make([]byte, 4096)
	sample := func() {
		n := 0
		if self {
			if status == nil {
				return
			}
			k, _ := status.ReadAt(buf, 0)
			if v, ok := statusField(buf[:k], "Threads:"); ok {
				n = v
			}
		} else {
			n = treeThreads(pid)
		}
		if int64(n) > p.peak.Load() {
			p.peak.Store(int64(n))
		}
	}
	sample()
	go func() {
		defer close(p.done)
		if status != nil {
			defer status.Close()
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sample()
			case <-p.stop:
				sample()
				return
			}
		}
	}()
	return p
}

// Stop ends the sampling and returns the peak.
func (p *threadPeak) Stop() int {
	close(p.stop)
	<-p.done
	return int(p.peak.Load())
}

// treeThreads sums Threads: over pid and its children.
func treeThreads(pid int) int {
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		return 0
	}
	n, _ := statusField(b, "Threads:")
	kids, _ := os.ReadFile(dir + "/task/" + strconv.Itoa(pid) + "/children")
	for _, k := range strings.Fields(string(kids)) {
		if c, err := strconv.Atoi(k); err == nil {
			n += treeThreads(c)
		}
	}
	return n
}
