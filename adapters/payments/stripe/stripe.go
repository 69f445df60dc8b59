// Package stripe takes payments through Stripe with its official Go
// library: Checkout sessions to top up a wallet, and the webhooks that say
// a payment succeeded or a charge was refunded. It knows Stripe's wire
// format and nothing of the ledger; the HTTP layer decides what an event
// does to an account.
package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	sg "github.com/stripe/stripe-go/v85"
	"github.com/stripe/stripe-go/v85/webhook"

	"github.com/ledgerd/ledgerd/domain/money"
)

// Config of the Stripe client. SecretKey and WebhookSecret never leave
// this package: not in logs, errors or events.
type Config struct {
	SecretKey     string
	WebhookSecret string
	// APIURL replaces https://api.stripe.com (tests, proxies).
	APIURL     string
	SuccessURL string
	CancelURL  string
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Client creates Checkout sessions and verifies webhooks.
type Client struct {
	api           *sg.Client
	webhookSecret string
	successURL    string
	cancelURL     string
	log           *slog.Logger
}

// MetadataAccount is the metadata key holding the ledgerd account id on a
// Checkout session (and its payment intent).
const MetadataAccount = "ledgerd_account_id"

// New returns a client; both secrets are required.
func New(cfg Config) (*Client, error) {
	if cfg.SecretKey == "" || cfg.WebhookSecret == "" {
		return nil, errors.New("stripe: both the secret key and the webhook secret are required")
	}
	if cfg.SuccessURL == "" || cfg.CancelURL == "" {
		return nil, errors.New("stripe: success and cancel URLs are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	bc := &sg.BackendConfig{
		HTTPClient: cfg.HTTPClient,
		// The library's own logger would print to stderr; failures are
		// returned and logged by the caller instead.
		LeveledLogger:     &sg.LeveledLogger{Level: sg.LevelNull},
		MaxNetworkRetries: sg.Int64(2), // retried with an idempotency key by the library
	}
	if cfg.APIURL != "" {
		bc.URL = sg.String(strings.TrimRight(cfg.APIURL, "/"))
	}
	api := sg.NewClient(cfg.SecretKey, sg.WithBackends(sg.NewBackendsWithConfig(bc)))
	return &Client{api: api, webhookSecret: cfg.WebhookSecret, successURL: cfg.SuccessURL, cancelURL: cfg.CancelURL, log: cfg.Logger}, nil
}

// Session is a created Checkout session.
type Session struct {
	ID  string
	URL string
}

// ErrProvider: Stripe refused the request or could not be reached. The
// message is safe to show (it never holds a credential).
var ErrProvider = errors.New("stripe request failed")

// CreateCheckout starts a one-off card payment of amount for accountID.
// The account id travels in the session's metadata and client reference,
// and in its payment intent's metadata.
func (c *Client) CreateCheckout(ctx context.Context, accountID string, amount money.Amount, currency money.Currency) (Session, error) {
	cur := strings.ToLower(string(currency))
	params := &sg.CheckoutSessionCreateParams{
		Mode:              sg.String(string(sg.CheckoutSessionModePayment)),
		SuccessURL:        sg.String(c.successURL),
		CancelURL:         sg.String(c.cancelURL),
		ClientReferenceID: sg.String(accountID),
		Metadata:          map[string]string{MetadataAccount: accountID},
		LineItems: []*sg.CheckoutSessionCreateLineItemParams{{
			Quantity: sg.Int64(1),
			PriceData: &sg.CheckoutSessionCreateLineItemPriceDataParams{
				Currency:    sg.String(cur),
				UnitAmount:  sg.Int64(amount.Cents()),
				ProductData: &sg.CheckoutSessionCreateLineItemPriceDataProductDataParams{Name: sg.String("Wallet top-up")},
			},
		}},
		PaymentIntentData: &sg.CheckoutSessionCreatePaymentIntentDataParams{
			Metadata: map[string]string{MetadataAccount: accountID},
		},
	}
	s, err := c.api.V1CheckoutSessions.Create(ctx, params)
	if err != nil {
		var se *sg.Error
		if errors.As(err, &se) {
			c.log.Warn("stripe checkout session refused", "account", accountID, "status", se.HTTPStatusCode,
				"type", se.Type, "code", se.Code, "request_id", se.RequestID)
			return Session{}, fmt.Errorf("%w: HTTP %d %s", ErrProvider, se.HTTPStatusCode, se.Type)
		}
		c.log.Warn("stripe checkout session failed", "account", accountID, "err", err)
		return Session{}, fmt.Errorf("%w: %s", ErrProvider, "could not reach Stripe")
	}
	if s.ID == "" || s.URL == "" {
		return Session{}, fmt.Errorf("%w: the session came back without an id or url", ErrProvider)
	}
	return Session{ID: s.ID, URL: s.URL}, nil
}

// ErrSignature: the webhook is not signed by Stripe with our secret, or
// its signature is too old (a replay).
var ErrSignature = errors.New("invalid Stripe signature")

// Event kinds this package understands; anything else is KindOther.
const (
	KindPaymentSucceeded = "payment_succeeded" // checkout.session.completed, checkout.session.async_payment_succeeded
	KindChargeRefunded   = "charge_refunded"   // charge.refunded
	KindOther            = "other"
)

// Event is a verified webhook event, reduced to what ledgerd uses.
type Event struct {
	ID   string
	Type string // Stripe's event type
	Kind string

	// KindPaymentSucceeded.
	SessionID     string
	Paid          bool   // payment_status is "paid"
	AccountID     string // from the session's metadata, else its client reference
	AccountRef    string // client_reference_id, to cross-check
	Amount        money.Amount
	Currency      string // upper case
	PaymentIntent string

	// KindChargeRefunded (PaymentIntent, Amount = amount_refunded and
	// Currency also set).
	ChargeID string
}

// ParseWebhook verifies the Stripe-Signature header over the raw body with
// the library's default tolerance (5 minutes) and decodes the event.
//
// Events of another API version are accepted: Stripe signs each endpoint's
// events with that endpoint's version, and an upgrade of this library must
// not make ledgerd answer 400 to every payment (Stripe would retry, then
// disable the endpoint). The fields read here (ids, amounts, currency,
// metadata, payment status) are the same in every version we know of.
func (c *Client) ParseWebhook(payload []byte, signature string) (Event, error) {
	ev, err := webhook.ConstructEventWithOptions(payload, signature, c.webhookSecret,
		webhook.ConstructEventOptions{IgnoreAPIVersionMismatch: true})
	if err != nil {
		if errors.Is(err, webhook.ErrNotSigned) || errors.Is(err, webhook.ErrInvalidHeader) ||
			errors.Is(err, webhook.ErrNoValidSignature) || errors.Is(err, webhook.ErrTooOld) {
			return Event{}, fmt.Errorf("%w: %v", ErrSignature, err)
		}
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	out := Event{ID: ev.ID, Type: string(ev.Type), Kind: KindOther}
	if ev.Data == nil {
		return out, nil
	}
	switch ev.Type {
	case "checkout.session.completed", "checkout.session.async_payment_succeeded":
		var s sg.CheckoutSession
		if err := json.Unmarshal(ev.Data.Raw, &s); err != nil {
			return Event{}, fmt.Errorf("%w: checkout session: %v", ErrMalformed, err)
		}
		out.Kind, out.SessionID = KindPaymentSucceeded, s.ID
		out.Paid = s.PaymentStatus == sg.CheckoutSessionPaymentStatusPaid
		out.AccountID, out.AccountRef = s.Metadata[MetadataAccount], s.ClientReferenceID
		if out.AccountID == "" {
			out.AccountID = s.ClientReferenceID
		}
		out.Amount, out.Currency = money.FromCents(s.AmountTotal), strings.ToUpper(string(s.Currency))
		if s.PaymentIntent != nil {
			out.PaymentIntent = s.PaymentIntent.ID
		}
	case "charge.refunded":
		var ch sg.Charge
		if err := json.Unmarshal(ev.Data.Raw, &ch); err != nil {
			return Event{}, fmt.Errorf("%w: charge: %v", ErrMalformed, err)
		}
		out.Kind, out.ChargeID = KindChargeRefunded, ch.ID
		out.Amount, out.Currency = money.FromCents(ch.AmountRefunded), strings.ToUpper(string(ch.Currency))
		if ch.PaymentIntent != nil {
			out.PaymentIntent = ch.PaymentIntent.ID
		}
	}
	return out, nil
}

// ErrMalformed: a correctly signed body that is not a Stripe event.
var ErrMalformed = errors.New("malformed Stripe event")
