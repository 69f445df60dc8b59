package audit

import (
	"bytes"
	"context"
	"fmt"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// stateCheck folds the accounts that have a stored snapshot into their
// full state, alongside Verify's fold, and keeps each one's encoding at the
// snapshot's position, to compare with the snapshot after the scan.
type stateCheck struct {
	stored  StoredStates
	at      map[string]uint64 // account → its snapshot's stream position
	folds   map[string]*account.Account
	encoded map[string][]byte
	last    map[string]eventstore.Event // the fold's last event at the position
	p       problems
}

func newStateCheck(ctx context.Context, stored StoredStates, accountID string) (*stateCheck, error) {
	c := &stateCheck{stored: stored, folds: map[string]*account.Account{}, encoded: map[string][]byte{},
		last: map[string]eventstore.Event{}}
	if stored == nil {
		return c, nil
	}
	at, err := stored.Positions(ctx, accountID)
	if err != nil {
		return nil, fmt.Errorf("reading the account snapshots: %w", err)
	}
	c.at = at
	for id := range at {
		c.folds[id] = account.New(id)
	}
	return c, nil
}

// apply folds one event of an account that has a snapshot not yet reached.
func (c *stateCheck) apply(id string, d account.Event) {
	if a := c.folds[id]; a != nil {
		a.Apply(d)
	}
}

// reached encodes an account's fold when the scan has applied the commit
// its snapshot names.
func (c *stateCheck) reached(cm eventstore.Commit) {
	a := c.folds[cm.Aggregate.ID]
	if a == nil || cm.Aggregate.Type != ledger.TypeAccount || cm.StreamSeq < c.at[cm.Aggregate.ID] {
		return
	}
	delete(c.folds, cm.Aggregate.ID)
	if cm.StreamSeq != c.at[cm.Aggregate.ID] || len(cm.Events) == 0 {
		c.p.add("%s: its snapshot names stream seq %d, which holds none of its commits", cm.Aggregate.ID, c.at[cm.Aggregate.ID])
		return
	}
	b, err := a.MarshalState()
	if err != nil {
		c.p.add("%s: %v", cm.Aggregate.ID, err)
		return
	}
	c.encoded[cm.Aggregate.ID], c.last[cm.Aggregate.ID] = b, cm.Events[len(cm.Events)-1]
}

// check compares each snapshot with the fold at its position. A snapshot
// replaced during the scan (a later one) is left for the next run.
func (c *stateCheck) check(ctx context.Context) Check {
	for id := range c.folds {
		c.p.add("%s: its snapshot names stream seq %d, beyond its commits", id, c.at[id])
	}
	compared := 0
	for id, want := range c.encoded {
		s, ok, err := c.stored.Get(ctx, id)
		switch {
		case err != nil:
			c.p.add("%s: reading its snapshot: %v", id, err)
		case !ok || s.StreamSeq != c.at[id]:
			// Replaced or gone since the scan began.
		case s.Seq != c.last[id].Seq || s.Hash != c.last[id].Hash:
			c.p.add("%s: its snapshot says event %d (%s), the stream has %d (%s) there", id, s.Seq, s.Hash, c.last[id].Seq, c.last[id].Hash)
		case !bytes.Equal(s.State, want):
			c.p.add("%s: its snapshot at event %d is not the fold of its events", id, s.Seq)
		default:
			compared++
		}
	}
	return c.p.check("account_snapshots", fmt.Sprintf("%d account snapshots equal a fresh fold at their position", compared))
}
