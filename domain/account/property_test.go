package account

import (
	"fmt"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
)

// FuzzAccountInvariants reads the fuzzer's bytes as a sequence of commands
// (top-ups, reservations, captures, releases, adjustments, expiries,
// grants and their expiry) and checks after every one that: paid and
// granted money, spendable and held, are each ≥ 0; held is the sum of open
// holds and their grant parts the held credits; spendable credits are the
// unexpired grants' remainders, and no grant is ever below zero; the
// wallet equals the fold of every posting appended; every transaction
// balances; and a rejected command changed nothing.
func FuzzAccountInvariants(f *testing.F) {
	f.Add([]byte{0, 10, 1, 0, 1, 1, 2, 0, 3, 1, 4, 200, 5, 0})
	f.Add([]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	f.Add([]byte{0, 255, 1, 3, 1, 3, 4, 1, 6, 0, 2, 1, 3, 0, 5, 9})
	f.Add([]byte{7, 90, 7, 200, 1, 1, 1, 2, 8, 5, 3, 0, 1, 5, 8, 20, 3, 1, 2, 0, 1, 4})
	f.Add([]byte{0, 100, 9, 50, 1, 1, 10, 31, 1, 3, 10, 40, 9, 3, 2, 0})
	f.Add([]byte{11, 80, 1, 1, 1, 2, 12, 80, 1, 3, 11, 81, 1, 4, 12, 200, 0, 50})
	f.Fuzz(func(t *testing.T, ops []byte) {
		a := New(accID)
		a.Apply(opened())
		spend := money.MustParse("4.00")
		a.Apply(KeyCreated{KeyID: "k", Hash: apikey.Hash{1}, Scopes: apikey.DefaultScopes, Quota: apikey.Quota{Calls: 7, Spend: &spend}, RateLimit: 60})
		clock := now
		var folded struct{ avail, held, credits, heldCredits, owed money.Amount }
		var tasks []string
		n := 0
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%14, int(ops[i+1])
			clock = clock.Add(time.Duration(arg) * time.Second)
			before := fmt.Sprintf("%v|%v|%v|%d|%d|%d", a.Available(), a.Held(), a.Credits(), len(a.holds), len(a.grants), a.version)
			var evs []Event
			var err error
			pick := func() string {
				if len(tasks) == 0 {
					return "none"
				}
				return tasks[arg%len(tasks)]
			}
			switch op {
			case 0:
				evs, err = a.TopUp(fmt.Sprintf("top_%d", i), money.FromCents(int64(arg)*100), fmt.Sprintf("ref_%d", arg%5))
			case 1:
				n++
				id := fmt.Sprintf("gen_%d", n)
				model := nanoBanana
				if arg%3 == 0 {
					model = veo
				}
				key := ""
				if arg%2 == 0 {
					key = "k"
				}
				r := req(id, model, key)
				if arg%4 == 0 {
					r.IdempotencyKey, r.RequestHash = fmt.Sprintf("idem_%d", arg%8), fmt.Sprintf("h%d", arg%3)
				}
				evs, err = a.RequestTask(r, clock)
				if err == nil {
					tasks = append(tasks, id)
				}
			case 2:
				evs, err = a.CompleteTask(pick(), "inst_a", TaskOutput{ImageURL: "u"})
			case 3:
				evs, err = a.FailTask(pick(), "inst_a", "provider_error", "x", clock)
			case 4:
				evs, err = a.Adjust(fmt.Sprintf("adj_%d", i), money.FromCents(int64(arg-128)*10), "fuzz")
			case 5:
				evs, err = a.FailTask(pick(), "", "abandoned", "hold expired", clock) // the sweeper
			case 6:
				evs, err = a.AdoptTask(pick(), "inst_a", "inst_a")
			case 7:
				evs, err = a.GrantCredits(fmt.Sprintf("grt_%d", i), money.FromCents(int64(arg)*10), clock.Add(time.Duration(arg%16)*time.Second), "fuzz", "admin", clock)
			case 8:
				evs, err = a.ExpireGrants(clock)
			case 9:
				evs, err = a.Subscribe(plan.Plan{Name: "pro", APIAccess: true, MonthlyFee: money.FromCents(int64(arg) * 10),
					IncludedCredits: money.FromCents(int64(arg%7) * 50)}, fmt.Sprintf("grt_s%d", i), clock)
			case 11:
				evs, err = a.TopUpPaid(fmt.Sprintf("top_p%d", i), money.FromCents(int64(arg)*25), fmt.Sprintf("cs_%d", arg%4), fmt.Sprintf("pi_%d", arg%4))
			case 12:
				evs, err = a.Refund(fmt.Sprintf("rfd_%d", i), fmt.Sprintf("cs_%d", arg%4), "ch", money.FromCents(int64(arg)*10))
			case 13:
				evs, err = a.ReleaseRefused(pick(), clock) // a call answered 503 that landed
			case 10:
				clock = clock.Add(time.Duration(arg) * 24 * time.Hour)
				evs, err = a.RenewSubscription(plan.Plan{Name: "pro", APIAccess: true, MonthlyFee: money.FromCents(int64(arg) * 20),
					IncludedCredits: m("1.00")}, fmt.Sprintf("grt_r%d", i), clock)
			}
			if err != nil {
				if evs != nil {
					t.Fatalf("op %d: rejected with events %v", op, evs)
				}
				if after := fmt.Sprintf("%v|%v|%v|%d|%d|%d", a.Available(), a.Held(), a.Credits(), len(a.holds), len(a.grants), a.version); after != before {
					t.Fatalf("op %d: rejected command changed state %s → %s", op, before, after)
				}
				continue
			}
			for _, e := range evs {
				if mv, ok := e.(Moving); ok {
					tx := mv.Postings()
					if err := tx.Check(); err != nil {
						t.Fatalf("op %d: %v", op, err)
					}
					folded.avail = folded.avail.Add(tx.Effect(journal.Available(accID)))
					folded.held = folded.held.Add(tx.Effect(journal.Held(accID)))
					folded.credits = folded.credits.Add(tx.Effect(journal.Credits(accID)))
					folded.heldCredits = folded.heldCredits.Add(tx.Effect(journal.HeldCredits(accID)))
					folded.owed = folded.owed.Sub(tx.Effect(journal.Receivable(accID)))
				}
				a.Apply(e)
			}
			switch arg % 7 {
			case 3:
				// The command side goes on from a copy of the state after
				// a lost race: the copy must be the same account.
				c := a.Clone()
				checkClone(t, a, c)
				a = c
			case 5:
				// ... and from a stored snapshot after a restart.
				a = roundTrip(t, a)
			}
			var sum, drawn, left money.Amount
			for _, h := range a.holds {
				sum = sum.Add(h.Amount)
				drawn = drawn.Add(sumDraws(h.Grants))
			}
			for _, g := range a.grants {
				if g.Remaining.IsNegative() || (g.Expired && !g.Remaining.IsZero()) {
					t.Fatalf("op %d: grant %s has %s left (expired %v)", op, g.ID, g.Remaining, g.Expired)
				}
				left = left.Add(g.Remaining)
			}
			switch {
			case a.available.IsNegative() || a.held.IsNegative() || a.credits.IsNegative() || a.heldCredits.IsNegative():
				t.Fatalf("op %d: negative wallet: available %s held %s credits %s held credits %s", op, a.available, a.held, a.credits, a.heldCredits)
			case !a.Held().Equal(sum):
				t.Fatalf("op %d: held %s but open holds sum to %s", op, a.Held(), sum)
			case !a.heldCredits.Equal(drawn):
				t.Fatalf("op %d: held credits %s but holds drew %s from grants", op, a.heldCredits, drawn)
			case !a.credits.Equal(left):
				t.Fatalf("op %d: spendable credits %s but grants have %s left", op, a.credits, left)
			case a.receivable.IsNegative():
				t.Fatalf("op %d: owes %s", op, a.receivable)
			case a.receivable.IsPositive() && len(evs) > 0 && isRequest(evs):
				t.Fatalf("op %d: a call was accepted while the account owes %s", op, a.receivable)
			case !a.available.Equal(folded.avail) || !a.held.Equal(folded.held) || !a.credits.Equal(folded.credits) || !a.heldCredits.Equal(folded.heldCredits) || !a.receivable.Equal(folded.owed):
				t.Fatalf("op %d: wallet is not the fold of its postings", op)
			}
			calls, spent := a.KeyUsage("k", Month(clock))
			if calls > 7 || spent.Cmp(spend) > 0 {
				t.Fatalf("op %d: key quota exceeded: %d calls, %s spent", op, calls, spent)
			}
		}
	})
}

func isRequest(evs []Event) bool {
	for _, e := range evs {
		if _, ok := e.(TaskRequested); ok {
			return true
		}
	}
	return false
}
