//go:build linux

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	for _, cfg := range []config{
		{DevMiB: 8, VolMiB: 12, OverOff: 6, OverLen: 3}, // the default: straddles the devices
		{DevMiB: 4, VolMiB: 4, OverOff: 0, OverLen: 4},  // the whole volume, on one device each
		{DevMiB: 3, VolMiB: 5, OverOff: 1, OverLen: 1},
	} {
		var out bytes.Buffer
		cfg.Dir = t.TempDir()
		if err := run(context.Background(), cfg, &out); err != nil {
			t.Fatalf("%+v: %v\n%s", cfg, err, out.String())
		}
		t.Log("\n" + out.String())
		s := out.String()
		if strings.Count(s, ": intact") != 2 || !strings.Contains(s, "released the clone") {
			t.Errorf("%+v: output lacks the checks", cfg)
		}
		if !strings.Contains(s, "B[") {
			t.Errorf("%+v: the clone shows no version B", cfg)
		}
	}
}

func TestRunRejectsBadSizes(t *testing.T) {
	for _, cfg := range []config{
		{DevMiB: 4, VolMiB: 8, OverOff: 0, OverLen: 1}, // no room for copy-on-write
		{DevMiB: 8, VolMiB: 8, OverOff: 6, OverLen: 4}, // past the end
	} {
		cfg.Dir = t.TempDir()
		if err := run(context.Background(), cfg, &bytes.Buffer{}); err == nil {
			t.Errorf("%+v: run succeeded", cfg)
		}
	}
}
