package account

import (
	"strings"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// Open decides the opening of a new account.
func (a *Account) Open(email, ownerUserID string, plan Plan, currency money.Currency) ([]Event, error) {
	if a.opened {
		return nil, ErrExists
	}
	if _, ok := ParsePlan(string(plan)); !ok {
		return nil, validation.Field("plan", "must be a plan name such as free, standard, pro or api")
	}
	return []Event{Opened{
		AccountID:   a.id,
		Email:       email,
		OwnerUserID: ownerUserID,
		Plan:        plan,
		Currency:    currency,
	}}, nil
}

// Update decides a change of plan and/or status. Fields left nil stay; an
// update that changes nothing produces no events.
func (a *Account) Update(plan *Plan, status *Status) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	var verr validation.Error
	if plan != nil {
		if _, ok := ParsePlan(string(*plan)); !ok {
			verr.Add("plan", "must be a plan name such as free, standard, pro or api")
		}
	}
	if status != nil {
		if _, ok := ParseStatus(string(*status)); !ok {
			verr.Add("status", "must be one of active, suspended, closed")
		}
	}
	if err := verr.Err(); err != nil {
		return nil, err
	}
	if a.status == StatusClosed && status != nil && *status != StatusClosed {
		return nil, ErrClosed
	}
	var events []Event
	if plan != nil && *plan != a.plan {
		events = append(events, PlanChanged{Plan: *plan, Previous: a.plan})
	}
	if status != nil && *status != a.status {
		events = append(events, StatusChanged{Status: *status, Previous: a.status})
	}
	return events, nil
}

// TopUp decides crediting amount under reference. A reference already
// recorded for the same amount is a retry: no events, no error, and the
// caller reads the original with TopUpByReference.
func (a *Account) TopUp(topUpID string, amount money.Amount, reference string) ([]Event, error) {
	return a.credit(topUpID, amount, reference, "", true)
}

// credit decides a top-up; staff top-ups have a minimum, money a payment
// provider already received has none (refusing it would lose it).
func (a *Account) credit(topUpID string, amount money.Amount, reference, paymentIntent string, minimum bool) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	var verr validation.Error
	switch {
	case minimum && amount.Cmp(MinTopUp) < 0:
		verr.Add("amount", "must be at least "+MinTopUp.String())
	case !amount.IsPositive():
		verr.Add("amount", "must be positive")
	}
	if msg := checkReference(reference); msg != "" {
		verr.Add("reference", msg)
	}
	if err := verr.Err(); err != nil {
		return nil, err
	}
	if prev, ok := a.topUps[reference]; ok {
		if !prev.Amount.Equal(amount) {
			return nil, ErrReferenceReused
		}
		return nil, nil
	}
	if a.status == StatusClosed {
		return nil, ErrClosed
	}
	return []Event{ToppedUp{TopUpID: topUpID, Amount: amount, Reference: reference,
		PaymentIntent: paymentIntent, Transaction: a.topUpTransaction(amount)}}, nil
}

// MaxReferenceLen bounds references, which end up in events and statements.
const MaxReferenceLen = 200

func checkReference(ref string) string {
	switch {
	case strings.TrimSpace(ref) == "":
		return "is required"
	case utf8.RuneCountInString(ref) > MaxReferenceLen:
		return "must be at most 200 characters"
	}
	return validation.TextProblem(ref)
}
