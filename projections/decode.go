package projections

import (
	"fmt"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// accountEvent returns event i of c as a domain event: the one a shared
// reader already decoded, or decoded here.
func accountEvent(cd *codec.Codec[account.Event], c *eventstore.Commit, i int) (account.Event, error) {
	if i < len(c.Decoded) {
		if e, ok := c.Decoded[i].(account.Event); ok {
			return e, nil
		}
	}
	ev := c.Events[i]
	e, err := cd.Decode(ev.Type, ev.Version, ev.Data)
	if err != nil {
		return nil, fmt.Errorf("%s seq %d: %w", c.Aggregate, ev.Seq, err)
	}
	return e, nil
}
