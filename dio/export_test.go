//go:build linux

package dio

import "testing"

// AuditForTest queues a lost-completion audit (audit.go).
func AuditForTest(e *Engine) { e.audit() }

// SizeForTest returns f.Size(), failing the test on an error.
func SizeForTest(t testing.TB, f *File) int64 {
	t.Helper()
	n, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// InflightForTest returns the File's count of descriptor references.
func InflightForTest(f *File) int64 { return f.inflight.Load() }
