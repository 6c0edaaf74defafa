package choose

import (
	"github.com/uringdio/uringdio/completion"
	"testing"
)

// Shorthands for the table: the facts a request can have.
var (
	asyncRead   = Facts{SingleSQE: true}
	overwrite   = Facts{Write: true, PureOverwrite: true, SingleSQE: true}
	notOverwr   = Facts{Write: true, SingleSQE: true}
	extending   = Facts{Write: true, PureOverwrite: true, Extends: true, SingleSQE: true}
	needsSync   = Facts{Write: true, PureOverwrite: true, NeedsSync: true, SingleSQE: true}
	writeThru   = Facts{Write: true, PureOverwrite: true, WriteThrough: true, SingleSQE: true}
	syncRead    = Facts{Sync: true, SingleSQE: true}
	syncWrite   = Facts{Sync: true, Write: true, SingleSQE: true}
	polledRead  = Facts{PolledRing: true, SingleSQE: true}
	polledMulti = Facts{PolledRing: true}
)

// with returns f with the named changes applied; it keeps the table short.
func with(f Facts, change func(*Facts)) Facts { change(&f); return f }

func endIO(f *Facts)      { f.HasEndIO = true }
func multiSQE(f *Facts)   { f.SingleSQE = false }
func polledRing(f *Facts) { f.PolledRing = true }

// TestChooseDowngrades lists every downgrade Choose makes, and the cases
// next to it that are not downgraded, with the rule of Choose's doc comment
// each row exercises.
func TestChooseDowngrades(t *testing.T) {
	tests := []struct {
		rule string
		req  completion.Policy
		f    Facts
		want completion.Policy
		why  completion.Reason
	}{
		// Rule 1: an undefined policy is Default.
		{"1 unknown read", completion.Policy(200), asyncRead, completion.Inline, completion.DowngradeUnknownPolicy},
		{"1 unknown sync", numPolicies, syncRead, completion.Wait, completion.DowngradeUnknownPolicy},
		{"1 unknown write", completion.Policy(6), notOverwr, completion.Pool, completion.DowngradeUnknownPolicy},

		// Rule 2: Wait is always honoured (FORCE_WAIT).
		{"2 wait async read", completion.Wait, asyncRead, completion.Wait, completion.NoDowngrade},
		{"2 wait async write", completion.Wait, notOverwr, completion.Wait, completion.NoDowngrade},
		{"2 wait polled ring", completion.Wait, with(polledRead, func(f *Facts) { f.Sync = true }), completion.Wait, completion.NoDowngrade},

		// Rule 3: synchronous callers complete on their own goroutine.
		{"3 default sync read", completion.Default, syncRead, completion.Wait, completion.NoDowngrade},
		{"3 default sync write", completion.Default, syncWrite, completion.Wait, completion.NoDowngrade},
		{"3 default sync polled", completion.Default, with(syncRead, polledRing), completion.Polled, completion.NoDowngrade},
		{"3 default sync polled multi", completion.Default, with(with(syncRead, polledRing), multiSQE), completion.Wait, completion.DowngradeMultiSQE},
		{"3 polled sync", completion.Polled, with(syncWrite, polledRing), completion.Polled, completion.NoDowngrade},
		{"3 polled sync not polled ring", completion.Polled, syncRead, completion.Wait, completion.DowngradeNotPolledRing},
		{"3 polled sync multi", completion.Polled, with(with(syncRead, polledRing), multiSQE), completion.Wait, completion.DowngradeMultiSQE},
		{"3 inline sync", completion.Inline, syncRead, completion.Wait, completion.DowngradeSync},
		{"3 caller sync", completion.Caller, syncWrite, completion.Wait, completion.DowngradeSync},
		{"3 pool sync", completion.Pool, syncWrite, completion.Wait, completion.DowngradeSync},
		{"3 inline sync polled", completion.Inline, with(syncRead, polledRing), completion.Polled, completion.DowngradeSync},
		{"3 pool sync polled multi", completion.Pool, with(with(syncWrite, polledRing), multiSQE), completion.Wait, completion.DowngradeSync},
		{"3 sync ignores write facts", completion.Inline, with(syncWrite, func(f *Facts) { f.NeedsSync, f.Extends, f.HasEndIO = true, true, true }), completion.Wait, completion.DowngradeSync},

		// Rule 4: Pool is always allowed for an asynchronous request.
		{"4 pool read", completion.Pool, asyncRead, completion.Pool, completion.NoDowngrade},
		{"4 pool overwrite", completion.Pool, overwrite, completion.Pool, completion.NoDowngrade},
		{"4 pool not overwrite", completion.Pool, notOverwr, completion.Pool, completion.NoDowngrade},

		// Rule 5: writes whose completion may do I/O go to the pool, for
		// every policy that would run them elsewhere.
		{"5 caller overwrite", completion.Caller, overwrite, completion.Caller, completion.NoDowngrade},
		{"5 caller write-through", completion.Caller, writeThru, completion.Caller, completion.NoDowngrade},
		{"5 caller overwrite end-io", completion.Caller, with(overwrite, endIO), completion.Caller, completion.NoDowngrade},
		{"5 caller overwrite multi", completion.Caller, with(overwrite, multiSQE), completion.Caller, completion.NoDowngrade},
		{"5 caller not overwrite", completion.Caller, notOverwr, completion.Pool, completion.DowngradeNotOverwrite},
		{"5 caller extends", completion.Caller, extending, completion.Pool, completion.DowngradeExtends},
		{"5 caller needs sync", completion.Caller, needsSync, completion.Pool, completion.DowngradeNeedsSync},
		{"5 caller needs sync despite write-through", completion.Caller, with(needsSync, func(f *Facts) { f.WriteThrough = true }), completion.Pool, completion.DowngradeNeedsSync},
		{"5 order: not overwrite first", completion.Caller, with(notOverwr, func(f *Facts) { f.Extends, f.NeedsSync = true, true }), completion.Pool, completion.DowngradeNotOverwrite},
		{"5 order: extends before sync", completion.Caller, with(extending, func(f *Facts) { f.NeedsSync = true }), completion.Pool, completion.DowngradeExtends},
		{"5 inline not overwrite", completion.Inline, notOverwr, completion.Pool, completion.DowngradeNotOverwrite},
		{"5 inline extends", completion.Inline, extending, completion.Pool, completion.DowngradeExtends},
		{"5 inline needs sync", completion.Inline, needsSync, completion.Pool, completion.DowngradeNeedsSync},
		{"5 default not overwrite", completion.Default, notOverwr, completion.Pool, completion.DowngradeNotOverwrite},
		{"5 default extends", completion.Default, extending, completion.Pool, completion.DowngradeExtends},
		{"5 default needs sync", completion.Default, needsSync, completion.Pool, completion.DowngradeNeedsSync},

		// Rule 6: Caller is allowed for reads.
		{"6 caller read", completion.Caller, asyncRead, completion.Caller, completion.NoDowngrade},
		{"6 caller read end-io", completion.Caller, with(asyncRead, endIO), completion.Caller, completion.NoDowngrade},

		// Rule 7: explicit Inline.
		{"7 inline read", completion.Inline, asyncRead, completion.Inline, completion.NoDowngrade},
		{"7 inline read end-io", completion.Inline, with(asyncRead, endIO), completion.Inline, completion.NoDowngrade},
		{"7 inline overwrite", completion.Inline, overwrite, completion.Inline, completion.NoDowngrade},
		{"7 inline write-through", completion.Inline, writeThru, completion.Inline, completion.NoDowngrade},
		{"7 inline overwrite end-io", completion.Inline, with(overwrite, endIO), completion.Pool, completion.DowngradeWrite},
		{"7 inline write end-io not overwrite", completion.Inline, with(notOverwr, endIO), completion.Pool, completion.DowngradeNotOverwrite},

		// Rule 8: asynchronous Polled.
		{"8 polled read", completion.Polled, polledRead, completion.Polled, completion.NoDowngrade},
		{"8 polled read end-io", completion.Polled, with(polledRead, endIO), completion.Polled, completion.NoDowngrade},
		{"8 polled overwrite", completion.Polled, with(overwrite, polledRing), completion.Polled, completion.NoDowngrade},
		{"8 polled not polled ring", completion.Polled, asyncRead, completion.Inline, completion.DowngradeNotPolledRing},
		{"8 polled not polled ring end-io", completion.Polled, with(asyncRead, endIO), completion.Pool, completion.DowngradeNotPolledRing},
		{"8 polled not polled ring write", completion.Polled, notOverwr, completion.Pool, completion.DowngradeNotPolledRing},
		{"8 polled not polled ring overwrite", completion.Polled, overwrite, completion.Inline, completion.DowngradeNotPolledRing},
		{"8 polled multi", completion.Polled, polledMulti, completion.Inline, completion.DowngradeMultiSQE},
		{"8 polled multi write", completion.Polled, with(notOverwr, func(f *Facts) { f.PolledRing, f.SingleSQE = true, false }), completion.Pool, completion.DowngradeMultiSQE},
		{"8 polled not overwrite", completion.Polled, with(notOverwr, polledRing), completion.Pool, completion.DowngradeNotOverwrite},
		{"8 polled extends", completion.Polled, with(extending, polledRing), completion.Pool, completion.DowngradeExtends},
		{"8 polled needs sync", completion.Polled, with(needsSync, polledRing), completion.Pool, completion.DowngradeNeedsSync},

		// Rule 9: Default for asynchronous requests.
		{"9 default read", completion.Default, asyncRead, completion.Inline, completion.NoDowngrade},
		{"9 default read multi", completion.Default, with(asyncRead, multiSQE), completion.Inline, completion.NoDowngrade},
		{"9 default read polled ring", completion.Default, polledRead, completion.Inline, completion.NoDowngrade},
		{"9 default read end-io", completion.Default, with(asyncRead, endIO), completion.Pool, completion.DowngradeEndIO},
		{"9 default overwrite", completion.Default, overwrite, completion.Inline, completion.NoDowngrade},
		{"9 default write-through", completion.Default, writeThru, completion.Inline, completion.NoDowngrade},
		{"9 default overwrite end-io", completion.Default, with(overwrite, endIO), completion.Pool, completion.DowngradeEndIO},
	}

	covered := map[completion.Reason]bool{}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			got, why := Choose(tt.req, tt.f)
			if got != tt.want || why != tt.why {
				t.Errorf("Choose(%v, %+v) = %v, %v; want %v, %v", tt.req, tt.f, got, why, tt.want, tt.why)
			}
		})
		covered[tt.why] = true
	}
	for r := range numReasons {
		if !covered[r] {
			t.Errorf("no table row shows reason %v", r)
		}
	}
}

// allFacts calls fn with every combination of Facts.
func allFacts(fn func(Facts)) {
	for bits := range 1 << 9 {
		b := func(i int) bool { return bits&(1<<i) != 0 }
		fn(Facts{
			Sync: b(0), Write: b(1), PureOverwrite: b(2), Extends: b(3), NeedsSync: b(4),
			WriteThrough: b(5), SingleSQE: b(6), PolledRing: b(7), HasEndIO: b(8),
		})
	}
}

// TestChooseInvariants checks, over every requested policy and every
// combination of facts, the guarantees the engine relies on.
func TestChooseInvariants(t *testing.T) {
	for req := range numPolicies + 1 { // one undefined value too
		allFacts(func(f Facts) {
			got, why := Choose(req, f)
			fail := func(msg string) {
				t.Helper()
				t.Errorf("Choose(%v, %+v) = %v, %v: %s", req, f, got, why, msg)
			}
			if !got.Valid() || got == completion.Default {
				fail("result must be a concrete policy")
			}
			if why >= numReasons {
				fail("undefined reason")
			}
			if req.Valid() && req != completion.Default && (got == req) != (why == completion.NoDowngrade) {
				fail("a reason must be given exactly when the request is not honoured")
			}
			if f.Sync && got != completion.Wait && got != completion.Polled {
				fail("a synchronous caller must complete on its own goroutine")
			}
			if got == completion.Polled && !(f.PolledRing && f.SingleSQE) {
				fail("completion.Polled needs an IOPOLL ring and one SQE")
			}
			if got == completion.Wait && !f.Sync && req != completion.Wait && req.Valid() {
				fail("only a synchronous caller or an explicit completion.Wait waits")
			}
			ioAtCompletion := f.Write && (!f.PureOverwrite || f.Extends || f.NeedsSync)
			if !f.Sync && ioAtCompletion && got != completion.Pool && got != completion.Wait {
				fail("an asynchronous write whose completion does I/O must go to the pool")
			}
			if got == completion.Inline && f.HasEndIO && (f.Write || req != completion.Inline) {
				fail("a hook runs inline only on a read that asked for completion.Inline")
			}
		})
	}
}

func TestChooseDoesNotAllocate(t *testing.T) {
	f := Facts{Write: true, PureOverwrite: true, HasEndIO: true}
	allocs := testing.AllocsPerRun(1000, func() {
		for req := range numPolicies + 1 {
			sinkPolicy, sinkReason = Choose(req, f)
		}
	})
	if allocs != 0 {
		t.Fatalf("Choose: %v allocs per run, want 0", allocs)
	}
}

var (
	sinkPolicy completion.Policy
	sinkReason completion.Reason
)

// The number of defined policies and reasons, for loops over them.
const (
	numPolicies = completion.Polled + 1
	numReasons  = completion.DowngradeUnknownPolicy + 1
)
