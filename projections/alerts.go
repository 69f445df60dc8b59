package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Alerts projects low-balance alerts and their delivery, which the alert
// dispatcher reads to know what is due.
type Alerts struct {
	accountEvents
}

// NewAlerts returns the projection.
func NewAlerts() *Alerts { return &Alerts{accountEvents: newAccountEvents()} }

func (*Alerts) Name() string { return "alerts" }

// Wants implements Filter.
func (*Alerts) Wants(t string) bool {
	return t == account.EventLowBalanceCrossed || t == account.EventNotificationAttempted
}

// AlertRow is the low_balance_alerts read model.
type AlertRow struct {
	bun.BaseModel `bun:"table:low_balance_alerts"`
	ID            string          `bun:"id,pk"`
	AccountID     string          `bun:"account_id"`
	Threshold     decimal.Decimal `bun:"threshold,type:numeric(20,2)"`
	Available     decimal.Decimal `bun:"available,type:numeric(20,2)"`
	Currency      string          `bun:"currency"`
	WebhookURL    string          `bun:"webhook_url"`
	Status        string          `bun:"status"`
	Attempts      int             `bun:"attempts"`
	NextAttemptAt *time.Time      `bun:"next_attempt_at"`
	LastError     string          `bun:"last_error,nullzero"`
	CreatedAt     time.Time       `bun:"created_at"`
	DeliveredAt   *time.Time      `bun:"delivered_at"`
	Version       uint64          `bun:"version"`
}

// Apply implements Projection. Alerts are rare: rows are written one
// statement each, in stream order.
func (p *Alerts) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
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
			switch e := d.(type) {
			case account.LowBalanceCrossed:
				at := ev.OccurredAt
				row := AlertRow{ID: e.AlertID, AccountID: c.Aggregate.ID, Threshold: e.Threshold.Decimal(),
					Available: e.Available.Decimal(), Currency: string(e.Currency), WebhookURL: e.WebhookURL,
					Status: "pending", NextAttemptAt: &at, CreatedAt: at, Version: ev.Seq}
				if _, err := tx.NewInsert().Model(&row).Exec(ctx); err != nil {
					return fmt.Errorf("inserting alert %s: %w", e.AlertID, err)
				}
			case account.NotificationAttempted:
				q := tx.NewUpdate().Model((*AlertRow)(nil)).Where("id = ?", e.AlertID).
					Set("attempts = GREATEST(attempts, ?)", e.Attempt).Set("next_attempt_at = ?", e.NextAttemptAt).
					Set("last_error = ?", nullIfEmpty(e.Error)).Set("version = ?", ev.Seq)
				switch {
				case e.Delivered:
					q = q.Set("status = 'delivered'").Set("delivered_at = ?", ev.OccurredAt)
				case e.NextAttemptAt == nil:
					q = q.Set("status = 'failed'")
				}
				if _, err := q.Exec(ctx); err != nil {
					return fmt.Errorf("updating alert %s: %w", e.AlertID, err)
				}
			}
		}
	}
	return nil
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
