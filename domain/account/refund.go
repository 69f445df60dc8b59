package account

import (
	"errors"
	"strings"

	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// Money paid by card can come back: the card network or the platform's
// staff refund the charge at Stripe, and Stripe has returned the money
// before ledgerd hears of it. A refund is therefore recorded in full,
// whatever the wallet holds. What the available balance covers is taken
// from it; the rest (the customer spent it already) becomes a receivable,
// owed to the platform. While anything is owed the account is in debt: no
// call is accepted, and top-ups settle the debt before they credit the
// wallet. Available and held never go below zero.

var (
	// ErrTopUpNotFound: no top-up of this account has the reference.
	ErrTopUpNotFound = errors.New("top-up not found")
	// ErrRefundTooLarge: the refunded total exceeds what the top-up
	// credited.
	ErrRefundTooLarge = errors.New("refund exceeds the top-up")
)

// DebtError says the account owes money after a refund, so no call is
// accepted until a top-up settles it.
type DebtError struct{ Owed money.Amount }

func (e *DebtError) Error() string {
	return "account owes " + e.Owed.String() + " after a refund of a top-up"
}

// Refunded records money of a top-up returned to the customer's card. The
// transaction credits platform:cash with Amount and debits the available
// balance with Covered and the receivable with Owed (Covered + Owed =
// Amount).
type Refunded struct {
	RefundID      string              `json:"refund_id"`
	TopUpID       string              `json:"topup_id"`
	Reference     string              `json:"reference"` // of the top-up
	ChargeID      string              `json:"charge_id"`
	Amount        money.Amount        `json:"amount"`         // this refund
	RefundedTotal money.Amount        `json:"refunded_total"` // of the top-up, this refund included
	Covered       money.Amount        `json:"covered"`        // taken from available
	Owed          money.Amount        `json:"owed"`           // added to the receivable
	Transaction   journal.Transaction `json:"transaction"`
}

const EventRefunded = "account.refunded"

func (Refunded) EventName() string { return EventRefunded }

// Owed is what the customer owes the platform after refunds.
func (a *Account) Owed() money.Amount { return a.receivable }

// TopUpByPaymentIntent returns the top-up paid by a card payment.
func (a *Account) TopUpByPaymentIntent(pi string) (TopUp, bool) {
	if pi == "" {
		return TopUp{}, false
	}
	for _, t := range a.topUps {
		if t.PaymentIntent == pi {
			return t, true
		}
	}
	return TopUp{}, false
}

// TopUpPaid decides crediting money a payment provider received. Unlike a
// staff top-up it has no minimum: the money has arrived (the minimum is
// enforced when the payment is started), and refusing it would lose it.
// The reference (the provider's id for the payment) makes a repeated
// notification a no-op.
func (a *Account) TopUpPaid(topUpID string, amount money.Amount, reference, paymentIntent string) ([]Event, error) {
	return a.credit(topUpID, amount, reference, paymentIntent, false)
}

// topUpTransaction credits a top-up: to the receivable first, while the
// customer owes anything, then to the available balance.
func (a *Account) topUpTransaction(amount money.Amount) journal.Transaction {
	settle := minAmount(amount, a.receivable)
	if !settle.IsPositive() {
		return journal.Move(journal.PlatformCash, journal.Available(a.id), amount)
	}
	tx := journal.Transaction{{Account: journal.PlatformCash, Debit: amount}, {Account: journal.Receivable(a.id), Credit: settle}}
	if rest := amount.Sub(settle); rest.IsPositive() {
		tx = append(tx, journal.Line{Account: journal.Available(a.id), Credit: rest})
	}
	return tx
}

// Refund decides recording a refund of the top-up under reference, given
// the total the provider has refunded for it so far (refunds grow by
// increments). Only the part not yet recorded is refunded, so a repeated
// or out-of-order notification records nothing.
func (a *Account) Refund(refundID, reference, chargeID string, refundedTotal money.Amount) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	t, ok := a.topUps[reference]
	if !ok {
		return nil, ErrTopUpNotFound
	}
	var verr validation.Error
	if !refundedTotal.IsPositive() {
		verr.Add("amount_refunded", "must be positive")
	}
	if strings.TrimSpace(chargeID) == "" {
		verr.Add("charge", "is required")
	}
	if err := verr.Err(); err != nil {
		return nil, err
	}
	if refundedTotal.Cmp(t.Amount) > 0 {
		return nil, ErrRefundTooLarge
	}
	inc := refundedTotal.Sub(t.Refunded)
	if !inc.IsPositive() {
		return nil, nil
	}
	covered := minAmount(inc, a.available)
	owed := inc.Sub(covered)
	tx := journal.Transaction{{Account: journal.PlatformCash, Credit: inc}}
	if covered.IsPositive() {
		tx = append(tx, journal.Line{Account: journal.Available(a.id), Debit: covered})
	}
	if owed.IsPositive() {
		tx = append(tx, journal.Line{Account: journal.Receivable(a.id), Debit: owed})
	}
	return []Event{Refunded{RefundID: refundID, TopUpID: t.ID, Reference: reference, ChargeID: chargeID,
		Amount: inc, RefundedTotal: refundedTotal, Covered: covered, Owed: owed, Transaction: tx}}, nil
}

func (a *Account) applyRefund(e Refunded) {
	if t, ok := a.topUps[e.Reference]; ok {
		t.Refunded = e.RefundedTotal
		a.topUps[e.Reference] = t
	}
	a.applyTransaction(e.Transaction)
}

func minAmount(x, y money.Amount) money.Amount {
	if x.Cmp(y) <= 0 {
		return x
	}
	return y
}
