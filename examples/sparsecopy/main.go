//go:build linux

// Sparsecopy copies a sparse file with O_DIRECT I/O and keeps it sparse.
// It walks the source's layout with iomap's FileMapper (FIEMAP, or
// SEEK_DATA/SEEK_HOLE where FIEMAP is missing) and copies only the data:
// holes are skipped, and so are unwritten (preallocated) extents, which
// read as zeroes; both stay holes in the copy. Then it checks the result:
// the bytes of source and copy, and their layouts, as the mapper sees
// them and as `filefrag -v` prints them (skipped if filefrag is missing).
//
// The copy is a pipeline of requests in flight: each chunk's read
// completes Inline and, from its callback on the reaper, submits the write
// of the same buffer; the write (into a hole, so not a pure overwrite)
// completes on the pool and frees the buffer for the next chunk.
//
// Run it (a second; with no -src it makes a sparse source under
// os.TempDir() with data, holes, a preallocated extent partly written,
// and an unaligned end, and removes everything at the end):
//
//	go run ./examples/sparsecopy
//	go run ./examples/sparsecopy -src /var/lib/some/sparse.img -dst /tmp/copy.img
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/iomap"
	"github.com/uringdio/uringdio/ring"
	"golang.org/x/sys/unix"
)

// config is what main's flags set.
type config struct {
	Src, Dst string // "" means: make a sample source / copy next to it
	Chunk    int    // bytes per request
	Inflight int    // chunks in flight
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Src, "src", "", "sparse file to copy (default: a sample made under "+os.TempDir()+")")
	flag.StringVar(&cfg.Dst, "dst", "", "the copy (default: src + \".copy\"); overwritten")
	flag.IntVar(&cfg.Chunk, "chunk", 1<<20, "bytes per read and write")
	flag.IntVar(&cfg.Inflight, "inflight", 8, "chunks in flight")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sparsecopy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Chunk <= 0 {
		cfg.Chunk = 1 << 20
	}
	if cfg.Inflight <= 0 {
		cfg.Inflight = 8
	}
	src, dst := cfg.Src, cfg.Dst
	if src == "" {
		dir, err := os.MkdirTemp("", "sparsecopy-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		src = filepath.Join(dir, "sparse.src")
		if err := makeSample(src); err != nil {
			return fmt.Errorf("making the sample source: %w", err)
		}
	}
	if dst == "" {
		dst = src + ".copy"
	}
	st, err := copySparse(ctx, src, dst, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "copied %s -> %s: %d bytes, %d read+written in %d chunks; skipped %d in holes and %d unwritten\n",
		src, dst, st.size, st.copied, st.chunks, st.holes, st.unwritten)
	if st.inline > 0 {
		fmt.Fprintf(out, "  %d bytes of inline/tail-packed data copied through the page cache\n", st.inline)
	}
	return verify(src, dst, out)
}

// copyStats counts what copySparse did, in bytes.
type copyStats struct {
	size, copied, holes, unwritten, inline int64
	chunks                                 int
}

// chunk is one buffer and its two requests: the read, then the write.
type chunk struct {
	c     *copier
	buf   []byte
	read  *dio.Request
	write *dio.Request
}

// copier is the state of one copy, shared by the completions.
type copier struct {
	src, dst *dio.File
	align    int64
	free     chan *chunk
	wg       sync.WaitGroup
	mu       sync.Mutex
	err      error
}

func (c *copier) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *copier) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// readDone runs Inline, on the reaper: it turns the buffer around into
// the write. The write is submitted from here and goes out with the
// reaper's next batch.
func (k *chunk) readDone(r *dio.Request) {
	c := k.c
	n, err := r.Result()
	if err != nil && err != io.EOF {
		c.fail(err)
		k.release()
		return
	}
	if n == 0 {
		k.release()
		return
	}
	// A short read stops at the source's end of file, which need not be
	// aligned: write whole blocks (zeroes past n); the final truncate
	// cuts the copy back to the source's size.
	w := alignUp(int64(n), c.align)
	clear(k.buf[n:w])
	k.write.Off, k.write.Buf = r.Off, k.buf[:w]
	if err := c.dst.Submit(k.write); err != nil {
		c.fail(err)
		k.release()
	}
}

// writeDone runs on the pool (a write into a hole allocates: not a pure
// overwrite) and gives the buffer back.
func (k *chunk) writeDone(r *dio.Request) {
	if _, err := r.Result(); err != nil {
		k.c.fail(err)
	}
	k.release()
}

func (k *chunk) release() {
	k.c.free <- k // never blocks: the channel holds every chunk
	k.c.wg.Done()
}

// copySparse copies the data of src to dst, leaving holes where src has
// holes or unwritten extents.
func copySparse(ctx context.Context, src, dst string, cfg config) (*copyStats, error) {
	// The mapper reads the layout through its own descriptor, and the
	// engine uses the same mapper for the source's reads (a read that
	// touched a hole would be zero-filled without I/O).
	sf, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer sf.Close()
	smap, err := iomap.NewFileMapper(int(sf.Fd()), iomap.FileMapperOptions{})
	if err != nil {
		return nil, err
	}
	size := smap.Size()

	// The copy gets its size first, so that writes land in holes below
	// the size (the destination's mapper reports them as new space)
	// rather than all extending the file. The last write may still run
	// past an unaligned size (whole blocks); the final truncate cuts it.
	df, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer df.Close()
	if err := df.Truncate(size); err != nil {
		return nil, err
	}
	dmap, err := iomap.NewFileMapper(int(df.Fd()), iomap.FileMapperOptions{})
	if err != nil {
		return nil, err
	}

	eng, err := dio.NewEngine(&dio.EngineOptions{QueueDepth: 2 * cfg.Inflight})
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	in, err := dio.Open(src, os.O_RDONLY, 0, &dio.Options{Engine: eng, Mapper: smap})
	if err != nil {
		return nil, err
	}
	defer in.Close()
	outf, err := dio.Open(dst, os.O_RDWR, 0, &dio.Options{Engine: eng, Mapper: dmap})
	if err != nil {
		return nil, err
	}
	defer outf.Close()

	inCaps, err := in.Capabilities()
	if err != nil {
		return nil, err
	}
	outCaps, err := outf.Capabilities()
	if err != nil {
		return nil, err
	}
	c := &copier{src: in, dst: outf, align: max(inCaps.OffsetAlignment, outCaps.OffsetAlignment), free: make(chan *chunk, cfg.Inflight)}
	if int64(cfg.Chunk)%c.align != 0 {
		return nil, fmt.Errorf("chunk size %d is not a multiple of the direct-I/O alignment %d", cfg.Chunk, c.align)
	}
	mem, err := ring.Alloc(cfg.Inflight * cfg.Chunk)
	if err != nil {
		return nil, err
	}
	defer ring.Free(mem) // after wg.Wait: every request is back
	for i := range cfg.Inflight {
		k := &chunk{c: c, buf: mem[i*cfg.Chunk : (i+1)*cfg.Chunk : (i+1)*cfg.Chunk], read: new(dio.Request), write: new(dio.Request)}
		k.read.Op, k.read.Policy, k.read.Callback = dio.Read, completion.Inline, k.readDone
		k.write.Op, k.write.Callback = dio.Write, k.writeDone
		c.free <- k
	}

	st := &copyStats{size: size}
	var inlineRanges [][2]int64
	walk := func(m *iomap.Mapping, pos, n int64) (int64, error) {
		switch m.Type {
		case iomap.Hole:
			st.holes += n
		case iomap.Unwritten:
			st.unwritten += n // reads as zeroes: leave a hole
		case iomap.Inline:
			inlineRanges = append(inlineRanges, [2]int64{pos, n})
			st.inline += n
		case iomap.Delalloc:
			return 0, fmt.Errorf("%s: delayed-allocation extent at %d after a FIEMAP sync", src, pos)
		case iomap.Mapped:
			for done := int64(0); done < n; {
				if err := c.failed(); err != nil {
					return done, err
				}
				if err := ctx.Err(); err != nil {
					return done, err
				}
				l := min(int64(cfg.Chunk), n-done)
				k := <-c.free
				// The read covers whole blocks; at the source's end it is
				// short, which readDone handles.
				k.read.Off, k.read.Buf = pos+done, k.buf[:alignUp(l, c.align)]
				c.wg.Add(1)
				if err := in.Submit(k.read); err != nil {
					c.wg.Done()
					c.free <- k
					return done, err
				}
				st.chunks++
				done += l
			}
			st.copied += n
		}
		return n, nil
	}
	var werr error
	if size > 0 {
		werr = iomap.Each(smap, 0, size, iomap.OpDirect, walk)
	}
	c.wg.Wait()
	if werr == nil {
		werr = c.failed()
	}
	if werr == nil && len(inlineRanges) > 0 {
		werr = copyBuffered(sf, df, inlineRanges)
	}
	if werr != nil {
		return nil, werr
	}
	// Cut the last block back to the source's size, and make it durable.
	if err := df.Truncate(size); err != nil {
		return nil, err
	}
	if err := outf.Sync(); err != nil {
		return nil, err
	}
	return st, nil
}

// copyBuffered copies ranges the file system keeps inline (tiny files,
// packed tails): no O_DIRECT there, through the page cache instead.
func copyBuffered(sf, df *os.File, ranges [][2]int64) error {
	for _, r := range ranges {
		b := make([]byte, r[1])
		if _, err := sf.ReadAt(b, r[0]); err != nil && err != io.EOF {
			return err
		}
		if _, err := df.WriteAt(b, r[0]); err != nil {
			return err
		}
	}
	return df.Sync()
}

// verify compares the bytes and the layouts of src and dst.
func verify(src, dst string, out io.Writer) error {
	if err := sameBytes(src, dst); err != nil {
		return err
	}
	fmt.Fprintf(out, "bytes: identical\n")

	sl, err := layout(src)
	if err != nil {
		return err
	}
	dl, err := layout(dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "layout (FileMapper), in bytes:\n  source: %v\n  copy:   %v\n", sl, dl)
	if want := sl.data(); !equalRanges(want, dl.data()) || len(dl.unwritten) > 0 {
		return fmt.Errorf("the copy's data extents %v differ from the source's %v (unwritten in the copy: %v)",
			dl.data(), want, dl.unwritten)
	}
	fmt.Fprintf(out, "  the copy has data exactly where the source has written data; its holes cover the source's holes and unwritten extents\n")

	sf, serr := filefrag(src)
	df, derr := filefrag(dst)
	switch {
	case errors.Is(serr, exec.ErrNotFound):
		fmt.Fprintf(out, "filefrag: not installed, skipped (e2fsprogs has it)\n")
		return nil
	case serr != nil:
		return serr
	case derr != nil:
		return derr
	}
	fmt.Fprintf(out, "filefrag -v: source %d extents (%d unwritten), copy %d extents (%d unwritten)\n",
		len(sf.extents), sf.unwrittenCount(), len(df.extents), df.unwrittenCount())
	for _, e := range sf.extents {
		fmt.Fprintf(out, "  source %s\n", e)
	}
	for _, e := range df.extents {
		fmt.Fprintf(out, "  copy   %s\n", e)
	}
	if !equalRanges(sf.written(), df.written()) || df.unwrittenCount() > 0 {
		return fmt.Errorf("filefrag: the copy's written blocks %v differ from the source's %v", df.written(), sf.written())
	}
	fmt.Fprintf(out, "  written blocks (logical) match: %v\n", df.written())
	return nil
}

func sameBytes(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ra, rb := bufio.NewReaderSize(fa, 1<<20), bufio.NewReaderSize(fb, 1<<20)
	ba, bb := make([]byte, 1<<16), make([]byte, 1<<16)
	for off := int64(0); ; {
		na, ea := io.ReadFull(ra, ba)
		nb, eb := io.ReadFull(rb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			for i := 0; i < min(na, nb); i++ {
				if ba[i] != bb[i] {
					return fmt.Errorf("%s and %s differ at byte %d", a, b, off+int64(i))
				}
			}
			return fmt.Errorf("%s and %s differ in length (at %d)", a, b, off+int64(min(na, nb)))
		}
		off += int64(na)
		if ea != nil || eb != nil {
			return nil
		}
	}
}

// fileLayout is a file's layout as the FileMapper sees it: byte ranges
// [start, end) per type.
type fileLayout struct {
	mapped, unwritten, holes [][2]int64
}

func (l fileLayout) data() [][2]int64 { return l.mapped }

func (l fileLayout) String() string {
	return fmt.Sprintf("data %v, unwritten %v, holes %v", l.mapped, l.unwritten, l.holes)
}

func layout(path string) (fileLayout, error) {
	var l fileLayout
	f, err := os.Open(path)
	if err != nil {
		return l, err
	}
	defer f.Close()
	m, err := iomap.NewFileMapper(int(f.Fd()), iomap.FileMapperOptions{})
	if err != nil {
		return l, err
	}
	if m.Size() == 0 {
		return l, nil
	}
	err = iomap.Each(m, 0, m.Size(), iomap.OpDirect, func(mp *iomap.Mapping, pos, n int64) (int64, error) {
		r := [2]int64{pos, pos + n}
		switch mp.Type {
		case iomap.Mapped, iomap.Inline:
			l.mapped = appendRange(l.mapped, r)
		case iomap.Unwritten:
			l.unwritten = appendRange(l.unwritten, r)
		default:
			l.holes = appendRange(l.holes, r)
		}
		return n, nil
	})
	return l, err
}

// appendRange appends r, merging it with the last range if they touch.
func appendRange(rs [][2]int64, r [2]int64) [][2]int64 {
	if n := len(rs); n > 0 && rs[n-1][1] == r[0] {
		rs[n-1][1] = r[1]
		return rs
	}
	return append(rs, r)
}

func equalRanges(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fragExtent is one line of `filefrag -v`: logical blocks [start, end].
type fragExtent struct {
	start, end int64
	flags      string
}

func (e fragExtent) String() string {
	s := fmt.Sprintf("blocks %d..%d", e.start, e.end)
	if e.flags != "" {
		s += " (" + e.flags + ")"
	}
	return s
}

type fragReport struct {
	extents []fragExtent
}

func (r fragReport) unwrittenCount() int {
	n := 0
	for _, e := range r.extents {
		if strings.Contains(e.flags, "unwritten") {
			n++
		}
	}
	return n
}

// written returns the logical block ranges [start, end+1) of written
// (not unwritten) extents, merged where they touch.
func (r fragReport) written() [][2]int64 {
	var rs [][2]int64
	for _, e := range r.extents {
		if !strings.Contains(e.flags, "unwritten") {
			rs = appendRange(rs, [2]int64{e.start, e.end + 1})
		}
	}
	return rs
}

// ext:     logical_offset:        physical_offset: length:   expected: flags:
//
//	0:        0..     255:      34816..     35071:    256:             last,eof
var fragLine = regexp.MustCompile(`^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+\d+\.\.\s*\d+:\s+\d+:\s*(?:\d+:)?\s*(.*)$`)

// filefrag runs `filefrag -v` on path and parses its extents. It returns
// an error matching exec.ErrNotFound if filefrag is not installed.
func filefrag(path string) (fragReport, error) {
	var r fragReport
	bin, err := exec.LookPath("filefrag")
	if err != nil {
		for _, p := range []string{"/usr/sbin/filefrag", "/sbin/filefrag"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
		if err != nil {
			return r, err
		}
	}
	outb, err := exec.Command(bin, "-v", path).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("filefrag -v %s: %v: %s", path, err, outb)
	}
	for _, l := range strings.Split(string(outb), "\n") {
		m := fragLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s, _ := strconv.ParseInt(m[1], 10, 64)
		e, _ := strconv.ParseInt(m[2], 10, 64)
		r.extents = append(r.extents, fragExtent{start: s, end: e, flags: strings.TrimSpace(m[3])})
	}
	return r, nil
}

// makeSample writes a sparse file: data, holes, a preallocated extent with
// data written into its middle, and data up to an unaligned end.
func makeSample(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	const mib = 1 << 20
	rng := rand.New(rand.NewPCG(5, 6))
	data := func(off, n int64) error {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		_, err := f.WriteAt(b, off)
		return err
	}
	steps := []func() error{
		func() error { return data(0, mib) },                                 // [0, 1M) data, [1M, 4M) hole
		func() error { return unix.Fallocate(int(f.Fd()), 0, 4*mib, 2*mib) }, // [4M, 6M) unwritten ...
		func() error { return data(5*mib, 64<<10) },                          // ... with 64K of data inside
		func() error { return data(9*mib+4096, 3*4096) },                     // a few blocks after a hole
		func() error { return data(12*mib, 2*mib+1234) },                     // data to an unaligned end
		f.Sync,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

func alignUp(v, a int64) int64 { return (v + a - 1) / a * a }
