package iomap

import (
	"fmt"
	"syscall"
	"unsafe"
)

// maxStaleRetries bounds how often Iter re-maps a position whose mapping came
// back FlagStale without any progress, so a mapper that keeps invalidating
// cannot spin a request forever.
const maxStaleRetries = 16

// Iter is the iomap_iter() loop: it walks [pos, pos+length) one Mapping at
// a time. Usage:
//
//	it := iomap.NewIter(off, n, op)
//	for it.Next(mapper) {
//		m := it.Mapping()
//		// handle [it.Pos(), it.Pos()+it.Len()), which lies inside m
//		if err := work(m, it.Pos(), it.Len()); err != nil {
//			it.SetErr(err)
//			continue
//		}
//		it.Advance(it.Len())
//	}
//	err, done := it.Err(), it.Done()
//
// The rules are the kernel's. Next calls Mapper.Begin with the remaining
// range and exposes the mapping; the body may call Advance any number of
// times, each by at most Len(), which shrinks as it advances. The next call
// to Next first calls Mapper.End with the position and length Begin was
// asked for (trimmed to the mapping) and the bytes actually advanced, then
// stops when:
//
//   - an error was set by the body (SetErr, or Advance past the mapping) or
//     returned by Begin or End: the first error wins and Err reports it;
//   - nothing is left (Remaining is 0);
//   - the body advanced nothing, unless the mapping carried FlagStale, in
//     which case the same position is mapped again, at most 16 times in a
//     row before Err reports syscall.ESTALE.
//
// Unlike the kernel, an error from End stops the loop even when the body
// advanced; Done still counts the bytes advanced.
//
// Iter does not allocate: keep it on the stack or embed it in a longer-lived
// request and Reset it. Its methods are not safe for concurrent use; one
// goroutine drives one loop.
type Iter struct {
	pos     int64 // current position
	len     int64 // bytes left from pos to the end of the range
	start   int64 // pos when the current mapping was begun
	done    int64 // bytes advanced over the whole loop
	op      OpFlags
	state   iterState
	retries uint8 // stale mappings in a row without progress
	m       Mapping
	err     error
}

type iterState uint8

const (
	iterIdle   iterState = iota // Reset, Next not called yet
	iterMapped                  // the body runs on it.m
	iterDone                    // Next returned false
)

// NewIter returns an Iter over [pos, pos+length) for operation op.
func NewIter(pos, length int64, op OpFlags) Iter {
	var it Iter
	it.Reset(pos, length, op)
	return it
}

// Reset makes it an Iter over [pos, pos+length) for operation op, dropping
// any previous state. A negative position or length, or a range that
// overflows, makes the first Next fail with syscall.EINVAL. A zero length
// makes Next return false at once.
func (it *Iter) Reset(pos, length int64, op OpFlags) {
	*it = Iter{pos: pos, len: length, start: pos, op: op}
	if length != 0 && !validRange(pos, length) {
		it.err = errRange("Iter", pos, length)
	}
}

// Next ends the previous mapping, if any, and begins the next one. It
// returns false when the loop is over; Err then tells whether it ended on
// an error.
func (it *Iter) Next(mp Mapper) bool {
	switch it.state {
	case iterDone:
		return false
	case iterMapped:
		if !it.end(mp) {
			it.finish()
			return false
		}
		it.m = Mapping{}
	}
	if it.err != nil || it.len == 0 {
		it.finish()
		return false
	}
	m, err := mp.Begin(it.pos, it.len, it.op)
	if err == nil {
		err = checkMapping(&m, it.pos)
	}
	if err != nil {
		it.err = err
		it.finish()
		return false
	}
	it.m = m
	it.start = it.pos
	it.state = iterMapped
	return true
}

// end calls Mapper.End for the current mapping and reports whether the loop
// goes on.
func (it *Iter) end(mp Mapper) bool {
	advanced := it.pos - it.start
	length := it.len + advanced
	if rest := it.m.End() - it.start; length > rest {
		length = rest
	}
	// End receives a pointer to it.m. An interface call makes the compiler
	// assume the pointer escapes, which would move every Iter to the heap
	// and cost an allocation per request. The Mapper contract forbids End
	// from keeping m, so hiding the pointer from escape analysis is sound:
	// during the call m is an ordinary pointer argument, adjusted if the
	// stack moves.
	if err := mp.End(it.start, length, advanced, it.op, noescape(&it.m)); err != nil && it.err == nil {
		it.err = err
	}
	if it.err != nil || it.len == 0 {
		return false
	}
	if advanced > 0 {
		it.retries = 0
		return true
	}
	if it.m.Flags&FlagStale == 0 {
		return false
	}
	if it.retries++; it.retries > maxStaleRetries {
		it.err = fmt.Errorf("iomap: mapping at offset %d still stale after %d retries: %w",
			it.pos, maxStaleRetries, syscall.ESTALE)
		return false
	}
	return true
}

func (it *Iter) finish() {
	it.state = iterDone
	it.m = Mapping{}
}

// checkMapping rejects what a Mapper must never return: a mapping that is
// empty, overflows, does not contain pos, or has an unknown type.
func checkMapping(m *Mapping, pos int64) error {
	if m.Length <= 0 || m.Offset < 0 || m.Offset > maxOff-m.Length ||
		pos < m.Offset || pos >= m.End() || m.Type >= numTypes {
		return fmt.Errorf("iomap: mapper returned %v for offset %d: %w", *m, pos, syscall.EIO)
	}
	return nil
}

// noescape hides p from escape analysis; see Iter.end for why that is sound.
//
//go:nosplit
func noescape(p *Mapping) *Mapping {
	x := uintptr(unsafe.Pointer(p))
	return *(**Mapping)(unsafe.Pointer(&x))
}

// Mapping returns the current mapping. The pointer is valid until the next
// call to Next; the body may set private flags on it for End to see.
func (it *Iter) Mapping() *Mapping { return &it.m }

// Pos returns the current position: the start of the range still to do.
func (it *Iter) Pos() int64 { return it.pos }

// Len returns the bytes from Pos to the end of the current mapping or of the
// range, whichever comes first (the kernel's iomap_length). It is 0 outside
// the loop body.
func (it *Iter) Len() int64 {
	if it.state != iterMapped {
		return 0
	}
	n := it.m.End() - it.pos
	if n > it.len {
		n = it.len
	}
	return n
}

// Remaining returns the bytes from Pos to the end of the whole range.
func (it *Iter) Remaining() int64 { return it.len }

// Done returns the bytes advanced since Reset.
func (it *Iter) Done() int64 { return it.done }

// Op returns the operation flags the loop passes to the mapper.
func (it *Iter) Op() OpFlags { return it.op }

// Advance records that the body handled n more bytes from Pos. Advancing by
// a negative amount or past Len is an error wrapping syscall.EIO; it is
// returned and also set as the loop's error.
func (it *Iter) Advance(n int64) error {
	if n < 0 || n > it.Len() {
		err := fmt.Errorf("iomap: advance by %d at offset %d with %d bytes left in the mapping: %w",
			n, it.pos, it.Len(), syscall.EIO)
		it.SetErr(err)
		return err
	}
	it.pos += n
	it.len -= n
	it.done += n
	return nil
}

// SetErr stops the loop with err at the next call to Next, unless an
// earlier error was set; the first error wins. A nil err is ignored.
func (it *Iter) SetErr(err error) {
	if err != nil && it.err == nil {
		it.err = err
	}
}

// Err returns the error that stopped the loop, or nil.
func (it *Iter) Err() error { return it.err }

// Each runs body over [pos, pos+length) one mapping at a time with the
// rules of [Iter]. body gets the mapping, the position and the length left
// in the mapping; it returns how many bytes it handled (which are advanced
// even when it also returns an error) and an error that stops the loop. m
// is valid only during the call. Each returns the first error. Unlike a bare
// Iter it allocates its loop state once per call.
func Each(m Mapper, pos, length int64, op OpFlags, body func(m *Mapping, pos, length int64) (int64, error)) error {
	it := NewIter(pos, length, op)
	for it.Next(m) {
		n, err := body(it.Mapping(), it.Pos(), it.Len())
		if n != 0 {
			it.Advance(n)
		}
		it.SetErr(err)
	}
	return it.Err()
}
