//go:build linux

package dio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/uringdio/uringdio/dio"
	"golang.org/x/sys/unix"
)

// FuzzFileMatchesOSFile drives a dio.File and an os.File on two copies of
// one file with the same operations (ReadAt, WriteAt, Truncate,
// Preallocate) at any offset (negative, unaligned, near MaxInt64, near the
// file system's largest file) and length, through the default engine or an
// engine of the File's own. After each step both succeeded with the same
// count and bytes, or both failed (the error's text may differ), and the
// files are equal. The seed corpus is below and in
// testdata/fuzz/FuzzFileMatchesOSFile; CI runs a short fuzzing session.
func FuzzFileMatchesOSFile(f *testing.F) {
	seeds := [][]fuzzOp{
		{{kind: opWrite, off: 0, n: 5000, seed: 1}, {kind: opRead, off: 4093, n: 10}},
		{{kind: opWrite, off: math.MaxInt64 - 100, n: 4096}, {kind: opRead, off: 0x7ffffffffffff000, n: 8192}},
		{{kind: opWrite, off: math.MaxInt64 - 5, n: 10}, {kind: opRead, off: math.MaxInt64 - 5, n: 10}},
		{{kind: opWrite, off: math.MaxInt64 - 4096, n: 4096}, {kind: opRead, off: 3, n: 7}},
		{{kind: opWrite, off: -1, n: 10}, {kind: opRead, off: -4096, n: 4096}, {kind: opTruncate, off: -1}},
		{{kind: opWrite, off: 1<<44 - 4096, n: 8192, seed: 3}, {kind: opRead, off: 1<<44 - 8192, n: 16384}},
		{{kind: opWrite, off: 1<<44 - 3, n: 100, seed: 4}, {kind: opTruncate, off: 1<<44 + 1}},
		{{kind: opPrealloc, off: 8192, n: 1 << 16}, {kind: opWrite, off: 9000, n: 300, seed: 5}, {kind: opTruncate, off: 9001}, {kind: opRead, off: 0, n: 20000}},
		{{kind: opPrealloc, off: math.MaxInt64 - 10, n: 100}, {kind: opPrealloc, off: 0, n: 0}, {kind: opWrite, off: 100, n: 0}},
		{{kind: opWrite, off: 12345, n: 6789, seed: 6}, {kind: opTruncate, off: 13000}, {kind: opWrite, off: 20000, n: 10, seed: 7}, {kind: opRead, off: 12000, n: 9000}},
	}
	for i, ops := range seeds {
		f.Add(encodeFuzzOps(i%2 == 1, ops))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		own, ops := decodeFuzzOps(data)
		if len(ops) == 0 {
			return
		}
		dir := t.TempDir()
		var o *dio.Options
		if own {
			o = &dio.Options{EngineOptions: &dio.EngineOptions{QueueDepth: 16, Workers: 2}}
		}
		df, err := dio.Open(filepath.Join(dir, "dio"), os.O_RDWR|os.O_CREATE, 0o600, o)
		if err != nil {
			t.Fatal(err)
		}
		defer df.Close()
		of, err := os.OpenFile(filepath.Join(dir, "os"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer of.Close()
		for i, op := range ops {
			step := fmt.Sprintf("step %d %v", i, op)
			switch op.kind {
			case opRead:
				p, q := make([]byte, op.n), make([]byte, op.n)
				n, err := df.ReadAt(p, op.off)
				m, oerr := of.ReadAt(q, op.off)
				sameOutcome(t, step, n, err, m, oerr)
				if n == m && !bytes.Equal(p[:n], q[:m]) {
					t.Fatalf("%s: dio read other bytes than os.File", step)
				}
			case opWrite:
				p := fuzzBytes(op.n, op.seed)
				n, err := df.WriteAt(p, op.off)
				m, oerr := of.WriteAt(p, op.off)
				sameOutcome(t, step, n, err, m, oerr)
			case opTruncate:
				sameOutcome(t, step, 0, df.Truncate(op.off), 0, of.Truncate(op.off))
			case opPrealloc:
				oerr := unix.Fallocate(int(of.Fd()), unix.FALLOC_FL_KEEP_SIZE, op.off, op.n)
				sameOutcome(t, step, 0, df.Preallocate(op.off, op.n), 0, oerr)
			}
			sameFiles(t, step, df.Name(), of.Name())
		}
	})
}

const (
	opRead = iota
	opWrite
	opTruncate
	opPrealloc
	nOps
)

type fuzzOp struct {
	kind   int
	off, n int64
	seed   byte
}

func (o fuzzOp) String() string {
	return fmt.Sprintf("%s(off %d, n %d)", [...]string{"ReadAt", "WriteAt", "Truncate", "Preallocate"}[o.kind], o.off, o.n)
}

// The encoding: a byte for the engine, then per operation a byte (kind
// and data seed), a byte naming the offset's class, 8 bytes of offset and
// 2 of length. The classes put a random offset where the edges are: as it
// is (any int64), within the first MiB, just below MaxInt64, around 16 TiB
// (ext4's largest file with 4 KiB blocks).
const fuzzOpLen = 12

func encodeFuzzOps(own bool, ops []fuzzOp) []byte {
	b := []byte{0}
	if own {
		b[0] = 1
	}
	for _, o := range ops {
		b = append(b, byte(o.kind)|o.seed<<3, 0)
		b = binary.LittleEndian.AppendUint64(b, uint64(o.off))
		b = binary.LittleEndian.AppendUint16(b, uint16(o.n))
	}
	return b
}

// decodeFuzzOps reads what encodeFuzzOps writes; lengths go up to 64 KiB.
func decodeFuzzOps(b []byte) (own bool, ops []fuzzOp) {
	if len(b) == 0 {
		return false, nil
	}
	own, b = b[0]&1 == 1, b[1:]
	for len(b) >= fuzzOpLen && len(ops) < 12 {
		o := fuzzOp{kind: int(b[0]&7) % nOps, seed: b[0] >> 3}
		v := binary.LittleEndian.Uint64(b[2:])
		switch b[1] % 4 {
		case 0:
			o.off = int64(v)
		case 1:
			o.off = int64(v % (1 << 20))
		case 2:
			o.off = math.MaxInt64 - int64(v%(1<<17))
		case 3:
			o.off = 1<<44 - 1<<16 + int64(v%(1<<17))
		}
		o.n = int64(binary.LittleEndian.Uint16(b[10:]))
		ops, b = append(ops, o), b[fuzzOpLen:]
	}
	return own, ops
}

func fuzzBytes(n int64, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) ^ seed ^ byte(i>>8)
	}
	return p
}

// sameOutcome fails the test unless both calls succeeded with the same
// count (io.EOF counts as success: a read that ended) or both failed.
func sameOutcome(t *testing.T, step string, n int, err error, m int, oerr error) {
	t.Helper()
	failed := func(e error) bool { return e != nil && !errors.Is(e, io.EOF) }
	switch {
	case failed(err) != failed(oerr):
		t.Fatalf("%s: dio %d, %v; os.File %d, %v", step, n, err, m, oerr)
	case !failed(err) && (n != m || (err == nil) != (oerr == nil)):
		t.Fatalf("%s: dio %d, %v; os.File %d, %v", step, n, err, m, oerr)
	}
}

// sameFiles fails the test unless the two files have the same size and
// the same bytes wherever either holds data (SEEK_DATA: the files may be
// terabytes long and sparse).
func sameFiles(t *testing.T, step, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	sa, _ := fa.Seek(0, io.SeekEnd)
	sb, _ := fb.Seek(0, io.SeekEnd)
	if sa != sb {
		t.Fatalf("%s: dio's file is %d bytes, os.File's %d", step, sa, sb)
	}
	for _, f := range []*os.File{fa, fb} {
		for off := int64(0); off < sa; {
			d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
			if err != nil {
				break // no data past off
			}
			h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
			if err != nil {
				h = sa
			}
			for pos := d; pos < h; pos += 1 << 20 {
				n := min(h-pos, 1<<20)
				p, q := make([]byte, n), make([]byte, n)
				ra, _ := fa.ReadAt(p, pos)
				rb, _ := fb.ReadAt(q, pos)
				if ra != rb || !bytes.Equal(p, q) {
					i := 0
					for i < len(p) && p[i] == q[i] {
						i++
					}
					t.Fatalf("%s: the files differ at %d", step, pos+int64(i))
				}
			}
			off = h
		}
	}
}
