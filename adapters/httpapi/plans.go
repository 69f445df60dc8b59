package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
)

type planOut struct {
	Plan             string       `json:"plan"`
	APIAccess        bool         `json:"api_access"`
	MonthlyFee       money.Amount `json:"monthly_fee"`
	IncludedCredits  money.Amount `json:"included_credits"`
	Currency         string       `json:"currency"`
	MaxKeys          *int         `json:"max_keys"`           // null: the server's default
	DefaultRateLimit *int         `json:"default_rate_limit"` // null: the server's default
}

func renderPlan(p plan.Plan) planOut {
	out := planOut{Plan: p.Name, APIAccess: p.APIAccess, MonthlyFee: p.MonthlyFee, IncludedCredits: p.IncludedCredits, Currency: string(p.Currency)}
	if p.MaxKeys > 0 {
		out.MaxKeys = &p.MaxKeys
	}
	if p.DefaultRateLimit > 0 {
		out.DefaultRateLimit = &p.DefaultRateLimit
	}
	return out
}

// listPlans is public, like the price list.
func (s *Server) listPlans(w http.ResponseWriter, _ *http.Request) {
	plans := s.cfg.Commands.Plans()
	out := make([]planOut, len(plans))
	for i, p := range plans {
		out[i] = renderPlan(p)
	}
	writeJSON(w, http.StatusOK, out)
}

// putPlan defines or changes a plan (admin). Fields left out are the
// free defaults: no access, no fee, no credits, the server's key limits.
func (s *Server) putPlan(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in planBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	def := in.def
	def.Name, def.Currency = r.PathValue("plan"), s.cfg.Currency
	out, err := s.cfg.Commands.SetPlan(r.Context(), s.meta(r, p), def)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, renderPlan(out))
	return nil
}

type subscriptionOut struct {
	Plan        string       `json:"plan"`
	Active      bool         `json:"active"`
	Fee         money.Amount `json:"fee,omitzero"`
	PeriodStart string       `json:"period_start,omitempty"`
	PeriodEnd   string       `json:"period_end,omitempty"` // the next renewal
}

func renderSubscription(planName account.Plan, sub account.Subscription, active bool) subscriptionOut {
	out := subscriptionOut{Plan: string(planName), Active: active}
	if active {
		out.Plan, out.Fee = string(sub.Plan), sub.Fee
		out.PeriodStart, out.PeriodEnd = sub.PeriodStart.UTC().Format(time.RFC3339), sub.PeriodEnd.UTC().Format(time.RFC3339)
	}
	return out
}

// subscribe puts the caller's account on a plan (user session only: it
// spends money and changes what every key may do).
func (s *Server) subscribe(w http.ResponseWriter, r *http.Request, p Principal) error {
	if p.KeyID != "" {
		return errStatus(http.StatusForbidden, "forbidden", "Subscribing needs a user session, not an API key")
	}
	var in subscribeBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	res, err := s.cfg.Commands.Subscribe(r.Context(), s.meta(r, p), p.AccountID, in.Plan)
	if errors.Is(err, account.ErrInsufficientFunds) {
		return errStatus(http.StatusPaymentRequired, "insufficient_balance", "The wallet's paid balance cannot cover the plan's monthly fee")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, renderSubscription(account.Plan(in.Plan), res.Subscription, res.Active))
	return nil
}

func (s *Server) getSubscription(w http.ResponseWriter, r *http.Request, p Principal) error {
	sub, active, err := s.cfg.Commands.Subscription(r.Context(), p.AccountID)
	if err != nil {
		return err
	}
	view, _, err := s.cfg.Commands.Account(r.Context(), p.AccountID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, renderSubscription(view.Plan, sub, active))
	return nil
}
