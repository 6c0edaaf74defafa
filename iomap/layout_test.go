package iomap

import (
	"fmt"
	"syscall"
)

// seg is one run of a test layout.
type seg struct {
	len   int64
	typ   Type
	flags Flags
}

// call records one Begin or End a mapper saw.
type call struct {
	end               bool
	pos, length, done int64
	op                OpFlags
}

// layoutMapper serves mappings from a fixed layout of runs and records the
// calls it gets. Beyond the layout everything is a hole. Not safe for
// concurrent use: the iterator tests drive it from one goroutine.
type layoutMapper struct {
	segs   []seg
	maxLen int64 // > 0: mappings start at pos and are at most this long

	staleOnce map[int64]bool // first Begin at these positions returns FlagStale
	staleAll  bool           // every mapping is stale
	beginErr  map[int64]error
	endErr    error

	calls []call
}

func (l *layoutMapper) total() int64 {
	var n int64
	for _, s := range l.segs {
		n += s.len
	}
	return n
}

// at returns the run containing pos and its start.
func (l *layoutMapper) at(pos int64) (seg, int64) {
	var off int64
	for _, s := range l.segs {
		if pos < off+s.len {
			return s, off
		}
		off += s.len
	}
	return seg{len: maxOff - off, typ: Hole}, off
}

func (l *layoutMapper) Begin(pos, length int64, op OpFlags) (Mapping, error) {
	l.calls = append(l.calls, call{pos: pos, length: length, op: op})
	if err := l.beginErr[pos]; err != nil {
		return Mapping{}, err
	}
	s, off := l.at(pos)
	m := Mapping{Offset: off, Length: s.len, Type: s.typ, Flags: s.flags, Addr: NoAddr}
	if s.typ == Mapped || s.typ == Unwritten {
		m.Addr = 1<<40 + off
	}
	if l.maxLen > 0 {
		end := min(m.End(), pos+l.maxLen)
		if m.Addr != NoAddr {
			m.Addr += pos - off
		}
		m.Offset, m.Length = pos, end-pos
	}
	if l.staleAll || l.staleOnce[pos] {
		delete(l.staleOnce, pos)
		m.Flags |= FlagStale
	}
	return m, nil
}

func (l *layoutMapper) End(pos, length, done int64, op OpFlags, m *Mapping) error {
	l.calls = append(l.calls, call{end: true, pos: pos, length: length, done: done, op: op})
	return l.endErr
}

func (l *layoutMapper) String() string { return fmt.Sprint(l.segs) }

var errBody = fmt.Errorf("iomap test: body failed: %w", syscall.EIO)
