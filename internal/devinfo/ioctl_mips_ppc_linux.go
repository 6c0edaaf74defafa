//go:build linux && (mips || mipsle || mips64 || mips64le || ppc64 || ppc64le)

package devinfo

// Direction bits of arch/{mips,powerpc}/include/uapi/asm/ioctl.h,
// whose size field is 13 bits wide, not 14.
const (
	iocRead     = 2
	iocWrite    = 4
	iocDirShift = 29
)
