package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/adapters/pgembed"
)

// testDir is a data dir the embedded Postgres can use when tests run as
// root (t.TempDir's parent is not traversable by the unprivileged user).
func testDir(t *testing.T) string { return testDirTB(t) }

func testDirTB(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ledgerd-app-")
	if err != nil {
		t.Fatal(err)
	}
	if err := pgembed.PrepareTestDir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testConfig(t *testing.T, dir string) Config { return testConfigTB(t, dir, nil) }

func testConfigTB(t testing.TB, dir string, extra map[string]string) Config {
	t.Helper()
	env := map[string]string{
		"LEDGER_DATA_DIR":       dir,
		"LEDGER_HTTP_ADDR":      "127.0.0.1:0",
		"LEDGER_NATS_ADDR":      "127.0.0.1:-1",
		"LEDGER_ADMIN_EMAIL":    "root@example.com",
		"LEDGER_ADMIN_PASSWORD": "root-password",
		"LEDGER_BCRYPT_COST":    "4",
		"LEDGER_DEMO":           "true",
	}
	for k, v := range extra {
		env[k] = v
	}
	cfg, err := FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Durable = false
	return cfg
}

func startApp(t *testing.T, cfg Config) *App { return startAppTB(t, cfg) }

func startAppTB(t testing.TB, cfg Config) *App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("LEDGER_TEST_LOG") != "" { // to see an app's log while chasing a failure
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	a, err := Start(ctx, cfg, log)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return a
}

func stopApp(t *testing.T, a *App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// client speaks the contract as an outside client would.
type client struct {
	t     *testing.T
	base  string
	token string
}

type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

// contractClient bounds each call: a request that hangs fails its test
// with the request named, not the whole package at its timeout.
var contractClient = &http.Client{Timeout: 2 * time.Minute}

func (c client) do(method, path string, body any, hdr ...string) response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := contractClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

func (c client) login(email, password string) client {
	c.t.Helper()
	res := c.do("POST", "/api/auth/login", map[string]string{"email": email, "password": password})
	if res.Status != http.StatusOK {
		c.t.Fatalf("login %s: %d %s", email, res.Status, res.Raw)
	}
	if res.Body["token_type"] != "bearer" || res.Body["expires_in"].(float64) <= 0 {
		c.t.Fatalf("login response %s", res.Raw)
	}
	c.token = res.Body["access_token"].(string)
	return c
}

func errCode(r response) string {
	e, _ := r.Body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func TestTopUpContract(t *testing.T) {
	a := startApp(t, testConfig(t, testDir(t)))
	defer stopApp(t, a)
	anon := client{t: t, base: a.URL()}
	admin := anon.login("root@example.com", "root-password")

	res := admin.do("POST", "/api/admin/accounts", map[string]string{"email": "cust@example.com", "password": "cust-password", "plan": "standard"})
	if res.Status != http.StatusCreated || res.Body["plan"] != "standard" || !strings.HasPrefix(res.Body["id"].(string), "acc_") {
		t.Fatalf("create account: %d %s", res.Status, res.Raw)
	}
	acc := res.Body["id"].(string)
	cust := anon.login("cust@example.com", "cust-password")
	topups := "/api/admin/accounts/" + acc + "/topups"

	res = admin.do("POST", topups, map[string]any{"amount": "10.00", "reference": "inv-1"})
	if res.Status != http.StatusCreated || res.Body["amount"] != "10.00" {
		t.Fatalf("top-up: %d %s", res.Status, res.Raw)
	}
	wallet := func() string {
		t.Helper()
		r := cust.do("GET", "/api/v1/wallet", nil)
		if r.Status != http.StatusOK {
			t.Fatalf("wallet: %d %s", r.Status, r.Raw)
		}
		return r.Body["balance"].(string) + "/" + r.Body["held"].(string) + "/" + r.Body["available"].(string)
	}
	// Read-your-writes: the top-up shows at once.
	if got := wallet(); got != "10.00/0.00/10.00" {
		t.Fatalf("wallet after top-up = %s, want 10.00/0.00/10.00", got)
	}
	finance := admin.do("POST", "/api/admin/users", map[string]string{"email": "fin@example.com", "password": "fin-password", "role": "finance"})
	if finance.Status != http.StatusCreated {
		t.Fatalf("create finance user: %d %s", finance.Status, finance.Raw)
	}
	fin := anon.login("fin@example.com", "fin-password")
	huge := strings.Repeat("9", 40) + ".00"
	big := `{"amount":"10.00","reference":"` + strings.Repeat("x", 1<<20) + `"}`

	tests := []struct {
		name   string
		c      client
		path   string
		body   any
		status int
		code   string
		field  string
	}{
		{"below minimum", admin, topups, `{"amount":"9.99","reference":"a"}`, 422, "validation_error", "amount"},
		{"negative", admin, topups, `{"amount":"-50.00","reference":"a"}`, 422, "validation_error", "amount"},
		{"non-numeric", admin, topups, `{"amount":"ten","reference":"a"}`, 422, "validation_error", "amount"},
		{"float with fractions of a cent", admin, topups, `{"amount":10.001,"reference":"a"}`, 422, "validation_error", "amount"},
		{"huge", admin, topups, `{"amount":"` + huge + `","reference":"a"}`, 422, "validation_error", "amount"},
		{"huge number", admin, topups, `{"amount":1e400,"reference":"a"}`, 422, "validation_error", "amount"},
		{"missing reference", admin, topups, `{"amount":"10.00"}`, 422, "validation_error", "reference"},
		{"wrong type", admin, topups, `{"amount":"10.00","reference":12}`, 422, "validation_error", "reference"},
		{"unknown field", admin, topups, `{"amount":"10.00","reference":"a","currency":"EUR"}`, 422, "validation_error", "currency"},
		{"reference reused for another amount", admin, topups, `{"amount":"20.00","reference":"inv-1"}`, 409, "idempotency_conflict", ""},
		{"broken JSON", admin, topups, `{"amount":"10.00",`, 400, "invalid_json", ""},
		{"not an object", admin, topups, `["10.00"]`, 400, "invalid_json", ""},
		{"two objects", admin, topups, `{"amount":"10.00","reference":"a"}{}`, 400, "invalid_json", ""},
		{"empty body", admin, topups, ``, 400, "invalid_json", ""},
		{"oversize body", admin, topups, big, 413, "payload_too_large", ""},
		{"unknown account", admin, "/api/admin/accounts/acc_00000000000000000000000000/topups", `{"amount":"10.00","reference":"a"}`, 404, "not_found", ""},
		{"malformed account id", admin, "/api/admin/accounts/acc.x/topups", `{"amount":"10.00","reference":"a"}`, 404, "not_found", ""},
		{"customer role", cust, topups, `{"amount":"10.00","reference":"a"}`, 403, "forbidden", ""},
		{"finance role", fin, topups, `{"amount":"10.00","reference":"a"}`, 403, "forbidden", ""},
		{"no credentials", anon, topups, `{"amount":"10.00","reference":"a"}`, 401, "unauthorized", ""},
		{"forged token", client{t: t, base: a.URL(), token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3JfeCJ9.c2ln"}, topups, `{"amount":"10.00","reference":"a"}`, 401, "unauthorized", ""},
	}
	before, err := a.store.Messages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.t = t
			res := tt.c.do("POST", tt.path, tt.body)
			if res.Status != tt.status || errCode(res) != tt.code {
				t.Fatalf("got %d %s, want %d %s", res.Status, truncate(res.Raw), tt.status, tt.code)
			}
			if !strings.HasPrefix(res.Body["request_id"].(string), "req_") {
				t.Fatalf("no request_id in %s", res.Raw)
			}
			if tt.field != "" {
				details, _ := res.Body["error"].(map[string]any)["details"].([]any)
				if len(details) == 0 || details[0].(map[string]any)["field"] != tt.field {
					t.Fatalf("details = %v, want field %s", details, tt.field)
				}
			}
		})
	}
	// Nothing above changed anything: no event appended, same balance.
	after, err := a.store.Messages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("rejected requests appended %d events", after-before)
	}
	if got := wallet(); got != "10.00/0.00/10.00" {
		t.Fatalf("wallet after rejected top-ups = %s, want 10.00/0.00/10.00", got)
	}

	// A retried top-up (same reference and amount) answers as the first and
	// credits once; amounts are accepted as JSON numbers too.
	res = admin.do("POST", topups, `{"amount":10,"reference":"inv-1"}`)
	if res.Status != http.StatusCreated || res.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replayed top-up: %d %s", res.Status, res.Raw)
	}
	if got := wallet(); got != "10.00/0.00/10.00" {
		t.Fatalf("wallet after replay = %s, want 10.00/0.00/10.00", got)
	}
	// Finance may read what admins read.
	if res := fin.do("GET", "/api/admin/accounts/"+acc, nil); res.Status != http.StatusOK {
		t.Fatalf("finance reading an account: %d %s", res.Status, res.Raw)
	}
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func TestAccountAdmin(t *testing.T) {
	a := startApp(t, testConfig(t, testDir(t)))
	defer stopApp(t, a)
	anon := client{t: t, base: a.URL()}
	admin := anon.login("root@example.com", "root-password")
	res := admin.do("POST", "/api/admin/accounts", map[string]string{"email": "x@example.com", "password": "x-password", "plan": "free"})
	if res.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", res.Status, res.Raw)
	}
	acc := res.Body["id"].(string)
	for _, tt := range []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"duplicate email", "POST", "/api/admin/accounts", map[string]string{"email": "X@example.com", "password": "x-password", "plan": "free"}, 409, "email_taken"},
		{"bad email", "POST", "/api/admin/accounts", map[string]string{"email": "nope", "password": "x-password"}, 422, "validation_error"},
		{"short password", "POST", "/api/admin/accounts", map[string]string{"email": "y@example.com", "password": "short"}, 422, "validation_error"},
		{"bad plan", "POST", "/api/admin/accounts", map[string]string{"email": "y@example.com", "password": "y-password", "plan": "gold"}, 422, "validation_error"},
		{"patch plan", "PATCH", "/api/admin/accounts/" + acc, map[string]string{"plan": "pro"}, 200, ""},
		{"patch status", "PATCH", "/api/admin/accounts/" + acc, map[string]string{"status": "suspended"}, 200, ""},
		{"patch nothing", "PATCH", "/api/admin/accounts/" + acc, map[string]string{}, 422, "validation_error"},
		{"patch bad status", "PATCH", "/api/admin/accounts/" + acc, map[string]string{"status": "gone"}, 422, "validation_error"},
		{"staff bad role", "POST", "/api/admin/users", map[string]string{"email": "s@example.com", "password": "s-password", "role": "customer"}, 422, "validation_error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			admin.t = t
			res := admin.do(tt.method, tt.path, tt.body)
			if res.Status != tt.status || errCode(res) != tt.code {
				t.Fatalf("got %d %s, want %d %s", res.Status, res.Raw, tt.status, tt.code)
			}
		})
	}
	admin.t = t
	res = admin.do("GET", "/api/admin/accounts/"+acc, nil)
	got := res.Body["account"].(map[string]any)
	if got["plan"] != "pro" || got["status"] != "suspended" {
		t.Fatalf("account after patches = %v", got)
	}
	// Health, metrics and the dashboard are served; the page's assets
	// come from this server only.
	for _, p := range []string{"/healthz", "/readyz", "/openapi.json", "/dashboard", "/dashboard/app.js", "/dashboard/app.css"} {
		if r := anon.do("GET", p, nil); r.Status != 200 {
			t.Fatalf("GET %s = %d %s", p, r.Status, r.Raw)
		}
	}
	page := anon.do("GET", "/dashboard", nil)
	if !strings.Contains(page.Raw, `src="/dashboard/app.js"`) || strings.Contains(page.Raw, "http://") || strings.Contains(page.Raw, "https://") {
		t.Fatalf("dashboard page refers outside this server:\n%s", page.Raw)
	}
	if r := anon.do("GET", "/metrics", nil); r.Status != 200 || !strings.Contains(r.Raw, "ledgerd_projection_position") {
		t.Fatalf("metrics: %d", r.Status)
	}
}

// TestRestartKeepsEverything stops ledgerd and starts it again on the same
// data dir: accounts, balances and logins are still there, nothing is
// applied twice, and the bootstrap (admin, demo credit) does not repeat.
func TestRestartKeepsEverything(t *testing.T) {
	dir := testDir(t)
	cfg := testConfig(t, dir)
	a := startApp(t, cfg)
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	demo := a.Bootstrap.DemoAccountID
	if !a.Bootstrap.DemoBalance.Equal(demoCredit) {
		t.Fatalf("demo balance = %s, want %s", a.Bootstrap.DemoBalance, demoCredit)
	}
	if r := admin.do("POST", "/api/admin/accounts/"+demo+"/topups", `{"amount":"12.34","reference":"before-restart"}`); r.Status != 201 {
		t.Fatalf("top-up: %d %s", r.Status, r.Raw)
	}
	cust, keeperAcc := customer(t, admin, "keeper@example.com", "standard")
	kept, _ := newKey(t, cust, map[string]any{"name": "kept"})
	gone, goneID := newKey(t, cust, map[string]any{"name": "gone"})
	if r := cust.do("DELETE", "/api/users/me/api-keys/"+goneID, nil); r.Status != 204 {
		t.Fatalf("revoke: %d", r.Status)
	}
	oldDemoKey := a.Bootstrap.DemoKey
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Projs.Runner("accounts").WaitFor(wctx, max(a.Ledger.AccountSeq(demo), a.Ledger.AccountSeq(keeperAcc))); err != nil {
		t.Fatal(err)
	}
	applied := a.Projs.Runner("accounts").Status().Events
	stopApp(t, a)

	a = startApp(t, cfg)
	defer stopApp(t, a)
	if a.Bootstrap.AdminCreated || a.Bootstrap.DemoAccountID != demo {
		t.Fatalf("second start bootstrapped again: %+v", a.Bootstrap)
	}
	admin = client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	demoUser := client{t: t, base: a.URL()}.login(a.Bootstrap.DemoEmail, a.Bootstrap.DemoPassword)
	r := demoUser.do("GET", "/api/v1/wallet", nil)
	if r.Status != 200 || r.Body["balance"] != "37.34" {
		t.Fatalf("wallet after restart: %d %s, want balance 37.34", r.Status, r.Raw)
	}
	// Keys and revocations survive; the demo key was rotated at start.
	anon := client{t: t, base: a.URL()}
	for key, want := range map[string]int{kept: 200, gone: 401, oldDemoKey: 401, a.Bootstrap.DemoKey: 200} {
		if r := withKey(anon, key).do("GET", "/api/v1/wallet", nil); r.Status != want {
			t.Fatalf("key after restart: %d, want %d (%s)", r.Status, want, r.Raw)
		}
	}
	// The same reference after the restart is still a replay.
	if r := admin.do("POST", "/api/admin/accounts/"+demo+"/topups", `{"amount":"12.34","reference":"before-restart"}`); r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay after restart: %d %s", r.Status, r.Raw)
	}
	// The only new account event is the demo key's rotation at start.
	wctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := a.Projs.Runner("accounts").WaitFor(wctx2, a.Ledger.AccountSeq(demo)); err != nil {
		t.Fatal(err)
	}
	if got := a.Projs.Runner("accounts").Status().Events; got != applied+1 {
		t.Fatalf("accounts projection has applied %d events after restart, want %d (nothing twice, plus the demo key rotation)", got, applied+1)
	}
}
