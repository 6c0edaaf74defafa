//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	cfg := config{Dir: t.TempDir(), Pages: 48, Ops: 200, WALRecords: 16, InitialPages: 32, Seed: 7}
	if err := run(context.Background(), cfg, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	for _, want := range []string{
		"put 200 pages",
		"read back: read 48 pages",
		"reopen: replayed",
		"after recovery: read 48 pages",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Pages 32..47 are beyond the pre-written pages.db: their first write
	// allocates and grows the file. On a kernel file the kernel has done
	// all of that before the completion is posted, so every page write
	// keeps Caller.
	if !strings.Contains(out.String(), " 0 on the pool") {
		t.Error("a page write of a kernel file was downgraded to the pool")
	}
}

// The crash test's store shape: a small WAL so that checkpoints (and kills
// during them) are frequent, and ids past InitialPages so that some page
// writes grow the file.
var crashOpts = Options{WALRecords: 8, InitialPages: 16}

const crashPages = 24

// TestMain runs the crash child when the crash test re-executes the test
// binary with PAGESTORE_CHILD_DIR set.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PAGESTORE_CHILD_DIR"); dir != "" {
		os.Exit(crashChild(dir))
	}
	os.Exit(m.Run())
}

// crashChild writes pages until it is killed. Before each Put it prints
// "put ID V", after Put returned "ack ID V": an acknowledged write. It
// also reads pages and checkpoints, so that kills land between (and in)
// every kind of operation.
func crashChild(dir string) int {
	base, _ := strconv.ParseUint(os.Getenv("PAGESTORE_CHILD_BASE"), 10, 64)
	rng := rand.New(rand.NewPCG(base, 1))
	s, err := Open(dir, crashOpts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		return 3
	}
	fmt.Println("ready")
	ctx := context.Background()
	payload := make([]byte, PayloadSize)
	ids := make([]uint32, 4)
	dsts := make([][]byte, len(ids))
	for i := range dsts {
		dsts[i] = make([]byte, PayloadSize)
	}
	for v := base + 1; ; v++ {
		id := uint32(rng.IntN(crashPages))
		fillPayload(payload, id, v)
		fmt.Printf("put %d %d\n", id, v)
		if err := s.Put(ctx, id, payload); err != nil {
			fmt.Fprintln(os.Stderr, "child: put:", err)
			return 3
		}
		fmt.Printf("ack %d %d\n", id, v)
		switch {
		case v%5 == 0:
			for i := range ids {
				ids[i] = uint32(rng.IntN(crashPages))
			}
			if err := s.Get(ctx, ids, dsts); err != nil {
				fmt.Fprintln(os.Stderr, "child: get:", err)
				return 3
			}
		case v%11 == 0:
			if err := s.Checkpoint(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "child: checkpoint:", err)
				return 3
			}
		}
	}
}

// crashModel is what the parent knows: per page, the last acknowledged
// version, and versions whose Put started but was not acknowledged (they
// may or may not have made it).
type crashModel struct {
	acked   [crashPages]uint64
	pending [crashPages][]uint64
}

func (m *crashModel) line(t *testing.T, l string) {
	var op string
	var id uint32
	var v uint64
	if l == "ready" {
		return
	}
	if _, err := fmt.Sscanf(l, "%s %d %d", &op, &id, &v); err != nil || id >= crashPages {
		t.Fatalf("child said %q", l)
	}
	switch op {
	case "put":
		m.pending[id] = append(m.pending[id], v)
	case "ack":
		m.acked[id] = v
		m.pending[id] = m.pending[id][:0]
	}
}

// allowed reports whether version v may be what page id holds now.
func (m *crashModel) allowed(id uint32, v uint64) bool {
	if v == m.acked[id] {
		return true
	}
	for _, p := range m.pending[id] {
		if v == p && v > m.acked[id] {
			return true
		}
	}
	return false
}

// TestCrashRecovery kills a child process that writes pages at random
// points (SIGKILL), reopens the store, and checks that every acknowledged
// write is readable, byte for byte. Some rounds skip the check, so the
// next child recovers the store itself and may be killed while doing so.
func TestCrashRecovery(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip("cannot re-execute the test binary:", err)
	}
	budget := 8 * time.Second
	if testing.Short() {
		budget = 2 * time.Second
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	var m crashModel
	deadline := time.Now().Add(budget)
	var rounds, kills, verified, acks int
	for round := 0; round < 200 && (round < 4 || time.Now().Before(deadline)); round++ {
		base := uint64(round+1) * 1_000_000
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "PAGESTORE_CHILD_DIR="+dir, "PAGESTORE_CHILD_BASE="+strconv.FormatUint(base, 10))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()

		// Kill after a random number of acknowledged writes (0: at a
		// random moment from the start, maybe during recovery), plus a
		// random delay so the kill lands anywhere in the next operation.
		killAt := rng.IntN(30)
		delay := time.Duration(rng.IntN(1500)) * time.Microsecond
		if killAt == 0 {
			delay = time.Duration(rng.IntN(30)) * time.Millisecond
		}
		seen := 0
		timeout := time.After(20 * time.Second)
		var read []string
	wait:
		for seen < killAt {
			select {
			case l, ok := <-lines:
				if !ok {
					break wait
				}
				read = append(read, l)
				if strings.HasPrefix(l, "ack ") {
					seen++
				}
			case <-timeout:
				cmd.Process.Kill()
				t.Fatalf("round %d: child made no progress\n%s", round, stderr.String())
			}
		}
		time.Sleep(delay) // only spreads where the kill lands; no event is waited for
		cmd.Process.Kill()
		for l := range lines { // to EOF: Wait would close the pipe
			read = append(read, l)
		}
		werr := cmd.Wait()
		if werr == nil || !strings.Contains(werr.Error(), "killed") {
			t.Fatalf("round %d: child ended with %v before the kill\n%s", round, werr, stderr.String())
		}
		kills++
		for _, l := range read {
			m.line(t, l)
			if strings.HasPrefix(l, "ack ") {
				acks++
			}
		}
		rounds++
		if rng.IntN(3) == 0 && round < 199 {
			continue // let the next child recover
		}
		verifyCrashStore(t, dir, &m, round)
		verified++
	}
	verifyCrashStore(t, dir, &m, rounds)
	t.Logf("%d rounds, %d kills, %d acknowledged writes, %d verifications: every acknowledged write survived", rounds, kills, acks, verified+1)
}

// verifyCrashStore opens the store (recovering it), reads every page and
// checks it against the model; then the model takes what it read as the
// new acknowledged state (recovery made it durable).
func verifyCrashStore(t *testing.T, dir string, m *crashModel, round int) {
	t.Helper()
	s, err := Open(dir, crashOpts)
	if err != nil {
		t.Fatalf("round %d: reopen: %v", round, err)
	}
	defer s.Close()
	ids := make([]uint32, crashPages)
	dsts := make([][]byte, crashPages)
	for i := range ids {
		ids[i], dsts[i] = uint32(i), make([]byte, PayloadSize)
	}
	if err := s.Get(context.Background(), ids, dsts); err != nil {
		t.Fatalf("round %d: read after recovery: %v", round, err)
	}
	for i, id := range ids {
		got := payloadVersion(dsts[i])
		if !m.allowed(id, got) {
			t.Fatalf("round %d: page %d holds version %d; last acknowledged %d, unacknowledged %v", round, id, got, m.acked[id], m.pending[id])
		}
		if err := checkPayload(dsts[i], id, got); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		m.acked[id] = got
		m.pending[id] = m.pending[id][:0]
	}
}
