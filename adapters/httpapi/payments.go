package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/ledgerd/ledgerd/adapters/payments/stripe"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/projections"
)

// Payments takes money in through Stripe.
type Payments interface {
	CreateCheckout(ctx context.Context, accountID string, amount money.Amount, currency money.Currency) (stripe.Session, error)
	ParseWebhook(payload []byte, signature string) (stripe.Event, error)
}

// SelfServe is the command side of self-serve money: payments, refunds
// and alert settings.
type SelfServe interface {
	Account(ctx context.Context, id string) (ledger.AccountView, ledger.Wallet, error)
	TopUpPaid(ctx context.Context, meta ledger.Meta, accountID string, amount money.Amount, reference, paymentIntent string) (ledger.TopUpResult, error)
	Refund(ctx context.Context, meta ledger.Meta, accountID, paymentIntent, chargeID string, refundedTotal money.Amount) (ledger.RefundResult, error)
	SetNotifications(ctx context.Context, meta ledger.Meta, accountID string, threshold *money.Amount, webhookURL string) (account.Notifications, error)
	Notifications(ctx context.Context, accountID string) (account.Notifications, error)
}

var errPaymentsOff = errStatus(http.StatusServiceUnavailable, "unavailable",
	"Payments are not configured on this server (STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET); nothing was started or charged")

// sessionOnly refuses API keys: starting a payment is for the customer
// signed in, not for a program holding a key.
func sessionOnly(p Principal) error {
	if p.KeyID != "" {
		return errStatus(http.StatusForbidden, "forbidden", "This endpoint needs a user session, not an API key")
	}
	return nil
}

func (s *Server) checkout(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := sessionOnly(p); err != nil {
		return err
	}
	if s.cfg.Payments == nil {
		return errPaymentsOff
	}
	var in checkoutBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	amt := in.amount
	view, _, err := s.cfg.SelfServe.Account(r.Context(), p.AccountID)
	if err != nil {
		return err
	}
	if view.Status == account.StatusClosed {
		return account.ErrClosed
	}
	sess, err := s.cfg.Payments.CreateCheckout(r.Context(), p.AccountID, amt, view.Currency)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"session_id": sess.ID, "url": sess.URL,
		"amount": amt, "currency": view.Currency})
	return nil
}

// stripeWebhook applies Stripe's events. Anything it does not act on is
// answered 200 (Stripe retries any other answer for days); a bad signature
// is 400 and changes nothing; a paid session or a refund of a top-up it
// cannot apply (unknown account, wrong currency) is a 4xx that Stripe's
// dashboard shows as failing, so an operator sees it.
func (s *Server) stripeWebhook(w http.ResponseWriter, r *http.Request) {
	if err := s.applyStripe(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

func (s *Server) applyStripe(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Payments == nil {
		return errPaymentsOff
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errTooLarge
		}
		return errStatus(http.StatusBadRequest, "bad_request", "The request body could not be read")
	}
	ev, err := s.cfg.Payments.ParseWebhook(body, r.Header.Get("Stripe-Signature"))
	switch {
	case errors.Is(err, stripe.ErrSignature):
		s.log.Warn("stripe webhook refused", "request_id", requestID(r.Context()), "err", err)
		return errStatus(http.StatusBadRequest, "bad_request", "Invalid or expired Stripe-Signature")
	case err != nil:
		return errStatus(http.StatusBadRequest, "bad_request", "The body is not a Stripe event")
	}
	meta := ledger.Meta{Actor: "stripe:" + ev.ID, CorrelationID: requestID(r.Context()), CausationID: s.cfg.Commands.NewID("cmd")}
	switch ev.Kind {
	case stripe.KindPaymentSucceeded:
		return s.creditPayment(w, r, meta, ev)
	case stripe.KindChargeRefunded:
		return s.refundCharge(w, r, meta, ev)
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": true, "result": "ignored", "reason": "event type " + ev.Type + " is not used"})
	return nil
}

// paymentAccount checks the account an event names and its currency.
func (s *Server) paymentAccount(ctx context.Context, accountID, currency string) error {
	view, _, err := s.cfg.SelfServe.Account(ctx, accountID)
	if err != nil {
		return err
	}
	if string(view.Currency) != currency {
		return validation.Field("currency", "must be "+string(view.Currency)+", the account's currency")
	}
	return nil
}

func (s *Server) creditPayment(w http.ResponseWriter, r *http.Request, meta ledger.Meta, ev stripe.Event) error {
	if !ev.Paid {
		writeJSON(w, http.StatusOK, map[string]any{"received": true, "result": "ignored", "reason": "the session is not paid"})
		return nil
	}
	var verr validation.Error
	if ev.AccountID == "" {
		verr.Add("metadata."+stripe.MetadataAccount, "is required")
	} else if ev.AccountRef != "" && ev.AccountRef != ev.AccountID {
		verr.Add("client_reference_id", "must equal metadata."+stripe.MetadataAccount)
	}
	if err := verr.Err(); err != nil {
		return err
	}
	if err := s.paymentAccount(r.Context(), ev.AccountID, ev.Currency); err != nil {
		return err
	}
	res, err := s.cfg.SelfServe.TopUpPaid(r.Context(), meta, ev.AccountID, ev.Amount, ev.SessionID, ev.PaymentIntent)
	if err != nil {
		return err
	}
	result := "credited"
	if res.Replayed {
		result = "duplicate"
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": true, "result": result, "topup_id": res.ID,
		"account_id": res.AccountID, "amount": res.Amount})
	return nil
}

func (s *Server) refundCharge(w http.ResponseWriter, r *http.Request, meta ledger.Meta, ev stripe.Event) error {
	ignore := func(reason string) error {
		writeJSON(w, http.StatusOK, map[string]any{"received": true, "result": "ignored", "reason": reason})
		return nil
	}
	if ev.PaymentIntent == "" || s.cfg.FindPayment == nil {
		return ignore("the charge has no payment intent")
	}
	accountID, err := s.cfg.FindPayment(r.Context(), ev.PaymentIntent)
	if errors.Is(err, projections.ErrNotFound) {
		return ignore("the charge did not pay a top-up")
	}
	if err != nil {
		return readErr(err)
	}
	if err := s.paymentAccount(r.Context(), accountID, ev.Currency); err != nil {
		return err
	}
	res, err := s.cfg.SelfServe.Refund(r.Context(), meta, accountID, ev.PaymentIntent, ev.ChargeID, ev.Amount)
	if errors.Is(err, account.ErrTopUpNotFound) {
		return ignore("the charge did not pay a top-up")
	}
	if err != nil {
		return err
	}
	if res.Replayed {
		writeJSON(w, http.StatusOK, map[string]any{"received": true, "result": "duplicate", "account_id": accountID})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": true, "result": "refunded", "account_id": accountID,
		"refund_id": res.ID, "amount": res.Amount, "covered": res.Covered, "owed": res.Owed})
	return nil
}
