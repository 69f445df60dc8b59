package account

import (
	"errors"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/plan"
)

func TestAddMonth(t *testing.T) {
	for _, tc := range []struct{ from, want string }{
		{"2026-11-23T12:00:00Z", "2026-12-23T12:00:00Z"},
		{"2026-12-15T00:00:00Z", "2027-01-15T00:00:00Z"},
		{"2027-01-31T08:30:00Z", "2027-02-28T08:30:00Z"},
		{"2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"2026-10-31T23:59:59Z", "2026-11-30T23:59:59Z"},
	} {
		from, _ := time.Parse(time.RFC3339, tc.from)
		if got := AddMonth(from).Format(time.RFC3339); got != tc.want {
			t.Errorf("AddMonth(%s) = %s, want %s", tc.from, got, tc.want)
		}
	}
}

var pro = plan.Plan{Name: "pro", APIAccess: true, MonthlyFee: m("20.00"), IncludedCredits: m("5.00")}

// TestSubscriptionLifecycle: subscribing charges the fee from paid money
// and grants the plan's credits for the period; renewing at the period's
// end expires what is left of them first, charges again and grants anew;
// a renewal that cannot be paid drops the account to free.
func TestSubscriptionLifecycle(t *testing.T) {
	a := funded("50.00")
	if _, err := a.Subscribe(plan.Plan{Name: "pro", MonthlyFee: m("51.00")}, "grt_x", now); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("subscribing without the fee = %v", err)
	}
	evs, err := a.Subscribe(pro, "grt_1", now)
	decideApply(t, a, evs, err)
	if len(evs) != 3 || evs[0].(PlanChanged).Plan != "pro" || evs[2].(CreditsGranted).ExpiresAt != AddMonth(now) {
		t.Fatalf("subscribe events: %+v", evs)
	}
	if w := wallet(a); w != "30.00/0.00 credits 5.00/0.00" || a.Plan() != "pro" {
		t.Fatalf("after subscribing: %s on %s", w, a.Plan())
	}
	if evs, err := a.Subscribe(pro, "grt_2", now.Add(time.Hour)); err != nil || evs != nil {
		t.Fatalf("subscribing again within the period = %v, %v", evs, err)
	}
	// Spend some credits, then renew at the period's end.
	evs, err = a.RequestTask(req("gen_1", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	evs, err = a.CompleteTask("gen_1", "inst_a", TaskOutput{ImageURL: "u"})
	decideApply(t, a, evs, err)
	end := AddMonth(now)
	if evs, _ := a.RenewSubscription(pro, "grt_2", end.Add(-time.Second)); len(evs) != 0 {
		t.Fatalf("renewed early: %v", evs)
	}
	evs, err = a.RenewSubscription(pro, "grt_2", end.Add(time.Minute))
	decideApply(t, a, evs, err)
	if len(evs) != 3 {
		t.Fatalf("renewal events: %+v", evs)
	}
	if x := evs[0].(GrantExpired); x.Amount.String() != "4.20" {
		t.Fatalf("the old period's credits expire first: %+v", x)
	}
	s := evs[1].(Subscribed)
	if !s.Renewal || !s.PeriodStart.Equal(end) || !s.PeriodEnd.Equal(AddMonth(end)) {
		t.Fatalf("renewal period: %+v", s)
	}
	if w := wallet(a); w != "10.00/0.00 credits 5.00/0.00" || a.Plan() != "pro" {
		t.Fatalf("after renewing: %s on %s", w, a.Plan())
	}
	if sub, ok := a.Subscription(); !ok || !sub.PeriodEnd.Equal(AddMonth(end)) {
		t.Fatalf("subscription after renewing: %+v", sub)
	}
}

func TestRenewalLapsesWhenUnpaid(t *testing.T) {
	a := funded("25.00")
	evs, err := a.Subscribe(pro, "grt_1", now)
	decideApply(t, a, evs, err)
	end := AddMonth(now)
	evs, err = a.RenewSubscription(pro, "grt_2", end)
	decideApply(t, a, evs, err)
	var lapsed, changed bool
	for _, e := range evs {
		switch e := e.(type) {
		case SubscriptionLapsed:
			lapsed = true
		case PlanChanged:
			changed = e.Plan == plan.Free
		case Subscribed, CreditsGranted:
			t.Fatalf("an unpaid renewal recorded %T", e)
		}
	}
	if !lapsed || !changed || a.Plan() != plan.Free {
		t.Fatalf("unpaid renewal: %+v, plan %s", evs, a.Plan())
	}
	if _, ok := a.Subscription(); ok {
		t.Fatal("subscription still there after lapsing")
	}
	if w := wallet(a); w != "5.00/0.00 credits 0.00/0.00" {
		t.Fatalf("wallet after lapsing: %s", w)
	}
	if evs, _ := a.RenewSubscription(pro, "grt_3", end.Add(time.Hour)); len(evs) != 0 {
		t.Fatalf("renewal after lapsing: %v", evs)
	}
}
