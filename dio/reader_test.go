//go:build linux

package dio_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/uringdio/uringdio/dio"
)

// TestReaderReadsSequentially: a Reader from any offset, read with buffers
// of any size, returns exactly the file's bytes from there, then io.EOF.
func TestReaderReadsSequentially(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scan")
	data := make([]byte, 3<<20+777)
	fillRand(newRand(9), data)
	writeSynced(t, path, data)
	f, err := dio.Open(path, os.O_RDONLY, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rnd := newRand(10)
	for _, off := range []int64{0, 1, 4095, 1 << 20, int64(len(data)) - 5, int64(len(data)), int64(len(data)) + 9000} {
		for _, o := range []struct{ chunk, window int }{{0, 0}, {4096, 1}, {64 << 10, 8}} {
			r, err := f.ReadAhead(off, o.chunk, o.window)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for {
				p := make([]byte, 1+rnd.IntN(200000))
				n, err := r.Read(p)
				got = append(got, p[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					t.Fatal("Read returned 0 bytes and no error")
				}
			}
			want := data[min(off, int64(len(data))):]
			if !bytes.Equal(got, want) {
				t.Fatalf("Reader from %d with %+v: %d bytes, want %d: %s", off, o, len(got), len(want), firstDiff(got, want))
			}
			if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Fatalf("Read after EOF = %d, %v", n, err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestReaderKeepsReadsInFlight: the Reader's window is in flight ahead of
// the position: after the first Read returns, more than one chunk has
// been submitted.
func TestReaderKeepsReadsInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ahead")
	data := make([]byte, 2<<20)
	writeSynced(t, path, data)
	f, err := dio.Open(path, os.O_RDONLY, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := f.ReadAhead(0, 64<<10, 6)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	// The first Read took 100 bytes of the first chunk: every slot still
	// holds a read the engine accepted. (Counting the engine's SQEs
	// instead needs a wait: the owner counts an SQE when it hands it to
	// the kernel, which may be after Submit returned.)
	if n := dio.ReadAheadSubmittedForTest(r); n != 6 {
		t.Fatalf("%d reads submitted after the first Read, want the window of 6", n)
	}
}
