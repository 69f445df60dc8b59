package app

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Role is one part of ledgerd that an instance may run, so operators can
// scale the HTTP tier apart from the background work.
type Role string

const (
	// RoleAPI serves the HTTP API and drives the generation calls it
	// accepts (the runner is part of answering a synchronous call, and an
	// async call accepted here is best started here, at once). It heartbeats
	// so no worker adopts those calls while it lives, and after a restart it
	// resumes its own open calls; it adopts nobody else's.
	RoleAPI Role = "api"
	// RoleProjector applies the read-model projections (one leader per
	// projection across all projector instances).
	RoleProjector Role = "projector"
	// RoleWorker runs the sweeper (adopting calls of dead instances,
	// releasing expired holds), callbacks, low-balance alerts, grant expiry
	// and subscription renewals.
	RoleWorker Role = "worker"
)

// Roles is the set of roles an instance runs.
type Roles []Role

// AllRoles is the default: everything in one process.
var AllRoles = Roles{RoleAPI, RoleProjector, RoleWorker}

// ParseRoles reads "all", one role, or a comma-separated list
// ("projector,worker").
func ParseRoles(s string) (Roles, error) {
	var out Roles
	for _, p := range strings.Split(s, ",") {
		switch r := Role(strings.ToLower(strings.TrimSpace(p))); r {
		case "all":
			return slices.Clone(AllRoles), nil
		case RoleAPI, RoleProjector, RoleWorker:
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		default:
			return nil, fmt.Errorf("role %q: want all, api, projector, worker, or a comma-separated list", p)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Has reports whether r is among the roles.
func (rs Roles) Has(r Role) bool { return slices.Contains(rs, r) }

// String is "all" for every role, else the list.
func (rs Roles) String() string {
	if len(rs) == len(AllRoles) {
		return "all"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = string(r)
	}
	return strings.Join(parts, ",")
}

// opsPaths are served by instances without the API role: probes, metrics,
// staff login and the admin routes (projection status, verify, replay),
// so an operator can watch and steer a projector or worker directly.
var opsPaths = []string{"/healthz", "/readyz", "/metrics", "/openapi.json", "/api/auth/login", "/api/admin/"}

// roleFilter answers 404 for the customer API on instances that do not run
// the API role, in the contract's error format, saying why.
func (a *App) roleFilter(h http.Handler) http.Handler {
	if a.cfg.Role.Has(RoleAPI) {
		return h
	}
	body := fmt.Sprintf(`{"error":{"code":"not_found","message":"This ledgerd instance runs role %s, not api"}}`+"\n", a.cfg.Role)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range opsPaths {
			if r.URL.Path == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(r.URL.Path, p)) {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(body))
	})
}

// Role is what this instance runs.
func (a *App) Role() Roles { return a.cfg.Role }
