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

// Statement projects each account's statement: one line per movement of
// the balance (top-ups, charges, adjustments) or of the grants (grants,
// their expiry, the grant-funded part of charges), with both after it.
// Reserving and releasing move money between available and held without
// changing either, so they are not lines — unless a release returns a
// grant's part after the grant expired: that part expires then.
type Statement struct {
	accountEvents
}

// NewStatement returns the projection.
func NewStatement() *Statement { return &Statement{accountEvents: newAccountEvents()} }

func (*Statement) Name() string { return "statement" }

// Wants implements Filter.
func (*Statement) Wants(t string) bool {
	switch t {
	case account.EventToppedUp, account.EventTaskSucceeded, account.EventAdjusted, account.EventRefunded,
		account.EventCreditsGranted, account.EventGrantExpired, account.EventTaskFailed, account.EventSubscribed:
		return true
	}
	return false
}

// EntryRow is the wallet_entries read model.
type EntryRow struct {
	bun.BaseModel `bun:"table:wallet_entries"`
	AccountID     string          `bun:"account_id,pk"`
	Seq           int64           `bun:"seq,pk"`
	ID            string          `bun:"id"`
	Type          string          `bun:"type"`
	Amount        decimal.Decimal `bun:"amount,type:numeric(20,2)"`
	BalanceAfter  decimal.Decimal `bun:"balance_after,type:numeric(20,2)"`
	Credits       decimal.Decimal `bun:"credits,type:numeric(20,2)"` // signed effect on the grants
	CreditsAfter  decimal.Decimal `bun:"credits_after,type:numeric(20,2)"`
	TaskID        string          `bun:"task_id,nullzero"`
	Reference     string          `bun:"reference,nullzero"`
	CreatedAt     time.Time       `bun:"created_at"`
	StreamSeq     uint64          `bun:"stream_seq"`
}

// Apply implements Projection.
func (p *Statement) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
	var rows []EntryRow
	accounts := map[string]bool{}
	for ci := range commits {
		c := &commits[ci]
		for i, ev := range c.Events {
			if !p.Wants(ev.Type) {
				continue
			}
			d, err := p.event(c, i)
			if err != nil {
				return err
			}
			id := c.Aggregate.ID
			row := EntryRow{AccountID: id, CreatedAt: ev.OccurredAt, StreamSeq: c.StreamSeq}
			switch e := d.(type) {
			case account.ToppedUp:
				row.ID, row.Type, row.Reference = e.TopUpID, "topup", e.Reference
			case account.TaskSucceeded:
				row.ID, row.Type, row.TaskID = e.TaskID, "charge", e.TaskID
			case account.Adjusted:
				row.ID, row.Type, row.Reference = e.AdjustmentID, "adjustment", e.Reason
			case account.CreditsGranted:
				row.ID, row.Type, row.Reference = e.GrantID, "grant", e.Reason
			case account.GrantExpired:
				row.ID, row.Type = e.GrantID, "grant_expired"
			case account.TaskFailed:
				row.ID, row.Type, row.TaskID = e.TaskID, "grant_expired", e.TaskID
			case account.Subscribed:
				row.ID, row.Type = string(e.Plan), "subscription"
				row.Reference = e.PeriodStart.UTC().Format(time.RFC3339) + "/" + e.PeriodEnd.UTC().Format(time.RFC3339)
			case account.Refunded:
				// The line is what left the balance; a part the balance
				// did not cover is owed, not a line.
				row.ID, row.Type, row.Reference = e.RefundID, "refund", e.ChargeID
			}
			tx := d.(account.Moving).Postings()
			row.Amount = tx.Effect(journal.Available(id)).Add(tx.Effect(journal.Held(id))).Decimal()
			row.Credits = tx.Effect(journal.Credits(id)).Add(tx.Effect(journal.HeldCredits(id))).Decimal()
			if row.Amount.IsZero() && row.Credits.IsZero() && row.Type != "charge" && row.Type != "refund" {
				continue // a release, or an expiry with nothing left (a refund is a line even when all of it is owed)
			}
			rows = append(rows, row)
			accounts[id] = true
		}
	}
	if len(rows) == 0 {
		return nil
	}
	ids := make([]string, 0, len(accounts))
	for id := range accounts {
		ids = append(ids, id)
	}
	var last []struct {
		AccountID    string          `bun:"account_id"`
		Seq          int64           `bun:"seq"`
		BalanceAfter decimal.Decimal `bun:"balance_after"`
		CreditsAfter decimal.Decimal `bun:"credits_after"`
	}
	// Each account's last line, by a backward step of the primary key:
	// DISTINCT ON over the accounts' lines read every line they ever had,
	// a cost that grew with each account's history.
	err := columns(tx, `SELECT a.id AS account_id, e.seq, e.balance_after, e.credits_after FROM unnest($1::text[]) AS a(id)
		CROSS JOIN LATERAL (SELECT seq, balance_after, credits_after FROM wallet_entries w
			WHERE w.account_id = a.id ORDER BY w.seq DESC LIMIT 1) e`, ids).Scan(ctx, &last)
	if err != nil {
		return fmt.Errorf("statement heads: %w", err)
	}
	type head struct {
		seq              int64
		balance, credits decimal.Decimal
	}
	heads := map[string]head{}
	for _, l := range last {
		heads[l.AccountID] = head{l.Seq, l.BalanceAfter, l.CreditsAfter}
	}
	for i := range rows {
		h := heads[rows[i].AccountID]
		h.seq++
		h.balance = h.balance.Add(rows[i].Amount)
		h.credits = h.credits.Add(rows[i].Credits)
		rows[i].Seq, rows[i].BalanceAfter, rows[i].CreditsAfter = h.seq, h.balance, h.credits
		heads[rows[i].AccountID] = h
	}
	return insertEntries(ctx, tx, rows)
}

// insertEntries writes statement lines column-wise through unnest and
// binary array parameters (see insertTasks and columnQuery).
func insertEntries(ctx context.Context, tx bun.Tx, rows []EntryRow) error {
	n := len(rows)
	accounts, ids, types, amounts, balances := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	credits, creditsAfter := make([]string, n), make([]string, n)
	tasks, refs := make([]*string, n), make([]*string, n)
	seqs, streams := make([]int64, n), make([]int64, n)
	ats := make([]time.Time, n)
	for i, r := range rows {
		accounts[i], ids[i], types[i], amounts[i], balances[i] = r.AccountID, r.ID, r.Type, r.Amount.String(), r.BalanceAfter.String()
		credits[i], creditsAfter[i] = r.Credits.String(), r.CreditsAfter.String()
		if r.TaskID != "" {
			tasks[i] = &rows[i].TaskID
		}
		if r.Reference != "" {
			refs[i] = &rows[i].Reference
		}
		seqs[i], streams[i], ats[i] = r.Seq, int64(r.StreamSeq), r.CreatedAt
	}
	_, err := columns(tx, `INSERT INTO wallet_entries (account_id, seq, id, type, amount, balance_after, credits, credits_after,
			task_id, reference, created_at, stream_seq)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[],
			$9::text[], $10::text[], $11::timestamptz[], $12::bigint[])`,
		accounts, seqs, ids, types, amounts, balances, credits, creditsAfter,
		tasks, refs, ats, streams).Exec(ctx)
	if err != nil {
		return fmt.Errorf("inserting statement lines: %w", err)
	}
	return nil
}
