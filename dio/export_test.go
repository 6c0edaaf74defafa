//go:build linux

package dio

// AuditForTest queues a lost-completion audit (audit.go).
func AuditForTest(e *Engine) { e.audit() }
