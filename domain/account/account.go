// Package account holds the customer account aggregate: plan, status and
// the wallet. Every decision that moves a customer's money is made here,
// against the state folded from the account's own events.
package account

import (
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
)

// Plan decides whether an account may call the API at all.
type Plan string

const (
	PlanFree     Plan = "free"
	PlanStandard Plan = "standard"
	PlanPro      Plan = "pro"
	PlanAPI      Plan = "api"
)

// ParsePlan accepts a plan name of the right form. Plans are data (see
// domain/plan): whether one is defined is the ledger's to check.
func ParsePlan(s string) (Plan, bool) {
	if !plan.ValidName(s) {
		return "", false
	}
	return Plan(s), true
}

// HasAPIAccess is the built-in rule, for when no plan definitions are at
// hand: every plan but free may generate.
func (p Plan) HasAPIAccess() bool { return p != PlanFree }

// Status is the account's standing.
type Status string

const (
	StatusActive    Status = "active"
	StatusSuspended Status = "suspended"
	StatusClosed    Status = "closed"
)

// ParseStatus accepts one of the known statuses.
func ParseStatus(s string) (Status, bool) {
	switch st := Status(s); st {
	case StatusActive, StatusSuspended, StatusClosed:
		return st, true
	}
	return "", false
}

// MinTopUp is the smallest amount a top-up may credit.
var MinTopUp = money.MustParse("10.00")

// TopUp is a recorded credit, remembered by its reference so a repeated
// request credits once.
type TopUp struct {
	ID        string
	Amount    money.Amount
	Reference string
	Seq       uint64 // the account event that recorded it
	// PaymentIntent is the card payment behind a Stripe top-up ("" for
	// staff top-ups); Refunded, how much of it was refunded so far.
	PaymentIntent string
	Refunded      money.Amount
}

// Account is the aggregate. Its fields are unexported: state changes only
// by applying events, and decisions only read it.
type Account struct {
	id          string
	opened      bool
	email       string
	ownerUserID string
	plan        Plan
	status      Status
	currency    money.Currency

	available money.Amount // paid money, spendable
	held      money.Amount // paid money, reserved

	credits     money.Amount // grants' money, spendable
	heldCredits money.Amount // grants' money, reserved
	grants      map[string]*Grant
	sub         *Subscription
	// receivable is what the customer owes after a refund of money
	// already spent (see refund.go); while it is positive no call is
	// accepted.
	receivable money.Amount

	topUps map[string]TopUp // by reference

	keys     map[string]*Key
	keyOrder []string

	holds     map[string]*Hold
	idem      map[string]idemEntry
	idemOrder []string
	openKeys  map[string]*Hold // open holds by idempotency key: kept beyond the window
	usage     map[string]*keyUsage

	alerts alertState // low-balance notifications (notify.go)

	version uint64 // number of events applied
}

// New returns the empty aggregate for id, before any event.
func New(id string) *Account {
	return &Account{id: id, topUps: make(map[string]TopUp), keys: make(map[string]*Key),
		holds: make(map[string]*Hold), grants: make(map[string]*Grant), idem: make(map[string]idemEntry), usage: make(map[string]*keyUsage),
		openKeys: make(map[string]*Hold)}
}

func (a *Account) ID() string               { return a.id }
func (a *Account) Exists() bool             { return a.opened }
func (a *Account) Email() string            { return a.email }
func (a *Account) OwnerUserID() string      { return a.ownerUserID }
func (a *Account) Plan() Plan               { return a.plan }
func (a *Account) Status() Status           { return a.status }
func (a *Account) Currency() money.Currency { return a.currency }
func (a *Account) Version() uint64          { return a.version }

// Available is what the customer may still spend: paid money and
// grants, less what calls in flight hold.
func (a *Account) Available() money.Amount { return a.available.Add(a.credits) }

// PaidAvailable is the paid money not held: what a refund or a staff
// debit may take.
func (a *Account) PaidAvailable() money.Amount { return a.available }

// Held is what is reserved for calls in flight, paid and granted.
func (a *Account) Held() money.Amount { return a.held.Add(a.heldCredits) }

// Balance is the customer's paid money with the platform, held part
// included (grants are Credits).
func (a *Account) Balance() money.Amount { return a.available.Add(a.held) }

// TopUpByReference returns the top-up recorded under reference, if any.
func (a *Account) TopUpByReference(reference string) (TopUp, bool) {
	t, ok := a.topUps[reference]
	return t, ok
}

// Apply folds one event into the state. It never fails: events are facts,
// and an event this version does not know is one it has no state for.
func (a *Account) Apply(e Event) {
	a.version++
	switch e := e.(type) {
	case Opened:
		a.opened = true
		a.email = e.Email
		a.ownerUserID = e.OwnerUserID
		a.plan = e.Plan
		a.status = StatusActive
		a.currency = e.Currency
	case PlanChanged:
		a.plan = e.Plan
		if a.sub != nil && a.sub.Plan != e.Plan {
			a.sub = nil // a staff change of plan ends the subscription
		}
	case Subscribed, SubscriptionLapsed:
		a.applySubscription(e)
	case StatusChanged:
		a.status = e.Status
	case ToppedUp:
		a.topUps[e.Reference] = TopUp{ID: e.TopUpID, Amount: e.Amount, Reference: e.Reference, Seq: a.version,
			PaymentIntent: e.PaymentIntent}
		a.applyTransaction(e.Transaction)
	case Adjusted:
		a.applyTransaction(e.Transaction)
	case KeyCreated, KeyRotated, KeyRevoked:
		a.applyKey(e)
	case TaskRequested, TaskStarted, TaskAdopted, TaskSucceeded, TaskFailed:
		a.applyTask(e)
	case CreditsGranted, GrantExpired:
		a.applyGrant(e)
	case Refunded:
		a.applyRefund(e)
	case NotificationsSet, LowBalanceCrossed, LowBalanceRearmed, NotificationAttempted:
		a.applyNotify(e)
	}
}

// applyTransaction moves the wallet by the transaction's effect on this
// account's book accounts, so the wallet is by construction the fold of
// its postings.
func (a *Account) applyTransaction(tx journal.Transaction) {
	a.available = a.available.Add(tx.Effect(journal.Available(a.id)))
	a.held = a.held.Add(tx.Effect(journal.Held(a.id)))
	a.credits = a.credits.Add(tx.Effect(journal.Credits(a.id)))
	a.heldCredits = a.heldCredits.Add(tx.Effect(journal.HeldCredits(a.id)))
	a.receivable = a.receivable.Sub(tx.Effect(journal.Receivable(a.id)))
}
