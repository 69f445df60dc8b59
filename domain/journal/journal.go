// Package journal holds the double-entry postings that every money movement
// carries, so that any event stream can be checked for balance on its own.
package journal

import (
	"errors"
	"fmt"

	"github.com/ledgerd/ledgerd/domain/money"
)

// Book accounts. A customer's wallet is a liability of the platform split in
// two: what the customer may spend (available) and what is reserved for
// calls in flight (held). The platform side records where money came from
// and where it went.
const (
	PlatformCash        = "platform:cash"        // money received (top-ups)
	PlatformRevenue     = "platform:revenue"     // captured charges
	PlatformAdjustments = "platform:adjustments" // staff corrections
	// PlatformPromotions funds grants (promotional and plan credits) and
	// takes back what expires unspent.
	PlatformPromotions = "platform:promotions"
)

// Available is the book account of a customer's spendable funds.
func Available(accountID string) string { return "customer:" + accountID + ":available" }

// Held is the book account of a customer's reserved funds.
func Held(accountID string) string { return "customer:" + accountID + ":held" }

// Credits is the book account of a customer's spendable grants: money the
// platform gave, spent before paid money, that expires.
func Credits(accountID string) string { return "customer:" + accountID + ":credits" }

// HeldCredits is the book account of grant money reserved for calls in
// flight, kept apart from held paid money so a release returns each to
// where it came from.
func HeldCredits(accountID string) string { return "customer:" + accountID + ":held_credits" }

// Receivable is what a customer owes the platform: a refund of a top-up
// whose money was already spent. Unlike the wallet it is debit-normal (an
// asset of the platform), so what is owed is minus its Effect.
func Receivable(accountID string) string { return "customer:" + accountID + ":receivable" }

// Line is one side of a posting: a debit or a credit to a book account.
type Line struct {
	Account string       `json:"account"`
	Debit   money.Amount `json:"debit,omitzero"`
	Credit  money.Amount `json:"credit,omitzero"`
}

// Transaction is a balanced set of lines: total debits equal total credits.
type Transaction []Line

// Move builds the two-line transaction that moves amount from one book
// account to another: debit the source, credit the destination.
func Move(from, to string, amount money.Amount) Transaction {
	return Transaction{{Account: from, Debit: amount}, {Account: to, Credit: amount}}
}

// Leg is an amount leaving one book account for another.
type Leg struct {
	From, To string
	Amount   money.Amount
}

// Moves builds one transaction out of several legs, leaving out the ones
// that move nothing, so a movement that happens to touch a single pair of
// book accounts is the same two lines Move makes.
func Moves(legs ...Leg) Transaction {
	var t Transaction
	for _, l := range legs {
		if l.Amount.IsZero() {
			continue
		}
		t = append(t, Line{Account: l.From, Debit: l.Amount}, Line{Account: l.To, Credit: l.Amount})
	}
	return t
}

// ErrUnbalanced is returned by Check for a transaction whose sides differ.
var ErrUnbalanced = errors.New("transaction unbalanced")

// Check verifies that the transaction is balanced and has no negative line.
func (t Transaction) Check() error {
	var debits, credits money.Amount
	for _, l := range t {
		if l.Debit.IsNegative() || l.Credit.IsNegative() {
			return fmt.Errorf("%w: negative line on %s", ErrUnbalanced, l.Account)
		}
		debits = debits.Add(l.Debit)
		credits = credits.Add(l.Credit)
	}
	if !debits.Equal(credits) {
		return fmt.Errorf("%w: debits %s, credits %s", ErrUnbalanced, debits, credits)
	}
	return nil
}

// Effect returns the net change the transaction makes to a credit-normal
// book account (credits minus debits): how a customer's wallet moves.
func (t Transaction) Effect(account string) money.Amount {
	var n money.Amount
	for _, l := range t {
		if l.Account == account {
			n = n.Add(l.Credit).Sub(l.Debit)
		}
	}
	return n
}
