//go:build linux

package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// The iceber engine runs github.com/iceber/iouring-go's request API. Its
// top-level package reaches into the standard library with go:linkname,
// which Go 1.23+ refuses at link time unless the binary is linked with
// -ldflags=-checklinkname=0. So it is not linked into diobench (nor into
// any test binary): it lives in the helper command
// benchmarks/internal/icebench (build tag "iceber"), which diobench builds
// on first use into a temporary directory and runs as a subprocess,
// sending it the Config as JSON on stdin and reading a Result back.

// IcebenchPkg is the helper's package path.
const IcebenchPkg = "github.com/uringdio/uringdio/benchmarks/internal/icebench"

const modulePath = "github.com/uringdio/uringdio"

var iceber struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// IceberCleanup removes the helper binary built by this process.
func IceberCleanup() {
	if iceber.dir != "" {
		os.RemoveAll(iceber.dir)
	}
}

// icebenchBinary builds the helper once per process.
func icebenchBinary(ctx context.Context) (string, error) {
	iceber.once.Do(func() {
		if p := os.Getenv("DIOBENCH_ICEBENCH"); p != "" { // a prebuilt helper
			iceber.bin = p
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			iceber.err = skipf("the go command is not on PATH: the iceber engine runs in a helper built with `go build -tags iceber -ldflags=-checklinkname=0`")
			return
		}
		root, err := moduleRoot(goBin)
		if err != nil {
			iceber.err = skipf("cannot find the uringdio module source to build the iceber helper: %v", err)
			return
		}
		dir, err := os.MkdirTemp("", "diobench-icebench-")
		if err != nil {
			iceber.err = err
			return
		}
		iceber.dir = dir
		bin := filepath.Join(dir, "icebench")
		cmd := exec.CommandContext(ctx, goBin, "build", "-tags", "iceber", "-buildvcs=false",
			"-ldflags=-checklinkname=0", "-o", bin, IcebenchPkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			iceber.err = skipf("building the iceber helper failed: %v: %s", err, lastLines(string(out), 4))
			return
		}
		iceber.bin = bin
	})
	return iceber.bin, iceber.err
}

// moduleRoot finds the uringdio module's source: the module of the working
// directory if it is uringdio, else the one this file was compiled from.
func moduleRoot(goBin string) (string, error) {
	isOurs := func(gomod string) bool {
		b, err := os.ReadFile(gomod)
		if err != nil {
			return false
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSpace(strings.TrimPrefix(line, "module")) == modulePath
	}
	if out, err := exec.Command(goBin, "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull && isOurs(gomod) {
			return filepath.Dir(gomod), nil
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		for dir := filepath.Dir(file); ; dir = filepath.Dir(dir) {
			if isOurs(filepath.Join(dir, "go.mod")) {
				return dir, nil
			}
			if parent := filepath.Dir(dir); parent == dir {
				break
			}
		}
	}
	return "", errors.New("run diobench from inside the uringdio module (go run ./benchmarks/diobench)")
}

// runIceber runs cfg in the iceber helper.
func runIceber(ctx context.Context, cfg *Config) (*Result, error) {
	if len(cfg.Files) > 0 {
		return nil, skipf("-files is not supported by iceber")
	}
	if cfg.IOPoll {
		return nil, skipf("iouring-go's request API has no IOPOLL ring option")
	}
	bin, err := icebenchBinary(ctx)
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var res Result
	sc := bufio.NewScanner(&stdout)
	found := false
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 && line[0] == '{' {
			if err := json.Unmarshal(line, &res); err == nil {
				found = true
			}
		}
	}
	if !found {
		if runErr == nil {
			runErr = errors.New("no result")
		}
		return nil, fmt.Errorf("iceber helper: %v: %s", runErr, lastLines(stderr.String(), 5))
	}
	if res.Skipped != "" {
		return nil, &SkipError{Reason: res.Skipped}
	}
	return &res, nil
}

// ServeHelper is the iceber helper's main: it reads a Config from stdin,
// runs it with open and writes the Result (or the reason it could not run)
// as one JSON line on stdout.
func ServeHelper(open Opener) {
	var cfg Config
	out := json.NewEncoder(os.Stdout)
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "icebench: reading the config:", err)
		os.Exit(2)
	}
	res, err := RunJobs(context.Background(), &cfg, open, nil)
	if err != nil {
		if reason, ok := IsSkip(err); ok {
			out.Encode(skipped(&cfg, reason))
			return
		}
		fmt.Fprintln(os.Stderr, "icebench:", err)
		os.Exit(1)
	}
	out.Encode(res)
}
