package ledger_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// clock is a settable time for the ledger.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// TestRenewalAcrossMonthBoundary: with the clock moved past the period's
// end, a subscription taken on the last day of November renews on the
// last day of December at the plan's current fee (a price change made
// during the period applies), with fresh credits; with too little money
// the next renewal drops the account to free, and its keys lose API
// access. Everything is real JetStream; only the clock is injected.
func TestRenewalAcrossMonthBoundary(t *testing.T) {
	_, js := natstest.JetStream(t, natstest.Server(t))
	store, err := eventstore.OpenJetStream(context.Background(), js, eventstore.JetStreamConfig{Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)}
	l, err := ledger.New(store, ledger.Config{BcryptCost: bcrypt.MinCost, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := l.EnsureDefaultPlans(ctx); err != nil {
		t.Fatal(err)
	}
	m := money.MustParse
	if _, err := l.SetPlan(ctx, meta, plan.Plan{Name: "gold", APIAccess: true, MonthlyFee: m("20.00"), IncludedCredits: m("5.00")}); err != nil {
		t.Fatal(err)
	}
	acc := createAccount(t, l, "renew@example.com")
	if _, err := l.Subscribe(ctx, meta, acc.ID, "nosuch"); !isValidation(err) {
		t.Fatalf("subscribing to an unknown plan = %v", err)
	}
	if _, err := l.Subscribe(ctx, meta, acc.ID, "gold"); !errors.Is(err, account.ErrInsufficientFunds) {
		t.Fatalf("subscribing with an empty wallet = %v", err)
	}
	if _, err := l.TopUp(ctx, meta, acc.ID, m("45.00"), "fund"); err != nil {
		t.Fatal(err)
	}
	res, err := l.Subscribe(ctx, meta, acc.ID, "gold")
	if err != nil || !res.Subscription.PeriodEnd.Equal(time.Date(2026, 12, 30, 18, 0, 0, 0, time.UTC)) {
		t.Fatalf("subscribe = %+v, %v", res, err)
	}
	wallet := func() string {
		_, w, err := l.Account(ctx, acc.ID)
		if err != nil {
			t.Fatal(err)
		}
		return w.Available.String() + " credits " + w.Credits.String()
	}
	if got := wallet(); got != "30.00 credits 5.00" {
		t.Fatalf("after subscribing: %s", got)
	}
	// The fee rises during the period; the renewal charges the new one.
	if _, err := l.SetPlan(ctx, meta, plan.Plan{Name: "gold", APIAccess: true, MonthlyFee: m("22.00"), IncludedCredits: m("5.00")}); err != nil {
		t.Fatal(err)
	}
	clk.Set(time.Date(2026, 12, 30, 17, 59, 59, 0, time.UTC))
	if err := l.RenewSubscription(ctx, acc.ID); err != nil || wallet() != "30.00 credits 5.00" {
		t.Fatalf("renewal a second early: %v, %s", err, wallet())
	}
	clk.Set(time.Date(2026, 12, 31, 9, 0, 0, 0, time.UTC))
	if err := l.RenewSubscription(ctx, acc.ID); err != nil {
		t.Fatal(err)
	}
	if err := l.RenewSubscription(ctx, acc.ID); err != nil { // seen twice, charged once
		t.Fatal(err)
	}
	// 25.00 paid - 22.00 = 3.00, and 5.00 of fresh credits (the old ones
	// expired at the boundary).
	if got := wallet(); got != "8.00 credits 5.00" {
		t.Fatalf("after renewing across the month boundary: %s", got)
	}
	sub, ok, _ := l.Subscription(ctx, acc.ID)
	if !ok || !sub.PeriodStart.Equal(time.Date(2026, 12, 30, 18, 0, 0, 0, time.UTC)) || !sub.PeriodEnd.Equal(time.Date(2027, 1, 30, 18, 0, 0, 0, time.UTC)) {
		t.Fatalf("period after renewal: %+v", sub)
	}
	// 3.00 of paid money cannot pay 22.00: the next renewal lapses.
	clk.Set(time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC))
	if err := l.RenewSubscription(ctx, acc.ID); err != nil {
		t.Fatal(err)
	}
	view, _, _ := l.Account(ctx, acc.ID)
	if _, ok, _ := l.Subscription(ctx, acc.ID); ok || view.Plan != plan.Free || l.PlanAPIAccess(view.Plan) {
		t.Fatalf("after an unpaid renewal: plan %s, subscribed %v", view.Plan, ok)
	}
	if got := wallet(); got != "3.00 credits 0.00" {
		t.Fatalf("wallet after lapsing: %s", got)
	}
}

func isValidation(err error) bool {
	var verr *validation.Error
	return errors.As(err, &verr)
}
