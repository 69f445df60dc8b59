package projections

import (
	"context"
	"time"

	"github.com/shopspring/decimal"
	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Live receives what a projection changed, once the batch's transaction
// has committed, so whatever it pushes on is already readable. It is
// called from the projection's goroutine and must not block.
type Live interface {
	Applied(c Changes)
}

// LiveProjection is a projection that can also say what a batch changed.
// out is nil when nobody listens; the projection then does no extra work.
type LiveProjection interface {
	Projection
	ApplyLive(ctx context.Context, tx bun.Tx, commits []eventstore.Commit, out *Changes) error
}

// Changes is what one batch of one projection changed. A batch with no
// changes still reports its position: it tells the listener that
// projection has passed those events.
type Changes struct {
	Projection string
	// Position is the projection's stream position after the batch.
	Position uint64
	Wallets  []WalletChange
	Usage    []UsageChange
	Tasks    []TaskChange
	Keys     []KeyChange
	Plans    []PlanChange
}

// PlanChange is a change of an account's plan or subscription: Event is
// changed (a staff change, or the drop to free after a lapse),
// subscribed, renewed or lapsed.
type PlanChange struct {
	Seq       uint64
	AccountID string
	Plan      string
	Previous  string
	Event     string
	Fee       decimal.Decimal
	PeriodEnd *time.Time
	Reason    string
}

// WalletChange is a wallet after the batch.
type WalletChange struct {
	Seq       uint64 // stream sequence of the last commit that moved it
	AccountID string
	Currency  string
	Available decimal.Decimal // paid money, not held
	Held      decimal.Decimal // paid money, held
	// Grants' money, spendable and held (see the wallet read model).
	Credits, HeldCredits decimal.Decimal
	// HeldDelta is how much the batch changed held (both kinds), for
	// platform totals.
	HeldDelta decimal.Decimal
}

// UsageChange is one account×key×model×minute bucket after the batch,
// with what the batch added to it.
type UsageChange struct {
	Seq       uint64
	AccountID string
	KeyID     string
	Model     string
	Bucket    time.Time
	// Totals of the bucket after the batch.
	Calls, Failures int64
	Spend           decimal.Decimal
	// Added by this batch.
	AddedCalls int64
	AddedSpend decimal.Decimal
}

// TaskChange is a task whose status the batch changed, as it stands after
// the batch.
type TaskChange struct {
	Seq         uint64
	AccountID   string
	TaskID      string
	Model       string
	KeyID       string
	Status      string
	Cost        decimal.Decimal
	CreatedAt   time.Time
	CompletedAt *time.Time
}

// KeyChange is an API key created, rotated or revoked.
type KeyChange struct {
	Seq       uint64
	AccountID string
	KeyID     string
	Action    string // created, rotated, revoked
}

// LiveTotals is what the live hub starts from: usage per account in a day
// and a month, the platform's held total, and the positions they include.
type LiveTotals struct {
	UsagePosition    uint64
	AccountsPosition uint64
	Held             decimal.Decimal
	Accounts         map[string]AccountTotals
}

// AccountTotals are an account's charged calls and spend.
type AccountTotals struct {
	DayCalls, MonthCalls int64
	DaySpend, MonthSpend decimal.Decimal
}

// LiveWallet is a wallet and the accounts projection's position.
type LiveWallet struct {
	Currency                              string
	Available, Held, Credits, HeldCredits decimal.Decimal
	Position                              uint64
}
