package projections

import (
	"fmt"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// accountEvents is what every projection of account events shares: the
// codec, the aggregate type it reads, and getting an event decoded once.
type accountEvents struct {
	codec *codec.Codec[account.Event]
}

func newAccountEvents() accountEvents { return accountEvents{codec: ledger.AccountCodec()} }

// AggregateTypes implements Projection.
func (accountEvents) AggregateTypes() []string { return []string{ledger.TypeAccount} }

// event returns event i of c as a domain event: the one a shared reader
// already decoded, or decoded here.
func (a accountEvents) event(c *eventstore.Commit, i int) (account.Event, error) {
	if i < len(c.Decoded) {
		if e, ok := c.Decoded[i].(account.Event); ok {
			return e, nil
		}
	}
	ev := c.Events[i]
	e, err := a.codec.Decode(ev.Type, ev.Version, ev.Data)
	if err != nil {
		return nil, fmt.Errorf("%s seq %d: %w", c.Aggregate, ev.Seq, err)
	}
	return e, nil
}
