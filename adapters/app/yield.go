package app

import (
	"github.com/nats-io/nats.go"
)

// Turns for hot accounts written by several instances. An instance that
// loses a race for an account publishes a request on a core NATS subject
// (outside the event stream: nothing about it needs to last); the others
// hold their next append to that account back until they see the asker's
// commit, or for a fraction of a second (ledger.Yield). Without it, an
// instance with an append always in flight wins every race, and the other
// one's calls wait seconds and are then refused as "the account is busy".

// yieldSubject is where requests to yield an account are published.
func (a *App) yieldSubject(accountID string) string {
	return "ledgerd.yield." + a.store.StreamName() + "." + accountID
}

// askYield asks the other instances to yield accountID. Best effort: a
// request lost while NATS is away leaves the loser to retry as before.
func (a *App) askYield(accountID string) {
	_ = a.nc.Publish(a.yieldSubject(accountID), []byte(a.instance))
}

// serveYields makes this instance yield when another asks.
func (a *App) serveYields() (*nats.Subscription, error) {
	return a.nc.Subscribe(a.yieldSubject("*"), func(m *nats.Msg) {
		if string(m.Data) == a.instance {
			return // our own request
		}
		a.Ledger.Yield(m.Subject[len(a.yieldSubject("")):])
	})
}
