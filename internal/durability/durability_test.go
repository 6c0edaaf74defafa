//go:build linux

package durability_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/crashfs"
	"github.com/uringdio/uringdio/internal/durability"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
)

const size = 64 << 10

// dsyncWrite writes buf at off with DSync under the Caller policy, and
// returns the policy it ran under: Caller for a write-through write
// (RWF_DSYNC on the SQE), Pool when the engine downgraded it because the
// completion needs an fdatasync.
func dsyncWrite(t *testing.T, f *dio.File, buf []byte, off int64) completion.Policy {
	t.Helper()
	done := make(chan struct{})
	r := new(dio.Request)
	r.Op, r.Off, r.Buf, r.Flags, r.Policy = dio.Write, off, buf, dio.DSync, completion.Caller
	r.Callback = func(*dio.Request) { close(done) }
	if err := f.Submit(r); err != nil {
		t.Fatal(err)
	}
	p, _ := r.EffectivePolicy()
	if p == completion.Caller {
		r.Wait(context.Background())
	}
	<-done
	if _, err := r.Result(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSkipSyncMakesDioLie checks each place SkipSync is wired into dio, on
// ext4 over the block-level crash file system: File.Datasync and
// File.Sync (syncTargets), a DSync write that needs an fdatasync at
// completion (RunCompletion: on a mapped file, one that extends it), and
// DSync writes written through (launch: RWF_DSYNC, on a kernel file even
// when it extends the file).
// With the switch off every write survives a crash; with it on, every
// one is lost, though every call reported success.
func TestSkipSyncMakesDioLie(t *testing.T) {
	m, err := crashfs.MountBlock(t, crashfs.BlockOptions{FS: "ext4"})
	if errors.Is(err, crashfs.ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	buf, err := ring.Alloc(size)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Free(buf)
	old := bytes.Repeat([]byte{'o'}, size)

	ways := []struct {
		name   string
		write  func(t *testing.T, f *dio.File)
		end    int64 // the file's size after the write
		mapped bool  // through an opted-in FileMapper
	}{
		{"Datasync", func(t *testing.T, f *dio.File) {
			if _, err := f.WriteAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Datasync(); err != nil {
				t.Fatal(err)
			}
		}, size, false},
		{"Sync", func(t *testing.T, f *dio.File) {
			if _, err := f.WriteAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}, size, false},
		{"DSync write-through", func(t *testing.T, f *dio.File) {
			if p := dsyncWrite(t, f, buf, 0); p != completion.Caller {
				t.Fatalf("a DSync overwrite of written blocks ran under %v, not written through", p)
			}
		}, size, false},
		{"DSync extending", func(t *testing.T, f *dio.File) {
			if p := dsyncWrite(t, f, buf, size); p != completion.Caller {
				t.Fatalf("a DSync write that extends a kernel file ran under %v, not written through", p)
			}
		}, 2 * size, false},
		{"DSync extending mapped", func(t *testing.T, f *dio.File) {
			if p := dsyncWrite(t, f, buf, size); p == completion.Caller {
				t.Fatal("a DSync write that extends a mapped file was written through; it needs an fdatasync")
			}
		}, 2 * size, true},
	}
	for round, skip := range []bool{false, true} {
		copy(buf, bytes.Repeat([]byte{byte('a' + round)}, size))
		dir := filepath.Join(m.Dir(), "skip-"+map[bool]string{false: "off", true: "on"}[skip])
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, w := range ways {
			p := filepath.Join(dir, w.name)
			writeSynced(t, p, old)
		}
		syncDir(t, dir)
		func() {
			durability.SkipSync.Store(skip)
			defer durability.SkipSync.Store(false)
			for _, w := range ways {
				var o dio.Options
				if w.mapped {
					mf, err := os.Open(filepath.Join(dir, w.name))
					if err != nil {
						t.Fatal(err)
					}
					defer mf.Close()
					fm, err := iomap.NewFileMapper(int(mf.Fd()), iomap.FileMapperOptions{})
					if err != nil {
						t.Fatal(err)
					}
					o.Mapper = fm
				}
				f, err := dio.Open(filepath.Join(dir, w.name), os.O_RDWR, 0, &o)
				if err != nil {
					t.Fatal(err)
				}
				w.write(t, f)
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
		}()
		st, err := m.Crash(uint64(round), crashfs.DropAll)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("SkipSync %v: crash: %v", skip, st)
		for _, w := range ways {
			got, err := os.ReadFile(filepath.Join(dir, w.name))
			if err != nil {
				t.Fatal(err)
			}
			want := old // lost
			if !skip {
				// The new data at the end: the whole file, or past the
				// old end.
				want = append(bytes.Clone(old[:w.end-size]), buf...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("SkipSync %v, %s: after the crash the file has %d bytes, starting %q; want %d, starting %q",
					skip, w.name, len(got), got[:1], len(want), want[:1])
			}
		}
	}
}

func writeSynced(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}
