//go:build linux

package ring

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Probed is what the running kernel offers, found once per process by
// Probe.
type Probed struct {
	// Features reported by a plain ring's setup.
	Features Features
	// LastOp is the highest opcode the kernel knows.
	LastOp Op
	// ops[o] is true when opcode o is supported.
	ops [256]bool
	// SetupFlags are the setup flags a ring could be created with (each was
	// tried on a small ring).
	SetupFlags SetupFlags
	// SetupErrors says why each refused flag was refused.
	SetupErrors map[SetupFlags]error
}

// Supports reports whether the kernel supports opcode o.
func (p *Probed) Supports(o Op) bool { return p.ops[o] }

// Require returns nil if every opcode is supported, or an error naming the
// first that is not.
func (p *Probed) Require(ops ...Op) error {
	for _, o := range ops {
		if !p.ops[o] {
			return Unsupported("probe", "kernel does not support io_uring opcode "+o.String(), 0)
		}
	}
	return nil
}

// String summarises the probe on one line.
func (p *Probed) String() string {
	var ops []string
	for o := Op(0); o < opLast; o++ {
		if _, named := opNames[o]; named && p.ops[o] {
			ops = append(ops, o.String())
		}
	}
	return fmt.Sprintf("last op %d; ops used here: %s; setup flags: %s; features: %#x",
		p.LastOp, strings.Join(ops, ","), p.SetupFlags, uint32(p.Features))
}

var probeOnce struct {
	sync.Once
	p   *Probed
	err error
}

// Probe asks the kernel, once per process, which opcodes, features and setup
// flags it supports. It fails only if io_uring itself is unavailable.
func Probe() (*Probed, error) {
	probeOnce.Do(func() { probeOnce.p, probeOnce.err = probe() })
	return probeOnce.p, probeOnce.err
}

func probe() (*Probed, error) {
	var kp params
	fd, err := setup(4, &kp)
	if err != nil {
		if err == syscall.ENOSYS {
			return nil, Unsupported("probe", "kernel has no io_uring (needs Linux 5.1+, 6.1+ for everything here)", syscall.ENOSYS)
		}
		return nil, setupError(0, err)
	}
	defer syscall.Close(fd)
	p := &Probed{Features: Features(kp.Features), SetupErrors: map[SetupFlags]error{}}

	const nops = 256
	buf := make([]byte, unsafe.Sizeof(probeHeader{})+nops*unsafe.Sizeof(probeOp{}))
	if err := register(fd, regProbe, unsafe.Pointer(&buf[0]), nops); err == nil {
		h := (*probeHeader)(unsafe.Pointer(&buf[0]))
		p.LastOp = Op(h.lastOp)
		ops := unsafe.Slice((*probeOp)(unsafe.Add(unsafe.Pointer(&buf[0]), unsafe.Sizeof(probeHeader{}))), nops)
		for _, o := range ops[:h.opsLen] {
			if o.flags&opSupported != 0 {
				p.ops[o.op] = true
			}
		}
	}

	for _, f := range []SetupFlags{SetupIOPoll, SetupSQPoll, SetupClamp, SetupSubmitAll,
		SetupCoopTaskrun, SetupTaskrunFlag | SetupCoopTaskrun, SetupSingleIssuer,
		SetupSingleIssuer | SetupDeferTaskrun} {
		var kp params
		kp.Flags = uint32(f)
		fd, err := setup(4, &kp)
		if err != nil {
			p.SetupErrors[f] = err
			continue
		}
		syscall.Close(fd)
		p.SetupFlags |= f
	}
	return p, nil
}

// PolledIOSupported reports whether the block device under fd can complete
// polled I/O (IORING_SETUP_IOPOLL): its sysfs queue/io_poll is 1. For a
// regular file it looks at the device of the filesystem; a filesystem
// without a block device (tmpfs) cannot poll. The error says why not.
func PolledIOSupported(fd int) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, opErr("fstat", err)
	}
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	base := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
	for _, p := range []string{base + "/queue/io_poll", base + "/../queue/io_poll"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == "1" {
			return true, nil
		}
		return false, ErrNoPolledIO
	}
	return false, Unsupported("iopoll", fmt.Sprintf("file is not on a block device (device %d:%d has no queue/io_poll)", unix.Major(dev), unix.Minor(dev)), 0)
}
