package account

import (
	"time"

	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
)

// A subscription puts an account on a plan for monthly periods. Each
// period's fee is charged from paid money at its start (subscribing, then
// each renewal) and the plan's included credits are granted, expiring at
// the period's end. A renewal that cannot be paid drops the account to
// free. Changing plans starts a new period at once, at the new plan's full
// fee (no proration); a staff change of plan ends the subscription.

// Subscription is the account's current one.
type Subscription struct {
	Plan        Plan
	Fee         money.Amount
	PeriodStart time.Time
	PeriodEnd   time.Time
}

// Subscribed records a paid period of a plan: a new subscription, or a
// renewal.
type Subscribed struct {
	Plan        Plan                `json:"plan"`
	Fee         money.Amount        `json:"fee"`
	PeriodStart time.Time           `json:"period_start"`
	PeriodEnd   time.Time           `json:"period_end"`
	Renewal     bool                `json:"renewal,omitempty"`
	Transaction journal.Transaction `json:"transaction"`
}

// SubscriptionLapsed records a renewal that could not be paid; the account
// drops to free in the same append.
type SubscriptionLapsed struct {
	Plan      Plan         `json:"plan"`
	Fee       money.Amount `json:"fee"`
	PeriodEnd time.Time    `json:"period_end"`
	Reason    string       `json:"reason"`
}

const (
	EventSubscribed         = "account.subscribed"
	EventSubscriptionLapsed = "account.subscription_lapsed"
)

func (Subscribed) EventName() string         { return EventSubscribed }
func (SubscriptionLapsed) EventName() string { return EventSubscriptionLapsed }

func (e Subscribed) Postings() journal.Transaction { return e.Transaction }

// Subscription returns the current subscription, if any.
func (a *Account) Subscription() (Subscription, bool) {
	if a.sub == nil {
		return Subscription{}, false
	}
	return *a.sub, true
}

// AddMonth is the same day and time a month later, or the month's last day
// when it has no such day (Jan 31 → Feb 28).
func AddMonth(t time.Time) time.Time {
	t = t.UTC()
	first := time.Date(t.Year(), t.Month()+1, 1, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	last := first.AddDate(0, 1, -1).Day()
	return first.AddDate(0, 0, min(t.Day(), last)-1)
}

// Subscribe decides a subscription to p from now, granting its credits
// under grantID. Subscribing again to the plan of the running period
// records nothing.
func (a *Account) Subscribe(p plan.Plan, grantID string, now time.Time) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	if a.status != StatusActive {
		return nil, ErrInactive
	}
	if a.sub != nil && a.sub.Plan == Plan(p.Name) && now.Before(a.sub.PeriodEnd) {
		return nil, nil
	}
	if a.available.Cmp(p.MonthlyFee) < 0 {
		return nil, ErrInsufficientFunds
	}
	var events []Event
	if a.plan != Plan(p.Name) {
		events = append(events, PlanChanged{Plan: Plan(p.Name), Previous: a.plan})
	}
	return append(events, a.period(p, grantID, now.UTC(), false)...), nil
}

// RenewSubscription decides what happens at the end of a period: the
// next period of p (the plan's current definition) if its fee can be paid,
// else the drop to free. Before the end it records nothing.
func (a *Account) RenewSubscription(p plan.Plan, grantID string, now time.Time) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	if a.sub == nil || now.Before(a.sub.PeriodEnd) {
		return nil, nil
	}
	// The ending period's credits expire first, so they cannot be counted
	// twice and the new grant starts the new period alone.
	events := a.expireDue(now)
	if a.status != StatusActive || a.available.Cmp(p.MonthlyFee) < 0 {
		reason := "the monthly fee of " + p.MonthlyFee.String() + " is more than the available paid balance"
		if a.status != StatusActive {
			reason = "the account is " + string(a.status)
		}
		return append(events,
			SubscriptionLapsed{Plan: a.sub.Plan, Fee: p.MonthlyFee, PeriodEnd: a.sub.PeriodEnd, Reason: reason},
			PlanChanged{Plan: plan.Free, Previous: a.plan}), nil
	}
	return append(events, a.period(p, grantID, a.sub.PeriodEnd, true)...), nil
}

func (a *Account) period(p plan.Plan, grantID string, start time.Time, renewal bool) []Event {
	end := AddMonth(start)
	events := []Event{Subscribed{Plan: Plan(p.Name), Fee: p.MonthlyFee, PeriodStart: start, PeriodEnd: end, Renewal: renewal,
		Transaction: journal.Moves(journal.Leg{From: journal.Available(a.id), To: journal.PlatformRevenue, Amount: p.MonthlyFee})}}
	if p.IncludedCredits.IsPositive() {
		events = append(events, CreditsGranted{GrantID: grantID, Amount: p.IncludedCredits, ExpiresAt: end,
			Reason: "included in plan " + p.Name, Source: "plan:" + p.Name,
			Transaction: journal.Move(journal.PlatformPromotions, journal.Credits(a.id), p.IncludedCredits)})
	}
	return events
}

func (a *Account) applySubscription(e Event) {
	switch e := e.(type) {
	case Subscribed:
		a.sub = &Subscription{Plan: e.Plan, Fee: e.Fee, PeriodStart: e.PeriodStart, PeriodEnd: e.PeriodEnd}
		a.applyTransaction(e.Transaction)
	case SubscriptionLapsed:
		a.sub = nil
	}
}
