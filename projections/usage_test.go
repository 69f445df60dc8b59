package projections

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/adapters/postgres"
	"github.com/ledgerd/ledgerd/adapters/postgres/postgrestest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Usage is rolled up into hours, days and months by Postgres; the buckets
// are UTC whatever the session's time zone. Calls end around midnight UTC
// at the end of a month, with the database set to India's time (+05:30),
// where a local day or hour would start half an hour off and midnight UTC
// falls in the middle of a local day.
func TestUsageBucketsAreUTC(t *testing.T) {
	ctx := context.Background()
	setup, dsn := postgrestest.Migrated(t, 4)
	if _, err := setup.ExecContext(ctx, `DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'Asia/Kolkata'); END $$`); err != nil {
		t.Fatal(err)
	}
	setup.Close()
	db := postgrestest.Open(t, dsn, 4) // sessions from now on start in Asia/Kolkata
	var tz string
	if err := db.NewRaw("SHOW timezone").Scan(ctx, &tz); err != nil || tz != "Asia/Kolkata" {
		t.Fatalf("session time zone %q (%v), want Asia/Kolkata", tz, err)
	}

	_, js := natstest.JetStream(t, natstest.Server(t))
	store, err := eventstore.OpenJetStream(ctx, js, eventstore.JetStreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	clock := func(at time.Time) {
		mu.Lock()
		now = at
		mu.Unlock()
	}
	l, err := ledger.New(store, ledger.Config{BcryptCost: bcrypt.MinCost, Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(RunnerConfig{DB: db, JS: js, Stream: store.StreamName(), SubjectPrefix: store.SubjectPrefix(),
		Logger: slog.New(slog.DiscardHandler), IsTransient: postgres.IsTransient, Lock: pgLock(db)}, NewUsage())
	e := &env{db: db, js: js, store: store, l: l}
	e.start(t, r)

	acc := e.account(t, "utc@example.com")
	e.topUp(t, acc.ID, "100.00", "fund")
	key, err := l.CreateKey(ctx, meta, acc.ID, apikey.SpecInput{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	model := pricing.Defaults()[0] // 0.80
	call := func(requested, ended time.Time, ok bool) {
		t.Helper()
		clock(requested)
		res, err := l.Reserve(ctx, meta, acc.ID, account.TaskRequest{KeyID: key.Key.ID, Model: model,
			Input: account.TaskInput{Prompt: "p"}, HoldTTL: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		clock(ended)
		if ok {
			err = l.CompleteTask(ctx, acc.ID, res.TaskID, account.TaskOutput{ImageURL: "http://x/y.png"})
		} else {
			err = l.FailTask(ctx, acc.ID, res.TaskID, "provider_error", "no")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	day := func(d, h, m, s int) time.Time { return time.Date(2026, 11, 30, h, m, s, 0, time.UTC).AddDate(0, 0, d) }
	call(day(0, 23, 59, 0), day(0, 23, 59, 30), true) // November 30th, 23:00 UTC
	call(day(0, 23, 59, 50), day(1, 0, 0, 10), true)  // December 1st, 00:00 UTC
	call(day(1, 0, 20, 0), day(1, 0, 30, 0), true)
	call(day(1, 0, 40, 0), day(1, 0, 45, 0), false)
	call(day(1, 1, 10, 0), day(1, 1, 10, 5), true)
	waitFor(t, r, l.AccountSeq(acc.ID))

	type row struct {
		Bucket   time.Time `bun:"bucket"`
		Calls    int64     `bun:"calls"`
		Spend    string    `bun:"spend"`
		Failures int64     `bun:"failures"`
	}
	rows := func(table string) []row {
		t.Helper()
		var out []row
		if err := db.NewSelect().Table(table).Column("bucket", "calls", "failures").ColumnExpr("spend::text AS spend").
			Where("account_id = ? AND key_id = ?", acc.ID, key.Key.ID).Order("bucket").Scan(ctx, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	utc := func(d, h int) time.Time { return day(d, h, 0, 0) }
	for table, want := range map[string][]row{
		"usage_hour": {{utc(0, 23), 1, "0.80", 0}, {utc(1, 0), 2, "1.60", 1}, {utc(1, 1), 1, "0.80", 0}},
		"usage_day":  {{utc(0, 0), 1, "0.80", 0}, {utc(1, 0), 3, "2.40", 1}},
	} {
		got := rows(table)
		if len(got) != len(want) {
			t.Fatalf("%s: %+v, want %+v", table, got, want)
		}
		for i := range want {
			if !got[i].Bucket.Equal(want[i].Bucket) || got[i].Calls != want[i].Calls || got[i].Spend != want[i].Spend || got[i].Failures != want[i].Failures {
				t.Errorf("%s row %d: %+v, want %+v", table, i, got[i], want[i])
			}
		}
	}
	var months []struct {
		Month string `bun:"month"`
		Calls int64  `bun:"calls"`
		Spend string `bun:"spend"`
	}
	if err := db.NewSelect().Table("key_usage_month").Column("month", "calls").ColumnExpr("spend::text AS spend").
		Where("key_id = ?", key.Key.ID).Order("month").Scan(ctx, &months); err != nil {
		t.Fatal(err)
	}
	if len(months) != 2 || months[0].Month != "2026-11" || months[0].Calls != 1 || months[0].Spend != "0.80" ||
		months[1].Month != "2026-12" || months[1].Calls != 3 || months[1].Spend != "2.40" {
		t.Errorf("key months: %+v, want 2026-11 1 call 0.80, 2026-12 3 calls 2.40 (the failure is not charged)", months)
	}
}
