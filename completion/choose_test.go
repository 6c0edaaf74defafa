package completion

import (
	"errors"
	"fmt"
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
		req  Policy
		f    Facts
		want Policy
		why  Reason
	}{
		// Rule 1: an undefined policy is Default.
		{"1 unknown read", Policy(200), asyncRead, Inline, DowngradeUnknownPolicy},
		{"1 unknown sync", numPolicies, syncRead, Wait, DowngradeUnknownPolicy},
		{"1 unknown write", Policy(6), notOverwr, Pool, DowngradeUnknownPolicy},

		// Rule 2: Wait is always honoured (FORCE_WAIT).
		{"2 wait async read", Wait, asyncRead, Wait, NoDowngrade},
		{"2 wait async write", Wait, notOverwr, Wait, NoDowngrade},
		{"2 wait polled ring", Wait, with(polledRead, func(f *Facts) { f.Sync = true }), Wait, NoDowngrade},

		// Rule 3: synchronous callers complete on their own goroutine.
		{"3 default sync read", Default, syncRead, Wait, NoDowngrade},
		{"3 default sync write", Default, syncWrite, Wait, NoDowngrade},
		{"3 default sync polled", Default, with(syncRead, polledRing), Polled, NoDowngrade},
		{"3 default sync polled multi", Default, with(with(syncRead, polledRing), multiSQE), Wait, DowngradeMultiSQE},
		{"3 polled sync", Polled, with(syncWrite, polledRing), Polled, NoDowngrade},
		{"3 polled sync not polled ring", Polled, syncRead, Wait, DowngradeNotPolledRing},
		{"3 polled sync multi", Polled, with(with(syncRead, polledRing), multiSQE), Wait, DowngradeMultiSQE},
		{"3 inline sync", Inline, syncRead, Wait, DowngradeSync},
		{"3 caller sync", Caller, syncWrite, Wait, DowngradeSync},
		{"3 pool sync", Pool, syncWrite, Wait, DowngradeSync},
		{"3 inline sync polled", Inline, with(syncRead, polledRing), Polled, DowngradeSync},
		{"3 pool sync polled multi", Pool, with(with(syncWrite, polledRing), multiSQE), Wait, DowngradeSync},
		{"3 sync ignores write facts", Inline, with(syncWrite, func(f *Facts) { f.NeedsSync, f.Extends, f.HasEndIO = true, true, true }), Wait, DowngradeSync},

		// Rule 4: Pool is always allowed for an asynchronous request.
		{"4 pool read", Pool, asyncRead, Pool, NoDowngrade},
		{"4 pool overwrite", Pool, overwrite, Pool, NoDowngrade},
		{"4 pool not overwrite", Pool, notOverwr, Pool, NoDowngrade},

		// Rule 5: writes whose completion may do I/O go to the pool, for
		// every policy that would run them elsewhere.
		{"5 caller overwrite", Caller, overwrite, Caller, NoDowngrade},
		{"5 caller write-through", Caller, writeThru, Caller, NoDowngrade},
		{"5 caller overwrite end-io", Caller, with(overwrite, endIO), Caller, NoDowngrade},
		{"5 caller overwrite multi", Caller, with(overwrite, multiSQE), Caller, NoDowngrade},
		{"5 caller not overwrite", Caller, notOverwr, Pool, DowngradeNotOverwrite},
		{"5 caller extends", Caller, extending, Pool, DowngradeExtends},
		{"5 caller needs sync", Caller, needsSync, Pool, DowngradeNeedsSync},
		{"5 caller needs sync despite write-through", Caller, with(needsSync, func(f *Facts) { f.WriteThrough = true }), Pool, DowngradeNeedsSync},
		{"5 order: not overwrite first", Caller, with(notOverwr, func(f *Facts) { f.Extends, f.NeedsSync = true, true }), Pool, DowngradeNotOverwrite},
		{"5 order: extends before sync", Caller, with(extending, func(f *Facts) { f.NeedsSync = true }), Pool, DowngradeExtends},
		{"5 inline not overwrite", Inline, notOverwr, Pool, DowngradeNotOverwrite},
		{"5 inline extends", Inline, extending, Pool, DowngradeExtends},
		{"5 inline needs sync", Inline, needsSync, Pool, DowngradeNeedsSync},
		{"5 default not overwrite", Default, notOverwr, Pool, DowngradeNotOverwrite},
		{"5 default extends", Default, extending, Pool, DowngradeExtends},
		{"5 default needs sync", Default, needsSync, Pool, DowngradeNeedsSync},

		// Rule 6: Caller is allowed for reads.
		{"6 caller read", Caller, asyncRead, Caller, NoDowngrade},
		{"6 caller read end-io", Caller, with(asyncRead, endIO), Caller, NoDowngrade},

		// Rule 7: explicit Inline.
		{"7 inline read", Inline, asyncRead, Inline, NoDowngrade},
		{"7 inline read end-io", Inline, with(asyncRead, endIO), Inline, NoDowngrade},
		{"7 inline overwrite", Inline, overwrite, Inline, NoDowngrade},
		{"7 inline write-through", Inline, writeThru, Inline, NoDowngrade},
		{"7 inline overwrite end-io", Inline, with(overwrite, endIO), Pool, DowngradeWrite},
		{"7 inline write end-io not overwrite", Inline, with(notOverwr, endIO), Pool, DowngradeNotOverwrite},

		// Rule 8: asynchronous Polled.
		{"8 polled read", Polled, polledRead, Polled, NoDowngrade},
		{"8 polled read end-io", Polled, with(polledRead, endIO), Polled, NoDowngrade},
		{"8 polled overwrite", Polled, with(overwrite, polledRing), Polled, NoDowngrade},
		{"8 polled not polled ring", Polled, asyncRead, Inline, DowngradeNotPolledRing},
		{"8 polled not polled ring end-io", Polled, with(asyncRead, endIO), Pool, DowngradeNotPolledRing},
		{"8 polled not polled ring write", Polled, notOverwr, Pool, DowngradeNotPolledRing},
		{"8 polled not polled ring overwrite", Polled, overwrite, Inline, DowngradeNotPolledRing},
		{"8 polled multi", Polled, polledMulti, Inline, DowngradeMultiSQE},
		{"8 polled multi write", Polled, with(notOverwr, func(f *Facts) { f.PolledRing, f.SingleSQE = true, false }), Pool, DowngradeMultiSQE},
		{"8 polled not overwrite", Polled, with(notOverwr, polledRing), Pool, DowngradeNotOverwrite},
		{"8 polled extends", Polled, with(extending, polledRing), Pool, DowngradeExtends},
		{"8 polled needs sync", Polled, with(needsSync, polledRing), Pool, DowngradeNeedsSync},

		// Rule 9: Default for asynchronous requests.
		{"9 default read", Default, asyncRead, Inline, NoDowngrade},
		{"9 default read multi", Default, with(asyncRead, multiSQE), Inline, NoDowngrade},
		{"9 default read polled ring", Default, polledRead, Inline, NoDowngrade},
		{"9 default read end-io", Default, with(asyncRead, endIO), Pool, DowngradeEndIO},
		{"9 default overwrite", Default, overwrite, Inline, NoDowngrade},
		{"9 default write-through", Default, writeThru, Inline, NoDowngrade},
		{"9 default overwrite end-io", Default, with(overwrite, endIO), Pool, DowngradeEndIO},
	}

	covered := map[Reason]bool{}
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
			if !got.Valid() || got == Default {
				fail("result must be a concrete policy")
			}
			if why >= numReasons {
				fail("undefined reason")
			}
			if req.Valid() && req != Default && (got == req) != (why == NoDowngrade) {
				fail("a reason must be given exactly when the request is not honoured")
			}
			if f.Sync && got != Wait && got != Polled {
				fail("a synchronous caller must complete on its own goroutine")
			}
			if got == Polled && !(f.PolledRing && f.SingleSQE) {
				fail("Polled needs an IOPOLL ring and one SQE")
			}
			if got == Wait && !f.Sync && req != Wait && req.Valid() {
				fail("only a synchronous caller or an explicit Wait waits")
			}
			ioAtCompletion := f.Write && (!f.PureOverwrite || f.Extends || f.NeedsSync)
			if !f.Sync && ioAtCompletion && got != Pool && got != Wait {
				fail("an asynchronous write whose completion does I/O must go to the pool")
			}
			if got == Inline && f.HasEndIO && (f.Write || req != Inline) {
				fail("a hook runs inline only on a read that asked for Inline")
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
	sinkPolicy Policy
	sinkReason Reason
)

func TestPolicyNames(t *testing.T) {
	for p := range numPolicies {
		got, err := ParsePolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %v", p.String(), got, err, p)
		}
		var q Policy
		b, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		if err := q.UnmarshalText(b); err != nil || q != p {
			t.Errorf("text round trip of %v = %v, %v", p, q, err)
		}
	}
	if p, err := ParsePolicy(""); p != Default || err != nil {
		t.Errorf(`ParsePolicy("") = %v, %v; want default`, p, err)
	}
	for _, bad := range []string{"Inline", "pooled", " wait", "7"} {
		_, err := ParsePolicy(bad)
		if !errors.Is(err, ErrUnknownPolicy) {
			t.Errorf("ParsePolicy(%q) error = %v; want ErrUnknownPolicy", bad, err)
		}
	}
	var q Policy = Caller
	if err := q.UnmarshalText([]byte("nope")); err == nil || q != Caller {
		t.Errorf("UnmarshalText of a bad name = %v and changed the policy to %v", err, q)
	}
	if _, err := Policy(9).MarshalText(); !errors.Is(err, ErrUnknownPolicy) {
		t.Errorf("MarshalText of Policy(9): %v", err)
	}
	if s := Policy(9).String(); s != "Policy(9)" {
		t.Errorf("Policy(9).String() = %q", s)
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]Reason{}
	for r := range numReasons {
		s := r.String()
		if s == "" || s == fmt.Sprintf("Reason(%d)", r) {
			t.Errorf("reason %d has no name", r)
		}
		if o, dup := seen[s]; dup {
			t.Errorf("reasons %d and %d are both %q", o, r, s)
		}
		seen[s] = r
	}
	if s := Reason(99).String(); s != "Reason(99)" {
		t.Errorf("Reason(99).String() = %q", s)
	}
}
