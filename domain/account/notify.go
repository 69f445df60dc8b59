package account

import (
	"time"

	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// Low-balance alerts. The customer sets a threshold and a webhook URL. The
// crossing is decided here, on the aggregate, in the same append as the
// command that moves the money: whichever instance runs the command, the
// crossing is one event, once. An armed alert that a command takes below
// the threshold becomes a LowBalanceCrossed event (and is disarmed); a
// command that brings available back to the threshold or above re-arms
// it. Delivering the crossing is the dispatcher's job, from a read model;
// each attempt is a NotificationAttempted event.

// WebhookLowBalance is the type of the event POSTed to the webhook.
const WebhookLowBalance = "wallet.low_balance"

type alertState struct {
	threshold *money.Amount // nil: no alert
	url       string
	armed     bool
}

// Notifications are an account's alert settings.
type Notifications struct {
	LowBalanceThreshold *money.Amount
	WebhookURL          string
	Armed               bool
}

// Notifications returns the alert settings.
func (a *Account) Notifications() Notifications {
	return Notifications{LowBalanceThreshold: a.alerts.threshold, WebhookURL: a.alerts.url, Armed: a.alerts.armed}
}

// NotificationsSet records new alert settings. Armed says whether the
// alert is armed from now on: it is when available is at or above the
// threshold, so setting a threshold that is already undercut sends
// nothing until the balance has been above it once.
type NotificationsSet struct {
	LowBalanceThreshold *money.Amount `json:"low_balance_threshold"`
	WebhookURL          string        `json:"webhook_url,omitempty"`
	Armed               bool          `json:"armed"`
}

// LowBalanceCrossed records that available fell below the threshold; the
// alert it names is to be delivered to WebhookURL.
type LowBalanceCrossed struct {
	AlertID    string         `json:"alert_id"`
	Threshold  money.Amount   `json:"threshold"`
	Available  money.Amount   `json:"available"` // after the command that crossed
	Currency   money.Currency `json:"currency"`
	WebhookURL string         `json:"webhook_url"`
}

// LowBalanceRearmed records that available is back at or above the
// threshold, so the next fall below it alerts again.
type LowBalanceRearmed struct {
	Threshold money.Amount `json:"threshold"`
	Available money.Amount `json:"available"`
}

// NotificationAttempted records one delivery attempt of an alert.
type NotificationAttempted struct {
	AlertID       string     `json:"alert_id"`
	Attempt       int        `json:"attempt"`
	Status        int        `json:"status,omitempty"`
	Error         string     `json:"error,omitempty"`
	Delivered     bool       `json:"delivered"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"` // nil: no further attempt
}

const (
	EventNotificationsSet      = "account.notifications_set"
	EventLowBalanceCrossed     = "account.low_balance_crossed"
	EventLowBalanceRearmed     = "account.low_balance_rearmed"
	EventNotificationAttempted = "account.notification_attempted"
)

func (NotificationsSet) EventName() string      { return EventNotificationsSet }
func (LowBalanceCrossed) EventName() string     { return EventLowBalanceCrossed }
func (LowBalanceRearmed) EventName() string     { return EventLowBalanceRearmed }
func (NotificationAttempted) EventName() string { return EventNotificationAttempted }

// SetNotifications decides new alert settings; a nil threshold turns the
// alert off. The URL is checked by the caller as callback URLs are.
func (a *Account) SetNotifications(threshold *money.Amount, webhookURL string) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	var verr validation.Error
	if threshold != nil && threshold.IsNegative() {
		verr.Add("low_balance_threshold", "must not be negative")
	}
	if threshold != nil && webhookURL == "" {
		verr.Add("webhook_url", "is required with a threshold")
	}
	if err := verr.Err(); err != nil {
		return nil, err
	}
	if a.status == StatusClosed {
		return nil, ErrClosed
	}
	ev := NotificationsSet{LowBalanceThreshold: threshold, WebhookURL: webhookURL}
	if threshold != nil {
		ev.Armed = a.Available().Cmp(*threshold) >= 0
	}
	cur := a.alerts
	if sameThreshold(cur.threshold, threshold) && cur.url == webhookURL && cur.armed == ev.Armed {
		return nil, nil
	}
	return []Event{ev}, nil
}

func sameThreshold(x, y *money.Amount) bool {
	if x == nil || y == nil {
		return x == nil && y == nil
	}
	return x.Equal(*y)
}

// LowBalanceEvents returns what the events a command decided do to the
// alert: a crossing if they take an armed alert's available below the
// threshold, a re-arming if they bring a disarmed one back to it. It is
// given the state before those events; newID names a crossing.
func (a *Account) LowBalanceEvents(decided []Event, newID func(prefix string) string) []Event {
	if !a.opened || a.alerts.threshold == nil {
		return nil
	}
	var delta money.Amount
	for _, e := range decided {
		switch m := e.(type) {
		case NotificationsSet:
			return nil // the settings decide arming themselves
		case Moving:
			// What the customer may spend: paid money and grants.
			tx := m.Postings()
			delta = delta.Add(tx.Effect(journal.Available(a.id))).Add(tx.Effect(journal.Credits(a.id)))
		}
	}
	if delta.IsZero() {
		return nil
	}
	after, th := a.Available().Add(delta), *a.alerts.threshold
	switch {
	case a.alerts.armed && after.Cmp(th) < 0:
		return []Event{LowBalanceCrossed{AlertID: newID("lba"), Threshold: th, Available: after, Currency: a.currency, WebhookURL: a.alerts.url}}
	case !a.alerts.armed && after.Cmp(th) >= 0:
		return []Event{LowBalanceRearmed{Threshold: th, Available: after}}
	}
	return nil
}

// RecordNotification records one delivery attempt of an alert.
func (a *Account) RecordNotification(n NotificationAttempted) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	return []Event{n}, nil
}

func (a *Account) applyNotify(e Event) {
	switch e := e.(type) {
	case NotificationsSet:
		a.alerts = alertState{threshold: e.LowBalanceThreshold, url: e.WebhookURL, armed: e.Armed}
	case LowBalanceCrossed:
		a.alerts.armed = false
	case LowBalanceRearmed:
		a.alerts.armed = true
	}
}
