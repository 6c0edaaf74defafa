//go:build !linux

package devinfo

// Gather describes direct I/O on fd. Outside Linux there is nothing to
// describe: every fact is unknown.
func Gather(fd int) Info {
	const why = "devinfo: direct I/O facts are read on Linux only"
	return Info{
		FSType:          unknown[string](why),
		MemAlign:        unknown[uint32](why),
		OffsetAlign:     unknown[uint32](why),
		ReadOffsetAlign: unknown[uint32](why),
		Untorn:          unknown[Untorn](why),
		Device:          unknown[Device](why),
		NoWait:          unknown[bool](why),
		MayBeBuffered:   unknown[bool](why),
		DSync:           unknown[DSyncCost](why),
	}
}
