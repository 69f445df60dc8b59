package httpapi

import (
	"net/http"
	"time"
)

// grant gives an account credits that expire (POST
// /api/admin/accounts/{id}/grants). A retry with the same Idempotency-Key
// is answered from the idempotency store and grants once.
func (s *Server) grant(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in grantBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	amt, expires := in.amount, in.expires
	res, err := s.cfg.Commands.GrantCredits(r.Context(), s.meta(r, p), r.PathValue("id"), amt, expires, in.Reason, "admin")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": res.ID, "account_id": r.PathValue("id"), "amount": amt,
		"expires_at": expires.UTC().Format(time.RFC3339), "reason": in.Reason, "source": "admin", "actor": p.Actor()})
	return nil
}
