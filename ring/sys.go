//go:build linux

package ring

import (
	"runtime"
	"syscall"
	"unsafe"

	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

// SetupFlags are the IORING_SETUP_* flags a ring can be created with.
type SetupFlags uint32

// Setup flags. The values are the kernel's; the first ones come from the
// io_uring dependency, the two it lacks (added in Linux 6.0 and 6.1) are
// defined here from include/uapi/linux/io_uring.h.
const (
	SetupIOPoll       = SetupFlags(iosys.IORING_SETUP_IOPOLL)
	SetupSQPoll       = SetupFlags(iosys.IORING_SETUP_SQPOLL)
	SetupSQAff        = SetupFlags(iosys.IORING_SETUP_SQ_AFF)
	SetupCQSize       = SetupFlags(iosys.IORING_SETUP_CQSIZE)
	SetupClamp        = SetupFlags(iosys.IORING_SETUP_CLAMP)
	SetupAttachWQ     = SetupFlags(iosys.IORING_SETUP_ATTACH_WQ)
	SetupRDisabled    = SetupFlags(iosys.IORING_SETUP_R_DISABLED)
	SetupSubmitAll    = SetupFlags(iosys.IORING_SETUP_SUBMIT_ALL)
	SetupCoopTaskrun  = SetupFlags(iosys.IORING_SETUP_COOP_TASKRUN)
	SetupTaskrunFlag  = SetupFlags(iosys.IORING_SETUP_TASKRUN_FLAG)
	SetupSingleIssuer = SetupFlags(1 << 12) // IORING_SETUP_SINGLE_ISSUER, 6.0
	SetupDeferTaskrun = SetupFlags(1 << 13) // IORING_SETUP_DEFER_TASKRUN, 6.1
)

var setupFlagNames = []struct {
	f    SetupFlags
	name string
}{
	{SetupIOPoll, "IOPOLL"}, {SetupSQPoll, "SQPOLL"}, {SetupSQAff, "SQ_AFF"},
	{SetupCQSize, "CQSIZE"}, {SetupClamp, "CLAMP"}, {SetupAttachWQ, "ATTACH_WQ"},
	{SetupRDisabled, "R_DISABLED"}, {SetupSubmitAll, "SUBMIT_ALL"},
	{SetupCoopTaskrun, "COOP_TASKRUN"}, {SetupTaskrunFlag, "TASKRUN_FLAG"},
	{SetupSingleIssuer, "SINGLE_ISSUER"}, {SetupDeferTaskrun, "DEFER_TASKRUN"},
}

// String returns the flags as "SQPOLL|COOP_TASKRUN", or "none".
func (f SetupFlags) String() string {
	s := ""
	for _, n := range setupFlagNames {
		if f&n.f != 0 {
			if s != "" {
				s += "|"
			}
			s += n.name
			f &^= n.f
		}
	}
	if f != 0 {
		if s != "" {
			s += "|"
		}
		s += "0x" + hex(uint64(f))
	}
	if s == "" {
		return "none"
	}
	return s
}

// Features are the IORING_FEAT_* bits the kernel reports at setup.
type Features uint32

// Feature bits (include/uapi/linux/io_uring.h).
const (
	FeatSingleMmap     = Features(iosys.IORING_FEAT_SINGLE_MMAP)
	FeatNoDrop         = Features(iosys.IORING_FEAT_NODROP)
	FeatSubmitStable   = Features(iosys.IORING_FEAT_SUBMIT_STABLE)
	FeatRWCurPos       = Features(iosys.IORING_FEAT_RW_CUR_POS)
	FeatCurPersonality = Features(iosys.IORING_FEAT_CUR_PERSONALITY)
	FeatFastPoll       = Features(iosys.IORING_FEAT_FAST_POLL)
	FeatPoll32Bits     = Features(iosys.IORING_FEAT_POLL_32BITS)
	FeatSQPollNonfixed = Features(iosys.IORING_FEAT_SQPOLL_NONFIXED)
	FeatExtArg         = Features(1 << 8)
	FeatNativeWorkers  = Features(1 << 9)
	FeatRsrcTags       = Features(1 << 10)
	FeatCQESkip        = Features(1 << 11)
	FeatLinkedFile     = Features(1 << 12)
	FeatRegRegRing     = Features(1 << 13)
)

// Op is an io_uring opcode (IORING_OP_*), from the io_uring dependency.
type Op uint8

// Opcodes this package prepares.
const (
	OpNop         = Op(iosys.IORING_OP_NOP)
	OpPollAdd     = Op(iosys.IORING_OP_POLL_ADD)
	OpReadv       = Op(iosys.IORING_OP_READV)
	OpWritev      = Op(iosys.IORING_OP_WRITEV)
	OpFsync       = Op(iosys.IORING_OP_FSYNC)
	OpReadFixed   = Op(iosys.IORING_OP_READ_FIXED)
	OpWriteFixed  = Op(iosys.IORING_OP_WRITE_FIXED)
	OpTimeout     = Op(iosys.IORING_OP_TIMEOUT)
	OpAsyncCancel = Op(iosys.IORING_OP_ASYNC_CANCEL)
	OpLinkTimeout = Op(iosys.IORING_OP_LINK_TIMEOUT)
	OpFallocate   = Op(iosys.IORING_OP_FALLOCATE)
	OpRead        = Op(iosys.IORING_OP_READ)
	OpWrite       = Op(iosys.IORING_OP_WRITE)
	opLast        = Op(iosys.IORING_OP_LAST)
)

var opNames = map[Op]string{
	OpNop: "nop", OpReadv: "readv", OpWritev: "writev", OpFsync: "fsync",
	OpReadFixed: "read_fixed", OpWriteFixed: "write_fixed", OpTimeout: "timeout",
	OpAsyncCancel: "async_cancel", OpLinkTimeout: "link_timeout",
	OpFallocate: "fallocate", OpRead: "read", OpWrite: "write",
}

// String returns the opcode's name ("read_fixed"), or "op(N)".
func (o Op) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return "op(" + itoa(int64(o)) + ")"
}

// SQE flags (IOSQE_*).
const (
	SQEFixedFile  = uint8(iosys.IOSQE_FLAGS_FIXED_FILE)
	SQEIODrain    = uint8(iosys.IOSQE_FLAGS_IO_DRAIN)
	SQEIOLink     = uint8(iosys.IOSQE_FLAGS_IO_LINK)
	SQEIOHardlink = uint8(iosys.IOSQE_FLAGS_IO_HARDLINK)
	SQEAsync      = uint8(iosys.IOSQE_FLAGS_ASYNC)
)

// Read/write flags for the rw_flags field (RWF_*), from x/sys/unix.
const (
	RWFHiPri  = uint32(unix.RWF_HIPRI)
	RWFDSync  = uint32(unix.RWF_DSYNC)
	RWFSync   = uint32(unix.RWF_SYNC)
	RWFNoWait = uint32(unix.RWF_NOWAIT)
	RWFAtomic = uint32(unix.RWF_ATOMIC)
)

// Fsync and timeout flags.
const (
	FsyncDatasync = iosys.IORING_FSYNC_DATASYNC
	TimeoutAbs    = iosys.IORING_TIMEOUT_ABS
)

// Enter flags and SQ ring flags.
const (
	enterGetEvents = iosys.IORING_ENTER_FLAGS_GETEVENTS
	enterSQWakeup  = iosys.IORING_ENTER_FLAGS_SQ_WAKEUP
	enterSQWait    = iosys.IORING_ENTER_FLAGS_SQ_WAIT
	enterExtArg    = uint32(1 << 3) // IORING_ENTER_EXT_ARG, 5.11

	sqNeedWakeup = iosys.IORING_SQ_NEED_WAKEUP
	sqCQOverflow = iosys.IORING_SQ_CQ_OVERFLOW
	sqTaskrun    = uint32(1 << 2) // IORING_SQ_TASKRUN
)

// Register opcodes used here.
const (
	regBuffers     = iosys.IORING_REGISTER_BUFFERS
	unregBuffers   = iosys.IORING_UNREGISTER_BUFFERS
	regFiles       = iosys.IORING_REGISTER_FILES
	unregFiles     = iosys.IORING_UNREGISTER_FILES
	regFilesUpdate = iosys.IORING_REGISTER_FILES_UPDATE
	regProbe       = iosys.IORING_REGISTER_PROBE
)

// Limits of the kernel (io_uring/io_uring.h): IORING_MAX_ENTRIES and
// IORING_MAX_CQ_ENTRIES.
const (
	MaxEntries   = 32768
	MaxCQEntries = 2 * MaxEntries
)

// SQE is a submission queue entry, laid out as the kernel's struct
// io_uring_sqe (64 bytes). Unions are named after their use for direct I/O.
type SQE struct {
	Opcode      Op
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64 // offset, or addr2
	Addr        uint64 // buffer address, iovec array, timespec, or user_data to cancel
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags, timeout_flags, cancel_flags, fallocate: unused
	UserData    uint64
	BufIndex    uint16 // buf_index for *_FIXED, or buf_group
	Personality uint16
	SpliceFdIn  int32 // or file_index
	Addr3       uint64
	pad         uint64
}

// CQE is a completion queue entry, laid out as struct io_uring_cqe (16 bytes).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// params is the kernel's struct io_uring_params, from the io_uring dependency.
type params = iosys.IOURingParams

// getEventsArg is struct io_uring_getevents_arg, used with IORING_ENTER_EXT_ARG.
type getEventsArg struct {
	sigmask     uint64
	sigmaskSz   uint32
	minWaitUsec uint32
	ts          uint64
}

// probeHeader is struct io_uring_probe, followed by ops.
type probeHeader struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
}

// probeOp is struct io_uring_probe_op.
type probeOp struct {
	op    uint8
	resv  uint8
	flags uint16 // IO_URING_OP_SUPPORTED = 1
	resv2 uint32
}

const opSupported = 1

// setup wraps io_uring_setup(2).
func setup(entries uint32, p *params) (int, error) {
	fd, err := iosys.IOURingSetup(uint(entries), p)
	if err != nil {
		return -1, errnoOf(err)
	}
	return fd, nil
}

// enter wraps io_uring_enter(2), retrying EINTR. It never returns EINTR.
//
// An enter that cannot block (it waits for no completion) is a raw
// syscall: the goroutine keeps its P, so the Go scheduler does no hand-off
// when the kernel spends a while in it (on a RAM device such as zram the
// reads themselves run inside the submit). A waiting enter goes through
// the io_uring dependency's wrapper, which tells the scheduler it may
// block.
func enter(fd int, toSubmit, minComplete, flags uint32) (int, error) {
	for {
		if minComplete == 0 {
			r, _, e := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit), 0, uintptr(flags), 0, 0)
			if e == 0 {
				return int(r), nil
			}
			if e != syscall.EINTR {
				return 0, e
			}
			continue
		}
		n, err := iosys.IOURingEnter(fd, toSubmit, minComplete, flags, nil)
		if err == nil {
			return n, nil
		}
		if e := errnoOf(err); e != syscall.EINTR {
			return 0, e
		}
	}
}

// enterArg is enter with IORING_ENTER_EXT_ARG (a wait with a timeout). The
// io_uring dependency's wrapper has no argument size, so this one calls the
// syscall itself; the number is x/sys/unix's. EINTR is retried.
//
// The kernel reads the timeout through the address in the argument
// struct, a plain integer to Go: it is taken here, with no call (so no
// stack growth, which would move ts) between it and the system call, which
// does not split the stack; ts is a real pointer until then, so a move of
// the caller's stack before this point is followed.
func enterArg(fd int, toSubmit, minComplete, flags uint32, ts *unix.Timespec) (int, error) {
	for {
		arg := getEventsArg{ts: uint64(uintptr(unsafe.Pointer(ts)))}
		r, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit),
			uintptr(minComplete), uintptr(flags|enterExtArg), uintptr(unsafe.Pointer(&arg)),
			unsafe.Sizeof(arg))
		runtime.KeepAlive(ts)
		if e == 0 {
			return int(r), nil
		}
		if e != syscall.EINTR {
			return 0, e
		}
	}
}

// register wraps io_uring_register(2) (the dependency retries EINTR).
func register(fd int, op uint8, arg unsafe.Pointer, n uint32) error {
	if err := iosys.IOURingRegister(fd, op, arg, n); err != nil {
		return errnoOf(err)
	}
	return nil
}
