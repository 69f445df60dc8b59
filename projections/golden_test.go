package projections

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/adapters/postgres"
	"github.com/ledgerd/ledgerd/adapters/postgres/postgrestest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

var g0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// goldenHistory is a fixed history touching every read model: an account
// and its user, top-ups, a key, calls that succeed and fail, a callback,
// an adjustment, a grant spent and expired.
func goldenHistory(t *testing.T, store eventstore.Store) {
	t.Helper()
	m := money.MustParse
	acc, usr := "acc_gold", user.IDFor("gold@example.com")
	k := apikey.HashOf("nx_live_golden")
	ac := ledger.AccountCodec()
	uc := ledger.UserCodec()
	step := 0
	var accSeq, accStream uint64
	var accHash string
	at := func() time.Time { step++; return g0.Add(time.Duration(step) * time.Minute) }
	appendAcc := func(evs ...account.Event) {
		var out []eventstore.Event
		for _, e := range evs {
			name, v, data, err := ac.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, eventstore.Event{ID: fmt.Sprintf("evt_%02d", step), Type: name, Version: v, AggregateType: "account",
				AggregateID: acc, OccurredAt: at(), Actor: "usr_admin", Data: data})
		}
		accHash = eventstore.Chain(accSeq, accHash, out)
		accSeq += uint64(len(out))
		seqs, err := store.Append(context.Background(), eventstore.Append{Expected: accStream,
			Commit: eventstore.Commit{ID: fmt.Sprintf("cmt_%02d", step), Aggregate: eventstore.Ref{Type: "account", ID: acc}, Events: out}})
		if err != nil {
			t.Fatal(err)
		}
		accStream = seqs[0]
	}
	name, v, data, _ := uc.Encode(user.Registered{UserID: usr, Email: "gold@example.com", Role: user.RoleCustomer, AccountID: acc, PasswordHash: "$2a$04$x"})
	ue := []eventstore.Event{{ID: "evt_user", Type: name, Version: v, AggregateType: "user", AggregateID: usr, OccurredAt: g0, Data: data}}
	eventstore.Chain(0, "", ue)
	if _, err := store.Append(context.Background(), eventstore.Append{Commit: eventstore.Commit{ID: "cmt_user", Aggregate: eventstore.Ref{Type: "user", ID: usr}, Events: ue}}); err != nil {
		t.Fatal(err)
	}
	img := pricing.Model{Name: "nano-banana-2", Type: pricing.TypeImage, Price: m("0.80"), Currency: money.USD, Provider: "local"}
	req := func(task, key string, price string) account.TaskRequested {
		return account.TaskRequested{TaskID: task, KeyID: key, Model: img.Name, Type: img.Type, Price: m(price), Currency: money.USD,
			Provider: "local", Input: account.TaskInput{Prompt: "p", RequestType: "sync", CallbackURL: map[bool]string{true: "https://example.com/cb"}[task == "gen_2"]},
			Owner: "inst_1", RequestedAt: g0, HoldExpiresAt: g0.Add(time.Hour),
			Transaction: journal.Move(journal.Available(acc), journal.Held(acc), m(price))}
	}
	appendAcc(account.Opened{AccountID: acc, Email: "gold@example.com", OwnerUserID: usr, Plan: account.PlanAPI, Currency: money.USD})
	appendAcc(account.ToppedUp{TopUpID: "top_1", Amount: m("10.00"), Reference: "inv-1", Transaction: journal.Move(journal.PlatformCash, journal.Available(acc), m("10.00"))})
	appendAcc(account.KeyCreated{KeyID: "key_1", Name: "ci", Hash: k, Prefix: "nx_live_", Last4: "lden", Scopes: apikey.DefaultScopes, RateLimit: 60})
	appendAcc(req("gen_1", "key_1", "0.80"))
	appendAcc(account.TaskSucceeded{TaskID: "gen_1", Output: account.TaskOutput{ImageURL: "https://h/a.png"}, Amount: m("0.80"),
		Transaction: journal.Move(journal.Held(acc), journal.PlatformRevenue, m("0.80"))})
	appendAcc(req("gen_2", "key_1", "0.80"), account.TaskStarted{TaskID: "gen_2", ProviderRef: "ref"})
	appendAcc(account.TaskFailed{TaskID: "gen_2", Code: "provider_error", Reason: "boom", Amount: m("0.80"),
		Transaction: journal.Move(journal.Held(acc), journal.Available(acc), m("0.80"))})
	appendAcc(account.CallbackAttempted{TaskID: "gen_2", Attempt: 1, Status: 200, Delivered: true})
	appendAcc(req("gen_3", "", "0.80"))
	appendAcc(account.Adjusted{AdjustmentID: "adj_1", Amount: m("-1.00"), Reason: "correction",
		Transaction: journal.Move(journal.Available(acc), journal.PlatformAdjustments, m("1.00"))})
	// A grant pays for a call before paid money, then expires with what
	// is left.
	appendAcc(account.CreditsGranted{GrantID: "grt_1", Amount: m("2.00"), ExpiresAt: g0.Add(2 * time.Hour), Reason: "welcome", Source: "admin",
		Transaction: journal.Move(journal.PlatformPromotions, journal.Credits(acc), m("2.00"))})
	onGrant := req("gen_4", "", "0.80")
	onGrant.Grants = []account.GrantDraw{{GrantID: "grt_1", Amount: m("0.80")}}
	onGrant.Transaction = journal.Move(journal.Credits(acc), journal.HeldCredits(acc), m("0.80"))
	appendAcc(onGrant)
	appendAcc(account.TaskSucceeded{TaskID: "gen_4", Output: account.TaskOutput{ImageURL: "https://h/b.png"}, Amount: m("0.80"),
		Transaction: journal.Move(journal.HeldCredits(acc), journal.PlatformRevenue, m("0.80"))})
	appendAcc(account.GrantExpired{GrantID: "grt_1", Amount: m("1.20"), ExpiresAt: g0.Add(2 * time.Hour),
		Transaction: journal.Move(journal.Credits(acc), journal.PlatformPromotions, m("1.20"))})
	appendAcc(account.PlanChanged{Plan: account.PlanPro, Previous: account.PlanAPI}, account.KeyRevoked{KeyID: "key_1", Hash: k})
	// Stripe: a paid top-up, a refund that outruns the balance (owed),
	// a low-balance alert and its delivery.
	appendAcc(account.NotificationsSet{LowBalanceThreshold: ptr(m("5.00")), WebhookURL: "https://example.com/alerts", Armed: true})
	appendAcc(account.ToppedUp{TopUpID: "top_2", Amount: m("12.00"), Reference: "cs_1", PaymentIntent: "pi_1",
		Transaction: journal.Move(journal.PlatformCash, journal.Available(acc), m("12.00"))})
	appendAcc(account.Adjusted{AdjustmentID: "adj_2", Amount: m("-10.00"), Reason: "spent",
		Transaction: journal.Move(journal.Available(acc), journal.PlatformAdjustments, m("10.00"))})
	appendAcc(account.Refunded{RefundID: "rfd_1", TopUpID: "top_2", Reference: "cs_1", ChargeID: "ch_1", Amount: m("12.00"),
		RefundedTotal: m("12.00"), Covered: m("9.40"), Owed: m("2.60"), Transaction: journal.Transaction{
			{Account: journal.PlatformCash, Credit: m("12.00")}, {Account: journal.Available(acc), Debit: m("9.40")},
			{Account: journal.Receivable(acc), Debit: m("2.60")}}},
		account.LowBalanceCrossed{AlertID: "lba_1", Threshold: m("5.00"), Available: m("0.00"), Currency: money.USD, WebhookURL: "https://example.com/alerts"})
	next := g0.Add(time.Hour)
	appendAcc(account.NotificationAttempted{AlertID: "lba_1", Attempt: 1, Status: 500, Error: "HTTP 500", NextAttemptAt: &next})
	appendAcc(account.NotificationAttempted{AlertID: "lba_1", Attempt: 2, Status: 200, Delivered: true})
}

func ptr[T any](v T) *T { return &v }

// dump reads every read-model table as sorted JSON rows, without the
// columns that record when rows were written rather than what happened.
func dump(t *testing.T, db *bun.DB) string {
	t.Helper()
	var b strings.Builder
	for _, tbl := range ReadModelTables {
		var rows []string
		q := fmt.Sprintf(`SELECT (to_jsonb(t) - 'updated_at' - 'last_event_at' - 'last_used_at')::text FROM %s t ORDER BY 1`, tbl.Name)
		if err := db.NewRaw(q).Scan(context.Background(), &rows); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "== %s\n", tbl.Name)
		for _, r := range rows {
			b.WriteString(r + "\n")
		}
	}
	return b.String()
}

func projectAll(t *testing.T, js jetstream.JetStream, store *eventstore.JetStream, maxBatch int) string {
	t.Helper()
	ctx := context.Background()
	db, _ := postgrestest.Migrated(t, 10)
	head, err := store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := RunnerConfig{DB: db, JS: js, Stream: store.StreamName(), SubjectPrefix: store.SubjectPrefix(),
		Logger: slog.New(slog.DiscardHandler), IsTransient: postgres.IsTransient, MaxBatch: maxBatch}
	for _, p := range []Projection{NewAccounts(), NewUsers(), NewTasks(), NewUsage(), NewStatement(), NewAlerts()} {
		if err := NewRunner(cfg, p).CatchUp(ctx, head, func(uint64, uint64) {}); err != nil {
			t.Fatalf("%s: %v", p.Name(), err)
		}
	}
	return dump(t, db)
}

func TestGoldenReadModels(t *testing.T) {
	_, js := natstest.JetStream(t, natstest.Server(t))
	store, err := eventstore.OpenJetStream(context.Background(), js, eventstore.JetStreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	goldenHistory(t, store)
	got := projectAll(t, js, store, 1000)
	path := filepath.Join("testdata", "golden", "readmodels.txt")
	if *updateGolden {
		_ = os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file (run with -update): %v", err)
	}
	if got != string(want) {
		t.Fatalf("read models differ from the golden rows:\n%s", diffLines(string(want), got))
	}
	// The same history applied one commit per transaction gives the same
	// rows: the read models do not depend on how events are batched.
	if again := projectAll(t, js, store, 1); again != got {
		t.Fatalf("rebuilt one commit at a time, the read models differ:\n%s", diffLines(got, again))
	}
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b bytes.Buffer
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "- %s\n+ %s\n", a, c)
		}
	}
	return b.String()
}
