package httpapi

import (
	"net/http"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
)

type notificationsOut struct {
	LowBalanceThreshold *money.Amount `json:"low_balance_threshold"`
	WebhookURL          *string       `json:"webhook_url"`
	Armed               bool          `json:"armed"`
	Event               string        `json:"event"`
	Alerts              []alertOut    `json:"recent_alerts,omitempty"`
}

type alertOut struct {
	ID          string       `json:"id"`
	Threshold   money.Amount `json:"threshold"`
	Available   money.Amount `json:"available"`
	Status      string       `json:"status"`
	Attempts    int          `json:"attempts"`
	LastError   string       `json:"last_error,omitempty"`
	CreatedAt   string       `json:"created_at"`
	DeliveredAt *string      `json:"delivered_at"`
}

func notificationsView(n account.Notifications) notificationsOut {
	out := notificationsOut{LowBalanceThreshold: n.LowBalanceThreshold, Armed: n.Armed, Event: account.WebhookLowBalance}
	if n.WebhookURL != "" {
		out.WebhookURL = &n.WebhookURL
	}
	return out
}

func (s *Server) putNotifications(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in notificationsBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	n, err := s.cfg.SelfServe.SetNotifications(r.Context(), s.meta(r, p), p.AccountID, in.threshold, in.url)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, notificationsView(n))
	return nil
}

func (s *Server) getNotifications(w http.ResponseWriter, r *http.Request, p Principal) error {
	n, err := s.cfg.SelfServe.Notifications(r.Context(), p.AccountID)
	if err != nil {
		return err
	}
	out := notificationsView(n)
	rows, err := s.cfg.Reads.Alerts(r.Context(), p.AccountID, 10)
	if err != nil {
		return readErr(err)
	}
	for _, a := range rows {
		th, _ := money.FromDecimal(a.Threshold)
		av, _ := money.FromDecimal(a.Available)
		o := alertOut{ID: a.ID, Threshold: th, Available: av, Status: a.Status, Attempts: a.Attempts,
			LastError: a.LastError, CreatedAt: a.CreatedAt.UTC().Format(time.RFC3339)}
		if a.DeliveredAt != nil {
			d := a.DeliveredAt.UTC().Format(time.RFC3339)
			o.DeliveredAt = &d
		}
		out.Alerts = append(out.Alerts, o)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
