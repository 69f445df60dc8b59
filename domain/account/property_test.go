package account

import (
	"fmt"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
)

// FuzzAccountInvariants reads the fuzzer's bytes as a sequence of commands
// (top-ups, reservations, captures, releases, adjustments, expiries) and
// checks after every one that: available ≥ 0 and held ≥ 0; held is the sum
// of open holds; the wallet equals the fold of every posting appended; every
// transaction balances; and a rejected command changed nothing.
func FuzzAccountInvariants(f *testing.F) {
	f.Add([]byte{0, 10, 1, 0, 1, 1, 2, 0, 3, 1, 4, 200, 5, 0})
	f.Add([]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	f.Add([]byte{0, 255, 1, 3, 1, 3, 4, 1, 6, 0, 2, 1, 3, 0, 5, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		a := New(accID)
		a.Apply(opened())
		spend := money.MustParse("4.00")
		a.Apply(KeyCreated{KeyID: "k", Hash: apikey.Hash{1}, Scopes: apikey.DefaultScopes, Quota: apikey.Quota{Calls: 7, Spend: &spend}, RateLimit: 60})
		clock := now
		var folded struct{ avail, held money.Amount }
		var tasks []string
		n := 0
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%7, int(ops[i+1])
			clock = clock.Add(time.Duration(arg) * time.Second)
			before := fmt.Sprintf("%v|%v|%d|%d", a.Available(), a.Held(), len(a.holds), a.version)
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
			}
			if err != nil {
				if evs != nil {
					t.Fatalf("op %d: rejected with events %v", op, evs)
				}
				if after := fmt.Sprintf("%v|%v|%d|%d", a.Available(), a.Held(), len(a.holds), a.version); after != before {
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
				}
				a.Apply(e)
			}
			var sum money.Amount
			for _, h := range a.holds {
				sum = sum.Add(h.Amount)
			}
			switch {
			case a.Available().IsNegative() || a.Held().IsNegative():
				t.Fatalf("op %d: negative wallet: available %s held %s", op, a.Available(), a.Held())
			case !a.Held().Equal(sum):
				t.Fatalf("op %d: held %s but open holds sum to %s", op, a.Held(), sum)
			case !a.Available().Equal(folded.avail) || !a.Held().Equal(folded.held):
				t.Fatalf("op %d: wallet %s/%s is not the fold of its postings %s/%s", op, a.Available(), a.Held(), folded.avail, folded.held)
			}
			calls, spent := a.KeyUsage("k", Month(clock))
			if calls > 7 || spent.Cmp(spend) > 0 {
				t.Fatalf("op %d: key quota exceeded: %d calls, %s spent", op, calls, spent)
			}
		}
	})
}
