package ledger

import (
	"context"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

// GrantResult is a recorded grant.
type GrantResult struct {
	ID        string
	StreamSeq uint64
}

// GrantCredits gives an account credits that expire. source is "admin" or
// "plan:<name>".
func (l *Ledger) GrantCredits(ctx context.Context, meta Meta, accountID string, amount money.Amount, expiresAt time.Time, reason, source string) (GrantResult, error) {
	if !ids.Valid("acc", accountID) {
		return GrantResult{}, account.ErrNotFound
	}
	id := l.ids.New("grt")
	now := l.cfg.Now()
	out, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		return a.GrantCredits(id, amount, expiresAt, reason, source, now)
	})
	return GrantResult{ID: id, StreamSeq: out.StreamSeq}, err
}

// ExpireGrants records the expiry of the account's grants that are due.
// Calls and releases expire grants themselves; this is for accounts that
// are quiet when a grant's time comes.
func (l *Ledger) ExpireGrants(ctx context.Context, accountID string) error {
	meta := Meta{Actor: "system:grants:" + l.cfg.Owner, CausationID: l.ids.New("cmd")}
	now := l.cfg.Now()
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		return a.ExpireGrants(now)
	})
	return err
}
