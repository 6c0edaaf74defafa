package crashfs

import (
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"sync"
)

// SectorSize is the unit a torn write is cut in: a write that survives a
// Torn crash in part survives in whole 512-byte sectors of the file
// (sectors counted from offset 0), never in smaller pieces.
const SectorSize = 512

// pageSize is the unit of the overlay that answers reads of the latest
// state. It has nothing to do with tearing.
const pageSize = 4096

// opKind is what a pending operation does.
type opKind uint8

const (
	opWrite opKind = iota
	opTruncate
)

// op is one operation since the file's last sync, in the order it ran.
type op struct {
	kind opKind
	off  int64  // where a write starts; the size a truncate sets
	data []byte // a write's bytes, owned by the op
}

// pendingFile is one file's state between syncs: its durable image (the
// backing file, which only sync and crash write), the operations since
// the last sync in order, and an overlay of whole pages that holds the
// latest content of every page they touched, so reads need not replay the
// log.
//
// Invariants, with mu held:
//   - the latest content of byte x (x < size) is overlay[x/pageSize] if
//     that page is present; else zero if x >= maskFrom; else the durable
//     image's byte x (zero past its end);
//   - bytes of overlay pages at or past size are zero;
//   - maskFrom <= size of the durable image is only ever set by a
//     truncate, which also brings the page holding the cut into the
//     overlay, so nothing of the durable image past a pending cut shows.
//
// A pendingFile is safe for concurrent use.
type pendingFile struct {
	mu       sync.Mutex
	durable  *os.File // owned; closed by close
	log      []op
	overlay  map[int64]*[pageSize]byte
	size     int64 // latest size
	maskFrom int64 // durable bytes at or past this read as zeroes
	bytes    int64 // bytes of pending writes (sum of len(data))
}

// newPendingFile takes ownership of durable, an open read-write
// descriptor of the backing file.
func newPendingFile(durable *os.File) (*pendingFile, error) {
	fi, err := durable.Stat()
	if err != nil {
		durable.Close()
		return nil, err
	}
	return &pendingFile{
		durable:  durable,
		overlay:  make(map[int64]*[pageSize]byte),
		size:     fi.Size(),
		maskFrom: math.MaxInt64,
	}, nil
}

// readDurable fills dst with the durable image at off, as the latest
// state sees it: zeroes at or past maskFrom and past the image's end.
func (p *pendingFile) readDurable(dst []byte, off int64) error {
	clear(dst)
	if off >= p.maskFrom {
		return nil
	}
	if lim := p.maskFrom - off; int64(len(dst)) > lim {
		dst = dst[:lim]
	}
	_, err := p.durable.ReadAt(dst, off)
	if err == io.EOF {
		err = nil
	}
	return err
}

// page returns overlay page i, loading it from the durable image first
// unless the caller is about to overwrite all of it (whole).
func (p *pendingFile) page(i int64, whole bool) (*[pageSize]byte, error) {
	if pg, ok := p.overlay[i]; ok {
		return pg, nil
	}
	pg := new([pageSize]byte)
	if !whole {
		if err := p.readDurable(pg[:], i*pageSize); err != nil {
			return nil, err
		}
	}
	p.overlay[i] = pg
	return pg, nil
}

// ReadAt reads the latest state. It returns io.EOF when off is at or past
// the latest size, and fewer bytes than len(dst) (with a nil error) when
// the file ends inside the range.
func (p *pendingFile) ReadAt(dst []byte, off int64) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if off >= p.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(dst)), p.size-off))
	dst = dst[:n]
	// Walk the range page by page; runs of pages not in the overlay are
	// read from the durable image with one pread.
	runStart := -1 // index in dst of the current durable run
	flush := func(end int) error {
		if runStart < 0 {
			return nil
		}
		err := p.readDurable(dst[runStart:end], off+int64(runStart))
		runStart = -1
		return err
	}
	for i := 0; i < n; {
		pos := off + int64(i)
		pi, po := pos/pageSize, int(pos%pageSize)
		k := min(pageSize-po, n-i)
		if pg, ok := p.overlay[pi]; ok {
			if err := flush(i); err != nil {
				return 0, err
			}
			copy(dst[i:i+k], pg[po:])
		} else if runStart < 0 {
			runStart = i
		}
		i += k
	}
	if err := flush(n); err != nil {
		return 0, err
	}
	return n, nil
}

// WriteAt records a write of data at off; the caller keeps data.
func (p *pendingFile) WriteAt(data []byte, off int64) error {
	if off < 0 {
		return errors.New("crashfs: negative offset")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(data) == 0 {
		return nil
	}
	end := off + int64(len(data))
	for pos := off; pos < end; {
		pi, po := pos/pageSize, pos%pageSize
		k := min(pageSize-po, end-pos)
		pg, err := p.page(pi, po == 0 && k == pageSize)
		if err != nil {
			return err
		}
		copy(pg[po:po+k], data[pos-off:])
		pos += k
	}
	p.log = append(p.log, op{kind: opWrite, off: off, data: append([]byte(nil), data...)})
	p.bytes += int64(len(data))
	p.size = max(p.size, end)
	return nil
}

// Truncate records a size change.
func (p *pendingFile) Truncate(size int64) error {
	if size < 0 {
		return errors.New("crashfs: negative size")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if size < p.size {
		cut := size / pageSize
		if size%pageSize != 0 {
			// The page holding the cut keeps its head: load it while
			// the durable image still shows there, then zero the tail.
			pg, err := p.page(cut, false)
			if err != nil {
				return err
			}
			clear(pg[size%pageSize:])
			cut++
		}
		for i := range p.overlay {
			if i >= cut {
				delete(p.overlay, i)
			}
		}
		p.maskFrom = min(p.maskFrom, size)
	}
	p.size = size
	p.log = append(p.log, op{kind: opTruncate, off: size})
	return nil
}

// Size returns the latest size.
func (p *pendingFile) Size() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size
}

// pending returns how many writes, and how many bytes of them, a crash
// would drop now.
func (p *pendingFile) pending() (writes, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.log {
		if o.kind == opWrite {
			writes++
		}
	}
	return writes, p.bytes
}

// Sync makes the pending operations durable: it replays them, in order,
// on the durable image, and empties the log and the overlay.
func (p *pendingFile) Sync() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, o := range p.log {
		if err := p.apply(o, o.data, o.off); err != nil {
			// What was applied is durable; the rest stays pending.
			p.log = p.log[i:]
			p.bytes = 0
			for _, o := range p.log {
				p.bytes += int64(len(o.data))
			}
			return err
		}
	}
	p.reset()
	return nil
}

func (p *pendingFile) apply(o op, data []byte, off int64) error {
	if o.kind == opTruncate {
		return p.durable.Truncate(o.off)
	}
	_, err := p.durable.WriteAt(data, off)
	return err
}

// reset forgets the pending operations: the latest state is the durable
// image again.
func (p *pendingFile) reset() {
	p.log = nil
	p.bytes = 0
	clear(p.overlay)
	p.maskFrom = math.MaxInt64
	if fi, err := p.durable.Stat(); err == nil {
		p.size = fi.Size()
	}
}

// crash drops the pending operations as mode says and adds what it did to
// st. In Torn mode rng decides, per pending write: it survives whole, not
// at all, or in part, each of its sectors kept or dropped on its own; a
// pending truncate survives or not. What survives is applied to the
// durable image in the original order, so each sector ends up holding its
// durable content or the content of one of the writes to it, never a mix.
func (p *pendingFile) crash(mode Mode, rng *rand.Rand, st *CrashStats) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first error
	if len(p.log) > 0 {
		st.Files++
	}
	keep := func(o op, data []byte, off int64) {
		if err := p.apply(o, data, off); err != nil && first == nil {
			first = err
		}
	}
	for _, o := range p.log {
		if o.kind == opTruncate {
			st.Truncates++
			if mode == Torn && rng.IntN(2) == 0 {
				keep(o, nil, 0)
			} else {
				st.TruncatesDropped++
			}
			continue
		}
		st.Writes++
		n := int64(len(o.data))
		choice := 1 // drop
		if mode == Torn {
			choice = rng.IntN(3)
		}
		switch choice {
		case 0: // survives whole
			keep(o, o.data, o.off)
			st.WritesKept++
		case 1: // lost
			st.WritesDropped++
			st.BytesDropped += n
		default: // torn: sector by sector
			var kept int64
			end := o.off + n
			for pos := o.off; pos < end; {
				k := min(SectorSize-pos%SectorSize, end-pos)
				if rng.IntN(2) == 0 {
					keep(o, o.data[pos-o.off:pos-o.off+k], pos)
					kept += k
				}
				pos += k
			}
			switch kept {
			case n:
				st.WritesKept++
			case 0:
				st.WritesDropped++
			default:
				st.WritesTorn++
			}
			st.BytesDropped += n - kept
		}
	}
	p.reset()
	return first
}

// close releases the durable descriptor; the pendingFile is unusable
// afterwards.
func (p *pendingFile) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.durable.Close()
}
