//go:build linux && !(mips || mipsle || mips64 || mips64le || ppc64 || ppc64le)

package devinfo

// Direction bits of include/uapi/asm-generic/ioctl.h.
const (
	iocWrite    = 1
	iocRead     = 2
	iocDirShift = 30
)
