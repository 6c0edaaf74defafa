//go:build linux

package dio_test

// Crash test: a child process writes with DSync and acknowledges each
// completed write over a pipe; the parent kills it with SIGKILL at a
// random moment, then checks that every acknowledged write reads back
// and that every block holds exactly one write's data (old or new, never
// a mix). The child's writes come from a seed, so the parent knows them.
//
// A SIGKILL does not lose the kernel's page cache or the device's cache,
// so this proves that acknowledgements follow completions and that no
// block is torn by the engine; losing power is not simulated.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
)

const (
	crashBlock  = 4096
	crashBlocks = 256 // initial file: 1 MiB
	crashSpan   = 384 // writes go up to here: some extend the file
)

// crashWrite is the i-th write of a seed's sequence.
type crashWrite struct {
	id     uint64
	blk, n int64
}

func crashWrites(seed uint64, count int) []crashWrite {
	rnd := newRand(seed)
	ws := make([]crashWrite, count)
	for i := range ws {
		n := 1 + rnd.Int64N(16)
		ws[i] = crashWrite{id: uint64(i + 1), blk: rnd.Int64N(crashSpan - n), n: n}
	}
	return ws
}

// crashFill writes the content of block blk as written by write id: a
// header (id, block, checksum of the rest) and bytes derived from both.
func crashFill(b []byte, id uint64, blk int64) {
	binary.LittleEndian.PutUint64(b[0:], id)
	binary.LittleEndian.PutUint64(b[8:], uint64(blk))
	x := id*0x9e3779b97f4a7c15 ^ uint64(blk)*0xbf58476d1ce4e5b9
	for i := 24; i < len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	binary.LittleEndian.PutUint32(b[16:], crc32.ChecksumIEEE(b[24:]))
}

// crashParse returns the write id a block holds, or ok=false if the block
// is not one write's whole content for that block.
func crashParse(b []byte, blk int64) (id uint64, ok bool) {
	id = binary.LittleEndian.Uint64(b[0:])
	if binary.LittleEndian.Uint64(b[8:]) != uint64(blk) {
		return id, false
	}
	want := make([]byte, len(b))
	crashFill(want, id, blk)
	return id, string(want) == string(b)
}

func TestCrashDSyncAcked(t *testing.T) {
	if os.Getenv("UIRINGDIO_CHILD") == "crash" {
		crashChild(t)
		return
	}
	rounds := int(envInt("UIRINGDIO_CRASH_ROUNDS", 25))
	if longMode() && os.Getenv("UIRINGDIO_CRASH_ROUNDS") == "" {
		rounds = 2000
	}
	base := uint64(envInt("UIRINGDIO_CRASH_SEED", time.Now().UnixNano()))
	dir := t.TempDir()
	killRnd := newRand(base ^ 0xdead)
	for round := 0; round < rounds; round++ {
		seed := base + uint64(round)
		crashRound(t, dir, round, seed, time.Duration(killRnd.Int64N(int64(30*time.Millisecond))))
	}
}

func crashRound(t *testing.T, dir string, round int, seed uint64, delay time.Duration) int {
	path := filepath.Join(dir, fmt.Sprintf("crash%d", round%4))
	init := make([]byte, crashBlocks*crashBlock)
	for b := int64(0); b < crashBlocks; b++ {
		crashFill(init[b*crashBlock:(b+1)*crashBlock], 0, b)
	}
	if err := os.WriteFile(path, init, 0o600); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDSyncAcked$", "-test.count=1")
	cmd.Env = append(os.Environ(), "UIRINGDIO_CHILD=crash", "UIRINGDIO_CRASH_PATH="+path,
		"UIRINGDIO_CRASH_CHILD_SEED="+strconv.FormatUint(seed, 10))
	cmd.ExtraFiles = []*os.File{pw}
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	acked := map[uint64]bool{}
	first := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			id, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				continue
			}
			acked[id] = true
			once.Do(func() { close(first) })
		}
	}()
	select {
	case <-first:
	case <-readDone:
	case <-time.After(20 * time.Second): // the check below says the child acknowledged nothing
	}
	time.Sleep(delay) // only spreads where the SIGKILL lands; no event is waited for
	cmd.Process.Signal(syscall.SIGKILL)
	werr := cmd.Wait()
	<-readDone
	pr.Close()
	if ws, ok := werr.(*exec.ExitError); !ok || ws.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child ended with %v before it was killed:\n%s", round, werr, stderr.String())
	}
	if len(acked) == 0 {
		t.Fatalf("round %d: the child acknowledged nothing:\n%s", round, stderr.String())
	}
	maxID := uint64(0)
	for id := range acked {
		maxID = max(maxID, id)
	}
	// The child issues writes in order and keeps at most crashQD in
	// flight, each issued after the ones it overlaps completed.
	ws := crashWrites(seed, int(maxID)+crashQD+1)
	latest := make([]uint64, crashSpan) // latest acknowledged write of each block
	covers := make([]map[uint64]bool, crashSpan)
	maxEnd := int64(crashBlocks * crashBlock)
	for _, w := range ws {
		for b := w.blk; b < w.blk+w.n; b++ {
			if covers[b] == nil {
				covers[b] = map[uint64]bool{}
			}
			covers[b][w.id] = true
			if acked[w.id] {
				latest[b] = max(latest[b], w.id)
			}
		}
		if acked[w.id] {
			maxEnd = max(maxEnd, (w.blk+w.n)*crashBlock)
		}
	}
	disk := preadAll(t, path, 0, crashSpan*crashBlock)
	if int64(len(disk)) < maxEnd {
		t.Fatalf("round %d (seed %d): file is %d bytes, an acknowledged write ends at %d", round, seed, len(disk), maxEnd)
	}
	for b := int64(0); b < int64(len(disk))/crashBlock; b++ {
		blk := disk[b*crashBlock : (b+1)*crashBlock]
		if b >= crashBlocks && latest[b] == 0 && isZero(blk) {
			continue // past the initial size, never written: a hole
		}
		id, ok := crashParse(blk, b)
		if !ok {
			t.Fatalf("round %d (seed %d): block %d is torn or foreign (header says write %d)", round, seed, b, id)
		}
		if id != 0 && !covers[b][id] {
			t.Fatalf("round %d (seed %d): block %d holds write %d, which does not cover it", round, seed, b, id)
		}
		if id < latest[b] {
			t.Fatalf("round %d (seed %d): block %d holds write %d, older than acknowledged write %d", round, seed, b, id, latest[b])
		}
	}
	return len(acked)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

const crashQD = 8

// crashChild writes the seed's sequence with DSync, at most crashQD in
// flight and none overlapping another in flight, and acknowledges each
// completed write on fd 3, until it is killed.
func crashChild(t *testing.T) {
	path := os.Getenv("UIRINGDIO_CRASH_PATH")
	seed, _ := strconv.ParseUint(os.Getenv("UIRINGDIO_CRASH_CHILD_SEED"), 10, 64)
	ack := os.NewFile(3, "ack")
	f, err := dio.Open(path, os.O_RDWR, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	type slot struct {
		req  *dio.Request
		buf  []byte
		w    crashWrite
		busy bool
	}
	done := make(chan *slot, crashQD)
	slots := make([]*slot, crashQD)
	for i := range slots {
		s := &slot{req: new(dio.Request), buf: relBuf(t, 16*crashBlock)}
		s.req.Callback = func(*dio.Request) { done <- s }
		slots[i] = s
	}
	finish := func(s *slot) {
		if n, err := s.req.Result(); err != nil || n != int(s.w.n*crashBlock) {
			fmt.Fprintf(os.Stderr, "write %d failed: %d, %v\n", s.w.id, n, err)
			os.Exit(3)
		}
		s.busy = false
		fmt.Fprintf(ack, "%d\n", s.w.id)
	}
	pols := []completion.Policy{completion.Inline, completion.Pool, completion.Default}
	for _, w := range crashWrites(seed, 1<<20) {
		for {
			var free *slot
			conflict := false
			for _, s := range slots {
				if !s.busy {
					free = s
				} else if s.w.blk < w.blk+w.n && w.blk < s.w.blk+s.w.n {
					conflict = true
				}
			}
			if free != nil && !conflict {
				free.w, free.busy = w, true
				for b := int64(0); b < w.n; b++ {
					crashFill(free.buf[b*crashBlock:(b+1)*crashBlock], w.id, w.blk+b)
				}
				q := free.req
				q.Op, q.Off, q.Buf, q.Flags = dio.Write, w.blk*crashBlock, free.buf[:w.n*crashBlock], dio.DSync
				q.Policy = pols[w.id%3]
				if err := f.Submit(q); err != nil {
					fmt.Fprintf(os.Stderr, "submit %d: %v\n", w.id, err)
					os.Exit(3)
				}
				break
			}
			finish(<-done)
		}
	}
	select {} // wait to be killed
}

// syncBuffer is a bytes.Buffer safe for the child's two output streams.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}
