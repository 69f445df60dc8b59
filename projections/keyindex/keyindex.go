// Package keyindex is the in-memory index from API-key hash to what the
// key may do. Verifying a key is a SHA-256 and a map lookup: no network,
// no database. The index is loaded from the key read model at start and
// kept current from the event stream, and the instance that revokes or
// rotates a key applies the change here before it answers.
package keyindex

import (
	"crypto/subtle"
	"errors"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
)

var (
	// ErrUnknown: no active key has this hash (never issued, revoked,
	// rotated away, or malformed).
	ErrUnknown = errors.New("unknown or revoked api key")
	// ErrExpired: the key's expires_at has passed.
	ErrExpired = errors.New("api key expired")
	// ErrIPNotAllowed: the caller's address is outside the allowlist.
	ErrIPNotAllowed = errors.New("caller ip not in the key's allowlist")
	// ErrPlanRequired: the account's plan has no API access.
	ErrPlanRequired = errors.New("account plan has no api access")
	// ErrAccountInactive: the account is suspended or closed.
	ErrAccountInactive = errors.New("account suspended or closed")
)

// entry is one key. Fields other than the atomics are replaced, never
// changed, under the index lock.
type entry struct {
	keyID     string
	accountID string
	hash      apikey.Hash
	scopes    apikey.Scopes
	allow     apikey.Allowlist
	expiresAt time.Time // zero: never
	revoked   bool
	version   uint64 // account event seq of the last change applied

	limiter  *rate.Limiter
	lastUsed atomic.Int64 // unix seconds of the last use seen here
	flushed  atomic.Int64 // unix seconds last handed to the flusher
}

type accountState struct {
	plan    account.Plan
	status  account.Status
	version uint64
}

// Key is a verified key: who it acts for and what it may do.
type Key struct {
	ID        string
	AccountID string
	Scopes    apikey.Scopes
	Plan      account.Plan
}

// Index maps key hashes to keys.
type Index struct {
	prefix string
	// APIAccess says whether a plan may generate (from the plan
	// definitions); nil: the built-in rule. Set before the index is used.
	APIAccess func(account.Plan) bool

	mu       sync.RWMutex
	byHash   map[apikey.Hash]*entry
	byID     map[string]*entry
	accounts map[string]*accountState

	usedMu sync.Mutex
	used   map[string]time.Time // key id → last use, awaiting flush
}

// New returns an empty index for keys with the given prefix.
func New(prefix string) *Index {
	return &Index{
		prefix: prefix, byHash: map[apikey.Hash]*entry{}, byID: map[string]*entry{},
		accounts: map[string]*accountState{}, used: map[string]time.Time{},
	}
}

// Len is the number of keys indexed (active or not).
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byID)
}

// Verify authenticates a presented key from addr at now. A key of the
// wrong shape is refused before any lookup.
func (x *Index) Verify(presented string, addr netip.Addr, now time.Time) (Key, error) {
	if !apikey.WellFormed(x.prefix, presented) {
		return Key{}, ErrUnknown
	}
	h := apikey.HashOf(presented)
	x.mu.RLock()
	e := x.byHash[h]
	var acc accountState
	if e != nil {
		if a := x.accounts[e.accountID]; a != nil {
			acc = *a
		}
	}
	x.mu.RUnlock()
	// The map lookup already matched the hash; comparing again in constant
	// time keeps the decision independent of how many bytes matched.
	if e == nil || subtle.ConstantTimeCompare(e.hash[:], h[:]) != 1 || e.revoked {
		return Key{}, ErrUnknown
	}
	if !e.expiresAt.IsZero() && !now.Before(e.expiresAt) {
		return Key{}, ErrExpired
	}
	if !e.allow.Allows(addr) {
		return Key{}, ErrIPNotAllowed
	}
	switch {
	case acc.status != account.StatusActive:
		return Key{}, ErrAccountInactive
	case x.APIAccess == nil && !acc.plan.HasAPIAccess(), x.APIAccess != nil && !x.APIAccess(acc.plan):
		return Key{}, ErrPlanRequired
	}
	x.touch(e, now)
	return Key{ID: e.keyID, AccountID: e.accountID, Scopes: e.scopes, Plan: acc.plan}, nil
}

// Allow takes one request from the key's rate limit; when it is spent it
// returns how long until the next request is allowed.
func (x *Index) Allow(keyID string, now time.Time) (bool, time.Duration) {
	x.mu.RLock()
	e := x.byID[keyID]
	x.mu.RUnlock()
	if e == nil || e.limiter == nil {
		return true, 0
	}
	r := e.limiter.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// touch records a use for last_used_at, handing it to the flusher at most
// once a second per key.
func (x *Index) touch(e *entry, now time.Time) {
	sec := now.Unix()
	e.lastUsed.Store(sec)
	if prev := e.flushed.Load(); prev == sec || !e.flushed.CompareAndSwap(prev, sec) {
		return
	}
	x.usedMu.Lock()
	x.used[e.keyID] = now
	x.usedMu.Unlock()
}

// TakeUsed returns and clears the uses awaiting a write.
func (x *Index) TakeUsed() map[string]time.Time {
	x.usedMu.Lock()
	defer x.usedMu.Unlock()
	if len(x.used) == 0 {
		return nil
	}
	out := x.used
	x.used = map[string]time.Time{}
	return out
}

// Loaded is one key as the read model holds it, for the initial load.
type Loaded struct {
	KeyID     string
	AccountID string
	Hash      apikey.Hash
	Scopes    apikey.Scopes
	Allowlist []string
	ExpiresAt *time.Time
	RateLimit int
	Revoked   bool
	Version   uint64
}

// LoadedAccount is one account's standing, for the initial load.
type LoadedAccount struct {
	ID      string
	Plan    account.Plan
	Status  account.Status
	Version uint64
}

// Load fills the index from the read model.
func (x *Index) Load(keys []Loaded, accounts []LoadedAccount) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, a := range accounts {
		x.setAccount(a.ID, a.Plan, a.Status, a.Version)
	}
	for _, k := range keys {
		x.put(&entry{keyID: k.KeyID, accountID: k.AccountID, hash: k.Hash, scopes: k.Scopes,
			allow: apikey.AllowlistFromStrings(k.Allowlist), expiresAt: deref(k.ExpiresAt), revoked: k.Revoked,
			version: k.Version, limiter: limiter(k.RateLimit)})
	}
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// limiter is a token bucket holding one minute's allowance, refilled
// continuously.
func limiter(perMinute int) *rate.Limiter {
	if perMinute <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(float64(perMinute)/60), max(1, perMinute))
}

func (x *Index) put(e *entry) {
	if old := x.byID[e.keyID]; old != nil {
		delete(x.byHash, old.hash)
		e.limiter = old.limiter // a rotation keeps the key's rate limit state
		e.lastUsed.Store(old.lastUsed.Load())
		e.flushed.Store(old.flushed.Load())
	}
	x.byID[e.keyID] = e
	if !e.revoked {
		x.byHash[e.hash] = e
	}
}

func (x *Index) setAccount(id string, plan account.Plan, status account.Status, version uint64) {
	a := x.accounts[id]
	if a == nil {
		a = &accountState{}
		x.accounts[id] = a
	}
	if version < a.version {
		return
	}
	if plan != "" {
		a.plan = plan
	}
	if status != "" {
		a.status = status
	}
	a.version = version
}

// Apply folds one account event (at account seq version) into the index.
// Each key and account remembers the last version applied, so the same
// event arriving twice (once applied locally by the instance that made it,
// once from the stream) changes nothing the second time.
func (x *Index) Apply(accountID string, version uint64, ev account.Event) {
	x.mu.Lock()
	defer x.mu.Unlock()
	switch e := ev.(type) {
	case account.Opened:
		x.setAccount(accountID, e.Plan, account.StatusActive, version)
	case account.PlanChanged:
		x.setAccount(accountID, e.Plan, "", version)
	case account.StatusChanged:
		x.setAccount(accountID, "", e.Status, version)
	case account.KeyCreated:
		if old := x.byID[e.KeyID]; old != nil && old.version >= version {
			return
		}
		x.put(&entry{keyID: e.KeyID, accountID: accountID, hash: e.Hash, scopes: e.Scopes,
			allow: apikey.AllowlistFromStrings(e.Allowlist), expiresAt: deref(e.ExpiresAt), version: version,
			limiter: limiter(e.RateLimit)})
	case account.KeyRotated:
		old := x.byID[e.KeyID]
		if old == nil || old.version >= version {
			return
		}
		x.put(&entry{keyID: old.keyID, accountID: old.accountID, hash: e.Hash, scopes: old.scopes,
			allow: old.allow, expiresAt: old.expiresAt, revoked: old.revoked, version: version})
	case account.KeyRevoked:
		old := x.byID[e.KeyID]
		if old == nil || old.version >= version {
			return
		}
		x.put(&entry{keyID: old.keyID, accountID: old.accountID, hash: old.hash, scopes: old.scopes,
			allow: old.allow, expiresAt: old.expiresAt, revoked: true, version: version})
	}
}

// RetryAfterSeconds rounds a wait up to whole seconds for Retry-After.
func RetryAfterSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}
