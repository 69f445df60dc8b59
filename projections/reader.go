package projections

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// ErrNotFound: no such row in the read model.
var ErrNotFound = errors.New("not found in read model")

// Reader answers queries from the read models.
type Reader struct {
	db *bun.DB
}

// NewReader returns a reader over db.
func NewReader(db *bun.DB) *Reader { return &Reader{db: db} }

// Wallet returns an account's wallet.
func (r *Reader) Wallet(ctx context.Context, accountID string) (WalletRow, error) {
	var w WalletRow
	err := r.db.NewSelect().Model(&w).Where("account_id = ?", accountID).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return WalletRow{}, ErrNotFound
	}
	return w, err
}

// Account returns one account.
func (r *Reader) Account(ctx context.Context, id string) (AccountRow, error) {
	var a AccountRow
	err := r.db.NewSelect().Model(&a).Where("id = ?", id).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return AccountRow{}, ErrNotFound
	}
	return a, err
}

// Ping checks the database answers.
func (r *Reader) Ping(ctx context.Context) error { return r.db.PingContext(ctx) }

// Keys lists an account's keys, oldest first.
func (r *Reader) Keys(ctx context.Context, accountID string) ([]KeyRow, error) {
	var rows []KeyRow
	err := r.db.NewSelect().Model(&rows).Where("account_id = ?", accountID).Order("created_at", "id").Scan(ctx)
	return rows, err
}

// KeySnapshot is every key and account standing at one stream position.
type KeySnapshot struct {
	Position uint64
	Keys     []KeyRow
	Accounts []AccountRow
}

// KeySnapshot reads keys, accounts and the accounts projection's position
// in one repeatable-read transaction, so the position says exactly which
// events the rows include.
func (r *Reader) KeySnapshot(ctx context.Context) (KeySnapshot, error) {
	var s KeySnapshot
	err := r.db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewSelect().Table("projection_positions").Column("position").
			Where("name = ?", (&Accounts{}).Name()).Scan(ctx, &s.Position)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := tx.NewSelect().Model(&s.Keys).Scan(ctx); err != nil {
			return err
		}
		return tx.NewSelect().Model(&s.Accounts).Column("id", "plan", "status", "version").Scan(ctx)
	})
	return s, err
}

// TouchKeys records when keys were last used.
func (r *Reader) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	ids := make([]string, 0, len(used))
	ats := make([]time.Time, 0, len(used))
	for id, at := range used {
		ids = append(ids, id)
		ats = append(ats, at)
	}
	_, err := r.db.NewRaw(`UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, d.at)
		FROM unnest(?::text[], ?::timestamptz[]) AS d(id, at) WHERE k.id = d.id`,
		pgdialect.Array(ids), pgdialect.Array(ats)).Exec(ctx)
	return err
}

// Task returns one task of an account.
func (r *Reader) Task(ctx context.Context, accountID, taskID string) (TaskRow, error) {
	var t TaskRow
	err := r.db.NewSelect().Model(&t).Where("id = ? AND account_id = ?", taskID, accountID).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return TaskRow{}, ErrNotFound
	}
	return t, err
}

// TaskByIdempotencyKey finds the task an idempotency key created.
func (r *Reader) TaskByIdempotencyKey(ctx context.Context, accountID, key string) (TaskRow, error) {
	var t TaskRow
	err := r.db.NewSelect().Model(&t).Where("account_id = ? AND idempotency_key = ?", accountID, key).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return TaskRow{}, ErrNotFound
	}
	return t, err
}

// OpenTasks returns tasks still pending or running, oldest hold first.
func (r *Reader) OpenTasks(ctx context.Context, limit int) ([]TaskRow, error) {
	var rows []TaskRow
	err := r.db.NewSelect().Model(&rows).Where("status IN ('pending', 'running')").
		Order("hold_expires_at").Limit(int64(limit)).Scan(ctx)
	return rows, err
}

// DueCallbacks returns tasks whose callback is due.
func (r *Reader) DueCallbacks(ctx context.Context, now time.Time, limit int) ([]TaskRow, error) {
	var rows []TaskRow
	err := r.db.NewSelect().Model(&rows).Where("callback_status = 'pending' AND callback_next_at <= ?", now).
		Order("callback_next_at").Limit(int64(limit)).Scan(ctx)
	return rows, err
}
