package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Accounts projects accounts, their wallets and their top-ups.
type Accounts struct {
	accountEvents
}

// NewAccounts returns the projection.
func NewAccounts() *Accounts { return &Accounts{accountEvents: newAccountEvents()} }

func (*Accounts) Name() string { return "accounts" }

// AccountRow is the accounts read model.
type AccountRow struct {
	bun.BaseModel `bun:"table:accounts"`
	ID            string    `bun:"id,pk"`
	Email         string    `bun:"email"`
	OwnerUserID   string    `bun:"owner_user_id"`
	Plan          string    `bun:"plan"`
	Status        string    `bun:"status"`
	Currency      string    `bun:"currency"`
	CreatedAt     time.Time `bun:"created_at"`
	UpdatedAt     time.Time `bun:"updated_at"`
	// Version is the account event that last changed this row (opening,
	// plan, status, subscription), not the account's latest event.
	Version uint64 `bun:"version"`
	// The subscription, if any: its plan and the end of its period.
	SubscriptionPlan *string    `bun:"subscription_plan"`
	PeriodEnd        *time.Time `bun:"period_end"`
}

// WalletRow is the wallets read model.
type WalletRow struct {
	bun.BaseModel `bun:"table:wallets"`
	AccountID     string          `bun:"account_id,pk"`
	Currency      string          `bun:"currency"`
	Available     decimal.Decimal `bun:"available,type:numeric(20,2)"`
	Held          decimal.Decimal `bun:"held,type:numeric(20,2)"`
	// Grants' money, spendable and reserved, apart from paid money.
	Credits     decimal.Decimal `bun:"credits,type:numeric(20,2)"`
	HeldCredits decimal.Decimal `bun:"held_credits,type:numeric(20,2)"`
	Owed        decimal.Decimal `bun:"owed,type:numeric(20,2)"` // after refunds of spent top-ups
	UpdatedAt   time.Time       `bun:"updated_at"`
	Version     uint64          `bun:"version"`
}

// TopUpRow is the topups read model.
type TopUpRow struct {
	bun.BaseModel `bun:"table:topups"`
	ID            string          `bun:"id,pk"`
	AccountID     string          `bun:"account_id"`
	Amount        decimal.Decimal `bun:"amount,type:numeric(20,2)"`
	Reference     string          `bun:"reference"`
	PaymentIntent string          `bun:"payment_intent,nullzero"` // Stripe top-ups
	Actor         string          `bun:"actor"`
	CreatedAt     time.Time       `bun:"created_at"`
	StreamSeq     uint64          `bun:"stream_seq"`
}

// GrantRow is the grants read model.
type GrantRow struct {
	bun.BaseModel `bun:"table:grants"`
	ID            string           `bun:"id,pk"`
	AccountID     string           `bun:"account_id"`
	Amount        decimal.Decimal  `bun:"amount,type:numeric(20,2)"`
	ExpiresAt     time.Time        `bun:"expires_at"`
	Reason        string           `bun:"reason"`
	Source        string           `bun:"source"`
	Actor         string           `bun:"actor"`
	CreatedAt     time.Time        `bun:"created_at"`
	ExpiredAt     *time.Time       `bun:"expired_at"`
	ExpiredAmount *decimal.Decimal `bun:"expired_amount,type:numeric(20,2)"`
	StreamSeq     uint64           `bun:"stream_seq"`
}

// grantExpiry is a GrantExpired, applied after the batch's new grants.
type grantExpiry struct {
	id     string
	amount decimal.Decimal
	at     time.Time
}

// KeyRow is the api_keys read model.
type KeyRow struct {
	bun.BaseModel `bun:"table:api_keys"`
	ID            string           `bun:"id,pk"`
	AccountID     string           `bun:"account_id"`
	Name          string           `bun:"name"`
	Hash          string           `bun:"hash"`
	Prefix        string           `bun:"prefix"`
	Last4         string           `bun:"last4"`
	Scopes        []string         `bun:"scopes,array"`
	QuotaCalls    *int64           `bun:"quota_calls"`
	QuotaSpend    *decimal.Decimal `bun:"quota_spend,type:numeric(20,2)"`
	IPAllowlist   []string         `bun:"ip_allowlist,array"`
	ExpiresAt     *time.Time       `bun:"expires_at"`
	RateLimit     int              `bun:"rate_limit"`
	Status        string           `bun:"status"`
	CreatedAt     time.Time        `bun:"created_at"`
	RotatedAt     *time.Time       `bun:"rotated_at"`
	RevokedAt     *time.Time       `bun:"revoked_at"`
	LastUsedAt    *time.Time       `bun:"last_used_at"`
	Version       uint64           `bun:"version"`
}

// keyUpdate is a rotation or revocation, applied in stream order.
type keyUpdate struct {
	id      string
	hash    string // rotation
	last4   string
	revoked bool
	at      time.Time
	version uint64
}

// accountChange accumulates a batch's effect on one account, so a batch
// costs a few statements whatever its size.
type accountChange struct {
	opened  *AccountRow
	plan    string
	status  string
	avail   decimal.Decimal
	held    decimal.Decimal
	credits decimal.Decimal
	heldCr  decimal.Decimal
	owed    decimal.Decimal
	moved   bool
	// sub is the subscription after the batch, when the batch changed it
	// (subEnded: it ended).
	sub      *account.Subscribed
	subEnded bool
	// The row's own version: the last event that changed it (opening,
	// plan, status, subscription). Calls and money leave the row alone, so
	// the busiest accounts cost no write here.
	version uint64
	at      time.Time
	// The wallet's own version: the last event that changed it (opening,
	// or moving money), so the row does not depend on how events were
	// batched.
	walletVersion uint64
	walletAt      time.Time
	walletSeq     uint64 // stream sequence of the commit that last moved it
}

// Apply implements Projection.
func (p *Accounts) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
	return p.ApplyLive(ctx, tx, commits, nil)
}

// ApplyLive implements LiveProjection: wallets as they stand after the
// batch, and key changes.
func (p *Accounts) ApplyLive(ctx context.Context, tx bun.Tx, commits []eventstore.Commit, out *Changes) error {
	changes := map[string]*accountChange{}
	var order []string
	var topUps []TopUpRow
	var keys []KeyRow
	var keyUpdates []keyUpdate
	var grants []GrantRow
	var expiries []grantExpiry
	for ci := range commits {
		c := &commits[ci]
		id := c.Aggregate.ID
		ch, ok := changes[id]
		if !ok {
			ch = &accountChange{}
			changes[id] = ch
			order = append(order, id)
		}
		for i, ev := range c.Events {
			d, err := p.event(c, i)
			if err != nil {
				return err
			}
			switch d.(type) {
			case account.Opened, account.PlanChanged, account.Subscribed, account.SubscriptionLapsed, account.StatusChanged:
				ch.version, ch.at = ev.Seq, ev.OccurredAt
			}
			switch e := d.(type) {
			case account.Opened:
				ch.walletVersion, ch.walletAt, ch.walletSeq = ev.Seq, ev.OccurredAt, c.StreamSeq
				ch.opened = &AccountRow{ID: id, Email: e.Email, OwnerUserID: e.OwnerUserID, Plan: string(e.Plan),
					Status: string(account.StatusActive), Currency: string(e.Currency), CreatedAt: ev.OccurredAt}
			case account.PlanChanged:
				ch.plan = string(e.Plan)
				if ch.sub == nil || ch.sub.Plan != e.Plan {
					ch.sub, ch.subEnded = nil, true // ends a subscription to another plan
				}
				out.plan(PlanChange{Seq: c.StreamSeq, AccountID: id, Plan: string(e.Plan), Previous: string(e.Previous), Event: "changed"})
			case account.Subscribed:
				ch.sub, ch.subEnded = &e, false
				ch.add(id, e.Transaction)
				ch.walletVersion, ch.walletAt, ch.walletSeq = ev.Seq, ev.OccurredAt, c.StreamSeq
				what := "subscribed"
				if e.Renewal {
					what = "renewed"
				}
				end := e.PeriodEnd
				out.plan(PlanChange{Seq: c.StreamSeq, AccountID: id, Plan: string(e.Plan), Event: what, Fee: e.Fee.Decimal(), PeriodEnd: &end})
			case account.SubscriptionLapsed:
				ch.sub, ch.subEnded = nil, true
				out.plan(PlanChange{Seq: c.StreamSeq, AccountID: id, Plan: string(e.Plan), Event: "lapsed", Fee: e.Fee.Decimal(), Reason: e.Reason})
			case account.StatusChanged:
				ch.status = string(e.Status)
			case account.ToppedUp:
				topUps = append(topUps, TopUpRow{ID: e.TopUpID, AccountID: id, Amount: e.Amount.Decimal(),
					Reference: e.Reference, PaymentIntent: e.PaymentIntent, Actor: ev.Actor, CreatedAt: ev.OccurredAt, StreamSeq: c.StreamSeq})
				ch.add(id, e.Transaction)
				ch.walletVersion, ch.walletAt, ch.walletSeq = ev.Seq, ev.OccurredAt, c.StreamSeq
			case account.CreditsGranted:
				grants = append(grants, GrantRow{ID: e.GrantID, AccountID: id, Amount: e.Amount.Decimal(), ExpiresAt: e.ExpiresAt,
					Reason: e.Reason, Source: e.Source, Actor: ev.Actor, CreatedAt: ev.OccurredAt, StreamSeq: c.StreamSeq})
				ch.add(id, e.Transaction)
				ch.walletVersion, ch.walletAt, ch.walletSeq = ev.Seq, ev.OccurredAt, c.StreamSeq
			case account.GrantExpired:
				expiries = append(expiries, grantExpiry{id: e.GrantID, amount: e.Amount.Decimal(), at: ev.OccurredAt})
				ch.add(id, e.Transaction)
				ch.walletVersion, ch.walletAt, ch.walletSeq = ev.Seq, ev.OccurredAt, c.StreamSeq
			case account.Moving:
				ch.add(id, e.Postings())
				ch.walletVersion, ch.walletAt, ch.walletSeq = ev.Seq, ev.OccurredAt, c.StreamSeq
			case account.KeyCreated:
				keys = append(keys, keyRow(id, e, ev.OccurredAt, ev.Seq))
				out.key(c.StreamSeq, id, e.KeyID, "created")
			case account.KeyRotated:
				keyUpdates = append(keyUpdates, keyUpdate{id: e.KeyID, hash: e.Hash.String(), last4: e.Last4, at: ev.OccurredAt, version: ev.Seq})
				out.key(c.StreamSeq, id, e.KeyID, "rotated")
			case account.KeyRevoked:
				keyUpdates = append(keyUpdates, keyUpdate{id: e.KeyID, revoked: true, at: ev.OccurredAt, version: ev.Seq})
				out.key(c.StreamSeq, id, e.KeyID, "revoked")
			}
		}
	}
	if err := p.write(ctx, tx, order, changes, topUps, out); err != nil {
		return err
	}
	if err := writeGrants(ctx, tx, grants, expiries); err != nil {
		return err
	}
	return writeKeys(ctx, tx, keys, keyUpdates)
}

func (c *Changes) plan(p PlanChange) {
	if c != nil {
		c.Plans = append(c.Plans, p)
	}
}

func (c *Changes) key(seq uint64, accountID, keyID, action string) {
	if c != nil {
		c.Keys = append(c.Keys, KeyChange{Seq: seq, AccountID: accountID, KeyID: keyID, Action: action})
	}
}

func keyRow(accountID string, e account.KeyCreated, at time.Time, version uint64) KeyRow {
	row := KeyRow{ID: e.KeyID, AccountID: accountID, Name: e.Name, Hash: e.Hash.String(), Prefix: e.Prefix, Last4: e.Last4,
		IPAllowlist: e.Allowlist, ExpiresAt: e.ExpiresAt, RateLimit: e.RateLimit, Status: "active", CreatedAt: at, Version: version}
	for _, sc := range e.Scopes {
		row.Scopes = append(row.Scopes, string(sc))
	}
	if row.IPAllowlist == nil {
		row.IPAllowlist = []string{}
	}
	if e.Quota.Calls > 0 {
		row.QuotaCalls = &e.Quota.Calls
	}
	if e.Quota.Spend != nil {
		d := e.Quota.Spend.Decimal()
		row.QuotaSpend = &d
	}
	return row
}

func writeKeys(ctx context.Context, tx bun.Tx, keys []KeyRow, updates []keyUpdate) error {
	if len(keys) > 0 {
		if _, err := tx.NewInsert().Model(&keys).Exec(ctx); err != nil {
			return fmt.Errorf("inserting api keys: %w", err)
		}
	}
	// Rotations and revocations are rare; one statement each, in order.
	for _, u := range updates {
		q := tx.NewUpdate().Model((*KeyRow)(nil)).Where("id = ?", u.id).Set("version = ?", u.version)
		if u.revoked {
			q = q.Set("status = 'revoked'").Set("revoked_at = ?", u.at)
		} else {
			q = q.Set("hash = ?", u.hash).Set("last4 = ?", u.last4).Set("rotated_at = ?", u.at)
		}
		if _, err := q.Exec(ctx); err != nil {
			return fmt.Errorf("updating api key %s: %w", u.id, err)
		}
	}
	return nil
}

func (ch *accountChange) add(id string, tx journal.Transaction) {
	ch.avail = ch.avail.Add(tx.Effect(journal.Available(id)).Decimal())
	ch.held = ch.held.Add(tx.Effect(journal.Held(id)).Decimal())
	ch.credits = ch.credits.Add(tx.Effect(journal.Credits(id)).Decimal())
	ch.heldCr = ch.heldCr.Add(tx.Effect(journal.HeldCredits(id)).Decimal())
	ch.owed = ch.owed.Sub(tx.Effect(journal.Receivable(id)).Decimal())
	ch.moved = true
}

func (p *Accounts) write(ctx context.Context, tx bun.Tx, order []string, changes map[string]*accountChange, topUps []TopUpRow, out *Changes) error {
	var opened []AccountRow
	var wallets []WalletRow
	var ids, plans, statuses []string
	var versions []int64
	var ats []time.Time
	var wIDs []string
	var wAvail, wHeld, wCredits, wHeldCr, wOwed []decimal.Decimal
	var wVersions []int64
	var wAts []time.Time
	for _, id := range order {
		ch := changes[id]
		if ch.opened != nil {
			row := *ch.opened
			row.UpdatedAt, row.Version = ch.at, ch.version
			if ch.plan != "" {
				row.Plan = ch.plan
			}
			if ch.status != "" {
				row.Status = ch.status
			}
			if ch.sub != nil {
				plan, end := string(ch.sub.Plan), ch.sub.PeriodEnd
				row.SubscriptionPlan, row.PeriodEnd = &plan, &end
			}
			opened = append(opened, row)
			wallets = append(wallets, WalletRow{AccountID: id, Currency: row.Currency, Available: ch.avail, Held: ch.held,
				Credits: ch.credits, HeldCredits: ch.heldCr, Owed: ch.owed, UpdatedAt: ch.walletAt, Version: ch.walletVersion})
			if out != nil {
				out.Wallets = append(out.Wallets, WalletChange{Seq: ch.walletSeq, AccountID: id, Currency: row.Currency,
					Available: ch.avail, Held: ch.held, Credits: ch.credits, HeldCredits: ch.heldCr, HeldDelta: ch.held.Add(ch.heldCr)})
			}
			continue
		}
		if ch.version != 0 {
			ids = append(ids, id)
			plans = append(plans, ch.plan)
			statuses = append(statuses, ch.status)
			versions = append(versions, int64(ch.version))
			ats = append(ats, ch.at)
		}
		if ch.moved {
			wIDs = append(wIDs, id)
			wAvail = append(wAvail, ch.avail)
			wHeld = append(wHeld, ch.held)
			wCredits = append(wCredits, ch.credits)
			wHeldCr = append(wHeldCr, ch.heldCr)
			wOwed = append(wOwed, ch.owed)
			wVersions = append(wVersions, int64(ch.walletVersion))
			wAts = append(wAts, ch.walletAt)
		}
	}
	if len(opened) > 0 {
		if _, err := tx.NewInsert().Model(&opened).Exec(ctx); err != nil {
			return fmt.Errorf("inserting accounts: %w", err)
		}
		if _, err := tx.NewInsert().Model(&wallets).Exec(ctx); err != nil {
			return fmt.Errorf("inserting wallets: %w", err)
		}
	}
	if len(ids) > 0 {
		// An empty plan or status in the arrays means "unchanged".
		_, err := columns(tx, `UPDATE accounts a SET
			plan = COALESCE(NULLIF(d.plan, ''), a.plan),
			status = COALESCE(NULLIF(d.status, ''), a.status),
			version = d.version, updated_at = d.at
			FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[]) AS d(id, plan, status, version, at)
			WHERE a.id = d.id`,
			ids, plans, statuses,
			versions, ats).Exec(ctx)
		if err != nil {
			return fmt.Errorf("updating accounts: %w", err)
		}
	}
	if len(wIDs) > 0 {
		q := columns(tx, `UPDATE wallets w SET
			available = w.available + d.available, held = w.held + d.held, owed = w.owed + d.owed,
			credits = w.credits + d.credits, held_credits = w.held_credits + d.held_credits,
			version = d.version, updated_at = d.at
			FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[], $5::numeric[], $6::numeric[], $7::bigint[], $8::timestamptz[])
				AS d(id, available, held, owed, credits, held_credits, version, at)
			WHERE w.account_id = d.id`+returningWallets(out),
			wIDs, decimalStrings(wAvail), decimalStrings(wHeld),
			decimalStrings(wOwed), decimalStrings(wCredits), decimalStrings(wHeldCr),
			wVersions, wAts)
		var err error
		if out == nil {
			_, err = q.Exec(ctx)
		} else {
			var after []WalletRow
			if err = q.Scan(ctx, &after); err == nil {
				for _, w := range after {
					ch := changes[w.AccountID]
					out.Wallets = append(out.Wallets, WalletChange{Seq: ch.walletSeq, AccountID: w.AccountID, Currency: w.Currency,
						Available: w.Available, Held: w.Held, Credits: w.Credits, HeldCredits: w.HeldCredits, HeldDelta: ch.held.Add(ch.heldCr)})
				}
			}
		}
		if err != nil {
			return fmt.Errorf("updating wallets: %w", err)
		}
	}
	// Subscriptions change once a month per account: one statement each.
	for _, id := range order {
		ch := changes[id]
		if ch.opened != nil || (ch.sub == nil && !ch.subEnded) {
			continue
		}
		var plan *string
		var end *time.Time
		if ch.sub != nil {
			p, e := string(ch.sub.Plan), ch.sub.PeriodEnd
			plan, end = &p, &e
		}
		if _, err := tx.NewUpdate().Model((*AccountRow)(nil)).Where("id = ?", id).
			Set("subscription_plan = ?", plan).Set("period_end = ?", end).Exec(ctx); err != nil {
			return fmt.Errorf("updating the subscription of %s: %w", id, err)
		}
	}
	if len(topUps) > 0 {
		if _, err := tx.NewInsert().Model(&topUps).Exec(ctx); err != nil {
			return fmt.Errorf("inserting top-ups: %w", err)
		}
	}
	return nil
}

// returningWallets asks for the wallets as they stand after an update,
// only when someone listens.
func returningWallets(out *Changes) string {
	if out == nil {
		return ""
	}
	return " RETURNING w.account_id, w.currency, w.available, w.held, w.credits, w.held_credits"
}

func decimalStrings(ds []decimal.Decimal) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func writeGrants(ctx context.Context, tx bun.Tx, grants []GrantRow, expiries []grantExpiry) error {
	if len(grants) > 0 {
		if _, err := tx.NewInsert().Model(&grants).Exec(ctx); err != nil {
			return fmt.Errorf("inserting grants: %w", err)
		}
	}
	for _, x := range expiries {
		_, err := tx.NewUpdate().Model((*GrantRow)(nil)).Where("id = ?", x.id).
			Set("expired_at = ?", x.at).Set("expired_amount = ?", x.amount).Exec(ctx)
		if err != nil {
			return fmt.Errorf("expiring grant %s: %w", x.id, err)
		}
	}
	return nil
}
