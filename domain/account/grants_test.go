package account

import (
	"errors"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// wallet renders the four parts of a wallet: paid available/held, then
// spendable/held credits.
func wallet(a *Account) string {
	return a.available.String() + "/" + a.held.String() + " credits " + a.credits.String() + "/" + a.heldCredits.String()
}

func grant(t *testing.T, a *Account, id, amount string, expires time.Time) {
	t.Helper()
	evs, err := a.GrantCredits(id, m(amount), expires, "promo", "admin", now)
	decideApply(t, a, evs, err)
}

func TestGrantDecisions(t *testing.T) {
	a := funded("10.00")
	tests := []struct {
		name    string
		amount  string
		expires time.Time
		reason  string
		field   string
	}{
		{"zero amount", "0.00", now.Add(time.Hour), "promo", "amount"},
		{"negative amount", "-1.00", now.Add(time.Hour), "promo", "amount"},
		{"expiry now", "1.00", now, "promo", "expires_at"},
		{"expiry past", "1.00", now.Add(-time.Second), "promo", "expires_at"},
		{"no reason", "1.00", now.Add(time.Hour), "  ", "reason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := a.GrantCredits("grt_x", m(tt.amount), tt.expires, tt.reason, "admin", now)
			var verr *validation.Error
			if !errors.As(err, &verr) || evs != nil || verr.Fields[0].Field != tt.field {
				t.Fatalf("GrantCredits = %v, %v; want a validation error on %s", evs, err, tt.field)
			}
		})
	}
	grant(t, a, "grt_1", "5.00", now.Add(time.Hour))
	if evs, err := a.GrantCredits("grt_1", m("5.00"), now.Add(time.Hour), "promo", "admin", now); err != nil || evs != nil {
		t.Fatalf("the same grant id again = %v, %v; want nothing new", evs, err)
	}
	if got := wallet(a); got != "10.00/0.00 credits 5.00/0.00" || a.Available().String() != "15.00" {
		t.Fatalf("wallet %s, available %s", got, a.Available())
	}
}

// TestGrantSpendOrder: grants pay before paid money, the one expiring
// first first; a price larger than the grants takes the rest from paid
// money.
func TestGrantSpendOrder(t *testing.T) {
	a := funded("10.00")
	grant(t, a, "grt_late", "1.00", now.Add(48*time.Hour))
	grant(t, a, "grt_soon", "1.00", now.Add(time.Hour))
	evs, err := a.RequestTask(req("gen_1", nanoBanana, ""), now) // 0.80
	decideApply(t, a, evs, err)
	if got := a.holds["gen_1"].Grants; len(got) != 1 || got[0].GrantID != "grt_soon" || got[0].Amount.String() != "0.80" {
		t.Fatalf("first call drew %v", got)
	}
	evs, err = a.RequestTask(req("gen_2", veo, ""), now) // 2.50: 0.20 soon + 1.00 late + 1.30 paid
	decideApply(t, a, evs, err)
	got := a.holds["gen_2"].Grants
	if len(got) != 2 || got[0].GrantID != "grt_soon" || got[0].Amount.String() != "0.20" || got[1].GrantID != "grt_late" || got[1].Amount.String() != "1.00" {
		t.Fatalf("second call drew %v", got)
	}
	if w := wallet(a); w != "8.70/1.30 credits 0.00/2.00" {
		t.Fatalf("wallet after two reservations: %s", w)
	}
	// Capture spends both parts; release returns each to where it came from.
	evs, err = a.CompleteTask("gen_1", "inst_a", TaskOutput{ImageURL: "u"})
	decideApply(t, a, evs, err)
	evs, err = a.FailTask("gen_2", "inst_a", "provider_error", "x", now)
	decideApply(t, a, evs, err)
	if w := wallet(a); w != "10.00/0.00 credits 1.20/0.00" {
		t.Fatalf("wallet after capture and release: %s", w)
	}
	gs := a.Grants()
	if gs[0].ID != "grt_soon" || gs[0].Remaining.String() != "0.20" || gs[1].Remaining.String() != "1.00" {
		t.Fatalf("grants after: %+v", gs)
	}
	if tx := evs[len(evs)-1].(TaskFailed).Transaction; tx.Check() != nil || tx.Effect(journal.PlatformPromotions).IsPositive() {
		t.Fatalf("release of unexpired grants sent money to promotions: %v", tx)
	}
}

// TestGrantExpiry: at exactly its expiry a grant can no longer pay; what
// is left of it expires in the append of the command that notices; a hold
// drawn on it before then is spent if captured and expires if released.
func TestGrantExpiry(t *testing.T) {
	exp := now.Add(time.Hour)
	a := funded("10.00")
	grant(t, a, "grt_1", "2.00", exp)
	evs, err := a.RequestTask(req("gen_held", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	evs, err = a.RequestTask(req("gen_kept", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	if w := wallet(a); w != "10.00/0.00 credits 0.40/1.60" {
		t.Fatalf("before expiry: %s", w)
	}
	// One nanosecond before: still the grant's.
	if evs, _ := a.ExpireGrants(exp.Add(-time.Nanosecond)); len(evs) != 0 {
		t.Fatalf("expired early: %v", evs)
	}
	// At the boundary a call pays with money, and the grant's 0.40 expires
	// in the same append, first.
	evs, err = a.RequestTask(req("gen_paid", nanoBanana, ""), exp)
	if err != nil || len(evs) != 2 {
		t.Fatalf("call at the boundary = %v, %v", evs, err)
	}
	if x, ok := evs[0].(GrantExpired); !ok || x.Amount.String() != "0.40" {
		t.Fatalf("first event %v, want the grant's expiry of 0.40", evs[0])
	}
	if r := evs[1].(TaskRequested); len(r.Grants) != 0 {
		t.Fatalf("a call at expires_at drew on the grant: %v", r.Grants)
	}
	decideApply(t, a, evs, nil)
	if w := wallet(a); w != "9.20/0.80 credits 0.00/1.60" {
		t.Fatalf("after the boundary: %s", w)
	}
	if evs, _ := a.ExpireGrants(exp.Add(time.Hour)); len(evs) != 0 {
		t.Fatalf("expired twice: %v", evs)
	}
	// Released after expiry: the grant's part expires now.
	evs, err = a.FailTask("gen_held", "inst_a", "provider_error", "x", exp.Add(time.Minute))
	decideApply(t, a, evs, err)
	f := evs[0].(TaskFailed)
	if len(f.Grants) != 1 || !f.Grants[0].Expired || f.Transaction.Effect(journal.PlatformPromotions).String() != "0.80" {
		t.Fatalf("release after expiry: %+v", f)
	}
	// Captured after expiry: spent (reserved while the grant was valid).
	evs, err = a.CompleteTask("gen_kept", "inst_a", TaskOutput{ImageURL: "u"})
	decideApply(t, a, evs, err)
	if w := wallet(a); w != "9.20/0.80 credits 0.00/0.00" || !a.Credits().IsZero() {
		t.Fatalf("after both ended: %s", w)
	}
	if a.Grants()[0].Remaining.String() != "0.00" || !a.Grants()[0].Expired {
		t.Fatalf("grant after: %+v", a.Grants()[0])
	}
}

// TestGrantsAloneCanPay: an account with no paid money can call on
// grants, and is refused once they run out.
func TestGrantsAloneCanPay(t *testing.T) {
	a := New(accID)
	a.Apply(opened())
	grant(t, a, "grt_1", "1.00", now.Add(time.Hour))
	evs, err := a.RequestTask(req("gen_1", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	if _, err := a.RequestTask(req("gen_2", nanoBanana, ""), now); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("second call with 0.20 of credits = %v", err)
	}
	if a.Available().String() != "0.20" || !a.Balance().Equal(money.Zero) {
		t.Fatalf("available %s balance %s", a.Available(), a.Balance())
	}
}
