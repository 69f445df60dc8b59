package apikey

import (
	"errors"
	"net/netip"
	"time"

	"github.com/ledgerd/ledgerd/domain/validation"
)

// Spec is a key's settings, validated.
type Spec struct {
	Name      string
	Scopes    Scopes
	Quota     Quota
	Allowlist Allowlist
	ExpiresAt *time.Time
	RateLimit int // requests per minute
}

// MaxRateLimit bounds rate_limit_per_minute.
const MaxRateLimit = 1_000_000

// SpecInput is a key's settings as a client gives them.
type SpecInput struct {
	Name      string
	Scopes    []string
	Quota     Quota
	Allowlist []string
	ExpiresAt *time.Time
	RateLimit *int
}

// NewSpec validates every field at once, so one response lists every
// problem. now decides whether expires_at is in the past.
func NewSpec(in SpecInput, now time.Time, defaultRate int) (Spec, error) {
	var all validation.Error
	collect := func(err error) {
		var v *validation.Error
		if errors.As(err, &v) {
			all.Fields = append(all.Fields, v.Fields...)
		}
	}
	spec := Spec{Name: in.Name, Quota: in.Quota, ExpiresAt: in.ExpiresAt, RateLimit: defaultRate}
	collect(CheckName(in.Name))
	scopes, err := ParseScopes(in.Scopes)
	collect(err)
	spec.Scopes = scopes
	collect(CheckQuota(in.Quota))
	allow, err := ParseAllowlist(in.Allowlist)
	collect(err)
	spec.Allowlist = allow
	if in.ExpiresAt != nil {
		t := in.ExpiresAt.UTC()
		spec.ExpiresAt = &t
		if !t.After(now) {
			all.Add("expires_at", "must be in the future")
		}
	}
	if in.RateLimit != nil {
		if *in.RateLimit < 1 || *in.RateLimit > MaxRateLimit {
			all.Add("rate_limit_per_minute", "must be from 1 to 1000000")
		}
		spec.RateLimit = *in.RateLimit
	}
	if err := all.Err(); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// AllowlistStrings renders prefixes canonically, for events and storage.
func AllowlistStrings(l Allowlist) []string {
	out := make([]string, len(l))
	for i, p := range l {
		out[i] = p.String()
	}
	return out
}

// AllowlistFromStrings reads canonical prefixes back; stored values were
// validated when written.
func AllowlistFromStrings(in []string) Allowlist {
	out := make(Allowlist, 0, len(in))
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}
