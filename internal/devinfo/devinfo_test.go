package devinfo

import (
	"strings"
	"testing"
)

// TestStringOneAlignedFactPerLine pins the layout of String: one fact per
// line, values in one column, sources of alignment and untorn limits in
// parentheses, "unknown (why)" for what could not be told, and the device
// lines only when there is a device.
func TestStringOneAlignedFactPerLine(t *testing.T) {
	dev := Device{Major: 254, Minor: 1, Name: "vda1", Disk: "vda",
		LogicalBlockSize: known(uint32(512), "sysfs"), PhysicalBlockSize: known(uint32(4096), "sysfs"),
		MaxIOBytes: known(uint32(1280<<10), "sysfs"), Rotational: known(false, "sysfs"),
		WriteCache: known(WriteBack, "sysfs"), FUA: unknown[bool]("open queue/fua: no such file"),
		IOPoll: known(true, "sysfs")}
	i := Info{
		Kind: KindRegular, Direct: true, FSType: known("xfs", "statfs"),
		MemAlign: known(uint32(4), "statx"), OffsetAlign: known(uint32(4096), "statx"),
		ReadOffsetAlign: known(uint32(512), "statx STATX_DIO_READ_ALIGN"),
		Untorn:          known(Untorn{Min: 4096, Max: 1 << 20, MaxOpt: 64 << 10, MaxSegments: 1}, "statx"),
		Device:          known(dev, "sysfs"),
		NoWait:          known(true, "preadv2"),
		MayBeBuffered:   known(true, "because"), BufferedAdvice: "do this",
		DSync: unknown[DSyncCost]("write back cache, FUA unknown (open queue/fua: no such file)"),
	}
	want := `file:                   regular file, opened with O_DIRECT
file system:            xfs
memory alignment:       4 B (statx)
offset alignment:       4 KiB (statx)
read offset alignment:  512 B (statx STATX_DIO_READ_ALIGN)
untorn writes:          4 KiB to 1 MiB, fast up to 64 KiB, 1 segment (statx)
device:                 vda1 (254:1), partition of vda
logical block size:     512 B
physical block size:    4 KiB
max I/O size:           1280 KiB
rotational:             no
write cache:            write back
FUA:                    unknown (open queue/fua: no such file)
IOPOLL:                 yes
NOWAIT:                 yes
may be buffered:        yes: because; do this
DSync write:            unknown (write back cache, FUA unknown (open queue/fua: no such file))
`
	if got := i.String(); got != want {
		t.Errorf("String:\n%s\nwant:\n%s", got, want)
	}

	var zero Info
	s := zero.String()
	if strings.Contains(s, "logical block size") || !strings.Contains(s, "device:                 unknown\n") {
		t.Errorf("the zero Info:\n%s", s)
	}
}

func TestBytesStr(t *testing.T) {
	for n, want := range map[uint32]string{0: "0", 1: "1 B", 512: "512 B", 4096: "4 KiB", 1536: "1536 B",
		1 << 20: "1 MiB", 3 << 19: "1536 KiB", 1 << 31: "2048 MiB"} {
		if got := bytesStr(n); got != want {
			t.Errorf("bytesStr(%d) = %q, want %q", n, got, want)
		}
	}
}
