//go:build linux

package harness

import "runtime"

// raceEnabled is set under -race, whose instrumentation allocates.
var raceEnabled bool

type runtimeMem struct{ mallocs uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.mallocs = s.Mallocs
}
