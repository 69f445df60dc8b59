package app

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// Turns at hot accounts written by several instances (see
// ledger/aggregates/turns.go), carried on core NATS subjects outside the
// event stream: nothing about them needs to last. A request lost while
// NATS is away leaves the loser to retry as it did without turns.

// turnSubject is where instances ask for, and give back, turns at an
// account: "ask <instance>" or "done <instance>".
func (a *App) turnSubject(accountID string) string {
	return "ledgerd.turns." + a.store.StreamName() + "." + accountID
}

// natsTurns is this instance's side of the turns (ledger.Config.Turns).
type natsTurns struct{ a *App }

func (t natsTurns) Ask(accountID string)  { t.send(accountID, "ask ") }
func (t natsTurns) Done(accountID string) { t.send(accountID, "done ") }

func (t natsTurns) send(accountID, verb string) {
	_ = t.a.nc.Publish(t.a.turnSubject(accountID), []byte(verb+t.a.instance))
}

// serveTurns passes the other instances' requests to the ledger.
func (a *App) serveTurns() (*nats.Subscription, error) {
	prefix := a.turnSubject("")
	return a.nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		verb, who, _ := strings.Cut(string(m.Data), " ")
		if who == a.instance {
			return // our own
		}
		accountID := m.Subject[len(prefix):]
		switch verb {
		case "ask":
			a.Ledger.Yield(accountID, who)
		case "done":
			a.Ledger.TurnTaken(accountID, who)
		}
	})
}
