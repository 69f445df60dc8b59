package app

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"
)

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startAppWithLog(t *testing.T, cfg Config, w *syncBuffer) *App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := Start(ctx, cfg, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return a
}

// customer creates an account with plan and logs its user in.
func customer(t *testing.T, admin client, email, plan string) (client, string) {
	t.Helper()
	res := admin.do("POST", "/api/admin/accounts", map[string]string{"email": email, "password": "password-" + email, "plan": plan})
	if res.Status != http.StatusCreated {
		t.Fatalf("create account %s: %d %s", email, res.Status, res.Raw)
	}
	return client{t: t, base: admin.base}.login(email, "password-"+email), res.Body["id"].(string)
}

// newKey creates a key and returns its secret and id.
func newKey(t *testing.T, c client, body any) (string, string) {
	t.Helper()
	res := c.do("POST", "/api/users/me/api-keys", body)
	if res.Status != http.StatusCreated {
		t.Fatalf("create key: %d %s", res.Status, res.Raw)
	}
	return res.Body["key"].(string), res.Body["id"].(string)
}

func withKey(c client, key string) client {
	c.token = key
	return c
}

func TestAPIKeyLifecycle(t *testing.T) {
	logs := &syncBuffer{}
	a := startAppWithLog(t, testConfig(t, testDir(t)), logs)
	defer stopApp(t, a)
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	alice, aliceAcc := customer(t, admin, "alice@example.com", "standard")
	bob, _ := customer(t, admin, "bob@example.com", "pro")
	var secrets []string

	res := alice.do("POST", "/api/users/me/api-keys", map[string]any{"name": "CI pipeline"})
	if res.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", res.Status, res.Raw)
	}
	key, id := res.Body["key"].(string), res.Body["id"].(string)
	secrets = append(secrets, key)
	if !strings.HasPrefix(key, "nx_live_") || len(key) != len("nx_live_")+32 || !strings.HasPrefix(id, "key_") ||
		res.Body["last4"] != key[len(key)-4:] || res.Body["last_used_at"] != nil || res.Body["created_at"] == nil {
		t.Fatalf("created key = %s", res.Raw)
	}
	if got := fmt.Sprint(res.Body["scopes"]); got != "[image:generate video:generate director:generate tasks:read usage:read]" {
		t.Fatalf("default scopes = %s", got)
	}

	// The list shows the key but never its secret.
	list := alice.do("GET", "/api/users/me/api-keys", nil)
	if list.Status != 200 || strings.Contains(list.Raw, key) || !strings.Contains(list.Raw, id) || !strings.Contains(list.Raw, `"usage_this_month"`) {
		t.Fatalf("list: %d %s", list.Status, list.Raw)
	}

	// The key authenticates by Bearer and by x-api-key in any case.
	if r := withKey(alice, key).do("GET", "/api/v1/wallet", nil); r.Status != 200 {
		t.Fatalf("wallet by bearer key: %d %s", r.Status, r.Raw)
	}
	anon := client{t: t, base: a.URL()}
	for _, h := range []string{"x-api-key", "X-API-KEY", "X-Api-Key"} {
		if r := anon.do("GET", "/api/v1/wallet", nil, h, key); r.Status != 200 {
			t.Fatalf("wallet by %s: %d %s", h, r.Status, r.Raw)
		}
	}
	// The query form is off by default.
	if r := anon.do("GET", "/api/v1/wallet?api_key="+key, nil); r.Status != 401 {
		t.Fatalf("?api_key= with the option off: %d, want 401", r.Status)
	}

	// Tenant isolation: another account cannot see, rotate or revoke it.
	if r := bob.do("GET", "/api/users/me/api-keys", nil); strings.Contains(r.Raw, id) {
		t.Fatalf("bob sees alice's key: %s", r.Raw)
	}
	for _, r := range []response{
		bob.do("POST", "/api/users/me/api-keys/"+id+"/rotate", nil),
		bob.do("DELETE", "/api/users/me/api-keys/"+id, nil),
	} {
		if r.Status != 404 || errCode(r) != "not_found" {
			t.Fatalf("bob acting on alice's key: %d %s, want 404", r.Status, r.Raw)
		}
	}

	// Rotate: same id and settings, new secret; the old one is refused at once.
	rot := alice.do("POST", "/api/users/me/api-keys/"+id+"/rotate", nil)
	newSecret, _ := rot.Body["key"].(string)
	secrets = append(secrets, newSecret)
	if rot.Status != 200 || rot.Body["id"] != id || newSecret == key || rot.Body["name"] != "CI pipeline" {
		t.Fatalf("rotate: %d %s", rot.Status, rot.Raw)
	}
	if r := withKey(alice, key).do("GET", "/api/v1/wallet", nil); r.Status != 401 || errCode(r) != "unauthorized" {
		t.Fatalf("old secret after rotation: %d %s, want 401", r.Status, r.Raw)
	}
	if r := withKey(alice, newSecret).do("GET", "/api/v1/wallet", nil); r.Status != 200 {
		t.Fatalf("new secret after rotation: %d %s", r.Status, r.Raw)
	}

	// A key with keys:manage can manage keys; revoking is 204 and final.
	mgr, mgrID := newKey(t, alice, map[string]any{"name": "manager", "scopes": []string{"keys:manage"}})
	secrets = append(secrets, mgr)
	if r := withKey(alice, mgr).do("DELETE", "/api/users/me/api-keys/"+id, nil); r.Status != 204 || r.Raw != "" {
		t.Fatalf("revoke: %d %q", r.Status, r.Raw)
	}
	if r := withKey(alice, newSecret).do("GET", "/api/v1/wallet", nil); r.Status != 401 || strings.Contains(r.Raw, newSecret[8:]) {
		t.Fatalf("revoked key: %d %s, want 401 without the key in the body", r.Status, r.Raw)
	}
	if r := alice.do("DELETE", "/api/users/me/api-keys/"+id, nil); r.Status != 404 {
		t.Fatalf("revoking twice: %d, want 404", r.Status)
	}
	if r := alice.do("GET", "/api/users/me/api-keys", nil); strings.Contains(r.Raw, id) || !strings.Contains(r.Raw, mgrID) {
		t.Fatalf("list after revoke: %s", r.Raw)
	}
	if r := alice.do("GET", "/api/users/me/api-keys?include_revoked=true", nil); !strings.Contains(r.Raw, `"revoked"`) {
		t.Fatalf("list with revoked: %s", r.Raw)
	}
	// Admins see any account's keys.
	if r := admin.do("GET", "/api/admin/accounts/"+aliceAcc+"/api-keys", nil); r.Status != 200 || !strings.Contains(r.Raw, mgrID) {
		t.Fatalf("admin key list: %d %s", r.Status, r.Raw)
	}

	// last_used_at is recorded (batched, within about a second).
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := alice.do("GET", "/api/users/me/api-keys?include_revoked=true", nil)
		if strings.Contains(r.Raw, `"last_used_at":"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("last_used_at never set: %s", r.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Every bad request about keys, through the contract.
	secrets = append(secrets, keyStatusCases(t, a, admin, alice)...)

	// No secret anywhere it could leak: logs, events, read models.
	scanForSecrets(t, a, logs.String(), secrets)
}

// keyStatusCases checks every status of the error table keys can cause and
// returns the secrets it created.
func keyStatusCases(t *testing.T, a *App, admin, alice client) []string {
	t.Helper()
	anon := client{t: t, base: a.URL()}
	var secrets []string
	mk := func(body map[string]any) string {
		k, _ := newKey(t, alice, body)
		secrets = append(secrets, k)
		return k
	}
	narrow := mk(map[string]any{"name": "images only", "scopes": []string{"image:generate"}})
	elsewhere := mk(map[string]any{"name": "office", "ip_allowlist": []string{"10.0.0.0/8", "2001:db8::/32"}})
	limited := mk(map[string]any{"name": "slow", "rate_limit_per_minute": 2})
	soon := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	expiring := mk(map[string]any{"name": "short-lived", "expires_at": soon})

	free, _ := customer(t, admin, "freeloader@example.com", "free")
	freeKey, _ := newKey(t, free, map[string]any{"name": "free"})
	susp, suspAcc := customer(t, admin, "suspended@example.com", "standard")
	suspKey, _ := newKey(t, susp, map[string]any{"name": "susp"})
	secrets = append(secrets, freeKey, suspKey)
	if r := admin.do("PATCH", "/api/admin/accounts/"+suspAcc, map[string]string{"status": "suspended"}); r.Status != 200 {
		t.Fatalf("suspend: %d %s", r.Status, r.Raw)
	}

	tests := []struct {
		name   string
		key    string
		path   string
		hdr    []string
		status int
		code   string
	}{
		{"no credential", "", "/api/v1/wallet", nil, 401, "unauthorized"},
		{"malformed key", "nx_live_tooshort", "/api/v1/wallet", nil, 401, "unauthorized"},
		{"unknown key", "nx_live_" + strings.Repeat("A", 32), "/api/v1/wallet", nil, 401, "unauthorized"},
		{"other prefix", "sk_test_" + strings.Repeat("A", 32), "/api/v1/wallet", nil, 401, "unauthorized"},
		{"missing scope", narrow, "/api/v1/wallet", nil, 403, "forbidden_scope"},
		{"missing keys:manage", narrow, "/api/users/me/api-keys", nil, 403, "forbidden_scope"},
		{"ip outside allowlist", elsewhere, "/api/v1/wallet", nil, 403, "forbidden_ip"},
		{"forwarded-for from an untrusted peer is ignored", elsewhere, "/api/v1/wallet", []string{"X-Forwarded-For", "10.1.2.3"}, 403, "forbidden_ip"},
		{"free plan", freeKey, "/api/v1/wallet", nil, 403, "plan_required"},
		{"suspended account", suspKey, "/api/v1/wallet", nil, 403, "forbidden"},
		{"key on a staff endpoint", limited, "/api/admin/projections", nil, 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := anon
			c.t, c.token = t, tt.key
			r := c.do("GET", tt.path, nil, tt.hdr...)
			if r.Status != tt.status || errCode(r) != tt.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, tt.status, tt.code)
			}
		})
	}

	// Rate limit: two a minute, the third is 429 with Retry-After.
	for i := range 2 {
		if r := withKey(anon, limited).do("GET", "/api/v1/wallet", nil); r.Status != 200 {
			t.Fatalf("request %d within the limit: %d", i, r.Status)
		}
	}
	r := withKey(anon, limited).do("GET", "/api/v1/wallet", nil)
	if r.Status != 429 || errCode(r) != "rate_limited" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d %s (Retry-After %q)", r.Status, r.Raw, r.Header.Get("Retry-After"))
	}

	// Expiry: works until expires_at, 401 after.
	if r := withKey(anon, expiring).do("GET", "/api/v1/wallet", nil); r.Status != 200 {
		t.Fatalf("before expiry: %d", r.Status)
	}
	until, _ := time.Parse(time.RFC3339Nano, soon)
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	if r := withKey(anon, expiring).do("GET", "/api/v1/wallet", nil); r.Status != 401 {
		t.Fatalf("after expiry: %d, want 401", r.Status)
	}

	// Validation: each is 422 with the field named, and creates nothing.
	before := alice.do("GET", "/api/users/me/api-keys", nil).Raw
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, tt := range []struct {
		body  string
		field string
	}{
		{`{"name":""}`, "name"},
		{`{"name":"` + strings.Repeat("n", 200) + `"}`, "name"},
		{`{"name":"x","scopes":["image:generate","root"]}`, "scopes[1]"},
		{`{"name":"x","ip_allowlist":["10.0.0.0/40"]}`, "ip_allowlist[0]"},
		{`{"name":"x","ip_allowlist":["not-an-ip"]}`, "ip_allowlist[0]"},
		{`{"name":"x","expires_at":"` + past + `"}`, "expires_at"},
		{`{"name":"x","expires_at":"tomorrow"}`, "expires_at"},
		{`{"name":"x","monthly_quota":{"calls":-1}}`, "monthly_quota.calls"},
		{`{"name":"x","monthly_quota":{"spend":"1.001"}}`, "monthly_quota.spend"},
		{`{"name":"x","monthly_quota":{"minutes":5}}`, "monthly_quota.minutes"},
		{`{"name":"x","admin":true}`, "admin"},
		{`{"name":"x","rate_limit_per_minute":0}`, "rate_limit_per_minute"},
	} {
		r := alice.do("POST", "/api/users/me/api-keys", tt.body)
		details, _ := r.Body["error"].(map[string]any)["details"].([]any)
		if r.Status != 422 || errCode(r) != "validation_error" || len(details) == 0 || details[0].(map[string]any)["field"] != tt.field {
			t.Errorf("%s: %d %s, want 422 on %s", tt.body, r.Status, r.Raw, tt.field)
		}
	}
	if after := alice.do("GET", "/api/users/me/api-keys", nil).Raw; after != before {
		t.Fatalf("invalid creations changed the key list")
	}
	return secrets
}

// TestSixthKeyUnderConcurrency: ten concurrent creations on an account
// with no keys: exactly five succeed, whatever the interleaving.
func TestSixthKeyUnderConcurrency(t *testing.T) {
	a := startApp(t, testConfig(t, testDir(t)))
	defer stopApp(t, a)
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	c, _ := customer(t, admin, "busy@example.com", "api")
	var wg sync.WaitGroup
	codes := make(chan int, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := c
			cc.t = t
			r := cc.do("POST", "/api/users/me/api-keys", map[string]any{"name": fmt.Sprintf("k%d", i)})
			if r.Status == 409 && errCode(r) != "key_limit_reached" {
				t.Errorf("409 with code %s", errCode(r))
			}
			codes <- r.Status
		}()
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for code := range codes {
		count[code]++
	}
	if count[201] != 5 || count[409] != 5 {
		t.Fatalf("statuses = %v, want five 201 and five 409", count)
	}
	// Revoking one frees a place.
	r := c.do("GET", "/api/users/me/api-keys", nil)
	var first string
	if list, ok := r.Body["error"]; ok {
		t.Fatalf("list: %v", list)
	}
	if i := strings.Index(r.Raw, `"id":"`); i >= 0 {
		first = r.Raw[i+6 : i+6+len("key_")+26]
	}
	if r := c.do("DELETE", "/api/users/me/api-keys/"+first, nil); r.Status != 204 {
		t.Fatalf("revoke %s: %d %s", first, r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/users/me/api-keys", map[string]any{"name": "again"}); r.Status != 201 {
		t.Fatalf("create after revoke: %d %s", r.Status, r.Raw)
	}
}

// scanForSecrets fails if any secret appears in the logs, in any stored
// event, or in any read-model table.
func scanForSecrets(t *testing.T, a *App, logs string, secrets []string) {
	t.Helper()
	ctx := context.Background()
	var haystacks []struct{ where, text string }
	haystacks = append(haystacks, struct{ where, text string }{"logs", logs})

	js, err := jetstream.New(a.nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, a.store.StreamName(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := a.store.Messages(ctx)
	batch, err := cons.Fetch(int(n), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var events strings.Builder
	got := 0
	for m := range batch.Messages() {
		events.Write(m.Data())
		fmt.Fprint(&events, m.Headers())
		got++
	}
	if uint64(got) != n {
		t.Fatalf("read %d of %d events", got, n)
	}
	haystacks = append(haystacks, struct{ where, text string }{"events", events.String()})

	for _, table := range []string{"accounts", "wallets", "topups", "users", "api_keys", "projection_positions"} {
		var rows []string
		if err := a.db.NewRaw("SELECT row_to_json(t)::text FROM ? t", bun.Ident(table)).Scan(ctx, &rows); err != nil {
			t.Fatal(err)
		}
		haystacks = append(haystacks, struct{ where, text string }{"table " + table, strings.Join(rows, "\n")})
	}
	for _, s := range secrets {
		if s == "" {
			t.Fatal("empty secret in the scan list")
		}
		secretPart := s[len("nx_live_"):]
		for _, h := range haystacks {
			if strings.Contains(h.text, secretPart) {
				t.Errorf("a key secret appears in %s", h.where)
			}
		}
	}
	if !strings.Contains(haystacks[1].text, "account.key_created") {
		t.Fatal("scan saw no key events: the scan is not looking at the right stream")
	}
}
