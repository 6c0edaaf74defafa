//go:build linux && race

package harness

func init() { raceEnabled = true }
