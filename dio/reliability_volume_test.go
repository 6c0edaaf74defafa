//go:build linux

package dio_test

// A volume behind an ExtentMap (the engine's own space management):
// random block-aligned reads and writes at QD32, under every completion
// policy, checked against an in-memory model, with reopen on a clone of
// the map. Half the requests are block-aligned, half only sector-aligned
// (sub-block writes into new space, zeroed around by the engine and kept
// apart by the File's write gate).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uringdio/uringdio/completion"
	"github.com/uringdio/uringdio/dio"
	"github.com/uringdio/uringdio/internal/faultring"
	"github.com/uringdio/uringdio/internal/fsx"
	"github.com/uringdio/uringdio/internal/ringhook"
	"github.com/uringdio/uringdio/iomap"
)

// slotT is one request slot of the volume checker.
type slotT struct {
	req    *dio.Request
	buf    []byte
	off, n int64
	calls  atomic.Int32
}

func TestExtentMapVolumeModel(t *testing.T) {
	for _, faults := range []bool{false, true} {
		t.Run(fmt.Sprintf("faults=%v", faults), func(t *testing.T) { volumeModel(t, faults) })
	}
}

// volumeModel runs the volume checker; with faults, 3% of CQEs fail or
// come back short, interrupted or late, and a failed write must leave
// every sector old or new.
func volumeModel(t *testing.T, faults bool) {
	const bs = 16 << 10
	const volSize = 16 << 20
	ops := int(envInt("UIRINGDIO_FSX_OPS", 4000))
	if longMode() && os.Getenv("UIRINGDIO_FSX_OPS") == "" {
		ops = 1000000
	}
	seed := uint64(envInt("UIRINGDIO_FSX_SEED", time.Now().UnixNano()))
	rnd := newRand(seed)
	dev := filepath.Join(t.TempDir(), "dev")
	junk := make([]byte, 2*volSize)
	for i := range junk {
		junk[i] = 0xEE // stale device bytes that must never show
	}
	os.WriteFile(dev, junk, 0o600)
	em, err := iomap.NewExtentMap(iomap.ExtentMapConfig{BlockSize: bs, Devices: []int64{2 * volSize}})
	if err != nil {
		t.Fatal(err)
	}
	var injected uint64 // faults injected on the maps closed so far
	var fr *faultring.Ring
	open := func() *dio.File {
		eo := dio.EngineOptions{QueueDepth: 32}
		if faults {
			if fr != nil {
				st := fr.Stats()
				injected += st.Injected()
			}
			ringhook.Attach(&eo, ringhook.Hooks{WrapRing: func(r ringhook.Ring) ringhook.Ring {
				fr = faultring.New(r, faultring.Config{Seed: seed, Rate: 0.03, Kinds: []faultring.Fault{
					faultring.EIO, faultring.ECANCELED, faultring.Short, faultring.EINTR, faultring.Delay}})
				return fr
			}})
		}
		f, err := dio.Open(dev, os.O_RDWR, 0, &dio.Options{Mapper: em, Size: volSize, EngineOptions: &eo})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := open()
	log := fsx.NewLog(300)
	replay := fmt.Sprintf("UIRINGDIO_FSX_SEED=%d UIRINGDIO_FSX_OPS=%d go test -race -run '%s' ./dio/", seed, ops, runPattern(t.Name()))
	hang := watchHang(t, func() string {
		return fmt.Sprintf("seed %d\nreplay: %s\nlast operations:\n%s", seed, replay, log)
	})
	var inflight []*slotT
	defer func() {
		// Wait-policy requests complete only in Wait (even after a failure).
		for _, s := range inflight {
			s.req.Wait(context.Background())
		}
		closeWithin(t, f, 10*time.Second)
	}()
	m := fsx.NewModel()
	failedWrites := 0
	m.Truncate(volSize)
	const qd = 32
	done := make(chan *slotT, qd)
	var free []*slotT
	for i := 0; i < qd; i++ {
		s := &slotT{req: new(dio.Request), buf: relBuf(t, 8*bs)}
		s.req.Callback = func(*dio.Request) { s.calls.Add(1); done <- s }
		free = append(free, s)
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: "+format+"\nreplay: %s\nlast operations:\n%s", append(append([]any{seed}, args...), replay, log)...)
	}
	finish := func(s *slotT) {
		hang.Progress()
		for i, q := range inflight {
			if q == s {
				inflight = append(inflight[:i], inflight[i+1:]...)
			}
		}
		free = append(free, s)
		n, err := s.req.Result()
		log.Add("done %s off=%d len=%d -> %d, %v", s.req.Op, s.off, s.n, n, err)
		if c := s.calls.Load(); c != 1 {
			fail("request completed %d times", c)
		}
		if err != nil && !(faults && (errors.Is(err, syscall.EIO) || errors.Is(err, syscall.ECANCELED))) || (err == nil && int64(n) != s.n) {
			fail("%s off=%d len=%d: %d, %v", s.req.Op, s.off, s.n, n, err)
		}
		switch {
		case s.req.Op == dio.Read:
			if d := m.Check(s.off, s.buf[:n]); d != "" {
				fail("read off=%d len=%d: %s", s.off, s.n, d)
			}
		case err == nil:
			m.Write(s.off, s.buf[:s.n])
		default:
			// A failed write: what the volume reads now must be, sector by
			// sector, old or new (no stale device bytes, no mixture).
			failedWrites++
			got := relBuf(t, int(s.n))
			for try := 0; ; try++ { // the read may meet a fault too
				k, err := f.ReadAt(got, s.off)
				if k == int(s.n) && err == nil {
					break
				}
				if try == 20 {
					fail("read after a failed write: %d, %v", k, err)
				}
			}
			old := m.Bytes(s.off, s.n)
			for x := int64(0); x < s.n; x += 512 {
				if g := string(got[x : x+512]); g != string(old[x:x+512]) && g != string(s.buf[x:x+512]) {
					fail("failed write off=%d len=%d (n=%d): sector at %d is neither old nor new", s.off, s.n, n, s.off+x)
				}
			}
			m.Set(s.off, got)
		}
	}
	reap := func() {
		if p := inflight[0]; p.req.Policy == completion.Wait {
			p.req.Wait(context.Background())
		}
		finish(<-done)
	}
	for i := 0; i < ops; i++ {
		if i%5000 == 4999 { // reopen on a clone of the map
			for len(inflight) > 0 {
				reap()
			}
			closeWithin(t, f, 10*time.Second)
			old := em
			em = em.Clone()
			old.Release() // the clone keeps the data; the old map lets go of it
			f = open()
			log.Add("reopen on a clone")
		}
		n := bs * (1 + rnd.Int64N(8))
		off := bs * rnd.Int64N((volSize-n)/bs+1)
		if rnd.IntN(2) == 0 {
			// Sector-aligned: into the middle of blocks, new ones too, where
			// the engine zeroes around the write (and the write gate keeps
			// writes into the same block apart).
			a := dio.AlignForTest(f).Offset
			n = a * (1 + rnd.Int64N(8*bs/a))
			off = a * rnd.Int64N((volSize-n)/a+1)
		}
		write := rnd.IntN(2) == 0
		for {
			conflict := false
			for _, s := range inflight {
				if (write || s.req.Op == dio.Write) && off < s.off+s.n && s.off < off+n {
					conflict = true
				}
			}
			if !conflict && len(free) > 0 {
				break
			}
			reap()
		}
		s := free[len(free)-1]
		free = free[:len(free)-1]
		s.off, s.n = off, n
		s.calls.Store(0)
		q := s.req
		q.Op, q.Off, q.Buf, q.Bufs = dio.Read, off, s.buf[:n], nil
		if write {
			q.Op = dio.Write
			fillRand(rnd, s.buf[:n])
		}
		q.Policy = []completion.Policy{completion.Inline, completion.Pool, completion.Wait, completion.Default}[rnd.IntN(4)]
		log.Add("submit %s off=%d len=%d policy=%s", q.Op, off, n, q.Policy)
		inflight = append(inflight, s)
		if err := f.Submit(q); err != nil {
			fail("Submit: %v", err)
		}
	}
	for len(inflight) > 0 {
		reap()
	}
	all := relBuf(t, volSize)
	for off := 0; off < volSize; off += bs {
		for try := 0; ; try++ { // the read may meet a fault too
			n, err := f.ReadAt(all[off:off+bs], int64(off))
			if n == bs && err == nil {
				break
			}
			if try == 50 {
				fail("final read at %d: %d, %v", off, n, err)
			}
		}
	}
	if d := m.Check(0, all); d != "" {
		fail("final volume: %s", d)
	}
	if faults {
		// With 3% of CQEs faulted, a run of a few thousand operations
		// fails some writes (EIO, ECANCELED): the old-or-new check ran.
		if st := fr.Stats(); injected+st.Injected() == 0 {
			fail("no fault injected in %d ops", ops)
		}
		if ops >= 2000 && failedWrites == 0 {
			fail("no write failed in %d ops with faults: the check of failed writes never ran", ops)
		}
	}
}
