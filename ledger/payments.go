package ledger

import (
	"context"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

// TopUpPaid credits money a payment provider received, once per
// reference (the provider's id of the payment), recording the payment
// intent so a later refund finds the top-up.
func (l *Ledger) TopUpPaid(ctx context.Context, meta Meta, accountID string, amount money.Amount, reference, paymentIntent string) (TopUpResult, error) {
	if !ids.Valid("acc", accountID) {
		return TopUpResult{}, account.ErrNotFound
	}
	return l.credit(ctx, meta, accountID, amount, reference, func(a *account.Account, id string) ([]account.Event, error) {
		return a.TopUpPaid(id, amount, reference, paymentIntent)
	})
}

// RefundResult is a recorded refund: nothing new when Replayed.
type RefundResult struct {
	ID       string
	Amount   money.Amount // this refund
	Covered  money.Amount // taken from available
	Owed     money.Amount // added to what the customer owes
	Replayed bool
}

// Refund records the refunded total of the top-up paid by paymentIntent;
// only the part not recorded before moves money.
func (l *Ledger) Refund(ctx context.Context, meta Meta, accountID, paymentIntent, chargeID string, refundedTotal money.Amount) (RefundResult, error) {
	if !ids.Valid("acc", accountID) {
		return RefundResult{}, account.ErrNotFound
	}
	var res RefundResult
	id := l.ids.New("rfd")
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		t, ok := a.TopUpByPaymentIntent(paymentIntent)
		if !ok {
			return nil, account.ErrTopUpNotFound
		}
		evs, err := a.Refund(id, t.Reference, chargeID, refundedTotal)
		if err != nil {
			return nil, err
		}
		res = RefundResult{Replayed: len(evs) == 0}
		for _, e := range evs {
			if r, ok := e.(account.Refunded); ok {
				res = RefundResult{ID: r.RefundID, Amount: r.Amount, Covered: r.Covered, Owed: r.Owed}
			}
		}
		return evs, nil
	})
	return res, err
}

// SetNotifications stores an account's low-balance alert settings.
func (l *Ledger) SetNotifications(ctx context.Context, meta Meta, accountID string, threshold *money.Amount, webhookURL string) (account.Notifications, error) {
	if !ids.Valid("acc", accountID) {
		return account.Notifications{}, account.ErrNotFound
	}
	var n account.Notifications
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		evs, err := a.SetNotifications(threshold, webhookURL)
		if err != nil {
			return nil, err
		}
		n = a.Notifications()
		for _, e := range evs {
			if s, ok := e.(account.NotificationsSet); ok {
				n = account.Notifications{LowBalanceThreshold: s.LowBalanceThreshold, WebhookURL: s.WebhookURL, Armed: s.Armed}
			}
		}
		return evs, nil
	})
	return n, err
}

// Notifications returns an account's alert settings from its events.
func (l *Ledger) Notifications(ctx context.Context, accountID string) (account.Notifications, error) {
	if !ids.Valid("acc", accountID) {
		return account.Notifications{}, account.ErrNotFound
	}
	var n account.Notifications
	found := false
	err := l.accounts.Read(ctx, accountID, func(a *account.Account) {
		found = a.Exists()
		n = a.Notifications()
	})
	if err == nil && !found {
		err = account.ErrNotFound
	}
	return n, err
}

// RecordNotification records a low-balance alert delivery attempt.
func (l *Ledger) RecordNotification(ctx context.Context, accountID string, n account.NotificationAttempted) error {
	meta := Meta{Actor: "system:alerts:" + l.cfg.Owner, CausationID: l.ids.New("cmd"), CorrelationID: n.AlertID}
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		return a.RecordNotification(n)
	})
	return err
}
