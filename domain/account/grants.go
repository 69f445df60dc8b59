package account

import (
	"cmp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// Grants are credits the platform gives (promotions, a plan's included
// credits). They are spent before paid money, earliest expiry first, and
// what is left of one at its expiry goes back to the platform. A grant's
// money reserved for a call in flight stays the grant's: captured, it is
// spent; released after the grant expired, it expires then.
//
// A grant is expired from the instant of its expiry: a call accepted at
// exactly expires_at cannot spend it.

// Grant is one grant's state.
type Grant struct {
	ID        string
	Amount    money.Amount // as granted
	Remaining money.Amount // not spent, not reserved, not expired
	ExpiresAt time.Time
	Reason    string
	Source    string // "admin", or "plan:<name>"
	Expired   bool   // its GrantExpired is recorded
}

// GrantDraw is the part of a call's price taken from one grant.
type GrantDraw struct {
	GrantID string       `json:"grant_id"`
	Amount  money.Amount `json:"amount"`
}

// GrantReturn is the part of a released hold that goes back to a grant,
// or expires with it.
type GrantReturn struct {
	GrantID string       `json:"grant_id"`
	Amount  money.Amount `json:"amount"`
	Expired bool         `json:"expired,omitempty"`
}

// CreditsGranted records a grant.
type CreditsGranted struct {
	GrantID     string              `json:"grant_id"`
	Amount      money.Amount        `json:"amount"`
	ExpiresAt   time.Time           `json:"expires_at"`
	Reason      string              `json:"reason"`
	Source      string              `json:"source"`
	Transaction journal.Transaction `json:"transaction"`
}

// GrantExpired records a grant's expiry and takes back what was left of it
// (its reserved part, if any, follows when the call is released).
type GrantExpired struct {
	GrantID     string              `json:"grant_id"`
	Amount      money.Amount        `json:"amount"`
	ExpiresAt   time.Time           `json:"expires_at"`
	Transaction journal.Transaction `json:"transaction"`
}

const (
	EventCreditsGranted = "account.credits_granted"
	EventGrantExpired   = "account.grant_expired"
)

func (CreditsGranted) EventName() string { return EventCreditsGranted }
func (GrantExpired) EventName() string   { return EventGrantExpired }

func (e CreditsGranted) Postings() journal.Transaction { return e.Transaction }
func (e GrantExpired) Postings() journal.Transaction   { return e.Transaction }

// Credits is what the unexpired grants still hold, reserved parts
// included (the wallet's "credits").
func (a *Account) Credits() money.Amount { return a.credits.Add(a.heldCredits) }

// SpendableCredits is what grants may still pay for now.
func (a *Account) SpendableCredits() money.Amount { return a.credits }

// Grants returns the account's grants, earliest expiry first.
func (a *Account) Grants() []Grant {
	out := make([]Grant, 0, len(a.grants))
	for _, g := range a.grants {
		out = append(out, *g)
	}
	sortGrants(out)
	return out
}

// NextGrantExpiry is the earliest expiry of a grant not yet expired.
func (a *Account) NextGrantExpiry() (time.Time, bool) {
	var next time.Time
	for _, g := range a.grants {
		if !g.Expired && (next.IsZero() || g.ExpiresAt.Before(next)) {
			next = g.ExpiresAt
		}
	}
	return next, !next.IsZero()
}

func sortGrants(gs []Grant) {
	slices.SortFunc(gs, func(x, y Grant) int {
		if c := x.ExpiresAt.Compare(y.ExpiresAt); c != 0 {
			return c
		}
		return cmp.Compare(x.ID, y.ID)
	})
}

// GrantCredits decides a grant of amount until expiresAt.
func (a *Account) GrantCredits(id string, amount money.Amount, expiresAt time.Time, reason, source string, now time.Time) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	var verr validation.Error
	if !amount.IsPositive() {
		verr.Add("amount", "must be greater than zero")
	}
	if !expiresAt.After(now) {
		verr.Add("expires_at", "must be in the future")
	}
	switch r := strings.TrimSpace(reason); {
	case r == "":
		verr.Add("reason", "is required")
	case utf8.RuneCountInString(reason) > 500:
		verr.Add("reason", "must be at most 500 characters")
	case validation.TextProblem(reason) != "":
		// A NUL in a reason would stop the read model that stores it.
		verr.Add("reason", validation.TextProblem(reason))
	}
	if err := verr.Err(); err != nil {
		return nil, err
	}
	if a.status == StatusClosed {
		return nil, ErrClosed
	}
	if _, dup := a.grants[id]; dup {
		return nil, nil
	}
	return []Event{CreditsGranted{GrantID: id, Amount: amount, ExpiresAt: expiresAt.UTC(), Reason: reason, Source: source,
		Transaction: journal.Move(journal.PlatformPromotions, journal.Credits(a.id), amount)}}, nil
}

// ExpireGrants decides the expiry of every grant whose time has come.
func (a *Account) ExpireGrants(now time.Time) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	return a.expireDue(now), nil
}

// expireDue is the GrantExpired of each grant due at now, earliest first.
// Commands that spend or return credits put these first in their own
// append, so an expiry never waits for a sweep to take effect.
func (a *Account) expireDue(now time.Time) []Event {
	var due []Grant
	for _, g := range a.grants {
		if !g.Expired && !now.Before(g.ExpiresAt) {
			due = append(due, *g)
		}
	}
	sortGrants(due)
	events := make([]Event, 0, len(due))
	for _, g := range due {
		events = append(events, GrantExpired{GrantID: g.ID, Amount: g.Remaining, ExpiresAt: g.ExpiresAt,
			Transaction: journal.Moves(journal.Leg{From: journal.Credits(a.id), To: journal.PlatformPromotions, Amount: g.Remaining})})
	}
	return events
}

// draw splits price between grants (earliest expiry first) and paid
// money. It reads the state after expired (the expiries decided in the
// same command) have been taken into account.
func (a *Account) draw(price money.Amount, expired map[string]bool) (draws []GrantDraw, paid money.Amount) {
	live := make([]Grant, 0, len(a.grants))
	for _, g := range a.grants {
		if !g.Expired && !expired[g.ID] && g.Remaining.IsPositive() {
			live = append(live, *g)
		}
	}
	sortGrants(live)
	left := price
	for _, g := range live {
		if !left.IsPositive() {
			break
		}
		take := g.Remaining
		if take.Cmp(left) > 0 {
			take = left
		}
		draws = append(draws, GrantDraw{GrantID: g.ID, Amount: take})
		left = left.Sub(take)
	}
	return draws, left
}

func sumDraws(ds []GrantDraw) money.Amount {
	var n money.Amount
	for _, d := range ds {
		n = n.Add(d.Amount)
	}
	return n
}

func (a *Account) applyGrant(e Event) {
	switch e := e.(type) {
	case CreditsGranted:
		a.grants[e.GrantID] = &Grant{ID: e.GrantID, Amount: e.Amount, Remaining: e.Amount, ExpiresAt: e.ExpiresAt,
			Reason: e.Reason, Source: e.Source}
		a.applyTransaction(e.Transaction)
	case GrantExpired:
		if g := a.grants[e.GrantID]; g != nil {
			g.Expired = true
			g.Remaining = g.Remaining.Sub(e.Amount)
		}
		a.applyTransaction(e.Transaction)
	}
}

// expiredIn names the grants a list of decided events expires.
func expiredIn(events []Event) map[string]bool {
	m := map[string]bool{}
	for _, e := range events {
		if x, ok := e.(GrantExpired); ok {
			m[x.GrantID] = true
		}
	}
	return m
}
