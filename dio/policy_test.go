//go:build linux

package dio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

// seg is one extent of a layoutMapper.
type seg struct {
	off, n int64
	typ    iomap.Type
	flags  iomap.Flags
	bs     int64 // BlockSize reported (sub-block zeroing)
	data   []byte
}

// layoutMapper maps a file onto itself (Target 0, Addr == offset) with the
// types and flags of its layout, so every iomap case can be driven against
// a real file. It converts unwritten and new extents at IOComplete, like a
// filesystem, and records the calls.
type layoutMapper struct {
	mu        sync.Mutex
	segs      []seg
	completes []string
}

func (l *layoutMapper) Begin(pos, length int64, op iomap.OpFlags) (iomap.Mapping, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		if pos >= s.off && pos < s.off+s.n {
			m := iomap.Mapping{Offset: s.off, Length: s.n, Type: s.typ, Flags: s.flags, Addr: s.off, BlockSize: s.bs, Data: s.data}
			if s.typ == iomap.Hole || s.typ == iomap.Delalloc {
				m.Addr = iomap.NoAddr
			}
			return m, nil
		}
	}
	return iomap.Mapping{Offset: pos, Length: length, Type: iomap.Hole, Addr: iomap.NoAddr}, nil
}

func (l *layoutMapper) End(pos, length, done int64, op iomap.OpFlags, m *iomap.Mapping) error {
	return nil
}

func (l *layoutMapper) IOComplete(pos, length int64, op iomap.OpFlags, err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.completes = append(l.completes, fmt.Sprintf("%d+%d", pos, length))
	if err != nil {
		return nil
	}
	for i := range l.segs {
		s := &l.segs[i]
		if s.off < pos+length && pos < s.off+s.n && (s.typ == iomap.Unwritten || s.typ == iomap.Hole) {
			s.typ = iomap.Mapped
			s.flags &^= iomap.FlagNew
		}
	}
	return nil
}

const segSize = 16 * blk

// layout: one 64 KiB segment per case, in this order.
func newLayout() *layoutMapper {
	inline := make([]byte, segSize)
	fill(inline, 9)
	return &layoutMapper{segs: []seg{
		{off: 0 * segSize, n: segSize, typ: iomap.Mapped},
		{off: 1 * segSize, n: segSize, typ: iomap.Hole},
		{off: 2 * segSize, n: segSize, typ: iomap.Unwritten},
		{off: 3 * segSize, n: segSize, typ: iomap.Mapped, flags: iomap.FlagNew, bs: segSize},
		{off: 4 * segSize, n: segSize, typ: iomap.Mapped, flags: iomap.FlagShared},
		{off: 5 * segSize, n: segSize, typ: iomap.Inline, data: inline},
		{off: 6 * segSize, n: segSize, typ: iomap.Delalloc},
	}}
}

// TestMappingTypesPolicies runs every mapping type × read/write × policy
// against a real file, verifying every byte and the policy chosen.
func TestMappingTypesPolicies(t *testing.T) {
	policies := []completion.Policy{completion.Default, completion.Wait, completion.Inline, completion.Caller, completion.Pool}
	names := []string{"mapped", "hole", "unwritten", "new", "shared", "inline", "delalloc"}
	for si, name := range names {
		for _, op := range []Op{Read, Write} {
			for _, p := range policies {
				for _, sync := range []bool{false, true} {
					mode := "async"
					if sync {
						mode = "sync"
					}
					t.Run(fmt.Sprintf("%s/%s/%s/%s", name, op, p, mode), func(t *testing.T) {
						testMappingCase(t, si, op, p, sync)
					})
				}
			}
		}
	}
}

func testMappingCase(t *testing.T, si int, op Op, p completion.Policy, sync bool) {
	lm := newLayout()
	f, path := openTemp(t, &Options{Mapper: lm})
	// The backing file holds a known pattern everywhere.
	const total = 7 * segSize
	orig := make([]byte, total)
	fill(orig, 1)
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	f.Truncate(total)
	s := lm.segs[si]
	// Write/read 4 KiB in the middle of the segment (sub-block for "new").
	off := s.off + 4*blk
	buf := abuf(t, 2*blk)
	fill(buf, 77)
	want := append([]byte(nil), buf...)
	req := &Request{Op: op, Off: off, Buf: buf, Policy: p}
	var ran completion.Policy
	var n int
	var err error
	if sync {
		if op == Read {
			n, err = f.ReadAt(buf, off)
		} else {
			n, err = f.WriteAt(buf, off)
		}
		ran = completion.Wait
	} else {
		q := &completion.Queue{}
		req.Queue = q
		if err := f.Submit(req); err != nil {
			if s.typ == iomap.Delalloc && errors.Is(err, errDelalloc) {
				return
			}
			if s.typ == iomap.Inline && op == Write && errors.Is(err, ErrUnsupported) {
				return
			}
			t.Fatalf("Submit: %v", err)
		}
		n, err = req.Wait(context.Background())
		ran, _ = req.EffectivePolicy()
	}
	if s.typ == iomap.Delalloc {
		if !errors.Is(err, errDelalloc) {
			t.Fatalf("delalloc: %v, want errDelalloc", err)
		}
		return
	}
	if s.typ == iomap.Inline && op == Write {
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("write to inline data: %v, want ErrUnsupported", err)
		}
		return
	}
	if err != nil || n != len(buf) {
		t.Fatalf("%v: n=%d err=%v", op, n, err)
	}

	// The policy: what choose.Choose allows for these facts.
	pure := s.typ == iomap.Mapped && s.flags == 0
	wantPolicy := p
	switch {
	case sync:
		wantPolicy = completion.Wait
	case p == completion.Default && op == Read:
		wantPolicy = completion.Inline
	case op == Write && !pure:
		wantPolicy = completion.Pool
	case p == completion.Default:
		wantPolicy = completion.Inline
	}
	if ran != wantPolicy {
		t.Errorf("ran under %v, want %v", ran, wantPolicy)
	}

	disk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if op == Read {
		var exp []byte
		switch s.typ {
		case iomap.Hole, iomap.Unwritten:
			exp = make([]byte, len(buf))
		case iomap.Inline:
			exp = s.data[off-s.off : off-s.off+int64(len(buf))]
		default:
			exp = orig[off : off+int64(len(buf))]
		}
		if !bytes.Equal(buf, exp) {
			t.Fatalf("read of %v returned wrong bytes", s.typ)
		}
		if !bytes.Equal(disk, orig) {
			t.Fatal("a read changed the file")
		}
		return
	}
	// Write: the data is there, and nothing else moved, except sub-block
	// zeroing of a new block.
	exp := append([]byte(nil), orig...)
	copy(exp[off:], want)
	if s.bs > 0 && s.flags&iomap.FlagNew != 0 {
		clear(exp[s.off:off])
		clear(exp[off+int64(len(want)) : s.off+s.n])
	}
	if !bytes.Equal(disk, exp) {
		for i := range disk {
			if disk[i] != exp[i] {
				t.Fatalf("file differs at %d (segment %d): got %d want %d", i, i/segSize, disk[i], exp[i])
			}
		}
	}
	if !pure && len(lm.completes) != 1 {
		t.Errorf("IOComplete calls %v, want one for a non-overwrite write", lm.completes)
	}
	if pure && len(lm.completes) != 0 {
		t.Errorf("IOComplete called %v for a pure overwrite", lm.completes)
	}
}

// TestDSyncWriteThrough: a DSYNC pure overwrite carries RWF_DSYNC on its
// SQE and may complete deferred; a DSYNC write that extends the file runs
// fdatasync on the pool instead.
func TestDSyncWriteThrough(t *testing.T) {
	var mu sync.Mutex
	var flags []uint32
	hook := func(r *Request, sqe *ring.SQE) {
		mu.Lock()
		flags = append(flags, sqe.OpFlags)
		mu.Unlock()
	}
	f, _ := openTemp(t, &Options{submitHook: hook})
	buf := abuf(t, blk)
	if _, err := f.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	flags = nil
	q := &completion.Queue{}
	r := &Request{Op: Write, Off: 0, Buf: buf, Flags: DSync, Policy: completion.Caller, Queue: q}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Wait(context.Background()); n != blk || err != nil {
		t.Fatal(n, err)
	}
	if p, why := r.EffectivePolicy(); p != completion.Caller {
		t.Errorf("DSYNC overwrite ran under %v (%v), want Caller", p, why)
	}
	if len(flags) != 1 || flags[0]&ring.RWFDSync == 0 {
		t.Errorf("SQE flags %v, want RWF_DSYNC", flags)
	}
	flags = nil
	r = &Request{Op: Write, Off: blk, Buf: buf, Flags: DSync, Policy: completion.Caller, Queue: q}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Wait(context.Background()); n != blk || err != nil {
		t.Fatal(n, err)
	}
	// On a kernel file an extending DSYNC write is written through as well:
	// the kernel makes the size durable with the data before it completes.
	if p, why := r.EffectivePolicy(); p != completion.Caller {
		t.Errorf("extending DSYNC write on a kernel file ran under %v (%v), want Caller", p, why)
	}
	if len(flags) != 1 || flags[0]&ring.RWFDSync == 0 {
		t.Errorf("extending write's SQE flags %v, want RWF_DSYNC", flags)
	}
	if SizeForTest(t, f) != 2*blk {
		t.Errorf("size %d after extending write, want %d", SizeForTest(t, f), 2*blk)
	}
}

// TestDSyncOnMappedFile: through a mapper, only a pure overwrite is written
// through; a write that extends the file gets an fdatasync on the pool
// after its data, once the mapper has taken the new size.
func TestDSyncOnMappedFile(t *testing.T) {
	var mu sync.Mutex
	var flags []uint32
	hook := func(r *Request, sqe *ring.SQE) {
		mu.Lock()
		flags = append(flags, sqe.OpFlags)
		mu.Unlock()
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	fm, err := iomap.NewFileMapper(int(mf.Fd()), iomap.FileMapperOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, os.O_RDWR, 0, &Options{Mapper: fm, submitHook: hook})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := abuf(t, blk)
	q := &completion.Queue{}
	r := &Request{Op: Write, Off: 0, Buf: buf, Flags: DSync, Policy: completion.Caller, Queue: q}
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Wait(context.Background()); n != blk || err != nil {
		t.Fatal(n, err)
	}
	if p, why := r.EffectivePolicy(); p != completion.Pool || why != completion.DowngradeNotOverwrite && why != completion.DowngradeExtends {
		t.Errorf("extending DSYNC write ran under %v (%v), want Pool", p, why)
	}
	if len(flags) != 1 || flags[0]&ring.RWFDSync != 0 {
		t.Errorf("extending write's SQE flags %v, want no RWF_DSYNC (fdatasync after)", flags)
	}
	if SizeForTest(t, f) != blk {
		t.Errorf("size %d after extending write, want %d", SizeForTest(t, f), blk)
	}
}

// TestDowngrades shows each downgrade the engine makes, with its reason,
// on real requests, and that EffectivePolicy says so as soon as Submit
// returns (a caller that asked for Caller and got Pool must learn it
// there: its Queue will never see the request).
func TestDowngrades(t *testing.T) {
	lm := &layoutMapper{segs: []seg{
		{off: 0, n: 8 * blk, typ: iomap.Mapped},
		{off: 8 * blk, n: 8 * blk, typ: iomap.Hole},
	}}
	f, path := openTemp(t, &Options{Mapper: lm})
	os.WriteFile(path, make([]byte, 16*blk), 0o600)
	f.Truncate(16 * blk)
	b := abuf(t, blk)
	for _, tc := range []struct {
		name       string
		op         Op
		off        int64
		flags      Flags
		ask        completion.Policy
		want       completion.Policy
		wantReason completion.Reason
	}{
		{"read default", Read, 0, 0, completion.Default, completion.Inline, completion.NoDowngrade},
		{"read polled on a plain ring", Read, 0, 0, completion.Polled, completion.Inline, completion.DowngradeNotPolledRing},
		{"pure overwrite caller", Write, 0, 0, completion.Caller, completion.Caller, completion.NoDowngrade},
		{"write into a hole", Write, 8 * blk, 0, completion.Caller, completion.Pool, completion.DowngradeNotOverwrite},
		{"extending write", Write, 16 * blk, 0, completion.Caller, completion.Pool, completion.DowngradeNotOverwrite},
		{"O_SYNC-like overwrite", Write, 0, Sync, completion.Caller, completion.Pool, completion.DowngradeNeedsSync},
		{"dsync overwrite is write-through", Write, blk, DSync, completion.Caller, completion.Caller, completion.NoDowngrade},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Request{Op: tc.op, Off: tc.off, Buf: b, Flags: tc.flags, Policy: tc.ask}
			if err := f.Submit(r); err != nil {
				t.Fatal(err)
			}
			early, earlyWhy := r.EffectivePolicy()
			if _, err := r.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, why := r.EffectivePolicy()
			if early != got || earlyWhy != why {
				t.Errorf("after Submit: %v (%v); after Wait: %v (%v)", early, earlyWhy, got, why)
			}
			if got != tc.want || (tc.wantReason != completion.NoDowngrade && why != tc.wantReason) {
				t.Errorf("ran under %v (%v), want %v (%v)", got, why, tc.want, tc.wantReason)
			}
		})
	}
}
