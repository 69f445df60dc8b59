package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/domain/validation"
)

// grant gives an account credits that expire (POST
// /api/admin/accounts/{id}/grants). A retry with the same Idempotency-Key
// is answered from the idempotency store and grants once.
func (s *Server) grant(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in struct {
		Amount    json.RawMessage `json:"amount"`
		ExpiresAt string          `json:"expires_at"`
		Reason    string          `json:"reason"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	var verr validation.Error
	amt := amount("amount", in.Amount, &verr)
	var expires time.Time
	if strings.TrimSpace(in.ExpiresAt) == "" {
		verr.Add("expires_at", "is required")
	} else if t, err := time.Parse(time.RFC3339, in.ExpiresAt); err != nil {
		verr.Add("expires_at", "must be an RFC 3339 time such as 2027-01-01T00:00:00Z")
	} else {
		expires = t
	}
	required("reason", in.Reason, &verr)
	if err := verr.Err(); err != nil {
		return err
	}
	res, err := s.cfg.Commands.GrantCredits(r.Context(), s.meta(r, p), r.PathValue("id"), amt, expires, in.Reason, "admin")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": res.ID, "account_id": r.PathValue("id"), "amount": amt,
		"expires_at": expires.UTC().Format(time.RFC3339), "reason": in.Reason, "source": "admin", "actor": p.Actor()})
	return nil
}
