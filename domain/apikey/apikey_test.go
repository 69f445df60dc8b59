package apikey

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

func TestNewSpecValidation(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	neg := money.MustParse("-1.00")
	rate0, rate := 0, 120
	tests := []struct {
		name   string
		in     SpecInput
		fields []string
	}{
		{"defaults", SpecInput{Name: "ci"}, nil},
		{"everything", SpecInput{Name: "ci", Scopes: []string{"image:generate", "model:nano-banana-2"},
			Allowlist: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"}, ExpiresAt: &future, RateLimit: &rate}, nil},
		{"empty name", SpecInput{Name: "  "}, []string{"name"}},
		{"long name", SpecInput{Name: strings.Repeat("n", 200)}, []string{"name"}},
		{"unknown scope", SpecInput{Name: "x", Scopes: []string{"image:generate", "admin"}}, []string{"scopes[1]"}},
		{"bad model scope", SpecInput{Name: "x", Scopes: []string{"model:"}}, []string{"scopes[0]"}},
		{"bad cidr", SpecInput{Name: "x", Allowlist: []string{"10.0.0.0/33"}}, []string{"ip_allowlist[0]"}},
		{"past expiry", SpecInput{Name: "x", ExpiresAt: &past}, []string{"expires_at"}},
		{"negative quota", SpecInput{Name: "x", Quota: Quota{Calls: -1, Spend: &neg}}, []string{"monthly_quota.calls", "monthly_quota.spend"}},
		{"zero rate", SpecInput{Name: "x", RateLimit: &rate0}, []string{"rate_limit_per_minute"}},
		{"all at once", SpecInput{Name: "", Scopes: []string{"nope"}, ExpiresAt: &past}, []string{"name", "scopes[0]", "expires_at"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSpec(tt.in, now, 60)
			var verr *validation.Error
			errors.As(err, &verr)
			var got []string
			if verr != nil {
				for _, f := range verr.Fields {
					got = append(got, f.Field)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Fatalf("invalid fields = %v, want %v (err %v)", got, tt.fields, err)
			}
		})
	}
}

func TestScopes(t *testing.T) {
	s := Scopes{ScopeImage, "model:nano-banana-2"}
	if !s.Has(ScopeImage) || s.Has(ScopeVideo) {
		t.Fatal("Has wrong")
	}
	if !s.AllowsModel("nano-banana-2") || s.AllowsModel("dall-e-3") {
		t.Fatal("model pin not enforced")
	}
	if !(Scopes{ScopeImage}).AllowsModel("dall-e-3") {
		t.Fatal("unpinned key refused a model")
	}
}

func TestAllowlist(t *testing.T) {
	l, err := ParseAllowlist([]string{"203.0.113.0/24", "2001:db8::/32", "198.51.100.9"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"203.0.113.77": true, "203.0.114.1": false, "2001:db8::1": true, "2001:db9::1": false,
		"198.51.100.9": true, "198.51.100.10": false, "::ffff:203.0.113.5": true,
	} {
		if got := Allowlist(l).Allows(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allows(%s) = %v, want %v", addr, got, want)
		}
	}
	if !(Allowlist{}).Allows(netip.MustParseAddr("8.8.8.8")) {
		t.Fatal("empty allowlist refused")
	}
}

func TestWellFormed(t *testing.T) {
	good := "nx_live_" + strings.Repeat("aB3-_", 6) + "xy"
	for key, want := range map[string]bool{
		good:                     true,
		"nx_test_" + good[8:]:    false,
		good + "x":               false,
		good[:len(good)-1] + "!": false,
		"nx_live_":               false,
		"":                       false,
	} {
		if got := WellFormed("nx_live_", key); got != want {
			t.Errorf("WellFormed(%q) = %v, want %v", key, got, want)
		}
	}
}
