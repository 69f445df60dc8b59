package projections

import (
	"context"
	"database/sql"
	"errors"

	"github.com/uptrace/bun"
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
