package ledger

import (
	"context"
	"crypto/rand"
	"encoding/base64"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

// KeyConfig sets how keys look and how many an account may hold.
type KeyConfig struct {
	Prefix           string // LEDGER_KEY_PREFIX
	MaxPerAccount    int    // LEDGER_MAX_KEYS_PER_ACCOUNT
	DefaultRateLimit int    // per minute
}

// NewSecret returns a fresh key: prefix + 192 random bits, URL-safe.
func NewSecret(prefix string) string {
	b := make([]byte, apikey.SecretLen*3/4)
	_, _ = rand.Read(b) // never fails on supported platforms
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// IssuedKey is a key with its secret, returned once at creation/rotation.
type IssuedKey struct {
	Key       account.Key
	Secret    string
	AccountID string
	StreamSeq uint64
}

func last4(secret string) string { return secret[len(secret)-4:] }

// CreateKey creates an API key on an account.
func (l *Ledger) CreateKey(ctx context.Context, meta Meta, accountID string, in apikey.SpecInput) (IssuedKey, error) {
	if !ids.Valid("acc", accountID) {
		return IssuedKey{}, account.ErrNotFound
	}
	now := l.cfg.Now()
	spec, err := apikey.NewSpec(in, now, l.cfg.Keys.DefaultRateLimit)
	if err != nil {
		return IssuedKey{}, err
	}
	secret := NewSecret(l.cfg.Keys.Prefix)
	nk := account.NewKey{ID: l.ids.New("key"), Hash: apikey.HashOf(secret), Prefix: l.cfg.Keys.Prefix, Last4: last4(secret)}
	var key account.Key
	out, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		if rate, ok := l.defaultRate(a.Plan()); ok && in.RateLimit == nil {
			spec.RateLimit = rate // the plan's default, when the caller names none
		}
		evs, err := a.CreateKey(nk, spec, now, l.maxKeys(a.Plan()))
		if err == nil {
			e := evs[0].(account.KeyCreated)
			key = account.Key{ID: e.KeyID, Name: e.Name, Hash: e.Hash, Prefix: e.Prefix, Last4: e.Last4, Scopes: e.Scopes,
				Quota: e.Quota, Allowlist: e.Allowlist, ExpiresAt: e.ExpiresAt, RateLimit: e.RateLimit}
		}
		return evs, err
	})
	if err != nil {
		return IssuedKey{}, err
	}
	return IssuedKey{Key: key, Secret: secret, AccountID: accountID, StreamSeq: out.StreamSeq}, nil
}

// RotateKey gives a key a new secret; the old one stops working.
func (l *Ledger) RotateKey(ctx context.Context, meta Meta, accountID, keyID string) (IssuedKey, error) {
	if !ids.Valid("acc", accountID) {
		return IssuedKey{}, account.ErrNotFound
	}
	secret := NewSecret(l.cfg.Keys.Prefix)
	hash := apikey.HashOf(secret)
	var key account.Key
	out, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		evs, err := a.RotateKey(keyID, hash, last4(secret), l.cfg.Now())
		if err == nil {
			key, _ = a.Key(keyID)
			key.Hash, key.Last4 = hash, last4(secret)
		}
		return evs, err
	})
	if err != nil {
		return IssuedKey{}, err
	}
	return IssuedKey{Key: key, Secret: secret, AccountID: accountID, StreamSeq: out.StreamSeq}, nil
}

// RevokeKey ends a key.
func (l *Ledger) RevokeKey(ctx context.Context, meta Meta, accountID, keyID string) (apikey.Hash, uint64, error) {
	if !ids.Valid("acc", accountID) {
		return apikey.Hash{}, 0, account.ErrNotFound
	}
	var hash apikey.Hash
	out, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		evs, err := a.RevokeKey(keyID)
		if err == nil {
			hash = evs[0].(account.KeyRevoked).Hash
		}
		return evs, err
	})
	return hash, out.StreamSeq, err
}

// AccountKeys returns an account's keys from its events.
func (l *Ledger) AccountKeys(ctx context.Context, accountID string) ([]account.Key, error) {
	if !ids.Valid("acc", accountID) {
		return nil, account.ErrNotFound
	}
	var keys []account.Key
	var found bool
	err := l.accounts.Read(ctx, accountID, func(a *account.Account) {
		found, keys = a.Exists(), a.Keys()
	})
	if err == nil && !found {
		err = account.ErrNotFound
	}
	return keys, err
}
