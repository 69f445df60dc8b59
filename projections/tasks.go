package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Tasks projects generation tasks: status, cost, outputs, timings.
type Tasks struct {
	codec *codec.Codec[account.Event]
}

// NewTasks returns the projection.
func NewTasks() *Tasks { return &Tasks{codec: ledger.AccountCodec()} }

func (*Tasks) Name() string             { return "tasks" }
func (*Tasks) AggregateTypes() []string { return []string{ledger.TypeAccount} }

// TaskRow is the tasks read model.
type TaskRow struct {
	bun.BaseModel    `bun:"table:tasks"`
	ID               string          `bun:"id,pk"`
	AccountID        string          `bun:"account_id"`
	KeyID            string          `bun:"key_id,nullzero"`
	Model            string          `bun:"model"`
	Type             string          `bun:"type"`
	Status           string          `bun:"status"`
	Price            decimal.Decimal `bun:"price,type:numeric(20,2)"`
	Cost             decimal.Decimal `bun:"cost,type:numeric(20,2)"`
	Currency         string          `bun:"currency"`
	Provider         string          `bun:"provider"`
	ProviderModel    string          `bun:"provider_model,nullzero"`
	ProviderRef      string          `bun:"provider_ref,nullzero"`
	Input            json.RawMessage `bun:"input,type:jsonb"`
	Output           json.RawMessage `bun:"output,type:jsonb,nullzero"`
	ErrorCode        string          `bun:"error_code,nullzero"`
	ErrorMessage     string          `bun:"error_message,nullzero"`
	Owner            string          `bun:"owner"`
	IdempotencyKey   string          `bun:"idempotency_key,nullzero"`
	RequestHash      string          `bun:"request_hash,nullzero"`
	CallbackURL      string          `bun:"callback_url,nullzero"`
	CallbackStatus   string          `bun:"callback_status,nullzero"`
	CallbackAttempts int             `bun:"callback_attempts"`
	CallbackNextAt   *time.Time      `bun:"callback_next_at"`
	RequestedAt      time.Time       `bun:"requested_at"`
	StartedAt        *time.Time      `bun:"started_at"`
	CompletedAt      *time.Time      `bun:"completed_at"`
	HoldExpiresAt    time.Time       `bun:"hold_expires_at"`
	Version          uint64          `bun:"version"`
}

// Apply implements Projection. New tasks are inserted in bulk; the rest of
// a task's life updates its row, folded per task within the batch so a
// call requested and finished in one batch costs one insert.
func (p *Tasks) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
	fresh := map[string]*TaskRow{}
	var order []string
	updated := map[string]*TaskRow{} // rows already in the table, changed here
	var updOrder []string
	row := func(ctx context.Context, id string) (*TaskRow, error) {
		if r := fresh[id]; r != nil {
			return r, nil
		}
		if r := updated[id]; r != nil {
			return r, nil
		}
		r := new(TaskRow)
		if err := tx.NewSelect().Model(r).Where("id = ?", id).For("UPDATE").Scan(ctx); err != nil {
			return nil, fmt.Errorf("task %s: %w", id, err)
		}
		updated[id] = r
		updOrder = append(updOrder, id)
		return r, nil
	}
	for _, c := range commits {
		for _, ev := range c.Events {
			d, err := p.codec.Decode(ev.Type, ev.Version, ev.Data)
			if err != nil {
				return fmt.Errorf("%s seq %d: %w", c.Aggregate, ev.Seq, err)
			}
			at := ev.OccurredAt
			switch e := d.(type) {
			case account.TaskRequested:
				input, _ := json.Marshal(e.Input)
				r := &TaskRow{ID: e.TaskID, AccountID: c.Aggregate.ID, KeyID: e.KeyID, Model: e.Model, Type: string(e.Type),
					Status: "pending", Price: e.Price.Decimal(), Currency: string(e.Currency), Provider: e.Provider,
					ProviderModel: e.ProviderModel, Input: input, Owner: e.Owner, IdempotencyKey: e.IdempotencyKey,
					RequestHash: e.RequestHash, CallbackURL: e.Input.CallbackURL, RequestedAt: e.RequestedAt,
					HoldExpiresAt: e.HoldExpiresAt, Version: ev.Seq}
				fresh[e.TaskID] = r
				order = append(order, e.TaskID)
			case account.TaskStarted:
				r, err := row(ctx, e.TaskID)
				if err != nil {
					return err
				}
				r.Status, r.ProviderRef, r.StartedAt, r.Version = "running", e.ProviderRef, &at, ev.Seq
			case account.TaskAdopted:
				r, err := row(ctx, e.TaskID)
				if err != nil {
					return err
				}
				r.Owner, r.Version = e.To, ev.Seq
			case account.TaskSucceeded:
				r, err := row(ctx, e.TaskID)
				if err != nil {
					return err
				}
				out, _ := json.Marshal(e.Output)
				r.Status, r.Output, r.Cost, r.CompletedAt, r.Version = "succeeded", out, e.Amount.Decimal(), &at, ev.Seq
				r.queueCallback(at)
			case account.TaskFailed:
				r, err := row(ctx, e.TaskID)
				if err != nil {
					return err
				}
				r.Status, r.ErrorCode, r.ErrorMessage, r.CompletedAt, r.Version = "failed", e.Code, e.Reason, &at, ev.Seq
				r.Cost = decimal.Zero
				r.queueCallback(at)
			case account.CallbackAttempted:
				r, err := row(ctx, e.TaskID)
				if err != nil {
					return err
				}
				r.CallbackAttempts = max(r.CallbackAttempts, e.Attempt)
				r.CallbackNextAt = e.NextAttemptAt
				switch {
				case e.Delivered:
					r.CallbackStatus = "delivered"
				case e.NextAttemptAt == nil:
					r.CallbackStatus = "failed"
				}
				r.Version = ev.Seq
			}
		}
	}
	if len(order) > 0 {
		rows := make([]TaskRow, len(order))
		for i, id := range order {
			rows[i] = *fresh[id]
		}
		if _, err := tx.NewInsert().Model(&rows).Exec(ctx); err != nil {
			return fmt.Errorf("inserting tasks: %w", err)
		}
	}
	for _, id := range updOrder {
		if _, err := tx.NewUpdate().Model(updated[id]).WherePK().Exec(ctx); err != nil {
			return fmt.Errorf("updating task %s: %w", id, err)
		}
	}
	return nil
}

// queueCallback marks a finished task's callback for delivery.
func (r *TaskRow) queueCallback(at time.Time) {
	if r.CallbackURL != "" && r.CallbackStatus == "" {
		r.CallbackStatus, r.CallbackNextAt = "pending", &at
	}
}
