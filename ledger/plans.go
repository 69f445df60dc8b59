package ledger

import (
	"context"
	"fmt"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/plan"
	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

// planList is the plans, kept like the price list.
type planList = catalog[plan.Event, plan.Plan]

func newPlanList() *planList {
	return newCatalog("plans", TypePlan, PlanCodec(), func(e plan.Event) (plan.Plan, bool) {
		s, ok := e.(plan.Set)
		return s.Plan, ok
	})
}

// Plan returns a plan's current definition.
func (l *Ledger) Plan(name string) (plan.Plan, error) {
	p, ok := l.plans.get(name)
	if !ok {
		return plan.Plan{}, plan.ErrUnknown
	}
	return p, nil
}

// Plans returns every plan, by name.
func (l *Ledger) Plans() []plan.Plan { return l.plans.all() }

// PlanAPIAccess says whether keys of an account on the plan may generate.
// A plan no longer defined falls back to the built-in rule.
func (l *Ledger) PlanAPIAccess(name account.Plan) bool {
	p, err := l.Plan(string(name))
	if err != nil {
		return name.HasAPIAccess()
	}
	return p.APIAccess
}

// maxKeys and defaultRate are the plan's key limits, or the server's.
func (l *Ledger) maxKeys(name account.Plan) int {
	if p, err := l.Plan(string(name)); err == nil && p.MaxKeys > 0 {
		return p.MaxKeys
	}
	return l.cfg.Keys.MaxPerAccount
}

func (l *Ledger) defaultRate(name account.Plan) (int, bool) {
	if p, err := l.Plan(string(name)); err == nil && p.DefaultRateLimit > 0 {
		return p.DefaultRateLimit, true
	}
	return 0, false
}

// checkPlan refuses a plan that is not defined (422 on the plan field).
// The four built-in plans are always accepted: they are defined at every
// start, and an instance may take commands before it has read them.
func (l *Ledger) checkPlan(name account.Plan) error {
	switch name {
	case account.PlanFree, account.PlanStandard, account.PlanPro, account.PlanAPI:
		return nil
	}
	if _, err := l.Plan(string(name)); err != nil {
		return validation.Field("plan", fmt.Sprintf("%q is not a defined plan (GET /api/v1/plans)", name))
	}
	return nil
}

// LoadPlans reads the plan definitions from their events.
func (l *Ledger) LoadPlans(ctx context.Context) error { return l.plans.load(ctx, l.store) }

// SetPlan defines or changes a plan; this instance sees the change before
// this returns. Subscribers pay a new fee from their next renewal.
func (l *Ledger) SetPlan(ctx context.Context, meta Meta, p plan.Plan) (plan.Plan, error) {
	if p.Currency == "" {
		p.Currency = l.cfg.Currency
	}
	if !plan.ValidName(p.Name) {
		return plan.Plan{}, validation.Field("plan", "must be 1 to 40 of a-z, 0-9, '-' and '_'")
	}
	out := p
	_, err := l.planRepo.Execute(ctx, p.Name, meta, func(e *plan.Entry) ([]plan.Event, error) {
		evs, err := e.Set(p)
		if err == nil && len(evs) == 0 {
			out, _ = e.Plan()
		}
		return evs, err
	})
	return out, err
}

// EnsureDefaultPlans defines each default plan never defined.
func (l *Ledger) EnsureDefaultPlans(ctx context.Context) error {
	meta := Meta{Actor: "system:bootstrap", CausationID: l.ids.New("cmd")}
	for _, p := range plan.Defaults() {
		p.Currency = l.cfg.Currency
		_, err := l.planRepo.Execute(ctx, p.Name, meta, func(e *plan.Entry) ([]plan.Event, error) {
			if _, defined := e.Plan(); defined {
				return nil, nil
			}
			return e.Set(p)
		})
		if err != nil {
			return fmt.Errorf("default plan %s: %w", p.Name, err)
		}
	}
	return nil
}

// SubscriptionResult is an account's subscription after a command.
type SubscriptionResult struct {
	Subscription account.Subscription
	Active       bool
	StreamSeq    uint64
}

// Subscribe puts an account on a plan for a month from now: the fee is
// charged from paid money (402 if it cannot be) and the plan's credits are
// granted until the period ends.
func (l *Ledger) Subscribe(ctx context.Context, meta Meta, accountID, planName string) (SubscriptionResult, error) {
	if !ids.Valid("acc", accountID) {
		return SubscriptionResult{}, account.ErrNotFound
	}
	p, err := l.Plan(planName)
	if err != nil {
		// Only a defined plan can be paid for, built-in names included.
		return SubscriptionResult{}, validation.Field("plan", fmt.Sprintf("%q is not a defined plan (GET /api/v1/plans)", planName))
	}
	grantID, now := l.ids.New("grt"), l.cfg.Now()
	var res SubscriptionResult
	out, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		evs, err := a.Subscribe(p, grantID, now)
		if err == nil {
			res.Subscription, res.Active = a.Subscription()
			for _, e := range evs {
				if s, ok := e.(account.Subscribed); ok {
					res.Subscription = account.Subscription{Plan: s.Plan, Fee: s.Fee, PeriodStart: s.PeriodStart, PeriodEnd: s.PeriodEnd}
					res.Active = true
				}
			}
		}
		return evs, err
	})
	res.StreamSeq = out.StreamSeq
	return res, err
}

// Subscription returns an account's current subscription.
func (l *Ledger) Subscription(ctx context.Context, accountID string) (account.Subscription, bool, error) {
	var s account.Subscription
	var ok bool
	err := l.accounts.Read(ctx, accountID, func(a *account.Account) { s, ok = a.Subscription() })
	return s, ok, err
}

// RenewSubscription renews (or lapses) a subscription whose period has
// ended, at the plan's current fee; before the end it does nothing.
func (l *Ledger) RenewSubscription(ctx context.Context, accountID string) error {
	meta := Meta{Actor: "system:renewals:" + l.cfg.Owner, CausationID: l.ids.New("cmd")}
	grantID, now := l.ids.New("grt"), l.cfg.Now()
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		s, ok := a.Subscription()
		if !ok {
			return nil, nil
		}
		p, err := l.Plan(string(s.Plan))
		if err != nil {
			// The plan was never defined here: renew at the fee last paid.
			p = plan.Plan{Name: string(s.Plan), APIAccess: true, MonthlyFee: s.Fee}
		}
		return a.RenewSubscription(p, grantID, now)
	})
	return err
}
