package iomap

import (
	"errors"
	"syscall"
	"testing"
)

func TestStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Hole.String(), "hole"},
		{Mapped.String(), "mapped"},
		{Unwritten.String(), "unwritten"},
		{Inline.String(), "inline"},
		{Delalloc.String(), "delalloc"},
		{Type(9).String(), "Type(9)"},
		{Flags(0).String(), "none"},
		{FlagNew.String(), "new"},
		{(FlagNew | FlagShared).String(), "new|shared"},
		{(FlagDirty | FlagStale).String(), "dirty|stale"},
		{(FlagShared | 1<<FlagPrivateShift).String(), "shared|0x100"},
		{Flags(1 << FlagPrivateShift).String(), "0x100"},
		{OpFlags(0).String(), "read"},
		{(OpWrite | OpNoWait | OpDirect).String(), "write|nowait|direct"},
		{(OpOverwriteOnly).String(), "read|overwrite-only"},
		{(OpWrite | 1<<20).String(), "write|0x100000"},
		{Mapping{Offset: 0, Length: 4096, Type: Mapped, Flags: FlagNew, Addr: 8192}.String(),
			"mapped [0,4096) flags=new target=0 addr=8192"},
		{Mapping{Offset: 10, Length: 5, Type: Hole, Addr: NoAddr}.String(),
			"hole [10,15) flags=none target=0 addr=none"},
		{Mapping{Offset: 0, Length: 8, Type: Inline, Addr: NoAddr, Data: []byte("abc"), Target: 2, BlockSize: 512}.String(),
			"inline [0,8) flags=none target=2 addr=none bs=512 data=3B"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestMappingAddrAt(t *testing.T) {
	m := Mapping{Offset: 4096, Length: 8192, Type: Mapped, Addr: 1 << 20}
	if got := m.AddrAt(5000); got != 1<<20+904 {
		t.Fatalf("AddrAt(5000) = %d", got)
	}
	m = Mapping{Offset: 4096, Length: 8192, Type: Hole, Addr: NoAddr}
	if got := m.AddrAt(5000); got != NoAddr {
		t.Fatalf("hole AddrAt(5000) = %d", got)
	}
	if m.End() != 4096+8192 {
		t.Fatalf("End() = %d", m.End())
	}
}

func TestWholeFile(t *testing.T) {
	w := NewWholeFile(10000)
	for _, tc := range []struct {
		pos  int64
		op   OpFlags
		want Mapping
		err  error
	}{
		{0, 0, Mapping{Offset: 0, Length: 10000, Type: Mapped, Addr: 0}, nil},
		{9999, OpWrite, Mapping{Offset: 0, Length: 10000, Type: Mapped, Addr: 0}, nil},
		{10000, 0, Mapping{Offset: 10000, Length: maxOff - 10000, Type: Hole, Addr: NoAddr}, nil},
		{20000, OpNoWait, Mapping{Offset: 10000, Length: maxOff - 10000, Type: Hole, Addr: NoAddr}, nil},
		{10000, OpWrite, Mapping{Offset: 10000, Length: maxOff - 10000, Type: Mapped, Addr: 10000}, nil},
		{5000, OpWrite | OpOverwriteOnly, Mapping{Offset: 0, Length: 10000, Type: Mapped, Addr: 0}, nil},
		{10000, OpWrite | OpOverwriteOnly, Mapping{}, syscall.EAGAIN},
	} {
		m, err := w.Begin(tc.pos, 4096, tc.op)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Begin(%d, %v) error %v, want %v", tc.pos, tc.op, err, tc.err)
			}
			continue
		}
		if err != nil || m.String() != tc.want.String() {
			t.Errorf("Begin(%d, %v) = %v, %v; want %v", tc.pos, tc.op, m, err, tc.want)
		}
		if err := checkMapping(&m, tc.pos); err != nil {
			t.Error(err)
		}
	}
	if _, err := w.Begin(-1, 10, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Begin(-1) error %v, want EINVAL", err)
	}
	w.ExtendSize(5000)
	if w.Size() != 10000 {
		t.Fatalf("ExtendSize shrank the size to %d", w.Size())
	}
	w.ExtendSize(12000)
	w.SetSize(11000)
	if w.Size() != 11000 {
		t.Fatalf("Size() = %d, want 11000", w.Size())
	}
	w.SetSize(0)
	if m, err := w.Begin(0, 1, 0); err != nil || m.Type != Hole || m.Offset != 0 {
		t.Fatalf("empty file: %v, %v", m, err)
	}
}
