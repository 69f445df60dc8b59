// Package plan holds plans as data: what each plan allows (API access,
// keys, a default rate limit) and costs (a monthly fee, credits included).
// Each plan is an aggregate whose events are its definitions, so a change
// applies from the moment it is recorded and the history says what every
// subscriber was charged under.
package plan

import (
	"errors"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// Plan is one plan's definition.
type Plan struct {
	Name      string `json:"name"`
	APIAccess bool   `json:"api_access"`
	// MonthlyFee is charged from paid money when subscribing and at each
	// renewal; IncludedCredits are granted for the period, expiring at its
	// end.
	MonthlyFee      money.Amount   `json:"monthly_fee"`
	IncludedCredits money.Amount   `json:"included_credits"`
	Currency        money.Currency `json:"currency"`
	// MaxKeys and DefaultRateLimit override the server's defaults when set.
	MaxKeys          int `json:"max_keys,omitempty"`
	DefaultRateLimit int `json:"default_rate_limit,omitempty"`
}

// ErrUnknown: no plan of that name is defined.
var ErrUnknown = errors.New("unknown plan")

// Free is the plan new self-serve accounts start on.
const Free = "free"

// Defaults are the plans of a fresh install: API.md's four, free without
// API access, none with a fee. Operators redefine them with PUT
// /api/admin/plans/{plan}.
func Defaults() []Plan {
	return []Plan{
		{Name: Free, APIAccess: false},
		{Name: "standard", APIAccess: true},
		{Name: "pro", APIAccess: true},
		{Name: "api", APIAccess: true},
	}
}

// ValidName: lower-case letters, digits, '-' and '_', at most 40.
func ValidName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Check lists what is wrong with a definition.
func (p Plan) Check() error {
	var verr validation.Error
	if !ValidName(p.Name) {
		verr.Add("plan", "must be 1 to 40 of a-z, 0-9, '-' and '_'")
	}
	if p.MonthlyFee.IsNegative() {
		verr.Add("monthly_fee", "must not be negative")
	}
	if p.IncludedCredits.IsNegative() {
		verr.Add("included_credits", "must not be negative")
	}
	if p.MaxKeys < 0 || p.MaxKeys > 1000 {
		verr.Add("max_keys", "must be from 0 (the server default) to 1000")
	}
	if p.DefaultRateLimit < 0 || p.DefaultRateLimit > 1_000_000 {
		verr.Add("default_rate_limit", "must be from 0 (the server default) to 1000000")
	}
	if p.Name == Free && (p.MonthlyFee.IsPositive() || p.IncludedCredits.IsPositive()) {
		verr.Add("plan", "free has no fee and no included credits: failed renewals fall back to it")
	}
	return verr.Err()
}

// Entry is the aggregate of one plan.
type Entry struct {
	name    string
	plan    Plan
	defined bool
}

// NewEntry returns the empty aggregate for a plan name.
func NewEntry(name string) *Entry { return &Entry{name: name} }

// Plan returns the current definition.
func (e *Entry) Plan() (Plan, bool) { return e.plan, e.defined }

// Set decides a new definition; one equal to the current records nothing.
func (e *Entry) Set(p Plan) ([]Event, error) {
	p.Name = e.name
	if err := p.Check(); err != nil {
		return nil, err
	}
	if e.defined && same(e.plan, p) {
		return nil, nil
	}
	ev := Set{Plan: p}
	if e.defined {
		prev := e.plan
		ev.Previous = &prev
	}
	return []Event{ev}, nil
}

func same(a, b Plan) bool {
	return a.Name == b.Name && a.APIAccess == b.APIAccess && a.MonthlyFee.Equal(b.MonthlyFee) &&
		a.IncludedCredits.Equal(b.IncludedCredits) && a.Currency == b.Currency && a.MaxKeys == b.MaxKeys &&
		a.DefaultRateLimit == b.DefaultRateLimit
}

// Apply folds an event.
func (e *Entry) Apply(ev Event) {
	if s, ok := ev.(Set); ok {
		e.plan, e.defined = s.Plan, true
	}
}

// Event is a fact about a plan.
type Event interface{ EventName() string }

// Set defines or redefines a plan; subscribers pay the new fee from their
// next renewal.
type Set struct {
	Plan     Plan  `json:"plan"`
	Previous *Plan `json:"previous,omitempty"`
}

const EventSet = "plan.set"

func (Set) EventName() string { return EventSet }
