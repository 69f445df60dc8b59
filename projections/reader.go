package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger/audit"
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

// DueAlerts returns low-balance alerts whose delivery is due.
func (r *Reader) DueAlerts(ctx context.Context, now time.Time, limit int) ([]AlertRow, error) {
	var rows []AlertRow
	err := r.db.NewSelect().Model(&rows).Where("status = 'pending' AND next_attempt_at <= ?", now).
		Order("next_attempt_at").Limit(int64(limit)).Scan(ctx)
	return rows, err
}

// Alerts returns an account's latest low-balance alerts, newest first.
func (r *Reader) Alerts(ctx context.Context, accountID string, limit int) ([]AlertRow, error) {
	var rows []AlertRow
	err := r.db.NewSelect().Model(&rows).Where("account_id = ?", accountID).
		Order("created_at DESC", "id DESC").Limit(int64(limit)).Scan(ctx)
	return rows, err
}

// AccountByPaymentIntent returns the account whose top-up a card payment
// paid.
func (r *Reader) AccountByPaymentIntent(ctx context.Context, paymentIntent string) (string, error) {
	var id string
	err := r.db.NewSelect().Model((*TopUpRow)(nil)).Column("account_id").Where("payment_intent = ?", paymentIntent).
		Limit(1).Scan(ctx, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return id, err
}

// Entries returns an account's statement, newest first, before seq
// (0: from the newest). Keyset paging on seq keeps pages stable while
// new lines arrive.
func (r *Reader) Entries(ctx context.Context, accountID string, before int64, limit int) ([]EntryRow, error) {
	var rows []EntryRow
	q := r.db.NewSelect().Model(&rows).Where("account_id = ?", accountID).Order("seq DESC").Limit(int64(limit))
	if before > 0 {
		q = q.Where("seq < ?", before)
	}
	return rows, q.Scan(ctx)
}

// UsagePoint is one bucket of usage.
type UsagePoint struct {
	Bucket   time.Time       `bun:"bucket"`
	Model    string          `bun:"model"`
	KeyID    string          `bun:"key_id"`
	Calls    int64           `bun:"calls"`
	Spend    decimal.Decimal `bun:"spend"`
	Failures int64           `bun:"failures"`
}

// Usage returns an account's usage from the table of the granularity,
// summed per bucket and, if asked, per model or key.
func (r *Reader) Usage(ctx context.Context, accountID, granularity, groupBy string, from, to time.Time) ([]UsagePoint, error) {
	table := map[string]string{"minute": "usage_minute", "hour": "usage_hour", "day": "usage_day"}[granularity]
	if table == "" {
		return nil, fmt.Errorf("granularity %q", granularity)
	}
	cols := "bucket"
	switch groupBy {
	case "model":
		cols = "bucket, model"
	case "key":
		cols = "bucket, key_id"
	}
	var rows []UsagePoint
	err := r.db.NewRaw(`SELECT `+cols+`, sum(calls)::bigint AS calls, sum(spend) AS spend, sum(failures)::bigint AS failures
		FROM `+table+` WHERE account_id = ? AND bucket >= ? AND bucket < ? GROUP BY `+cols+` ORDER BY `+cols,
		accountID, from, to).Scan(ctx, &rows)
	return rows, err
}

// KeysUsage returns charged calls and spend per key of an account in month.
func (r *Reader) KeysUsage(ctx context.Context, accountID, month string) (map[string]UsagePoint, error) {
	var rows []UsagePoint
	err := r.db.NewRaw(`SELECT m.key_id, m.calls, m.spend FROM key_usage_month m JOIN api_keys k ON k.id = m.key_id
		WHERE k.account_id = ? AND m.month = ?`, accountID, month).Scan(ctx, &rows)
	out := make(map[string]UsagePoint, len(rows))
	for _, row := range rows {
		out[row.KeyID] = row
	}
	return out, err
}

// Snapshot reads, in one repeatable-read transaction, what the read models
// say of each account (or of one) and the position each projection is at.
func (r *Reader) Snapshot(ctx context.Context, accountID string) (audit.Snapshot, error) {
	snap := audit.Snapshot{Positions: map[string]uint64{}, Accounts: map[string]audit.AccountModel{}}
	err := r.db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}, func(ctx context.Context, tx bun.Tx) error {
		var pos []struct {
			Name     string `bun:"name"`
			Position uint64 `bun:"position"`
		}
		if err := tx.NewSelect().Table("projection_positions").Column("name", "position").Scan(ctx, &pos); err != nil {
			return err
		}
		for _, p := range pos {
			snap.Positions[p.Name] = p.Position
		}
		filter, args := "", []any{}
		if accountID != "" {
			filter, args = " WHERE account_id = ?", []any{accountID}
		}
		get := func(id string) audit.AccountModel { return snap.Accounts[id] }
		var wallets []WalletRow
		if err := tx.NewRaw("SELECT * FROM wallets"+filter, args...).Scan(ctx, &wallets); err != nil {
			return err
		}
		for _, w := range wallets {
			m := get(w.AccountID)
			m.Available, _ = money.FromDecimal(w.Available)
			m.Held, _ = money.FromDecimal(w.Held)
			m.Credits, _ = money.FromDecimal(w.Credits)
			m.HeldCred, _ = money.FromDecimal(w.HeldCredits)
			m.Owed, _ = money.FromDecimal(w.Owed)
			snap.Accounts[w.AccountID] = m
		}
		var heads []struct {
			AccountID    string          `bun:"account_id"`
			BalanceAfter decimal.Decimal `bun:"balance_after"`
			CreditsAfter decimal.Decimal `bun:"credits_after"`
		}
		if err := tx.NewRaw("SELECT DISTINCT ON (account_id) account_id, balance_after, credits_after FROM wallet_entries"+filter+
			" ORDER BY account_id, seq DESC", args...).Scan(ctx, &heads); err != nil {
			return err
		}
		for _, h := range heads {
			m := get(h.AccountID)
			b, _ := money.FromDecimal(h.BalanceAfter)
			m.StatementBalance = &b
			m.StatementCredits, _ = money.FromDecimal(h.CreditsAfter)
			snap.Accounts[h.AccountID] = m
		}
		var usage []struct {
			AccountID string          `bun:"account_id"`
			Calls     int64           `bun:"calls"`
			Spend     decimal.Decimal `bun:"spend"`
			Failures  int64           `bun:"failures"`
		}
		if err := tx.NewRaw("SELECT account_id, sum(calls)::bigint AS calls, sum(spend) AS spend, sum(failures)::bigint AS failures FROM usage_day"+
			filter+" GROUP BY account_id", args...).Scan(ctx, &usage); err != nil {
			return err
		}
		for _, u := range usage {
			m := get(u.AccountID)
			m.Calls, m.Failures = u.Calls, u.Failures
			m.Spend, _ = money.FromDecimal(u.Spend)
			snap.Accounts[u.AccountID] = m
		}
		var tasks []struct {
			AccountID string          `bun:"account_id"`
			Open      int64           `bun:"open"`
			Succeeded int64           `bun:"succeeded"`
			Failed    int64           `bun:"failed"`
			Cost      decimal.Decimal `bun:"cost"`
		}
		if err := tx.NewRaw(`SELECT account_id,
			count(*) FILTER (WHERE status IN ('pending','running')) AS open,
			count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
			count(*) FILTER (WHERE status = 'failed') AS failed,
			coalesce(sum(cost), 0) AS cost FROM tasks`+filter+` GROUP BY account_id`, args...).Scan(ctx, &tasks); err != nil {
			return err
		}
		for _, t := range tasks {
			m := get(t.AccountID)
			m.Open, m.Succeeded, m.Failed = t.Open, t.Succeeded, t.Failed
			m.Cost, _ = money.FromDecimal(t.Cost)
			snap.Accounts[t.AccountID] = m
		}
		return nil
	})
	return snap, err
}

// Accounts lists accounts by id, after the given id.
func (r *Reader) Accounts(ctx context.Context, after string, limit int) ([]AccountRow, error) {
	var rows []AccountRow
	q := r.db.NewSelect().Model(&rows).Order("id").Limit(int64(limit))
	if after != "" {
		q = q.Where("id > ?", after)
	}
	return rows, q.Scan(ctx)
}

// DueGrantAccounts returns accounts with a grant whose expiry has come
// but is not yet recorded.
func (r *Reader) DueGrantAccounts(ctx context.Context, now time.Time, limit int) ([]string, error) {
	var ids []string
	err := r.db.NewRaw(`SELECT DISTINCT account_id FROM grants WHERE expired_at IS NULL AND expires_at <= ? LIMIT ?`,
		now, limit).Scan(ctx, &ids)
	return ids, err
}

// Grants returns an account's grants, earliest expiry first.
func (r *Reader) Grants(ctx context.Context, accountID string) ([]GrantRow, error) {
	var rows []GrantRow
	err := r.db.NewSelect().Model(&rows).Where("account_id = ?", accountID).Order("expires_at", "id").Scan(ctx)
	return rows, err
}

// DueRenewals returns accounts whose subscription period has ended.
func (r *Reader) DueRenewals(ctx context.Context, now time.Time, limit int) ([]string, error) {
	var ids []string
	err := r.db.NewRaw(`SELECT id FROM accounts WHERE period_end <= ? ORDER BY period_end LIMIT ?`, now, limit).Scan(ctx, &ids)
	return ids, err
}

// LiveTotals reads, in one repeatable-read transaction, each account's
// usage on day and in month, the sum of held funds, and the usage and
// accounts projections' positions.
func (r *Reader) LiveTotals(ctx context.Context, day, month time.Time) (LiveTotals, error) {
	t := LiveTotals{Accounts: map[string]AccountTotals{}}
	err := r.db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}, func(ctx context.Context, tx bun.Tx) error {
		var pos []struct {
			Name     string `bun:"name"`
			Position uint64 `bun:"position"`
		}
		if err := tx.NewSelect().Table("projection_positions").Column("name", "position").Scan(ctx, &pos); err != nil {
			return err
		}
		for _, p := range pos {
			switch p.Name {
			case (&Usage{}).Name():
				t.UsagePosition = p.Position
			case (&Accounts{}).Name():
				t.AccountsPosition = p.Position
			}
		}
		if err := tx.NewRaw("SELECT coalesce(sum(held + held_credits), 0) FROM wallets").Scan(ctx, &t.Held); err != nil {
			return err
		}
		var rows []struct {
			AccountID  string          `bun:"account_id"`
			DayCalls   int64           `bun:"day_calls"`
			DaySpend   decimal.Decimal `bun:"day_spend"`
			MonthCalls int64           `bun:"month_calls"`
			MonthSpend decimal.Decimal `bun:"month_spend"`
		}
		if err := tx.NewRaw(`SELECT account_id,
				coalesce(sum(calls) FILTER (WHERE bucket = ?), 0)::bigint AS day_calls,
				coalesce(sum(spend) FILTER (WHERE bucket = ?), 0) AS day_spend,
				sum(calls)::bigint AS month_calls, sum(spend) AS month_spend
			FROM usage_day WHERE bucket >= ? GROUP BY account_id`, day, day, month).Scan(ctx, &rows); err != nil {
			return err
		}
		for _, row := range rows {
			t.Accounts[row.AccountID] = AccountTotals{DayCalls: row.DayCalls, DaySpend: row.DaySpend,
				MonthCalls: row.MonthCalls, MonthSpend: row.MonthSpend}
		}
		return nil
	})
	return t, err
}

// LiveWallet reads a wallet and the position of the accounts projection
// it stands at, in one repeatable-read transaction.
func (r *Reader) LiveWallet(ctx context.Context, accountID string) (LiveWallet, error) {
	var w LiveWallet
	err := r.db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewSelect().Table("projection_positions").Column("position").
			Where("name = ?", (&Accounts{}).Name()).Scan(ctx, &w.Position)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var row WalletRow
		err = tx.NewSelect().Model(&row).Where("account_id = ?", accountID).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		w.Currency, w.Available, w.Held, w.Credits, w.HeldCredits = row.Currency, row.Available, row.Held, row.Credits, row.HeldCredits
		return err
	})
	return w, err
}

// Emails returns the email of each account named.
func (r *Reader) Emails(ctx context.Context, ids []string) (map[string]string, error) {
	var rows []AccountRow
	if err := r.db.NewSelect().Model(&rows).Column("id", "email").Where("id IN (?)", bun.In(ids)).Scan(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(rows))
	for _, a := range rows {
		out[a.ID] = a.Email
	}
	return out, nil
}

// Tasks returns an account's tasks, newest first, older than the task
// (at, id) when at is set. Keyset paging: pages stay stable while new
// tasks arrive.
func (r *Reader) Tasks(ctx context.Context, accountID string, at time.Time, id string, limit int) ([]TaskRow, error) {
	var rows []TaskRow
	q := r.db.NewSelect().Model(&rows).Where("account_id = ?", accountID).
		OrderExpr("requested_at DESC, id DESC").Limit(int64(limit))
	if !at.IsZero() {
		q = q.Where("(requested_at, id) < (?, ?)", at, id)
	}
	return rows, q.Scan(ctx)
}
