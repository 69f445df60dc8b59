package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Users projects users (never their password hashes: logins read the
// user's own events).
type Users struct {
	codec *codec.Codec[user.Event]
}

// NewUsers returns the projection.
func NewUsers() *Users { return &Users{codec: ledger.UserCodec()} }

func (*Users) Name() string             { return "users" }
func (*Users) AggregateTypes() []string { return []string{ledger.TypeUser} }

// UserRow is the users read model.
type UserRow struct {
	bun.BaseModel `bun:"table:users"`
	ID            string    `bun:"id,pk"`
	Email         string    `bun:"email"`
	Role          string    `bun:"role"`
	AccountID     string    `bun:"account_id,nullzero"`
	CreatedAt     time.Time `bun:"created_at"`
}

// Apply implements Projection.
func (p *Users) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
	var rows []UserRow
	for _, c := range commits {
		for _, ev := range c.Events {
			d, err := p.codec.Decode(ev.Type, ev.Version, ev.Data)
			if err != nil {
				return fmt.Errorf("%s seq %d: %w", c.Aggregate, ev.Seq, err)
			}
			if e, ok := d.(user.Registered); ok {
				rows = append(rows, UserRow{ID: e.UserID, Email: e.Email, Role: string(e.Role), AccountID: e.AccountID, CreatedAt: ev.OccurredAt})
			}
		}
	}
	if len(rows) == 0 {
		return nil
	}
	_, err := tx.NewInsert().Model(&rows).Exec(ctx)
	return err
}
