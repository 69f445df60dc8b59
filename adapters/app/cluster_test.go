package app

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/ledger"
)

const sharedJWT = "0123456789abcdef0123456789abcdef0123456789abcdef"

// twoInstances starts A with embedded NATS and Postgres, and B sharing
// them, as a second ledgerd on another machine would.
func twoInstances(t testing.TB, bEnv map[string]string) (*App, *App) {
	t.Helper()
	cfgA := testConfigTB(t, testDirTB(t), map[string]string{"LEDGER_JWT_SECRET": sharedJWT})
	a := startAppTB(t, cfgA)
	env := map[string]string{
		"NATS_URL": a.NATSURL(), "DATABASE_URL": a.pg.DSN("ledgerd"),
		"LEDGER_JWT_SECRET": sharedJWT, "LEDGER_DEMO": "false",
	}
	for k, v := range bEnv {
		env[k] = v
	}
	b := startAppTB(t, testConfigTB(t, testDirTB(t), env))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = b.Close(ctx)
		_ = a.Close(ctx)
	})
	return a, b
}

// waitUntil polls cond every 200µs until it holds or the bound passes, and
// returns how long it took.
func waitUntil(t testing.TB, bound time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("condition not met within %v", bound)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return time.Since(start)
}

func TestTwoInstancesShareKeys(t *testing.T) {
	a, b := twoInstances(t, map[string]string{"LEDGER_ALLOW_QUERY_KEY": "true", "LEDGER_TRUSTED_PROXIES": "127.0.0.1/32"})
	adminA := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	custA, _ := customer(t, adminA, "shared@example.com", "standard")
	custB := custA
	custB.base = b.URL()

	key, id := newKey(t, custA, map[string]any{"name": "shared"})
	onB := withKey(client{t: t, base: b.URL()}, key)
	// Creation reaches B through the stream.
	waitUntil(t, 5*time.Second, func() bool { return onB.do("GET", "/api/v1/wallet", nil).Status == 200 })

	// Revocation on A: B refuses the key shortly after A's response.
	if r := custA.do("DELETE", "/api/users/me/api-keys/"+id, nil); r.Status != 204 {
		t.Fatalf("revoke on A: %d %s", r.Status, r.Raw)
	}
	took := waitUntil(t, 2*time.Second, func() bool { return onB.do("GET", "/api/v1/wallet", nil).Status == 401 })
	t.Logf("revoked on A, refused on B after %v", took)

	// Rotation on B: A refuses the old secret, accepts the new one.
	key2, id2 := newKey(t, custB, map[string]any{"name": "rotating"})
	// B's own write is visible on B at once (its projections are standby).
	if r := custB.do("GET", "/api/users/me/api-keys", nil); r.Status != 200 || !contains(r.Raw, id2) {
		t.Fatalf("B lists its own new key: %d %s", r.Status, r.Raw)
	}
	rot := custB.do("POST", "/api/users/me/api-keys/"+id2+"/rotate", nil)
	if rot.Status != 200 {
		t.Fatalf("rotate on B: %d %s", rot.Status, rot.Raw)
	}
	onA := client{t: t, base: a.URL()}
	waitUntil(t, 2*time.Second, func() bool { return withKey(onA, key2).do("GET", "/api/v1/wallet", nil).Status == 401 })
	waitUntil(t, 2*time.Second, func() bool {
		return withKey(onA, rot.Body["key"].(string)).do("GET", "/api/v1/wallet", nil).Status == 200
	})

	// B allows ?api_key=, with a Warning.
	newSecret := rot.Body["key"].(string)
	r := client{t: t, base: b.URL()}.do("GET", "/api/v1/wallet?api_key="+newSecret, nil)
	if r.Status != 200 || r.Header.Get("Warning") == "" {
		t.Fatalf("?api_key= on B: %d, Warning %q", r.Status, r.Header.Get("Warning"))
	}
	// B trusts 127.0.0.1 as a proxy: X-Forwarded-For decides the client IP.
	office, _ := newKey(t, custA, map[string]any{"name": "office", "ip_allowlist": []string{"10.0.0.0/8"}})
	onBOffice := withKey(client{t: t, base: b.URL()}, office)
	waitUntil(t, 5*time.Second, func() bool {
		return onBOffice.do("GET", "/api/v1/wallet", nil, "X-Forwarded-For", "10.1.2.3").Status == 200
	})
	if r := onBOffice.do("GET", "/api/v1/wallet", nil, "X-Forwarded-For", "192.0.2.1"); r.Status != 403 || errCode(r) != "forbidden_ip" {
		t.Fatalf("forwarded from outside the allowlist: %d %s", r.Status, r.Raw)
	}
	// Only one instance applies each projection.
	states := []string{a.Projs.Runner("accounts").Status().State, b.Projs.Runner("accounts").Status().State}
	slices.Sort(states)
	if states[0] != "running" || states[1] != "standby" {
		t.Fatalf("projection states across instances = %v, want one running and one standby", states)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// BenchmarkRevokeToRejection measures the time from a revocation being
// answered on instance A to instance B refusing the key.
func BenchmarkRevokeToRejection(b *testing.B) {
	a, other := twoInstances(b, nil)
	ctx := context.Background()
	meta := ledger.Meta{Actor: "bench", CausationID: a.Ledger.NewID("cmd")}
	acc, err := a.Ledger.CreateAccount(ctx, meta, "bench@example.com", "bench-password", "api")
	if err != nil {
		b.Fatal(err)
	}
	addr := netip.MustParseAddr("127.0.0.1")
	var lat []time.Duration
	for b.Loop() {
		k, err := a.Ledger.CreateKey(ctx, meta, acc.ID, apikey.SpecInput{Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		waitUntil(b, 5*time.Second, func() bool { _, err := other.Keys.Verify(k.Secret, addr, time.Now()); return err == nil })
		if _, _, err := a.Ledger.RevokeKey(ctx, meta, acc.ID, k.Key.ID); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, waitUntil(b, 5*time.Second, func() bool {
			_, err := other.Keys.Verify(k.Secret, addr, time.Now())
			return err != nil
		}))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
