package account

import (
	"errors"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
)

// Key is an API key as its account knows it: settings and the hash of its
// current secret.
type Key struct {
	ID        string
	Name      string
	Hash      apikey.Hash
	Prefix    string
	Last4     string
	Scopes    apikey.Scopes
	Quota     apikey.Quota
	Allowlist []string
	ExpiresAt *time.Time
	RateLimit int
	Revoked   bool
}

// ActiveAt reports whether the key can authenticate at t.
func (k Key) ActiveAt(t time.Time) bool {
	return !k.Revoked && (k.ExpiresAt == nil || t.Before(*k.ExpiresAt))
}

var (
	// ErrKeyNotFound: no such key on this account (also for another
	// account's key: the caller must not learn it exists).
	ErrKeyNotFound = errors.New("api key not found")
	// ErrKeyLimit: the account has its maximum of active keys.
	ErrKeyLimit = errors.New("maximum number of active API keys reached")
)

// Key returns one key.
func (a *Account) Key(id string) (Key, bool) {
	k, ok := a.keys[id]
	if !ok {
		return Key{}, false
	}
	return *k, true
}

// Keys returns every key, in creation order.
func (a *Account) Keys() []Key {
	out := make([]Key, 0, len(a.keyOrder))
	for _, id := range a.keyOrder {
		out = append(out, *a.keys[id])
	}
	return out
}

// ActiveKeys counts keys that can still authenticate at now.
func (a *Account) ActiveKeys(now time.Time) int {
	n := 0
	for _, k := range a.keys {
		if k.ActiveAt(now) {
			n++
		}
	}
	return n
}

// NewKey is what CreateKey needs besides the settings.
type NewKey struct {
	ID     string
	Hash   apikey.Hash
	Prefix string
	Last4  string
}

// CreateKey decides a new key. The cap is checked here, on the aggregate,
// so concurrent creations serialize and cannot exceed it.
func (a *Account) CreateKey(k NewKey, spec apikey.Spec, now time.Time, maxKeys int) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	if a.status == StatusClosed {
		return nil, ErrClosed
	}
	if a.ActiveKeys(now) >= maxKeys {
		return nil, ErrKeyLimit
	}
	if _, dup := a.keys[k.ID]; dup {
		return nil, ErrKeyNotFound
	}
	return []Event{KeyCreated{
		KeyID: k.ID, Name: spec.Name, Hash: k.Hash, Prefix: k.Prefix, Last4: k.Last4,
		Scopes: spec.Scopes, Quota: spec.Quota, Allowlist: apikey.AllowlistStrings(spec.Allowlist),
		ExpiresAt: spec.ExpiresAt, RateLimit: spec.RateLimit,
	}}, nil
}

// RotateKey decides a new secret for a key, keeping its id and settings.
func (a *Account) RotateKey(id string, hash apikey.Hash, last4 string, now time.Time) ([]Event, error) {
	k, ok := a.keys[id]
	if !ok || !k.ActiveAt(now) {
		return nil, ErrKeyNotFound
	}
	return []Event{KeyRotated{KeyID: id, Hash: hash, Last4: last4, PreviousHash: k.Hash}}, nil
}

// RevokeKey decides revoking a key. Revoking a revoked key is not found:
// it is gone from the caller's point of view.
func (a *Account) RevokeKey(id string) ([]Event, error) {
	k, ok := a.keys[id]
	if !ok || k.Revoked {
		return nil, ErrKeyNotFound
	}
	return []Event{KeyRevoked{KeyID: id, Hash: k.Hash}}, nil
}

func (a *Account) applyKey(e Event) {
	switch e := e.(type) {
	case KeyCreated:
		a.keys[e.KeyID] = &Key{ID: e.KeyID, Name: e.Name, Hash: e.Hash, Prefix: e.Prefix, Last4: e.Last4,
			Scopes: e.Scopes, Quota: e.Quota, Allowlist: e.Allowlist, ExpiresAt: e.ExpiresAt, RateLimit: e.RateLimit}
		a.keyOrder = append(a.keyOrder, e.KeyID)
	case KeyRotated:
		if k, ok := a.keys[e.KeyID]; ok {
			k.Hash, k.Last4 = e.Hash, e.Last4
		}
	case KeyRevoked:
		if k, ok := a.keys[e.KeyID]; ok {
			k.Revoked = true
		}
	}
}

// KeyCreated adds a key. Hash is the SHA-256 of the secret; the secret is
// never in any event.
type KeyCreated struct {
	KeyID     string        `json:"key_id"`
	Name      string        `json:"name"`
	Hash      apikey.Hash   `json:"hash"`
	Prefix    string        `json:"prefix"`
	Last4     string        `json:"last4"`
	Scopes    apikey.Scopes `json:"scopes"`
	Quota     apikey.Quota  `json:"monthly_quota"`
	Allowlist []string      `json:"ip_allowlist"`
	ExpiresAt *time.Time    `json:"expires_at,omitempty"`
	RateLimit int           `json:"rate_limit_per_minute"`
}

// KeyRotated replaces a key's secret; the previous hash stops working.
type KeyRotated struct {
	KeyID        string      `json:"key_id"`
	Hash         apikey.Hash `json:"hash"`
	Last4        string      `json:"last4"`
	PreviousHash apikey.Hash `json:"previous_hash"`
}

// KeyRevoked ends a key.
type KeyRevoked struct {
	KeyID string      `json:"key_id"`
	Hash  apikey.Hash `json:"hash"`
}

const (
	EventKeyCreated = "account.key_created"
	EventKeyRotated = "account.key_rotated"
	EventKeyRevoked = "account.key_revoked"
)

func (KeyCreated) EventName() string { return EventKeyCreated }
func (KeyRotated) EventName() string { return EventKeyRotated }
func (KeyRevoked) EventName() string { return EventKeyRevoked }
