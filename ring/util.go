package ring

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"
)

func hex(v uint64) string { return strconv.FormatUint(v, 16) }
func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// errnoOf digs the syscall.Errno out of an *os.SyscallError, so callers can
// compare errno values cheaply.
func errnoOf(err error) error {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return err
}

type detailErr struct {
	errno syscall.Errno
	msg   string
}

func (d detailErr) Error() string { return d.msg + ": " + d.errno.Error() }
func (d detailErr) Unwrap() error { return d.errno }

func errorf(errno syscall.Errno, format string, args ...any) error {
	return detailErr{errno, fmt.Sprintf(format, args...)}
}
