package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/adapters/callbacks"
)

func TestSignupOffByDefault(t *testing.T) {
	a := startApp(t, testConfig(t, testDir(t)))
	defer stopApp(t, a)
	anon := client{t: t, base: a.URL()}
	r := anon.do("POST", "/api/auth/signup", map[string]string{"email": "new@example.com", "password": "long-enough"})
	if r.Status != 403 || errCode(r) != "forbidden" {
		t.Fatalf("signup while off: %d %s", r.Status, r.Raw)
	}
	if r := anon.do("POST", "/api/auth/login", map[string]string{"email": "new@example.com", "password": "long-enough"}); r.Status != 401 {
		t.Fatalf("login after refused signup: %d %s", r.Status, r.Raw)
	}
}

func TestSignup(t *testing.T) {
	a := startApp(t, testConfigTB(t, testDir(t), map[string]string{"LEDGER_OPEN_SIGNUP": "true", "LEDGER_SIGNUP_RATE": "4"}))
	defer stopApp(t, a)
	anon := client{t: t, base: a.URL()}
	r := anon.do("POST", "/api/auth/signup", map[string]string{"email": "New@Example.com", "password": "long-enough"})
	if r.Status != 201 || r.Body["plan"] != "free" || r.Body["email"] != "new@example.com" || !strings.HasPrefix(r.Body["id"].(string), "acc_") {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	// The new user logs in at once, owns the account, and (plan free)
	// may not generate.
	c := anon.login("new@example.com", "long-enough")
	key, _ := newKey(t, c, map[string]any{"name": "k"})
	if r := withKey(anon, key).do("POST", "/api/v1/image/generate", image("a cat")); r.Status != 403 || errCode(r) != "plan_required" {
		t.Fatalf("generate on free: %d %s", r.Status, r.Raw)
	}
	tests := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"same email again", map[string]string{"email": "new@example.com", "password": "long-enough"}, 409, "email_taken"},
		{"short password", map[string]string{"email": "b@example.com", "password": "short"}, 422, "validation_error"},
		{"bad email", map[string]string{"email": "not-an-email", "password": "long-enough"}, 422, "validation_error"},
		// The limit (4 an hour) is reached: every attempt counts.
		{"rate limited", map[string]string{"email": "c@example.com", "password": "long-enough"}, 429, "rate_limited"},
	}
	for _, tt := range tests {
		r := anon.do("POST", "/api/auth/signup", tt.body)
		if r.Status != tt.status || errCode(r) != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, r.Status, r.Raw, tt.status, tt.code)
		}
		if tt.status == 429 && r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After", tt.name)
		}
	}
	if r := anon.do("POST", "/api/auth/login", map[string]string{"email": "c@example.com", "password": "long-enough"}); r.Status != 401 {
		t.Fatalf("a rate-limited signup created a user: %d", r.Status)
	}
}

type alertDelivery struct {
	sig, event string
	body       []byte
}

// alertReceiver records signed deliveries; the first `fail` fail.
func alertReceiver(t *testing.T, fail int) (*httptest.Server, func() []alertDelivery, func() int) {
	var mu sync.Mutex
	var got []alertDelivery
	attempts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if fail > 0 {
			fail--
			w.WriteHeader(503)
			return
		}
		got = append(got, alertDelivery{r.Header.Get("X-Ledger-Signature"), r.Header.Get("X-Ledger-Event"), b})
	}))
	t.Cleanup(srv.Close)
	return srv, func() []alertDelivery {
			mu.Lock()
			defer mu.Unlock()
			return append([]alertDelivery(nil), got...)
		}, func() int {
			mu.Lock()
			defer mu.Unlock()
			return attempts
		}
}

func TestLowBalanceAlert(t *testing.T) {
	srv, delivered, attempts := alertReceiver(t, 1)
	e := newChargingEnv(t, map[string]string{"LEDGER_CALLBACK_BASE_DELAY": "100ms"})
	e.model("flat-3", map[string]any{"type": "image", "price": "3.00", "provider": "local"})
	e.topUp("10.00", "fund")
	call := func() {
		t.Helper()
		if r := e.cust.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "p", "model": "flat-3"}); r.Status != 200 {
			t.Fatalf("call: %d %s", r.Status, r.Raw)
		}
	}
	bad := []struct {
		name, body, field string
	}{
		{"no url", `{"low_balance_threshold":"5.00"}`, "webhook_url"},
		{"not http", `{"low_balance_threshold":"5.00","webhook_url":"ftp://x.example.com/"}`, "webhook_url"},
		{"credentials in url", `{"low_balance_threshold":"5.00","webhook_url":"https://u:p@x.example.com/"}`, "webhook_url"},
		{"negative", `{"low_balance_threshold":"-1.00","webhook_url":"https://x.example.com/"}`, "low_balance_threshold"},
		{"threshold missing", `{"webhook_url":"https://x.example.com/"}`, "low_balance_threshold"},
		{"too precise", `{"low_balance_threshold":"1.001","webhook_url":"https://x.example.com/"}`, "low_balance_threshold"},
	}
	for _, tt := range bad {
		r := e.cust.do("PUT", "/api/v1/notifications", tt.body)
		details, _ := r.Body["error"].(map[string]any)["details"].([]any)
		if r.Status != 422 || len(details) == 0 || details[0].(map[string]any)["field"] != tt.field {
			t.Errorf("%s: %d %s, want 422 on %s", tt.name, r.Status, r.Raw, tt.field)
		}
	}
	r := e.cust.do("PUT", "/api/v1/notifications", map[string]any{"low_balance_threshold": "5.00", "webhook_url": srv.URL + "/alerts"})
	if r.Status != 200 || r.Body["low_balance_threshold"] != "5.00" || r.Body["armed"] != true {
		t.Fatalf("put: %d %s", r.Status, r.Raw)
	}
	if g := e.cust.do("GET", "/api/v1/notifications", nil); g.Body["webhook_url"] != srv.URL+"/alerts" || g.Body["armed"] != true {
		t.Fatalf("get: %s", g.Raw)
	}
	secret := e.cust.do("GET", "/api/v1/webhook-secret", nil).Body["secret"].(string)

	call() // 7.00: above
	call() // 4.00: crosses
	call() // 1.00: already below, nothing more
	waitUntil(t, 15*time.Second, func() bool { return len(delivered()) >= 1 })
	d := delivered()[0]
	var body struct {
		ID, Type string
		Data     map[string]string
	}
	if err := json.Unmarshal(d.body, &body); err != nil || body.Type != "wallet.low_balance" || d.event != "wallet.low_balance" ||
		body.Data["available"] != "4.00" || body.Data["threshold"] != "5.00" || body.Data["account_id"] != e.acc {
		t.Fatalf("delivery %s (event header %q)", d.body, d.event)
	}
	var unix int64
	fmt.Sscan(strings.TrimPrefix(strings.Split(d.sig, ",")[0], "t="), &unix)
	if want := callbacks.Sign(secret, time.Unix(unix, 0), d.body); d.sig != want {
		t.Fatalf("signature %s, want %s", d.sig, want)
	}
	if n := attempts(); n != 2 {
		t.Fatalf("%d attempts, want 2 (the first failed and was retried)", n)
	}
	// The attempts are recorded on the account and shown.
	waitUntil(t, 10*time.Second, func() bool {
		g := e.cust.do("GET", "/api/v1/notifications", nil)
		alerts, _ := g.Body["recent_alerts"].([]any)
		return len(alerts) == 1 && alerts[0].(map[string]any)["status"] == "delivered" && alerts[0].(map[string]any)["attempts"] == float64(2)
	})

	// Topping up re-arms; falling to the threshold is not below it;
	// falling below it alerts once more.
	e.topUp("10.00", "fund-2") // 11.00
	call()                     // 8.00
	call()                     // 5.00
	if n := len(delivered()); n != 1 {
		t.Fatalf("%d deliveries before the second crossing, want 1", n)
	}
	call() // 2.00
	waitUntil(t, 15*time.Second, func() bool { return len(delivered()) >= 2 })
	var second struct {
		ID   string
		Data map[string]string
	}
	_ = json.Unmarshal(delivered()[1].body, &second)
	if second.ID == body.ID || second.Data["available"] != "2.00" {
		t.Fatalf("second alert %s", delivered()[1].body)
	}
	verified(t, e.admin)
	// Nothing else is delivered: each crossing once.
	time.Sleep(500 * time.Millisecond)
	if n := len(delivered()); n != 2 {
		t.Fatalf("%d deliveries, want 2", n)
	}
	// Turning the alert off.
	if r := e.cust.do("PUT", "/api/v1/notifications", `{"low_balance_threshold":null}`); r.Status != 200 || r.Body["low_balance_threshold"] != nil {
		t.Fatalf("off: %d %s", r.Status, r.Raw)
	}
}
