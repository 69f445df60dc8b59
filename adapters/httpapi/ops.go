package httpapi

import (
	"context"
	_ "embed"
	"net/http"
	"time"

	"github.com/ledgerd/ledgerd/adapters/session"
	"github.com/ledgerd/ledgerd/ledger"
)

func sessionClaims(id ledger.Identity) session.Claims {
	return session.Claims{UserID: id.UserID, Email: id.Email, Role: string(id.Role), AccountID: id.AccountID}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz reports whether this instance can serve: the event store and the
// database answer, and no projection is failed or too far behind.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	type check struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail,omitempty"`
	}
	var checks []check
	ready := true
	add := func(name string, err error) {
		c := check{Name: name, OK: err == nil}
		if err != nil {
			c.Detail, ready = err.Error(), false
		}
		checks = append(checks, c)
	}
	// Each probe gets its own short bound so one that hangs (a cluster
	// without quorum answers nothing) cannot starve the others.
	probe := func(fn func(context.Context) error) error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return fn(pctx)
	}
	for _, c := range s.cfg.Checks {
		add(c.Name, probe(c.Fn))
	}
	add("database", probe(s.cfg.Reads.Ping))
	for _, st := range s.cfg.Projections.Statuses() {
		c := check{Name: "projection:" + st.Name, OK: true}
		switch {
		case st.State == "failed":
			c.OK, c.Detail = false, "failed at stream seq "+itoa(int(st.ErrorSeq))+": "+st.Error
		case st.LagEvents > s.cfg.MaxProjectionLag:
			c.OK, c.Detail = false, "lagging "+itoa(int(st.LagEvents))+" events"
		case s.cfg.MaxProjectionLagTime > 0 && st.LagMillis > s.cfg.MaxProjectionLagTime.Milliseconds():
			c.OK, c.Detail = false, "lagging "+itoa(int(st.LagEvents))+" events, "+itoa(int(st.LagMillis))+" ms"
		case st.State == "standby":
			// Another instance (the projector) applies it; its position
			// is followed, and its lag judged above.
			c.Detail = "standby: applied by another instance"
		case st.State != "running":
			c.OK, c.Detail = false, st.State
		}
		ready = ready && c.OK
		checks = append(checks, c)
	}
	// An open provider circuit is reported, but does not make the instance
	// unready: calls to other providers still work.
	var providers any
	if s.cfg.Tasks != nil {
		providers = s.cfg.Tasks.BreakerStates()
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": ready, "role": s.cfg.Role, "checks": checks, "providers": providers})
}

//go:embed openapi.json
var openapiDoc []byte

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiDoc)
}
