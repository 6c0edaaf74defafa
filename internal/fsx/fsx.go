// Package fsx holds the pieces of an fsx-style model checker for direct
// I/O: an in-memory model of a file's bytes and sizes, an operation log
// that keeps the last operations for a failure report, and helpers that
// compare what was read with what the model expects.
//
// The model keeps two sizes. KSize is the size the kernel has (what fstat
// reports); VSize is the size the File under test believes (reads are
// short there). They differ only after a write failed part way: the
// kernel may have extended the file while the File did not count it.
//
// A Model is not safe for concurrent use; a Log is.
package fsx

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
)

// Model is the expected content of one file.
type Model struct {
	data  []byte // kernel content over [0, len(data)); zeroes past KSize
	KSize int64
	VSize int64
}

// NewModel returns the model of an empty file.
func NewModel() *Model { return &Model{} }

func (m *Model) grow(n int64) {
	if int64(len(m.data)) < n {
		if int64(cap(m.data)) >= n {
			m.data = m.data[:n]
		} else {
			d := make([]byte, n, n+n/2)
			copy(d, m.data)
			m.data = d
		}
	}
}

// Write records a complete write of p at off.
func (m *Model) Write(off int64, p []byte) {
	m.grow(off + int64(len(p)))
	copy(m.data[off:], p)
	m.KSize = max(m.KSize, off+int64(len(p)))
	m.VSize = max(m.VSize, off+int64(len(p)))
}

// Set records bytes found on disk at off (after a failed write), without
// moving the sizes.
func (m *Model) Set(off int64, p []byte) {
	m.grow(off + int64(len(p)))
	copy(m.data[off:], p)
}

// Truncate records a truncate to n: both sizes become n, bytes past it
// zeroes.
func (m *Model) Truncate(n int64) {
	if n < int64(len(m.data)) {
		clear(m.data[n:])
	}
	m.KSize, m.VSize = n, n
}

// Allocate records fallocate mode 0 of [off, off+n): data unchanged,
// the sizes extended with zeroes.
func (m *Model) Allocate(off, n int64) {
	m.KSize = max(m.KSize, off+n)
	m.VSize = max(m.VSize, off+n)
}

// Punch records a hole punched over [off, off+n) (keeping the size).
func (m *Model) Punch(off, n int64) {
	end := min(off+n, int64(len(m.data)))
	if off < end {
		clear(m.data[off:end])
	}
}

// Reopen records that the file was closed and opened again: the File now
// believes the kernel's size.
func (m *Model) Reopen() { m.VSize = m.KSize }

// Bytes returns the model's bytes over [off, off+n) (zeroes where it has
// none). The slice is a copy.
func (m *Model) Bytes(off, n int64) []byte {
	b := make([]byte, n)
	if off < int64(len(m.data)) {
		copy(b, m.data[off:min(off+n, int64(len(m.data)))])
	}
	return b
}

// Content returns the whole file as the kernel should have it.
func (m *Model) Content() []byte { return m.Bytes(0, m.KSize) }

// ExpectRead returns how many bytes a read of n at off returns (the File
// stops at VSize) and whether it reports io.EOF.
func (m *Model) ExpectRead(off, n int64) (got int64, eof bool) {
	if off >= m.VSize {
		return 0, true
	}
	if off+n > m.VSize {
		return m.VSize - off, true
	}
	return n, false
}

// Check compares got, read at off, with the model and returns a
// description of the first difference, or "".
func (m *Model) Check(off int64, got []byte) string {
	want := m.Bytes(off, int64(len(got)))
	return Diff(off, got, want)
}

// Diff describes the first difference between got and want (both starting
// at file offset off), or returns "".
func Diff(off int64, got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	j := i
	for j < len(got) && j < len(want) && got[j] != want[j] {
		j++
	}
	lo := i &^ 15
	hi := min(lo+32, len(got), len(want))
	return fmt.Sprintf("first difference at file offset %d (%#x), %d bytes differ from there; bad run ends at %d\n  got  %x\n  want %x",
		off+int64(i), off+int64(i), j-i, off+int64(j), got[lo:hi], want[lo:hi])
}

// Log keeps the last operations for a failure report. It is safe for
// concurrent use: a hang watchdog prints it while the run that adds to it
// is stuck.
type Log struct {
	mu   sync.Mutex
	ops  []string
	next int
	n    int
}

// NewLog returns a log that keeps the last keep operations.
func NewLog(keep int) *Log { return &Log{ops: make([]string, keep)} }

// Add appends an operation.
func (l *Log) Add(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops[l.next] = fmt.Sprintf("%7d ", l.n) + s
	l.next = (l.next + 1) % len(l.ops)
	l.n++
}

// Len returns how many operations were added in all.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// String returns the kept operations, oldest first.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	k := min(l.n, len(l.ops))
	for i := 0; i < k; i++ {
		b.WriteString(l.ops[(l.next-k+i+len(l.ops))%len(l.ops)])
		b.WriteByte('\n')
	}
	return b.String()
}
