package app

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger"
)

const sharedJWT = "0123456789abcdef0123456789abcdef0123456789abcdef"

// twoInstances starts A with embedded NATS and Postgres, and B sharing
// them, as a second ledgerd on another machine would.
func twoInstances(t testing.TB, bEnv map[string]string) (*App, *App) {
	t.Helper()
	return twoInstancesEnv(t, nil, bEnv)
}

// twoInstancesEnv is twoInstances with settings for A as well.
func twoInstancesEnv(t testing.TB, aEnv, bEnv map[string]string) (*App, *App) {
	t.Helper()
	envA := map[string]string{"LEDGER_JWT_SECRET": sharedJWT}
	for k, v := range aEnv {
		envA[k] = v
	}
	cfgA := testConfigTB(t, testDirTB(t), envA)
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

// TestRoles: A runs the projections and the background work, B only the
// API. Calls charged through B are driven by B, projected by A, and read
// back on B; each /readyz names its role; A refuses the customer API.
func TestRoles(t *testing.T) {
	a, b := twoInstancesEnv(t, map[string]string{"LEDGER_ROLE": "projector,worker"}, map[string]string{"LEDGER_ROLE": "api"})
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	_, accID := customer(t, admin, "roles@example.com", "standard")
	if r := admin.do("POST", "/api/admin/accounts/"+accID+"/topups", map[string]string{"amount": "10.00", "reference": "roles"}); r.Status != 201 {
		t.Fatalf("top-up on A: %d %s", r.Status, r.Raw)
	}
	custB := client{t: t, base: b.URL()}.login("roles@example.com", "password-roles@example.com")
	key, _ := newKey(t, custB, map[string]any{"name": "roles"})
	onB := withKey(client{t: t, base: b.URL()}, key)
	for i := range 3 {
		if r := onB.do("POST", "/api/v1/image/generate", image(fmt.Sprintf("role %d", i))); r.Status != 200 || r.Body["cost"] != "0.80" {
			t.Fatalf("call %d on the api instance: %d %s", i, r.Status, r.Raw)
		}
	}
	// B reads its own writes from the read models A writes.
	w := onB.do("GET", "/api/v1/wallet", nil)
	if w.Status != 200 || w.Body["balance"] != "7.60" || w.Body["held"] != "0.00" || w.Header.Get("X-Ledger-Stale") != "" {
		t.Fatalf("wallet on B after 3 calls: %d %s stale=%q, want balance 7.60, held 0.00, fresh", w.Status, w.Raw, w.Header.Get("X-Ledger-Stale"))
	}
	for _, c := range []struct {
		app  *App
		role string
		proj string
	}{{a, "projector,worker", "running"}, {b, "api", "standby"}} {
		r := client{t: t, base: c.app.URL()}.do("GET", "/readyz", nil)
		if r.Status != 200 || r.Body["role"] != c.role {
			t.Fatalf("/readyz on %s: %d %s, want 200 with role %q", c.role, r.Status, r.Raw, c.role)
		}
		if got := c.app.Projs.Runner("accounts").Status().State; got != c.proj {
			t.Fatalf("accounts projection on %s: %s, want %s", c.role, got, c.proj)
		}
	}
	if r := withKey(client{t: t, base: a.URL()}, key).do("GET", "/api/v1/wallet", nil); r.Status != 404 || errCode(r) != "not_found" {
		t.Fatalf("customer API on the projector: %d %s, want 404 not_found", r.Status, r.Raw)
	}
	if v := admin.do("GET", "/api/admin/verify", nil); v.Status != 200 || v.Body["ok"] != true {
		t.Fatalf("verify: %d %s", v.Status, v.Raw)
	}
}

func TestParseRoles(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      bool
	}{{"all", "all", false}, {"api", "api", false}, {"worker, projector", "projector,worker", false},
		{"api,projector,worker", "all", false}, {"web", "", true}, {"", "", true}} {
		got, err := ParseRoles(c.in)
		if (err != nil) != c.err || (err == nil && got.String() != c.want) {
			t.Errorf("ParseRoles(%q) = %v, %v; want %q, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

// TestBusyInstanceYieldsOverNATS: B writes one account without pause (an
// append always in flight); top-ups of the same account through A's API
// all land. Without the requests to yield that a lost race sends over
// NATS, A lost every race and answered 503 "the account is busy".
func TestBusyInstanceYieldsOverNATS(t *testing.T) {
	a, b := twoInstances(t, nil)
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	_, acc := customer(t, admin, "hot@example.com", "api")
	ctx := context.Background()
	meta := ledger.Meta{Actor: "test", CausationID: b.Ledger.NewID("cmd")}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var busy atomic.Int64
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := b.Ledger.TopUp(ctx, meta, acc, money.MustParse("10.00"), fmt.Sprintf("busy-%d-%d", w, k)); err != nil {
					t.Errorf("top-up on the busy instance: %v", err)
					return
				}
				busy.Add(1)
			}
		}()
	}
	waitUntil(t, 10*time.Second, func() bool { return busy.Load() > 100 })
	const calls = 10
	for k := range calls {
		r := admin.do("POST", "/api/admin/accounts/"+acc+"/topups", map[string]string{"amount": "10.00", "reference": fmt.Sprintf("a-%d", k)})
		if r.Status != 201 {
			close(stop)
			wg.Wait()
			t.Fatalf("top-up %d through A while B is busy: %d %s", k, r.Status, r.Raw)
		}
	}
	close(stop)
	wg.Wait()
	_, w, err := a.Ledger.Account(ctx, acc)
	if err != nil {
		t.Fatal(err)
	}
	if want := money.FromCents(1000 * (busy.Load() + calls)); !w.Available.Equal(want) {
		t.Fatalf("available %s, want %s", w.Available, want)
	}
}
