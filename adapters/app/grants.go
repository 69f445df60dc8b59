package app

import (
	"context"
	"time"
)

// expireGrants records the expiry of grants on accounts that are quiet
// when their time comes (a call or a release on the account expires its
// grants itself, in the same append). One instance runs it.
func (a *App) expireGrants(ctx context.Context) {
	for {
		accounts, err := a.reader.DueGrantAccounts(ctx, time.Now(), 500)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("finding due grants", "err", err)
		}
		for _, id := range accounts {
			if err := a.Ledger.ExpireGrants(ctx, id); err != nil && ctx.Err() == nil {
				a.log.Warn("expiring grants", "account", id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.cfg.SweepInterval):
		}
	}
}

// renewSubscriptions renews (or lapses) subscriptions whose period has
// ended. One instance runs it; the account aggregate decides, so a renewal
// seen twice is charged once.
func (a *App) renewSubscriptions(ctx context.Context) {
	for {
		accounts, err := a.reader.DueRenewals(ctx, time.Now(), 500)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("finding due renewals", "err", err)
		}
		for _, id := range accounts {
			if err := a.Ledger.RenewSubscription(ctx, id); err != nil && ctx.Err() == nil {
				a.log.Warn("renewing a subscription", "account", id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.cfg.SweepInterval):
		}
	}
}
