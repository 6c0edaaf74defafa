//go:build linux

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), config{Chunk: 256 << 10, Inflight: 4}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	s := out.String()
	for _, want := range []string{"bytes: identical", "unwritten []", "skipped"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if _, err := exec.LookPath("filefrag"); err == nil && !strings.Contains(s, "written blocks (logical) match") {
		t.Error("filefrag is installed but its layouts were not compared")
	}
}

// Edge cases: empty, all hole, one short block, data at an unaligned end
// right after a hole.
func TestCopyShapes(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(f *os.File) error
	}{
		{"empty", func(f *os.File) error { return nil }},
		{"all hole", func(f *os.File) error { return f.Truncate(8 << 20) }},
		{"100 bytes", func(f *os.File) error { _, err := f.Write(bytes.Repeat([]byte("x"), 100)); return err }},
		{"hole then unaligned tail", func(f *os.File) error {
			_, err := f.WriteAt(bytes.Repeat([]byte{7}, 5000), 3<<20+512)
			return err
		}},
		{"trailing hole", func(f *os.File) error {
			if _, err := f.WriteAt(bytes.Repeat([]byte{9}, 8192), 0); err != nil {
				return err
			}
			return f.Truncate(4<<20 + 3)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			f, err := os.Create(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.make(f); err != nil {
				t.Fatal(err)
			}
			f.Close()
			var out bytes.Buffer
			if err := run(context.Background(), config{Src: src, Chunk: 64 << 10, Inflight: 3}, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), "bytes: identical") {
				t.Errorf("output:\n%s", out.String())
			}
		})
	}
}
