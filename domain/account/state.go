package account

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/ledgerd/ledgerd/domain/money"
)

// The account's state as a snapshot keeps it. Folding an account from its
// first event costs about 6 µs an event, so a customer with millions of
// calls would wait minutes for the first call after a restart; the command
// side stores this snapshot now and then and folds only the events after
// it. A snapshot is a cache of the fold, never a source of truth: one that
// cannot be read (another version, damaged) is ignored and the account is
// folded from the start.

// stateVersion changes whenever the state's shape does, or the way an
// event folds into it (a fix to Apply): snapshots of any other version
// are not read, so every account is folded again from its events.
const stateVersion = 1

type stateJSON struct {
	V           int                  `json:"v"`
	ID          string               `json:"id"`
	Opened      bool                 `json:"opened"`
	Email       string               `json:"email"`
	OwnerUserID string               `json:"owner_user_id"`
	Plan        Plan                 `json:"plan"`
	Status      Status               `json:"status"`
	Currency    money.Currency       `json:"currency"`
	Available   money.Amount         `json:"available"`
	Held        money.Amount         `json:"held"`
	Credits     money.Amount         `json:"credits"`
	HeldCredits money.Amount         `json:"held_credits"`
	Grants      map[string]*Grant    `json:"grants"`
	Sub         *Subscription        `json:"sub"`
	Receivable  money.Amount         `json:"receivable"`
	TopUps      map[string]TopUp     `json:"top_ups"`
	Keys        map[string]*Key      `json:"keys"`
	KeyOrder    []string             `json:"key_order"`
	Holds       map[string]*Hold     `json:"holds"`
	Idem        map[string]idemJSON  `json:"idem"`
	IdemOrder   []string             `json:"idem_order"`
	OpenKeys    map[string]string    `json:"open_keys"` // key → task id of the open hold
	Usage       map[string]usageJSON `json:"usage"`
	Alerts      alertsJSON           `json:"alerts"`
	Version     uint64               `json:"version"`
}

type idemJSON struct {
	TaskID string    `json:"task_id"`
	Hash   string    `json:"hash"`
	At     time.Time `json:"at"`
}

type usageJSON struct {
	Month string       `json:"month"`
	Calls int64        `json:"calls"`
	Spend money.Amount `json:"spend"`
}

type alertsJSON struct {
	Threshold *money.Amount `json:"threshold"`
	URL       string        `json:"url"`
	Armed     bool          `json:"armed"`
}

// MarshalState encodes the account's state for a snapshot.
func (a *Account) MarshalState() ([]byte, error) {
	s := stateJSON{V: stateVersion, ID: a.id, Opened: a.opened, Email: a.email, OwnerUserID: a.ownerUserID,
		Plan: a.plan, Status: a.status, Currency: a.currency,
		Available: a.available, Held: a.held, Credits: a.credits, HeldCredits: a.heldCredits,
		Grants: a.grants, Sub: a.sub, Receivable: a.receivable, TopUps: a.topUps,
		Keys: a.keys, KeyOrder: a.keyOrder, Holds: a.holds, IdemOrder: a.idemOrder,
		Alerts:  alertsJSON{Threshold: a.alerts.threshold, URL: a.alerts.url, Armed: a.alerts.armed},
		Version: a.version,
		Idem:    make(map[string]idemJSON, len(a.idem)), OpenKeys: make(map[string]string, len(a.openKeys)),
		Usage: make(map[string]usageJSON, len(a.usage)),
	}
	for k, e := range a.idem {
		s.Idem[k] = idemJSON{TaskID: e.taskID, Hash: e.hash, At: e.at}
	}
	for k, h := range a.openKeys {
		if a.holds[h.TaskID] != h {
			return nil, fmt.Errorf("account %s: open key %q names no open hold", a.id, k)
		}
		s.OpenKeys[k] = h.TaskID
	}
	for k, u := range a.usage {
		s.Usage[k] = usageJSON{Month: u.month, Calls: u.calls, Spend: u.spend}
	}
	return json.Marshal(s)
}

// UnmarshalState decodes a snapshot of account id's state.
func UnmarshalState(id string, b []byte) (*Account, error) {
	var s stateJSON
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("account snapshot: %w", err)
	}
	if s.V != stateVersion || s.ID != id {
		return nil, fmt.Errorf("account snapshot: version %d of %q, want version %d of %q", s.V, s.ID, stateVersion, id)
	}
	a := New(id)
	a.opened, a.email, a.ownerUserID, a.plan, a.status, a.currency = s.Opened, s.Email, s.OwnerUserID, s.Plan, s.Status, s.Currency
	a.available, a.held, a.credits, a.heldCredits, a.receivable = s.Available, s.Held, s.Credits, s.HeldCredits, s.Receivable
	a.sub, a.keyOrder, a.idemOrder, a.version = s.Sub, s.KeyOrder, s.IdemOrder, s.Version
	a.alerts = alertState{threshold: s.Alerts.Threshold, url: s.Alerts.URL, armed: s.Alerts.Armed}
	fill(a.grants, s.Grants)
	fill(a.topUps, s.TopUps)
	fill(a.keys, s.Keys)
	fill(a.holds, s.Holds)
	for k, e := range s.Idem {
		a.idem[k] = idemEntry{taskID: e.TaskID, hash: e.Hash, at: e.At}
	}
	for k, task := range s.OpenKeys {
		h, ok := a.holds[task]
		if !ok {
			return nil, fmt.Errorf("account snapshot: open key %q names no open hold", k)
		}
		a.openKeys[k] = h
	}
	for k, u := range s.Usage {
		a.usage[k] = &keyUsage{month: u.Month, calls: u.Calls, spend: u.Spend}
	}
	for k, v := range a.grants {
		if v == nil {
			return nil, fmt.Errorf("account snapshot: grant %q is empty", k)
		}
	}
	for k, v := range a.keys {
		if v == nil {
			return nil, fmt.Errorf("account snapshot: key %q is empty", k)
		}
	}
	for k, v := range a.holds {
		if v == nil {
			return nil, fmt.Errorf("account snapshot: hold %q is empty", k)
		}
	}
	return a, nil
}

func fill[V any](dst, src map[string]V) {
	for k, v := range src {
		dst[k] = v
	}
}

// StateSize is about how many entries the state holds (idempotency keys
// within their window, top-up references, holds, keys, grants, usage): a
// snapshot's cost grows with it, so the command side takes them further
// apart for a big state.
func (a *Account) StateSize() int {
	return len(a.idem) + len(a.topUps) + len(a.holds) + len(a.keys) + len(a.grants) + len(a.usage)
}
