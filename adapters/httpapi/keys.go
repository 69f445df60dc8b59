package httpapi

import (
	"net/http"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/projections"
)

// keyOut is a key as the contract lists it: never the secret, only its
// prefix and last four characters.
type keyOut struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	Key            string     `json:"key,omitempty"` // only at creation and rotation
	Prefix         string     `json:"prefix"`
	Last4          string     `json:"last4"`
	Scopes         []string   `json:"scopes"`
	MonthlyQuota   quotaOut   `json:"monthly_quota"`
	IPAllowlist    []string   `json:"ip_allowlist"`
	ExpiresAt      *time.Time `json:"expires_at"`
	RateLimit      int        `json:"rate_limit_per_minute"`
	Status         string     `json:"status"`
	CreatedAt      *time.Time `json:"created_at"`
	LastUsedAt     *time.Time `json:"last_used_at"`
	UsageThisMonth *usageOut  `json:"usage_this_month,omitempty"`
}

type quotaOut struct {
	Calls *int64        `json:"calls"`
	Spend *money.Amount `json:"spend"`
}

type usageOut struct {
	Calls int64        `json:"calls"`
	Spend money.Amount `json:"spend"`
}

func scopeStrings(sc apikey.Scopes) []string {
	out := make([]string, len(sc))
	for i, s := range sc {
		out[i] = string(s)
	}
	return out
}

func issuedOut(k ledger.IssuedKey, now time.Time) keyOut {
	q := quotaOut{Spend: k.Key.Quota.Spend}
	if k.Key.Quota.Calls > 0 {
		q.Calls = &k.Key.Quota.Calls
	}
	allow := k.Key.Allowlist
	if allow == nil {
		allow = []string{}
	}
	return keyOut{ID: k.Key.ID, Name: k.Key.Name, Key: k.Secret, Prefix: k.Key.Prefix, Last4: k.Key.Last4,
		Scopes: scopeStrings(k.Key.Scopes), MonthlyQuota: q, IPAllowlist: allow, ExpiresAt: k.Key.ExpiresAt,
		RateLimit: k.Key.RateLimit, Status: "active", CreatedAt: &now}
}

func rowOut(r projections.KeyRow, used usageOut) keyOut {
	q := quotaOut{Calls: r.QuotaCalls}
	if r.QuotaSpend != nil {
		if a, err := money.FromDecimal(*r.QuotaSpend); err == nil {
			q.Spend = &a
		}
	}
	created := r.CreatedAt.UTC()
	return keyOut{ID: r.ID, Name: r.Name, Prefix: r.Prefix, Last4: r.Last4, Scopes: r.Scopes, MonthlyQuota: q,
		IPAllowlist: r.IPAllowlist, ExpiresAt: r.ExpiresAt, RateLimit: r.RateLimit, Status: r.Status,
		CreatedAt: &created, LastUsedAt: r.LastUsedAt, UsageThisMonth: &used}
}

func (s *Server) listKeysOf(w http.ResponseWriter, r *http.Request, accountID string) error {
	s.awaitOwnWrites(r.Context(), w, "accounts", s.cfg.Commands.AccountSeq(accountID))
	rows, err := s.cfg.Reads.Keys(r.Context(), accountID)
	if err != nil {
		return readErr(err)
	}
	all := r.URL.Query().Get("include_revoked") == "true"
	used := s.usageThisMonth(r, accountID)
	out := make([]keyOut, 0, len(rows))
	for _, row := range rows {
		if row.Status == "revoked" && !all {
			continue
		}
		out = append(out, rowOut(row, used[row.ID]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, p Principal) error {
	return s.listKeysOf(w, r, p.AccountID)
}

func (s *Server) adminListKeys(w http.ResponseWriter, r *http.Request, _ Principal) error {
	return s.listKeysOf(w, r, r.PathValue("id"))
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in createKeyBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	k, err := s.cfg.Commands.CreateKey(r.Context(), s.meta(r, p), p.AccountID, in.spec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, issuedOut(k, time.Now().UTC()))
	return nil
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request, p Principal) error {
	k, err := s.cfg.Commands.RotateKey(r.Context(), s.meta(r, p), p.AccountID, r.PathValue("id"))
	if err != nil {
		return err
	}
	out := issuedOut(k, time.Now().UTC())
	out.CreatedAt = nil
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, _, err := s.cfg.Commands.RevokeKey(r.Context(), s.meta(r, p), p.AccountID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
