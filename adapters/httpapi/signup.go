package httpapi

import (
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/projections/keyindex"
)

var errSignupOff = errStatus(http.StatusForbidden, "forbidden", "Self-serve signup is disabled on this server (LEDGER_OPEN_SIGNUP)")

// signup opens an account on the free plan with its user. Every attempt,
// good or bad, counts against the caller's address, so the endpoint can
// be used neither to create accounts in bulk nor to probe for emails.
func (s *Server) signup(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.OpenSignup {
		s.writeError(w, r, errSignupOff)
		return
	}
	if ok, wait := s.signups.allow(s.clientIP(r), time.Now()); !ok {
		e := errStatus(http.StatusTooManyRequests, "rate_limited", "Too many signups from your address; try again later")
		e.RetryAfter = max(1, keyindex.RetryAfterSeconds(wait))
		s.writeError(w, r, e)
		return
	}
	var in signupBody
	if err := decodeBody(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	meta := ledger.Meta{Actor: "signup", CorrelationID: requestID(r.Context()), CausationID: s.cfg.Commands.NewID("cmd")}
	v, err := s.cfg.Commands.CreateAccount(r.Context(), meta, in.Email, in.Password, account.PlanFree)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": v.ID, "email": v.Email, "plan": v.Plan})
}

// ipLimiter allows n events per hour per address (a token bucket each),
// on this instance: behind several instances the limit is per instance.
type ipLimiter struct {
	perHour int
	mu      sync.Mutex
	buckets map[netip.Addr]*ipBucket
	swept   time.Time
}

type ipBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perHour int) *ipLimiter {
	return &ipLimiter{perHour: perHour, buckets: map[netip.Addr]*ipBucket{}}
}

func (l *ipLimiter) allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Forget addresses idle for an hour (their bucket is full again), so
	// memory follows the number of recent callers.
	if now.Sub(l.swept) > time.Minute {
		for a, b := range l.buckets {
			if now.Sub(b.seen) > time.Hour {
				delete(l.buckets, a)
			}
		}
		l.swept = now
	}
	b := l.buckets[ip]
	if b == nil {
		b = &ipBucket{lim: rate.NewLimiter(rate.Every(time.Hour/time.Duration(l.perHour)), l.perHour)}
		l.buckets[ip] = b
	}
	b.seen = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}
