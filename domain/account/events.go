package account

import (
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
)

// Event names are part of the stored history: they never change, whatever
// the Go types are called.
const (
	EventOpened        = "account.opened"
	EventPlanChanged   = "account.plan_changed"
	EventStatusChanged = "account.status_changed"
	EventToppedUp      = "account.topped_up"
)

// Event is a fact about one account.
type Event interface {
	EventName() string
}

// Opened starts an account.
type Opened struct {
	AccountID   string         `json:"account_id"`
	Email       string         `json:"email"`
	OwnerUserID string         `json:"owner_user_id"`
	Plan        Plan           `json:"plan"`
	Currency    money.Currency `json:"currency"`
}

// PlanChanged records a new plan.
type PlanChanged struct {
	Plan     Plan `json:"plan"`
	Previous Plan `json:"previous"`
}

// StatusChanged records a new status.
type StatusChanged struct {
	Status   Status `json:"status"`
	Previous Status `json:"previous"`
}

// ToppedUp credits the wallet with money received.
type ToppedUp struct {
	TopUpID     string              `json:"topup_id"`
	Amount      money.Amount        `json:"amount"`
	Reference   string              `json:"reference"`
	Transaction journal.Transaction `json:"transaction"`
	// PaymentIntent links a Stripe top-up to its card payment, so that a
	// refund of the charge finds it. Optional: absent on staff top-ups
	// and on events written before it existed.
	PaymentIntent string `json:"payment_intent,omitempty"`
}

func (Opened) EventName() string        { return EventOpened }
func (PlanChanged) EventName() string   { return EventPlanChanged }
func (StatusChanged) EventName() string { return EventStatusChanged }
func (ToppedUp) EventName() string      { return EventToppedUp }

// Moving is an event that moves money: it carries a balanced transaction.
type Moving interface {
	Event
	Postings() journal.Transaction
}

func (e ToppedUp) Postings() journal.Transaction      { return e.Transaction }
func (e Adjusted) Postings() journal.Transaction      { return e.Transaction }
func (e TaskRequested) Postings() journal.Transaction { return e.Transaction }
func (e TaskSucceeded) Postings() journal.Transaction { return e.Transaction }
func (e TaskFailed) Postings() journal.Transaction    { return e.Transaction }
func (e Refunded) Postings() journal.Transaction      { return e.Transaction }
