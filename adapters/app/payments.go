package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/adapters/callbacks"
	"github.com/ledgerd/ledgerd/adapters/payments/stripe"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/projections"
)

// stripeClient builds the Stripe client when both secrets are set; nil
// otherwise, and then no call to Stripe is ever made.
func (a *App) stripeClient() (*stripe.Client, error) {
	if !a.cfg.stripeEnabled() {
		return nil, nil
	}
	success, cancel := a.cfg.StripeSuccessURL, a.cfg.StripeCancelURL
	if success == "" {
		success = a.URL() + "/dashboard?checkout=success"
	}
	if cancel == "" {
		cancel = a.URL() + "/dashboard?checkout=cancelled"
	}
	c, err := stripe.New(stripe.Config{SecretKey: a.cfg.StripeSecretKey, WebhookSecret: a.cfg.StripeWebhookSecret,
		APIURL: a.cfg.StripeAPIURL, SuccessURL: success, CancelURL: cancel, HTTPClient: &http.Client{Timeout: 30 * time.Second},
		Logger: a.log.With("component", "stripe")})
	if err != nil {
		return nil, err
	}
	a.log.Info("stripe payments enabled", "api", orDefault(a.cfg.StripeAPIURL, "https://api.stripe.com"))
	return c, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// findPayment names the account whose top-up a card payment paid, from
// the top-ups read model. A refund arrives long after its payment, but a
// read model that trails the stream would make a refund look foreign: if
// nothing is found, wait (bounded) for the projection to catch up and
// look once more.
func (a *App) findPayment(ctx context.Context, pi string) (string, error) {
	id, err := a.reader.AccountByPaymentIntent(ctx, pi)
	if !errors.Is(err, projections.ErrNotFound) {
		return id, err
	}
	if head, herr := a.store.Head(ctx); herr == nil {
		if r := a.Projs.Runner("accounts"); r != nil {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_ = r.WaitFor(wctx, head)
			cancel()
		}
	}
	return a.reader.AccountByPaymentIntent(ctx, pi)
}

// dueAlerts adapts the alerts read model for the dispatcher: the body is
// the signed wallet.low_balance event.
func dueAlerts(r *projections.Reader) func(ctx context.Context, now time.Time, limit int) ([]callbacks.Due, error) {
	return func(ctx context.Context, now time.Time, limit int) ([]callbacks.Due, error) {
		rows, err := r.DueAlerts(ctx, now, limit)
		if err != nil {
			return nil, err
		}
		out := make([]callbacks.Due, 0, len(rows))
		for _, row := range rows {
			body := fmt.Sprintf(`{"id":%q,"type":%q,"created_at":%q,"data":{"account_id":%q,"available":%q,"threshold":%q,"currency":%q}}`,
				row.ID, account.WebhookLowBalance, row.CreatedAt.UTC().Format(time.RFC3339Nano), row.AccountID,
				row.Available.StringFixed(2), row.Threshold.StringFixed(2), strings.TrimSpace(row.Currency))
			out = append(out, callbacks.Due{TaskID: row.ID, AccountID: row.AccountID, URL: row.WebhookURL,
				Attempts: row.Attempts, Body: []byte(body), Event: account.WebhookLowBalance})
		}
		return out, nil
	}
}

// recordAlert records an alert delivery attempt (the dispatcher speaks in
// task callbacks; an alert's id travels as the task id).
func (a *App) recordAlert(ctx context.Context, accountID string, c account.CallbackAttempted) error {
	return a.Ledger.RecordNotification(ctx, accountID, account.NotificationAttempted{AlertID: c.TaskID, Attempt: c.Attempt,
		Status: c.Status, Error: c.Error, Delivered: c.Delivered, NextAttemptAt: c.NextAttemptAt})
}
