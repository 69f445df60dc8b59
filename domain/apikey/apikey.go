// Package apikey holds what an API key is allowed to do: its scopes, its
// monthly quota, the networks it may be used from and its shape on the
// wire. The secret itself never enters the domain: only its SHA-256.
package apikey

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// Scope is one permission.
type Scope string

const (
	ScopeImage    Scope = "image:generate"
	ScopeVideo    Scope = "video:generate"
	ScopeDirector Scope = "director:generate"
	ScopeTasks    Scope = "tasks:read"
	ScopeUsage    Scope = "usage:read"
	ScopeKeys     Scope = "keys:manage"
	// ModelPrefix pins a key to named models: with any model:<name> scope,
	// the key may call only those models.
	ModelPrefix = "model:"
)

// DefaultScopes are granted when a key is created without scopes.
var DefaultScopes = []Scope{ScopeImage, ScopeVideo, ScopeDirector, ScopeTasks, ScopeUsage}

var knownScopes = []Scope{ScopeImage, ScopeVideo, ScopeDirector, ScopeTasks, ScopeUsage, ScopeKeys}

// ParseScopes validates and normalizes scopes (deduplicated, in the order
// given). An empty list means the defaults.
func ParseScopes(in []string) ([]Scope, error) {
	if len(in) == 0 {
		return slices.Clone(DefaultScopes), nil
	}
	var verr validation.Error
	var out []Scope
	for i, s := range in {
		sc := Scope(strings.TrimSpace(s))
		switch {
		case slices.Contains(knownScopes, sc):
		case strings.HasPrefix(string(sc), ModelPrefix) && validModelName(string(sc)[len(ModelPrefix):]):
		default:
			verr.Add(fmt.Sprintf("scopes[%d]", i), fmt.Sprintf("unknown scope %q", s))
			continue
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if err := verr.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func validModelName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Scopes is a key's set of scopes.
type Scopes []Scope

// Has reports whether s grants scope.
func (s Scopes) Has(scope Scope) bool { return slices.Contains(s, scope) }

// AllowsModel reports whether a key pinned to models may call model; a key
// with no model:<name> scope may call any model its type scopes allow.
func (s Scopes) AllowsModel(model string) bool {
	pinned := false
	for _, sc := range s {
		if name, ok := strings.CutPrefix(string(sc), ModelPrefix); ok {
			if name == model {
				return true
			}
			pinned = true
		}
	}
	return !pinned
}

// Quota bounds a key's use per calendar month (UTC). Zero values mean no
// limit.
type Quota struct {
	Calls int64         `json:"calls,omitempty"`
	Spend *money.Amount `json:"spend,omitempty"`
}

// CheckQuota validates a quota.
func CheckQuota(q Quota) error {
	var verr validation.Error
	if q.Calls < 0 {
		verr.Add("monthly_quota.calls", "must not be negative")
	}
	if q.Spend != nil && q.Spend.IsNegative() {
		verr.Add("monthly_quota.spend", "must not be negative")
	}
	return verr.Err()
}

// ParseAllowlist validates CIDRs (v4 or v6; a bare address means that one
// host) and returns them in canonical form.
func ParseAllowlist(in []string) ([]netip.Prefix, error) {
	var verr validation.Error
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		s = strings.TrimSpace(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				verr.Add(fmt.Sprintf("ip_allowlist[%d]", i), fmt.Sprintf("%q is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32", s))
				continue
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, p.Masked())
	}
	if err := verr.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Allowlist is a key's permitted networks; empty allows any.
type Allowlist []netip.Prefix

// Allows reports whether addr may use the key.
func (l Allowlist) Allows(addr netip.Addr) bool {
	if len(l) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range l {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Name limits.
const MaxNameLen = 200

// CheckName validates a key's display name.
func CheckName(name string) error {
	n := strings.TrimSpace(name)
	switch {
	case n == "":
		return validation.Field("name", "is required")
	case !utf8.ValidString(name):
		return validation.Field("name", "must be valid UTF-8")
	case utf8.RuneCountInString(name) >= MaxNameLen:
		return validation.Field("name", "must be shorter than 200 characters")
	}
	if p := validation.TextProblem(name); p != "" {
		return validation.Field("name", p)
	}
	return nil
}

// Hash is the SHA-256 of a key's full text, the only form of a key that is
// stored.
type Hash [sha256.Size]byte

// HashOf hashes a presented key.
func HashOf(key string) Hash { return sha256.Sum256([]byte(key)) }

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash reads the hex form.
func ParseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("apikey: bad hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

// MarshalText writes the hex form (for events).
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads the hex form.
func (h *Hash) UnmarshalText(b []byte) error {
	v, err := ParseHash(string(b))
	*h = v
	return err
}

// SecretLen is the length of the random part of a key: 32 characters of
// URL-safe base64 carry 192 bits.
const SecretLen = 32

// WellFormed reports whether key has the shape of one of ours (prefix, then
// SecretLen URL-safe base64 characters), so a malformed credential is
// refused before any lookup.
func WellFormed(prefix, key string) bool {
	secret, ok := strings.CutPrefix(key, prefix)
	if !ok || len(secret) != SecretLen {
		return false
	}
	for i := 0; i < len(secret); i++ {
		c := secret[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
