package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
	"github.com/ledgerd/ledgerd/domain/validation"
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
	var in struct {
		APIAccess        *bool           `json:"api_access"`
		MonthlyFee       json.RawMessage `json:"monthly_fee"`
		IncludedCredits  json.RawMessage `json:"included_credits"`
		MaxKeys          *int            `json:"max_keys"`
		DefaultRateLimit *int            `json:"default_rate_limit"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	var verr validation.Error
	def := plan.Plan{Name: r.PathValue("plan"), Currency: s.cfg.Currency}
	if in.APIAccess == nil {
		verr.Add("api_access", "is required (true or false)")
	} else {
		def.APIAccess = *in.APIAccess
	}
	if len(in.MonthlyFee) > 0 {
		def.MonthlyFee = amount("monthly_fee", in.MonthlyFee, &verr)
	}
	if len(in.IncludedCredits) > 0 {
		def.IncludedCredits = amount("included_credits", in.IncludedCredits, &verr)
	}
	if in.MaxKeys != nil {
		def.MaxKeys = *in.MaxKeys
	}
	if in.DefaultRateLimit != nil {
		def.DefaultRateLimit = *in.DefaultRateLimit
	}
	if err := verr.Err(); err != nil {
		return err
	}
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
	var in struct {
		Plan string `json:"plan"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Plan == "" {
		return validation.Field("plan", "is required")
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
