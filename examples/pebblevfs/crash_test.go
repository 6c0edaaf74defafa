//go:build linux

package pebblevfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/durability"
	"github.com/uringdio/uringdio/internal/faultring"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/ring"
)

// The crash child's key space: small, so that keys are overwritten and
// deleted often and every check reads them all.
const crashKeys = 500

// TestMain runs a crash child when a test re-executes the test binary with
// PEBBLEVFS_CHILD_DIR set.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PEBBLEVFS_CHILD_DIR"); dir != "" {
		os.Exit(crashChild(dir))
	}
	os.Exit(m.Run())
}

// crashValue is the value the child writes to key id at sequence seq; the
// parent recomputes it. Lengths vary up to ~1.5 KiB so that WAL records
// and batches cross 32 KiB log blocks and the Appender's chunks.
func crashValue(id int, seq uint64) []byte {
	v := fmt.Appendf(nil, "%d:%d:", id, seq)
	n := 20 + int(seq*7919%1500)
	for len(v) < n {
		v = append(v, byte('a'+(seq+uint64(len(v)))%26))
	}
	return v
}

// crashOptions: a small memtable, so that flushes, WAL rotation and
// recycling, and compactions happen during the few hundred writes before a
// kill.
func crashOptions(fs *FS, logger pebble.Logger) *pebble.Options {
	o := &pebble.Options{
		FS:                    fs,
		Logger:                logger,
		MemTableSize:          256 << 10,
		L0CompactionThreshold: 2,
	}
	o.TargetFileSizes[0] = 256 << 10
	return o
}

// childLogger: a Fatalf (a failed WAL or MANIFEST write) is reported to
// the parent and ends the child, as Pebble's default logger would.
type childLogger struct{}

func (childLogger) Infof(string, ...any)  {}
func (childLogger) Errorf(string, ...any) {}
func (childLogger) Fatalf(format string, args ...any) {
	fmt.Printf("fatal %s\n", strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " "))
	os.Exit(4)
}

// crashChild writes with Sync until it is killed (or, with
// PEBBLEVFS_CHILD_OPS, for that many operations and then closes the DB).
// Before each write it prints "put ID SEQ" or "del ID SEQ" per key, after
// it was acknowledged "ack SEQ". A failed write prints "err ..." and ends
// the child. PEBBLEVFS_CHILD_FAULT=N,KIND injects KIND (a faultring fault)
// into the Nth write CQE beneath the FS. PEBBLEVFS_CHILD_SEED varies the
// keys written (with the base: the same pair, the same writes), and
// PEBBLEVFS_CHILD_LIE=SkipSync or EarlyAck turns that switch of
// internal/durability on (the power-loss counter-checks).
// PEBBLEVFS_CHILD_CHECK makes it a checkChild instead.
func crashChild(dir string) int {
	if os.Getenv("PEBBLEVFS_CHILD_CHECK") != "" {
		return checkChild(dir)
	}
	base, _ := strconv.ParseUint(os.Getenv("PEBBLEVFS_CHILD_BASE"), 10, 64)
	seed, _ := strconv.ParseUint(os.Getenv("PEBBLEVFS_CHILD_SEED"), 10, 64)
	maxOps, _ := strconv.Atoi(os.Getenv("PEBBLEVFS_CHILD_OPS"))
	switch lie := os.Getenv("PEBBLEVFS_CHILD_LIE"); lie {
	case "":
	case "SkipSync":
		durability.SkipSync.Store(true)
	case "EarlyAck":
		durability.EarlyAck.Store(true)
	default:
		fmt.Println("err unknown PEBBLEVFS_CHILD_LIE", lie)
		return 3
	}
	var opts []Option
	if spec := os.Getenv("PEBBLEVFS_CHILD_FAULT"); spec != "" {
		nth, kind, err := parseFault(spec)
		if err != nil {
			fmt.Println("err", err)
			return 3
		}
		var eo dio.EngineOptions
		ringhook.Attach(&eo, ringhook.Hooks{WrapRing: func(r ringhook.Ring) ringhook.Ring {
			var writes uint64
			return faultring.New(r, faultring.Config{Decide: func(c faultring.CQE) faultring.Fault {
				switch c.SQE.Op {
				case ring.OpWrite, ring.OpWritev, ring.OpWriteFixed:
					writes++
					if writes == nth {
						fmt.Printf("injected %s into write %d\n", kind, nth)
						return kind
					}
				}
				return faultring.None
			}})
		}})
		opts = append(opts, WithEngineOptions(eo))
	}
	fs, err := New(opts...)
	if err != nil {
		fmt.Println("err new:", err)
		return 3
	}
	db, err := pebble.Open(dir, crashOptions(fs, childLogger{}))
	if err != nil {
		fmt.Println("err open:", strings.ReplaceAll(err.Error(), "\n", " "))
		return 3
	}
	fmt.Println("ready")
	rng := rand.New(rand.NewPCG(base, 3^seed))
	for seq := base + 1; maxOps == 0 || seq <= base+uint64(maxOps); seq++ {
		b := db.NewBatch()
		n := 1
		if rng.IntN(20) == 0 {
			n = 5
		}
		for range n {
			id := rng.IntN(crashKeys)
			if rng.IntN(10) == 0 {
				fmt.Printf("del %d %d\n", id, seq)
				b.Delete(key(id), nil)
			} else {
				fmt.Printf("put %d %d\n", id, seq)
				b.Set(key(id), crashValue(id, seq), nil)
			}
		}
		if err := b.Commit(pebble.Sync); err != nil {
			fmt.Println("err commit:", strings.ReplaceAll(err.Error(), "\n", " "))
			return 3
		}
		fmt.Printf("ack %d\n", seq)
	}
	if err := db.Close(); err != nil {
		fmt.Println("err close:", strings.ReplaceAll(err.Error(), "\n", " "))
		return 3
	}
	if err := fs.Close(); err != nil {
		fmt.Println("err fs close:", err)
		return 3
	}
	fmt.Println("done")
	return 0
}

func parseFault(spec string) (uint64, faultring.Fault, error) {
	n, k, ok := strings.Cut(spec, ",")
	nth, err := strconv.ParseUint(n, 10, 64)
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("bad fault spec %q", spec)
	}
	for f := faultring.None; f <= faultring.Drop; f++ {
		if f.String() == k {
			return nth, f, nil
		}
	}
	return 0, 0, fmt.Errorf("bad fault kind %q", k)
}

// crashState is one key's state: the sequence that wrote it last, and
// whether that was a delete (seq 0: never written).
type crashState struct {
	seq uint64
	del bool
}

// crashModel is what the parent knows: per key, the last acknowledged
// state, and states whose write started but was not acknowledged (they may
// or may not have made it).
type crashModel struct {
	acked   [crashKeys]crashState
	pending [crashKeys][]crashState
	open    []int // keys of the write in flight
	acks    int
}

func (m *crashModel) line(t *testing.T, l string) {
	f := strings.Fields(l)
	switch {
	case len(f) == 3 && (f[0] == "put" || f[0] == "del"):
		id, err1 := strconv.Atoi(f[1])
		seq, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil || id >= crashKeys {
			t.Fatalf("child said %q", l)
		}
		m.pending[id] = append(m.pending[id], crashState{seq, f[0] == "del"})
		m.open = append(m.open, id)
	case len(f) == 2 && f[0] == "ack":
		seq, _ := strconv.ParseUint(f[1], 10, 64)
		for _, id := range m.open {
			for _, p := range m.pending[id] {
				if p.seq == seq {
					m.acked[id] = p
				}
			}
			m.pending[id] = m.pending[id][:0]
		}
		m.open = m.open[:0]
		m.acks++
	}
}

// The violations a check finds: an acknowledged write missing, or
// overwritten by an older one (errLost); a DB that does not open or read,
// or a value no child wrote (errBroken).
var (
	errLost   = errors.New("acknowledged write lost")
	errBroken = errors.New("DB broken")
)

// verify checks the DB in dir against the model (check) on a new FS, and
// fails the test at the first difference.
func (m *crashModel) verify(t *testing.T, dir string) {
	if _, err := m.check(newFS(t), dir, testLogger{t}); err != nil {
		if d := os.Getenv("PEBBLEVFS_KEEP"); d != "" && errors.Is(err, errLost) {
			exec.Command("cp", "-a", dir, d).Run()
		}
		t.Fatal(err)
	}
}

// check opens the DB in dir on fs and checks every key against the model
// (readKeys, then compare).
func (m *crashModel) check(fs *FS, dir string, logger pebble.Logger) (written int, err error) {
	states, err := readKeys(fs, dir, logger)
	if err != nil {
		return 0, err
	}
	return m.compare(&states)
}

// readKeys opens the DB in dir on fs and returns every key's state. A DB
// that does not open or read, or a value no child wrote, is an error
// wrapping errBroken.
func readKeys(fs *FS, dir string, logger pebble.Logger) (states [crashKeys]crashState, err error) {
	db, err := pebble.Open(dir, crashOptions(fs, logger))
	if err != nil {
		return states, fmt.Errorf("%w: reopen: %w", errBroken, err)
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%w: close after the check: %w", errBroken, cerr)
		}
	}()
	for id := range crashKeys {
		v, c, err := db.Get(key(id))
		switch {
		case err == pebble.ErrNotFound:
			states[id].del = true
		case err != nil:
			return states, fmt.Errorf("%w: get %d: %w", errBroken, id, err)
		default:
			var seq uint64
			parts := bytes.SplitN(v, []byte(":"), 3)
			if len(parts) == 3 {
				seq, _ = strconv.ParseUint(string(parts[1]), 10, 64)
			}
			ok := bytes.Equal(v, crashValue(id, seq))
			if !ok {
				err = fmt.Errorf("%w: key %d: value %.40q is no value the child wrote", errBroken, id, v)
			}
			c.Close()
			if err != nil {
				return states, err
			}
			states[id].seq = seq
		}
	}
	return states, nil
}

// compare checks every key's state against the model: the acknowledged
// state, or a newer one whose write was in flight (an error wrapping
// errLost if not). What it finds becomes the model's acknowledged state:
// recovery made it durable. It returns the number of keys that had been
// written.
func (m *crashModel) compare(states *[crashKeys]crashState) (written int, err error) {
	for id, got := range states {
		if !m.allowed(id, got) {
			return written, fmt.Errorf("key %d: %w: found %+v; acknowledged %+v, in flight %+v", id, errLost, got, m.acked[id], m.pending[id])
		}
		if m.acked[id].seq != 0 || len(m.pending[id]) > 0 {
			written++
		}
		if got.del {
			got.seq = m.acked[id].seq // a delete (or nothing) leaves no sequence to see
			for _, p := range m.pending[id] {
				if p.del {
					got.seq = max(got.seq, p.seq)
				}
			}
		}
		m.acked[id], m.pending[id] = got, nil
	}
	m.open = m.open[:0]
	return written, nil
}

// checkChild is the child that checks a DB for the power-loss suite: it
// opens the DB in dir, prints "state ID SEQ" or "state ID del" for every
// key, then "checked"; "err ..." or "fatal ..." (childLogger) if it
// cannot. A DB broken by a crash can make Pebble's background work fatal
// (a compaction that meets a corrupt sstable): that ends this process,
// not the test.
func checkChild(dir string) int {
	fs, err := New()
	if err != nil {
		fmt.Println("err new:", err)
		return 3
	}
	states, err := readKeys(fs, dir, childLogger{})
	if err != nil {
		fmt.Println("err check:", strings.ReplaceAll(err.Error(), "\n", " "))
		return 3
	}
	for id, s := range states {
		if s.del {
			fmt.Printf("state %d del\n", id)
		} else {
			fmt.Printf("state %d %d\n", id, s.seq)
		}
	}
	if err := fs.Close(); err != nil {
		fmt.Println("err fs close:", err)
		return 3
	}
	fmt.Println("checked")
	return 0
}

// allowed reports whether key id may be in state s.
func (m *crashModel) allowed(id int, s crashState) bool {
	a := m.acked[id]
	if s.del && (a.del || a.seq == 0) || !s.del && s.seq == a.seq && !a.del {
		return true
	}
	for _, p := range m.pending[id] {
		if p.seq > a.seq && p.del == s.del && (s.del || p.seq == s.seq) {
			return true
		}
	}
	return false
}

// child is a running crash child.
type child struct {
	cmd   *exec.Cmd
	lines <-chan string // its stdout, closed at its end
	errb  *bytes.Buffer // its stderr, to read once it has ended
}

// startChild starts the child on dir, its sequence numbers from base, with
// env added to its environment.
func startChild(t *testing.T, dir string, base uint64, env []string, m *crashModel) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Skip("cannot re-execute the test binary:", err)
	}
	// The write a killed child had in flight stays pending (it may have
	// made it), but the next child's first ack is not about it.
	m.open = m.open[:0]
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "PEBBLEVFS_CHILD_DIR="+dir, "PEBBLEVFS_CHILD_BASE="+strconv.FormatUint(base, 10))...)
	errb := new(bytes.Buffer)
	cmd.Stderr = errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return &child{cmd: cmd, lines: lines, errb: errb}
}

// take hands a line of the child's to m, and reports whether it was
// something else than put, del or ack.
func (c *child) take(t *testing.T, m *crashModel, l string) (other bool) {
	m.line(t, l)
	f := strings.Fields(l)
	return len(f) > 0 && f[0] != "put" && f[0] != "del" && f[0] != "ack"
}

// runChild starts the child on dir and feeds its lines to m. kill, if not
// nil, is called with the number of acknowledgements so far after each
// line, and kills the child when it returns true. It returns the lines
// that were not put/del/ack, and how the child ended.
func runChild(t *testing.T, dir string, base uint64, env []string, m *crashModel, kill func(acks int) bool, delay time.Duration) (other []string, state *os.ProcessState, stderr string) {
	c := startChild(t, dir, base, env, m)
	timeout := time.After(60 * time.Second)
	killed := false
	var killTimer <-chan time.Time
	if kill != nil && kill(0) {
		killTimer = time.After(delay)
	}
loop:
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				break loop
			}
			if c.take(t, m, l) {
				other = append(other, l)
			}
			if kill != nil && killTimer == nil && !killed && kill(m.acks) {
				killTimer = time.After(delay)
			}
		case <-killTimer:
			c.cmd.Process.Signal(syscall.SIGKILL)
			killed, killTimer = true, nil
		case <-timeout:
			c.cmd.Process.Signal(syscall.SIGKILL)
			t.Fatalf("child stuck; its stderr:\n%s", c.errb.String())
		}
	}
	c.cmd.Wait()
	return other, c.cmd.ProcessState, c.errb.String()
}

// TestCrashKeepsAcknowledgedWrites kills (SIGKILL) a child process that
// writes to Pebble over the FS with Sync at random points, reopens the DB
// and checks that every acknowledged write is there, byte for byte, and
// that nothing appears that was never written. Some rounds skip the check,
// so that the next child recovers the DB itself (and may be killed while
// it does). 12 rounds; 100 in the long mode.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	rounds := 12
	if longMode() {
		rounds = 100
	} else if testing.Short() {
		rounds = 4
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	var m crashModel
	var kills, verified, fromStart int
	for round := range rounds {
		base := uint64(round+1) * 1_000_000
		// Kill after a random number of acknowledged writes (0: at a
		// random moment from the start, maybe during recovery), plus a
		// random delay so that the kill lands anywhere in the next write.
		killAt := 1 + rng.IntN(400)
		if rng.IntN(6) == 0 {
			killAt = 0
		}
		delay := time.Duration(rng.IntN(3000)) * time.Microsecond
		if killAt == 0 {
			delay = time.Duration(rng.IntN(300)) * time.Millisecond
			fromStart++
		}
		startAcks := m.acks
		other, state, stderr := runChild(t, dir, base, nil, &m, func(acks int) bool { return acks-startAcks >= killAt }, delay)
		if ws, ok := state.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child ended %v, not killed; it said %q; stderr:\n%s", round, state, other, stderr)
		}
		kills++
		if round%3 != 2 || round == rounds-1 {
			m.verify(t, dir)
			verified++
		}
	}
	t.Logf("%d kills (%d from the child's start), %d verified reopens, %d acknowledged writes", kills, fromStart, verified, m.acks)
}

// TestWriteFaultsNeverLoseAcknowledgedWrites injects one fault (EIO,
// ENOSPC, or a write that says it wrote nothing) into the Nth write CQE
// beneath the FS of a child that writes with Sync, lets the child run to
// its end (or to the error, which Pebble either returns or treats as
// fatal), and checks, as the crash test does, that every acknowledged
// write is in the reopened DB and nothing that was never written.
func TestWriteFaultsNeverLoseAcknowledgedWrites(t *testing.T) {
	rounds := 8
	if longMode() {
		rounds = 60
	} else if testing.Short() {
		rounds = 3
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	kinds := []faultring.Fault{faultring.EIO, faultring.ENOSPC, faultring.Zero}
	var m crashModel
	var injected, surfaced int
	for round := range rounds {
		kind := kinds[round%len(kinds)]
		nth := 1 + rng.IntN(300)
		env := []string{"PEBBLEVFS_CHILD_OPS=300", fmt.Sprintf("PEBBLEVFS_CHILD_FAULT=%d,%s", nth, kind)}
		other, state, stderr := runChild(t, dir, uint64(round+1)*1_000_000, env, &m, nil, 0)
		var inj, failed bool
		for _, l := range other {
			inj = inj || strings.HasPrefix(l, "injected")
			failed = failed || strings.HasPrefix(l, "err") || strings.HasPrefix(l, "fatal")
		}
		if !state.Success() && !failed {
			t.Fatalf("round %d: child ended %v; it said %q; stderr:\n%s", round, state, other, stderr)
		}
		if inj {
			injected++
		}
		if failed {
			surfaced++
		}
		t.Logf("round %d: %s into write %d: %q", round, kind, nth, other)
		m.verify(t, dir)
	}
	if injected == 0 {
		t.Fatal("no fault was injected in any round")
	}
	if surfaced == 0 {
		t.Error("no injected fault reached Pebble as an error")
	}
	t.Logf("%d rounds, %d with a fault injected, %d where Pebble reported an error; %d acknowledged writes checked", rounds, injected, surfaced, m.acks)
}
