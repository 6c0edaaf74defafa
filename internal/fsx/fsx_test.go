package fsx

import (
	"strings"
	"testing"
)

func TestModel(t *testing.T) {
	m := NewModel()
	m.Write(4096, []byte("abcd"))
	if m.KSize != 4100 || m.VSize != 4100 {
		t.Fatalf("sizes %d %d", m.KSize, m.VSize)
	}
	if n, eof := m.ExpectRead(4096, 512); n != 4 || !eof {
		t.Fatalf("ExpectRead = %d, %v", n, eof)
	}
	if n, eof := m.ExpectRead(0, 512); n != 512 || eof {
		t.Fatalf("ExpectRead = %d, %v", n, eof)
	}
	if d := m.Check(4095, []byte("\x00abcd")); d != "" {
		t.Fatal(d)
	}
	if d := m.Check(4096, []byte("abxd")); !strings.Contains(d, "offset 4098") {
		t.Fatalf("diff %q", d)
	}
	m.Truncate(4098)
	m.Write(8192, []byte("z"))
	if got := m.Bytes(4096, 4); string(got) != "ab\x00\x00" {
		t.Fatalf("after truncate and extend: %q", got)
	}
	m.Punch(8192, 1)
	m.Allocate(9000, 100)
	if m.KSize != 9100 || m.Bytes(8192, 1)[0] != 0 {
		t.Fatal("punch/allocate")
	}
	m.Set(0, []byte("q"))
	m.VSize = 10
	m.Reopen()
	if m.VSize != 9100 || m.Content()[0] != 'q' {
		t.Fatal("set/reopen")
	}
}

func TestLog(t *testing.T) {
	l := NewLog(3)
	for i := 0; i < 5; i++ {
		l.Add("op %d", i)
	}
	s := l.String()
	if strings.Contains(s, "op 1") || !strings.Contains(s, "op 2") || !strings.Contains(s, "op 4") || l.Len() != 5 {
		t.Fatalf("log %q", s)
	}
}

// A watchdog reads the log while the run adds to it; under -race this
// fails if the log is not safe for that.
func TestLogConcurrentReader(t *testing.T) {
	l := NewLog(8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000; i++ {
			l.Add("op %d", i)
		}
	}()
	for i := 0; i < 100; i++ {
		_ = l.String()
	}
	<-done
	if l.Len() != 1000 || !strings.Contains(l.String(), "op 999") {
		t.Fatalf("log after concurrent reads: %d ops, %q", l.Len(), l.String())
	}
}
