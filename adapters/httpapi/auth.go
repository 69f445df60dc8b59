package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/adapters/session"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/projections/keyindex"
)

// Principal is who is calling: a user by session, or (later) an API key.
// Both resolve to this one type, so handlers authorize the same way.
type Principal struct {
	UserID    string
	Email     string
	Role      user.Role
	AccountID string
	KeyID     string
	Scopes    apikey.Scopes // for API keys; a user session may do anything its role allows
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

// account wraps a handler that acts on the caller's own account: a
// customer's session, or an API key holding scope.
func (s *Server) account(scope apikey.Scope, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(w, r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if p.AccountID == "" {
			s.writeError(w, r, errStatus(http.StatusForbidden, "forbidden", "This endpoint is for customer accounts; staff use /api/admin"))
			return
		}
		if p.KeyID != "" && scope != "" && !p.Scopes.Has(scope) {
			s.writeError(w, r, errStatus(http.StatusForbidden, "forbidden_scope", "This API key lacks the "+string(scope)+" scope"))
			return
		}
		s.serve(w, r, p, h)
	})
}

// credential finds the caller's credential: Authorization: Bearer, then
// x-api-key (any case: Go canonicalizes header names), then ?api_key= when
// allowed. The query form is a leak risk (proxies, history, logs), so it is
// off by default and answered with a Warning header when used.
func (s *Server) credential(w http.ResponseWriter, r *http.Request) string {
	if c := bearer(r); c != "" {
		return c
	}
	if c := strings.TrimSpace(r.Header.Get("X-Api-Key")); c != "" {
		return c
	}
	if s.cfg.AllowQueryKey {
		if c := r.URL.Query().Get("api_key"); c != "" {
			w.Header().Set("Warning", `299 ledgerd "api_key in the query string is deprecated: send it in the Authorization header"`)
			return c
		}
	}
	return ""
}

// authenticate resolves a session token or an API key to a principal.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (Principal, error) {
	return s.authenticateCredential(r, s.credential(w, r))
}

// authenticateCredential resolves cred, a session token or an API key.
func (s *Server) authenticateCredential(r *http.Request, cred string) (Principal, error) {
	switch {
	case cred == "":
		return Principal{}, errUnauthorized
	case session.LooksLikeJWT(cred):
		c, err := s.cfg.Sessions.Verify(cred)
		if err != nil {
			return Principal{}, errUnauthorized
		}
		return Principal{UserID: c.UserID, Email: c.Email, Role: user.Role(c.Role), AccountID: c.AccountID}, nil
	case s.cfg.Keys == nil:
		return Principal{}, errUnauthorized
	}
	now := time.Now()
	k, err := s.cfg.Keys.Verify(cred, s.clientIP(r), now)
	switch {
	case errors.Is(err, keyindex.ErrIPNotAllowed):
		return Principal{}, errStatus(http.StatusForbidden, "forbidden_ip", "Requests with this API key are not allowed from your IP address")
	case errors.Is(err, keyindex.ErrPlanRequired):
		return Principal{}, errStatus(http.StatusForbidden, "plan_required", "API access requires a paid plan")
	case errors.Is(err, keyindex.ErrAccountInactive):
		return Principal{}, errStatus(http.StatusForbidden, "forbidden", "The account is suspended")
	case err != nil:
		return Principal{}, errStatus(http.StatusUnauthorized, "unauthorized", "Invalid or missing API key")
	}
	if ok, wait := s.cfg.Keys.Allow(k.ID, now); !ok {
		e := errStatus(http.StatusTooManyRequests, "rate_limited", "Rate limit exceeded for this API key")
		e.RetryAfter = keyindex.RetryAfterSeconds(wait)
		return Principal{}, e
	}
	return Principal{Role: user.RoleCustomer, AccountID: k.AccountID, KeyID: k.ID, Scopes: k.Scopes}, nil
}

// clientIP is the connection's address, or, when the connection comes
// from a configured trusted proxy, the last address in X-Forwarded-For
// that is not itself a trusted proxy.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	addr = addr.Unmap()
	if !s.trusted(addr) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr
		}
		hop = hop.Unmap()
		if !s.trusted(hop) {
			return hop
		}
		addr = hop
	}
	return addr
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, p Principal, h handlerFunc) {
	r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
	run := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r, p); err != nil {
			s.writeError(w, r, err)
		}
	})
	// Generation calls are idempotent on the account aggregate; every other
	// POST through the shared store. Keys are scoped to the caller.
	if r.Method == http.MethodPost && s.cfg.Idempotency != nil && !isGeneration(r.URL.Path) {
		s.cfg.Idempotency.Wrap(w, r, p.Actor(), run)
		return
	}
	run(w, r)
}

func isGeneration(path string) bool {
	return strings.HasPrefix(path, "/api/v1/image/") || strings.HasPrefix(path, "/api/v1/video/") ||
		strings.HasPrefix(path, "/api/v1/generateTask/")
}
