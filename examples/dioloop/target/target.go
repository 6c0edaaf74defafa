//go:build linux

package target

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/uringdio/uringdio/dio"
)

// Stats count what a Target served since Start. Datasyncs counts the
// fdatasyncs the device's flushes became; DSyncWrites the writes that went
// with DSync.
type Stats struct {
	Reads, Writes         uint64
	ReadBytes, WriteBytes uint64
	DSyncWrites           uint64
	Datasyncs             uint64
	Punches               uint64 // discards and write-zeroes (fallocate)
	Errors                uint64 // requests answered with an error
	// Engine is the image's engine's counters (shared with every File on
	// that engine): Bounced counts requests that were not aligned to the
	// image and went through bounce buffers.
	Engine dio.Stats
}

// Target serves one image as a FUSE file, and the loop device over it. Its
// methods are safe for concurrent use.
type Target struct {
	cfg     Config
	img     *dio.File
	size    int64  // the disk's size: fixed while served
	name    string // the served file's name, in dir
	dir     string
	madeDir bool
	srv     *fuse.Server
	started time.Time

	st struct {
		reads, writes, readBytes, writeBytes atomic.Uint64
		dsyncWrites, datasyncs, punches      atomic.Uint64
		errors                               atomic.Uint64
	}

	// mu guards the handles of the served file the kernel has open; the
	// FUSE handlers take it.
	mu      sync.Mutex
	nextFh  uint64
	open    int           // handles open
	idle    chan struct{} // closed while open == 0
	closing bool          // Close has begun: no new handles

	// loopMu guards the loop device; it is held across system calls on
	// the served file, so a FUSE handler never takes it.
	loopMu sync.Mutex
	loop   *Loop  // the attached loop device, held open until Close
	dev    string // its path, kept after Close

	closeOnce sync.Once
	closeErr  error

	// flushErr is the first error a flush of the image (Datasync)
	// returned, which every later flush returns: set once, by the
	// flush that failed; read by every flush.
	flushErr atomic.Pointer[error]

	// syncFault, if set, is what the image's Datasync fails with instead
	// of running. Tests only (helpers_test.go: a flush that fails the
	// way a test needs); nil in every other use.
	syncFault atomic.Pointer[error]
}

// Start opens the image with dio (creating or growing it to cfg.Size),
// mounts the FUSE file system on cfg.Dir and serves it until Close.
func Start(cfg Config) (*Target, error) {
	if cfg.Image == "" {
		return nil, errors.New("target: no image")
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 4096
	}
	switch cfg.BlockSize {
	case 512, 1024, 2048, 4096:
	default:
		return nil, fmt.Errorf("target: block size %d: want 512, 1024, 2048 or 4096", cfg.BlockSize)
	}
	if cfg.Size < 0 || cfg.Size%int64(cfg.BlockSize) != 0 {
		return nil, fmt.Errorf("target: size %d is not a multiple of the block size %d", cfg.Size, cfg.BlockSize)
	}
	flag := os.O_RDWR
	if cfg.Size > 0 {
		flag |= os.O_CREATE
	}
	img, err := dio.Open(cfg.Image, flag, 0o600, cfg.Options)
	if err != nil {
		return nil, fmt.Errorf("target: open the image: %w", err)
	}
	t := &Target{cfg: cfg, img: img, name: filepath.Base(cfg.Image), dir: cfg.Dir, started: time.Now()}
	t.idle = make(chan struct{})
	close(t.idle)
	if err := t.start(); err != nil {
		img.Close()
		if t.madeDir {
			os.Remove(t.dir)
		}
		return nil, err
	}
	return t, nil
}

func (t *Target) start() error {
	size, err := t.img.Size()
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if t.cfg.Size > 0 && t.cfg.Size < size {
		return fmt.Errorf("target: the image holds %d bytes, more than the size asked for (%d): it is never shrunk nor served in part", size, t.cfg.Size)
	}
	if t.cfg.Size > size {
		if err := t.img.Truncate(t.cfg.Size); err != nil {
			return fmt.Errorf("target: grow the image: %w", err)
		}
		if err := t.img.Datasync(); err != nil {
			return fmt.Errorf("target: grow the image: %w", err)
		}
		size = t.cfg.Size
	}
	if size == 0 || size%int64(t.cfg.BlockSize) != 0 {
		return fmt.Errorf("target: the image's size %d is not a positive multiple of the block size %d", size, t.cfg.BlockSize)
	}
	t.size = size
	if t.dir == "" {
		if t.dir, err = os.MkdirTemp("", "dioloop-"); err != nil {
			return fmt.Errorf("target: %w", err)
		}
		t.madeDir = true
	}
	t.srv, err = fuse.NewServer(&fileSystem{RawFileSystem: fuse.NewDefaultRawFileSystem(), t: t}, t.dir, &fuse.MountOptions{
		DirectMount: true, // root mounts without fusermount
		FsName:      t.cfg.Image,
		Name:        "dioloop",
		// 1 MiB requests: the loop driver's largest I/O in one piece.
		MaxWrite: 1 << 20,
		// The loop driver's requests are asynchronous direct I/O; they
		// count as background requests, which FUSE caps at this many.
		MaxBackground: 128,
		// ASYNC_DIO: the kernel sends the pieces of one direct I/O
		// concurrently instead of one after the other.
		ExtraCapabilities: fuse.CAP_ASYNC_DIO,
		// One file: no READDIRPLUS, no extended attributes (the kernel
		// would ask for security.capability before every write).
		DisabledCapabilities: fuse.CAP_READDIRPLUS,
		DisableXAttrs:        true,
		// Replies are written with writev: one copy, as splicing them
		// through a pipe would make.
		DisableSplice: true,
	})
	if err != nil {
		return fmt.Errorf("target: mount %s: %w", t.dir, err)
	}
	go t.srv.Serve()
	if err := t.srv.WaitMount(); err != nil {
		t.srv.Unmount()
		return fmt.Errorf("target: mount %s: %w", t.dir, err)
	}
	return nil
}

// File returns the served file's path: the FUSE file the loop device is
// attached to.
func (t *Target) File() string { return filepath.Join(t.dir, t.name) }

// Dir returns the directory the FUSE file system is mounted on.
func (t *Target) Dir() string { return t.dir }

// Size returns the disk's size in bytes.
func (t *Target) Size() int64 { return t.size }

// Image returns the dio.File the disk is served from.
func (t *Target) Image() *dio.File { return t.img }

// Device returns the attached loop device's path, or "".
func (t *Target) Device() string {
	t.loopMu.Lock()
	defer t.loopMu.Unlock()
	return t.dev
}

// Flush makes every write the image has received durable (Datasync).
//
// Once a flush has failed, every later one fails with that first error,
// though the image's Datasync might now succeed: the writes the failed
// flush was to make durable may be lost (a kernel that failed to write
// back pages may have dropped them, and report the error to one fdatasync
// only), and a flush that succeeded after it would tell the file system
// above that they are safe. The device's reads and writes go on: a file
// system above sees its flushes fail and decides (ext4 aborts its
// journal, and goes read-only).
func (t *Target) Flush() error {
	if err := t.flushErr.Load(); err != nil {
		return *err
	}
	if err := t.datasync(); err != nil {
		err = fmt.Errorf("target: flush: %w", err)
		t.flushErr.CompareAndSwap(nil, &err)
		return *t.flushErr.Load()
	}
	// A flush that failed while this one ran may have taken the error
	// this one should have seen.
	if err := t.flushErr.Load(); err != nil {
		return *err
	}
	return nil
}

// datasync is the image's Datasync, or the fault a test set.
func (t *Target) datasync() error {
	if err := t.syncFault.Load(); err != nil {
		return *err
	}
	return t.img.Datasync()
}

// Stats returns the target's counters.
func (t *Target) Stats() Stats {
	return Stats{
		Reads:       t.st.reads.Load(),
		Writes:      t.st.writes.Load(),
		ReadBytes:   t.st.readBytes.Load(),
		WriteBytes:  t.st.writeBytes.Load(),
		DSyncWrites: t.st.dsyncWrites.Load(),
		Datasyncs:   t.st.datasyncs.Load(),
		Punches:     t.st.punches.Load(),
		Errors:      t.st.errors.Load(),
		Engine:      t.img.Engine().Stats(),
	}
}

// Close stops serving: it flushes the image, detaches the loop device
// (which the kernel does once the device's last user closes it), waits
// for the kernel to let go of the served file, flushes what came in
// meanwhile, unmounts the FUSE file system and closes the image.
//
// If ctx ends before the device's users are gone, Close unmounts lazily
// and returns an error wrapping ErrBusy; once this process exits, I/O the
// device's users still do fails.
func (t *Target) Close(ctx context.Context) error {
	t.closeOnce.Do(func() { t.closeErr = t.close(ctx) })
	return t.closeErr
}

func (t *Target) close(ctx context.Context) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	// No new handles of the served file from here: none may come between
	// the loop device's release of its own and the wait for the last.
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	ferr := t.Flush()
	add(ferr)
	add(t.detach())
	t.mu.Lock()
	idle := t.idle
	t.mu.Unlock()
	busy := false
	select {
	case <-idle:
		if ferr == nil {
			add(t.Flush()) // what the device's last users wrote on their way out
		}
		add(t.srv.Unmount())
	case <-ctx.Done():
		busy = true
		add(fmt.Errorf("%w (%s): %w", ErrBusy, t.Device(), context.Cause(ctx)))
		add(lazyUnmount(t.dir))
	}
	if !busy {
		// Busy, the image stays open: the kernel may still send
		// requests until this process exits.
		add(t.img.Close())
	}
	if t.madeDir {
		add(os.Remove(t.dir))
	}
	return errors.Join(errs...)
}
