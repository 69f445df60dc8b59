package account

import (
	"strings"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// Adjusted is a staff correction: a signed amount with a reason.
type Adjusted struct {
	AdjustmentID string              `json:"adjustment_id"`
	Amount       money.Amount        `json:"amount"` // signed: positive credits the customer
	Reason       string              `json:"reason"`
	Transaction  journal.Transaction `json:"transaction"`
}

const EventAdjusted = "account.adjusted"

func (Adjusted) EventName() string { return EventAdjusted }

// Adjust decides a correction. A debit may not take available below zero:
// money reserved for calls in flight is not the staff's to take.
func (a *Account) Adjust(id string, amount money.Amount, reason string) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	var verr validation.Error
	if amount.IsZero() {
		verr.Add("amount", "must not be zero")
	}
	checkReason(&verr, reason)
	if err := verr.Err(); err != nil {
		return nil, err
	}
	if a.status == StatusClosed {
		return nil, ErrClosed
	}
	tx := journal.Move(journal.PlatformAdjustments, journal.Available(a.id), amount)
	if amount.IsNegative() {
		if a.available.Cmp(amount.Abs()) < 0 {
			return nil, ErrInsufficientFunds
		}
		tx = journal.Move(journal.Available(a.id), journal.PlatformAdjustments, amount.Abs())
	}
	return []Event{Adjusted{AdjustmentID: id, Amount: amount, Reason: reason, Transaction: tx}}, nil
}

// checkReason: staff say why they move money, in at most 500 characters.
func checkReason(verr *validation.Error, reason string) {
	switch r := strings.TrimSpace(reason); {
	case r == "":
		verr.Add("reason", "is required")
	case utf8.RuneCountInString(reason) > 500:
		verr.Add("reason", "must be at most 500 characters")
	case validation.TextProblem(reason) != "":
		// A NUL in a reason would stop the read model that stores it.
		verr.Add("reason", validation.TextProblem(reason))
	}
}
