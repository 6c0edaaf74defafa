//go:build linux

package dio

import (
	"context"
	"io"
	"syscall"

	"github.com/uringdio/uringdio/internal/engine"

	"github.com/uringdio/uringdio/completion"
)

// readAhead is File.ReadAhead's reader (RocksDB's FilePrefetchBuffer,
// glommio's DmaStreamReader): a window of aligned chunk reads in flight
// ahead of the position, in slots.
type readAhead struct {
	f      *File
	chunk  int64
	slots  []raSlot
	head   int   // the slot holding pos
	pos    int64 // next byte Read returns
	next   int64 // file offset of the next chunk to read
	ended  bool  // a chunk came back short: no reads past it
	err    error
	closed bool
}

type raSlot struct {
	req  *Request
	buf  []byte
	off  int64
	busy bool
}

// ReadAhead returns a reader of f from off that keeps window reads of
// chunk bytes in flight ahead of its position, for scans and compactions:
// direct I/O bypasses the page cache, so the kernel's read-ahead does
// nothing. chunk is a multiple of the file's alignment, at most 1 MiB (0
// means 256 KiB); window 0 means 4. The window's buffers come from the
// engine's buffer memory (EngineOptions.BufferMemory), all at once, never
// waiting: where it has no room for all of them the window is smaller, and
// where it has none the reader reads synchronously, nothing ahead. It is for files that do not change
// under it, such as sstables: bytes it read ahead are not read again. Read
// copies into p: p is the caller's when Read returns. Close waits for the
// reads in flight and gives the buffers back; it does not close the File.
// The reader is not safe for concurrent use.
func (f *File) ReadAhead(off int64, chunk, window int) (io.ReadCloser, error) {
	r, err := f.newReadAhead(off, chunk, window)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return r, nil
}

func (f *File) newReadAhead(off int64, chunkSize, window int) (*readAhead, error) {
	a := f.align.Offset
	chunk := int64(chunkSize)
	if chunk <= 0 {
		chunk = 256 << 10
	}
	if chunk%a != 0 || chunk > engine.MaxBuffer || off < 0 {
		return nil, f.opErr("readahead", off, chunk, syscall.EINVAL)
	}
	if !f.mode.readable {
		return nil, f.opErr("readahead", off, chunk, writeOnlyErr{})
	}
	if window <= 0 {
		window = 4
	}
	// The window's buffers, in one step: as many as the engine's buffer
	// memory has room for now (engine.Pool); with none, Read reads
	// synchronously through bounce buffers, with nothing ahead.
	bufs, err := f.eng.Bufs.Reserve(window, chunk)
	if err != nil {
		return nil, f.opErr("readahead", off, chunk, err)
	}
	r := &readAhead{f: f, chunk: chunk, pos: off, next: off &^ (a - 1), slots: make([]raSlot, len(bufs))}
	for i := range r.slots {
		q := &Request{}
		q.Op, q.Policy = Read, completion.Wait
		r.slots[i] = raSlot{req: q, buf: bufs[i][:chunk]}
	}
	r.fill()
	return r, nil
}

// fill starts reads into every idle slot, in order from the head.
func (r *readAhead) fill() {
	for i := range r.slots {
		s := &r.slots[(r.head+i)%len(r.slots)]
		if s.busy || r.ended || r.err != nil {
			continue
		}
		if r.next > r.f.maxEnd()-r.chunk {
			r.ended = true // no direct read reaches past the last aligned block
			continue
		}
		s.off = r.next
		s.req.Off, s.req.Buf = s.off, s.buf
		if err := r.f.submit(s.req); err != nil {
			r.err = err
			return
		}
		s.busy = true
		r.next += r.chunk
	}
}

// Read reads up to len(p) bytes at the reader's position (io.Reader).
func (r *readAhead) Read(p []byte) (int, error) {
	if r.closed {
		return 0, r.f.opErr("read", r.pos, int64(len(p)), ErrClosed)
	}
	if len(r.slots) == 0 {
		n, err := r.f.bounceRead(context.Background(), p, r.pos, 0)
		r.pos += int64(n)
		return n, err
	}
	done := 0
	for done < len(p) {
		s := &r.slots[r.head]
		if !s.busy {
			if r.err != nil {
				return done, r.err
			}
			return done, io.EOF
		}
		n, err := s.req.Wait(context.Background())
		if err != nil && err != io.EOF {
			r.err = err
			s.busy = false
			return done, err
		}
		if err == io.EOF {
			r.ended = true
		}
		end := s.off + int64(n)
		if r.pos >= s.off && r.pos < end { // (chunks read past the end hold nothing)
			k := copy(p[done:], s.buf[r.pos-s.off:n])
			done += k
			r.pos += int64(k)
		}
		if r.pos >= s.off && r.pos < end {
			break // p is full; the slot has more
		}
		s.busy = false
		r.head = (r.head + 1) % len(r.slots)
		if r.ended && !r.slots[r.head].busy {
			if done == 0 {
				return 0, io.EOF
			}
			break
		}
		r.fill()
		if done > 0 {
			// Return what is here rather than wait for the next chunk.
			break
		}
	}
	return done, nil
}

// Close waits for the reads in flight and gives the buffers back. It does
// not close the File.
func (r *readAhead) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	bufs := make([][]byte, 0, len(r.slots))
	for i := range r.slots {
		s := &r.slots[i]
		if s.busy {
			s.req.Wait(context.Background())
			s.busy = false
		}
		bufs = append(bufs, s.buf)
		s.buf = nil
	}
	r.f.eng.Bufs.Release(bufs)
	return nil
}
