package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Usage projects calls, spend and failures per account, key, model and
// minute/hour/day, and each key's charged use per month. A call counts
// when it ends: captured calls add calls and spend, released calls add a
// failure. It needs each task's key and model, which only the request
// carries, so it remembers open tasks in its own table.
type Usage struct {
	accountEvents
}

// NewUsage returns the projection.
func NewUsage() *Usage { return &Usage{accountEvents: newAccountEvents()} }

func (*Usage) Name() string { return "usage" }

// Wants implements Filter.
func (*Usage) Wants(t string) bool {
	return t == account.EventTaskRequested || t == account.EventTaskSucceeded || t == account.EventTaskFailed
}

type usageKey struct {
	account, key, model string
	bucket              time.Time
}

type usageCount struct {
	calls, failures int64
	spend           decimal.Decimal
	seq             uint64 // the last commit that counted here
}

type openTask struct{ key, model string }

// Apply implements Projection.
func (p *Usage) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
	return p.ApplyLive(ctx, tx, commits, nil)
}

// ApplyLive implements LiveProjection: each minute bucket the batch
// touched, as it stands after the batch.
func (p *Usage) ApplyLive(ctx context.Context, tx bun.Tx, commits []eventstore.Commit, out *Changes) error {
	fresh := map[string]openTask{}
	var newIDs, newKeys, newModels, newAccounts []string
	type ended struct {
		account, task string
		at            time.Time
		amount        decimal.Decimal
		ok            bool
		seq           uint64
	}
	var ends []ended
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
			case account.TaskRequested:
				fresh[e.TaskID] = openTask{key: e.KeyID, model: e.Model}
				newIDs, newKeys, newModels = append(newIDs, e.TaskID), append(newKeys, e.KeyID), append(newModels, e.Model)
				newAccounts = append(newAccounts, c.Aggregate.ID)
			case account.TaskSucceeded:
				ends = append(ends, ended{c.Aggregate.ID, e.TaskID, ev.OccurredAt, e.Amount.Decimal(), true, c.StreamSeq})
			case account.TaskFailed:
				ends = append(ends, ended{c.Aggregate.ID, e.TaskID, ev.OccurredAt, decimal.Zero, false, c.StreamSeq})
			}
		}
	}
	// Tasks ended in this batch but requested in an earlier one: look up
	// their key and model.
	var lookup []string
	for _, e := range ends {
		if _, ok := fresh[e.task]; !ok {
			lookup = append(lookup, e.task)
		}
	}
	if len(lookup) > 0 {
		var rows []struct {
			TaskID string `bun:"task_id"`
			KeyID  string `bun:"key_id"`
			Model  string `bun:"model"`
		}
		if err := tx.NewRaw("SELECT task_id, key_id, model FROM usage_open_tasks WHERE task_id = ANY(?)", pgdialect.Array(lookup)).Scan(ctx, &rows); err != nil {
			return fmt.Errorf("open tasks: %w", err)
		}
		for _, r := range rows {
			fresh[r.TaskID] = openTask{key: r.KeyID, model: r.Model}
		}
	}
	counts := map[usageKey]*usageCount{}
	var closed []string
	for _, e := range ends {
		t, ok := fresh[e.task]
		if !ok {
			return fmt.Errorf("task %s ended but was never requested", e.task)
		}
		closed = append(closed, e.task)
		k := usageKey{e.account, t.key, t.model, e.at.UTC().Truncate(time.Minute)}
		c := counts[k]
		if c == nil {
			c = &usageCount{}
			counts[k] = c
		}
		c.seq = e.seq
		if e.ok {
			c.calls++
			c.spend = c.spend.Add(e.amount)
		} else {
			c.failures++
		}
	}
	// Open tasks that did not end in this batch are remembered.
	var keepIDs, keepKeys, keepModels, keepAccounts []string
	endedHere := map[string]bool{}
	for _, id := range closed {
		endedHere[id] = true
	}
	for i, id := range newIDs {
		if !endedHere[id] {
			keepIDs, keepKeys, keepModels, keepAccounts = append(keepIDs, id), append(keepKeys, newKeys[i]), append(keepModels, newModels[i]), append(keepAccounts, newAccounts[i])
		}
	}
	if len(keepIDs) > 0 {
		if _, err := columns(tx, `INSERT INTO usage_open_tasks (task_id, account_id, key_id, model)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])`,
			keepIDs, keepAccounts, keepKeys, keepModels).Exec(ctx); err != nil {
			return fmt.Errorf("remembering open tasks: %w", err)
		}
	}
	if len(lookup) > 0 {
		if _, err := columns(tx, "DELETE FROM usage_open_tasks WHERE task_id = ANY($1)", lookup).Exec(ctx); err != nil {
			return err
		}
	}
	return writeUsage(ctx, tx, counts, out)
}

// writeUsage adds the batch's minute counts to every table in one
// statement: the minute rows are sent once, and Postgres rolls them up
// into hours, days and each key's month (calls with a key, charged ones).
// Buckets are truncated in UTC whatever the session's time zone.
func writeUsage(ctx context.Context, tx bun.Tx, counts map[usageKey]*usageCount, out *Changes) error {
	if len(counts) == 0 {
		return nil
	}
	n := len(counts)
	accs, keys, models, spends := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	buckets := make([]time.Time, 0, n)
	calls, fails := make([]int64, 0, n), make([]int64, 0, n)
	for k, c := range counts {
		accs, keys, models, buckets = append(accs, k.account), append(keys, k.key), append(models, k.model), append(buckets, k.bucket)
		calls, fails, spends = append(calls, c.calls), append(fails, c.failures), append(spends, c.spend.String())
	}
	stmt := usageStatement
	if out != nil {
		stmt = usageStatementLive
	}
	q := columns(tx, stmt, accs, keys, models, buckets, calls, spends, fails)
	var err error
	if out == nil {
		_, err = q.Exec(ctx)
	} else {
		err = liveUsage(ctx, q, counts, out)
	}
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	return nil
}

// usageStatement adds a batch's minute rows ($1..$7, one array per column)
// to the minute table and, rolled up, to the hour and day tables and the
// keys' months.
var usageStatement = `WITH d AS (
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[], $6::numeric[], $7::bigint[])
			AS d(account_id, key_id, model, bucket, calls, spend, failures)
	), hours AS (` + usageRollup("usage_hour", "hour") + `
	), days AS (` + usageRollup("usage_day", "day") + `
	), months AS (
		INSERT INTO key_usage_month AS m (key_id, month, calls, spend)
		SELECT key_id, to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM'), sum(calls)::bigint, sum(spend)
		FROM d WHERE key_id <> '' AND calls > 0 GROUP BY 1, 2
		ON CONFLICT (key_id, month) DO UPDATE SET calls = m.calls + excluded.calls, spend = m.spend + excluded.spend
	)
	INSERT INTO usage_minute AS u (account_id, key_id, model, bucket, calls, spend, failures)
	SELECT * FROM d` + usageAdd

// usageStatementLive is usageStatement returning each minute bucket as
// it stands after the batch, for the live streams.
var usageStatementLive = usageStatement + " RETURNING account_id, key_id, model, bucket, calls, spend, failures"

// usageRollup upserts the minute rows d into table, summed per bucket of
// the unit (truncated in UTC).
func usageRollup(table, unit string) string {
	return `
		INSERT INTO ` + table + ` AS u (account_id, key_id, model, bucket, calls, spend, failures)
		SELECT account_id, key_id, model, date_trunc('` + unit + `', bucket, 'UTC'), sum(calls)::bigint, sum(spend), sum(failures)::bigint
		FROM d GROUP BY 1, 2, 3, 4` + usageAdd
}

// usageAdd adds an upserted usage row to the bucket it meets.
const usageAdd = `
		ON CONFLICT (account_id, bucket, key_id, model) DO UPDATE SET
			calls = u.calls + excluded.calls, spend = u.spend + excluded.spend, failures = u.failures + excluded.failures`

// liveUsage runs the minute upsert and reports each bucket after it, with
// what this batch added.
func liveUsage(ctx context.Context, q columnQuery, counts map[usageKey]*usageCount, out *Changes) error {
	var after []struct {
		AccountID string          `bun:"account_id"`
		KeyID     string          `bun:"key_id"`
		Model     string          `bun:"model"`
		Bucket    time.Time       `bun:"bucket"`
		Calls     int64           `bun:"calls"`
		Spend     decimal.Decimal `bun:"spend"`
		Failures  int64           `bun:"failures"`
	}
	if err := q.Scan(ctx, &after); err != nil {
		return err
	}
	for _, a := range after {
		c := counts[usageKey{a.AccountID, a.KeyID, a.Model, a.Bucket.UTC()}]
		if c == nil {
			return fmt.Errorf("usage bucket %s/%s/%s/%s came back but was not written", a.AccountID, a.KeyID, a.Model, a.Bucket)
		}
		out.Usage = append(out.Usage, UsageChange{Seq: c.seq, AccountID: a.AccountID, KeyID: a.KeyID, Model: a.Model,
			Bucket: a.Bucket.UTC(), Calls: a.Calls, Failures: a.Failures, Spend: a.Spend, AddedCalls: c.calls, AddedSpend: c.spend})
	}
	return nil
}
