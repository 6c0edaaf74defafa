package completion

import (
	"errors"
	"fmt"
	"testing"
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
