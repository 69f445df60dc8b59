package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/ledgerd/ledgerd/domain/user"
)

// Principal is who is calling: a user by session, or (later) an API key.
// Both resolve to this one type, so handlers authorize the same way.
type Principal struct {
	UserID    string
	Email     string
	Role      user.Role
	AccountID string
	KeyID     string
	Scopes    []string
}

// Actor is the id recorded on the events the principal causes.
func (p Principal) Actor() string {
	if p.KeyID != "" {
		return p.KeyID
	}
	return p.UserID
}

type principalKey struct{}

func principalFrom(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// bearer returns the credential of an "Authorization: Bearer" header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// session authenticates a user session token.
func (s *Server) session(r *http.Request) (Principal, error) {
	tok := bearer(r)
	if tok == "" {
		return Principal{}, errUnauthorized
	}
	c, err := s.cfg.Sessions.Verify(tok)
	if err != nil {
		return Principal{}, errUnauthorized
	}
	return Principal{UserID: c.UserID, Email: c.Email, Role: user.Role(c.Role), AccountID: c.AccountID}, nil
}

type roleCheck func(user.Role, string) bool

// roleAdmin allows admins; roleReader allows admins, and finance staff for
// reads only.
var (
	roleAdmin  roleCheck = func(r user.Role, _ string) bool { return r == user.RoleAdmin }
	roleReader roleCheck = func(r user.Role, method string) bool {
		return r == user.RoleAdmin || (r == user.RoleFinance && (method == http.MethodGet || method == http.MethodHead))
	}
)

type handlerFunc func(w http.ResponseWriter, r *http.Request, p Principal) error

// staff wraps a handler for staff: authenticated, role allowed.
func (s *Server) staff(allow roleCheck, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.session(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !allow(p.Role, r.Method) {
			s.writeError(w, r, errForbidden)
			return
		}
		s.serve(w, r, p, h)
	})
}

// customer wraps a handler for a user acting on their own account.
func (s *Server) customer(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.session(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if p.AccountID == "" {
			s.writeError(w, r, errStatus(http.StatusForbidden, "forbidden", "This endpoint is for customer accounts; staff use /api/admin"))
			return
		}
		s.serve(w, r, p, h)
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, p Principal, h handlerFunc) {
	r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
	if err := h(w, r, p); err != nil {
		s.writeError(w, r, err)
	}
}
