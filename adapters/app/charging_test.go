package app

import (
	"context"
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
	"github.com/ledgerd/ledgerd/domain/account"
)

// chargingEnv is an app with one funded customer and an admin.
type chargingEnv struct {
	a     *App
	admin client
	cust  client
	acc   string
	anon  client
}

func newChargingEnv(t *testing.T, extra map[string]string) chargingEnv {
	t.Helper()
	return newChargingEnvWith(t, extra, func(*Config) {})
}

// newChargingEnvWith is newChargingEnv with its configuration changed by
// tweak before the app starts.
func newChargingEnvWith(t *testing.T, extra map[string]string, tweak func(*Config)) chargingEnv {
	t.Helper()
	env := map[string]string{"LEDGER_CALLBACK_ALLOW_PRIVATE": "true", "LEDGER_SWEEP_INTERVAL": "100ms"}
	for k, v := range extra {
		env[k] = v
	}
	cfg := testConfigTB(t, testDirTB(t), env)
	tweak(&cfg)
	a := startAppTB(t, cfg)
	t.Cleanup(func() { stopApp(t, a) })
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	cust, acc := customer(t, admin, "payer@example.com", "api")
	return chargingEnv{a: a, admin: admin, cust: cust, acc: acc, anon: client{t: t, base: a.URL()}}
}

func (e chargingEnv) topUp(amount, ref string) {
	e.admin.t.Helper()
	if r := e.admin.do("POST", "/api/admin/accounts/"+e.acc+"/topups", map[string]string{"amount": amount, "reference": ref}); r.Status != 201 {
		e.admin.t.Fatalf("top-up: %d %s", r.Status, r.Raw)
	}
}

func (e chargingEnv) model(name string, def map[string]any) {
	e.admin.t.Helper()
	if r := e.admin.do("PUT", "/api/admin/models/"+name, def); r.Status != 200 {
		e.admin.t.Fatalf("put model %s: %d %s", name, r.Status, r.Raw)
	}
}

func (e chargingEnv) wallet() string {
	e.cust.t.Helper()
	r := e.cust.do("GET", "/api/v1/wallet", nil)
	if r.Status != 200 {
		e.cust.t.Fatalf("wallet: %d %s", r.Status, r.Raw)
	}
	return r.Body["balance"].(string) + "/" + r.Body["held"].(string) + "/" + r.Body["available"].(string)
}

func (e chargingEnv) messages() uint64 {
	n, err := e.a.store.Messages(context.Background())
	if err != nil {
		e.cust.t.Fatal(err)
	}
	return n
}

func image(prompt string) map[string]string {
	return map[string]string{"prompt": prompt, "model": "nano-banana-2", "size": "1024x1024"}
}

// TestExactlyKCallsSucceed: funds for exactly K calls, 4K concurrent
// calls over three keys: exactly K succeed, the rest are 402, and the
// wallet ends at exactly zero with nothing held.
func TestExactlyKCallsSucceed(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.model("flat-1", map[string]any{"type": "image", "price": "1.00", "provider": "local"})
	e.topUp("10.00", "fund")
	const k = 10
	var keys []string
	for i := range 3 {
		key, _ := newKey(t, e.cust, map[string]any{"name": fmt.Sprintf("k%d", i)})
		keys = append(keys, key)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	var taskIDs []string
	for i := range 4 * k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := withKey(e.anon, keys[i%len(keys)])
			c.t = t
			r := c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": fmt.Sprintf("p%d", i), "model": "flat-1"})
			mu.Lock()
			defer mu.Unlock()
			codes[r.Status]++
			switch r.Status {
			case 200:
				if r.Body["cost"] != "1.00" {
					t.Errorf("cost %v", r.Body["cost"])
				}
				taskIDs = append(taskIDs, r.Body["taskId"].(string))
			case 402:
				if errCode(r) != "insufficient_balance" {
					t.Errorf("402 with code %s", errCode(r))
				}
			}
		}()
	}
	wg.Wait()
	if codes[200] != k || codes[402] != 3*k {
		t.Fatalf("statuses %v, want %d×200 and %d×402", codes, k, 3*k)
	}
	if got := e.wallet(); got != "0.00/0.00/0.00" {
		t.Fatalf("wallet %s, want 0.00/0.00/0.00", got)
	}
	// Every successful call is a captured task.
	for _, id := range taskIDs {
		r := e.cust.do("GET", "/api/v1/tasks/"+id, nil)
		if r.Status != 200 || r.Body["status"] != "succeeded" || r.Body["cost"] != "1.00" {
			t.Fatalf("task %s: %d %s", id, r.Status, r.Raw)
		}
	}
}

func TestGenerationFailuresAreNotCharged(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("20.00", "fund")
	e.model("always-fails", map[string]any{"type": "image", "price": "1.00", "provider": "local", "options": map[string]any{"failure_rate": 1}})
	e.model("too-slow", map[string]any{"type": "image", "price": "1.00", "provider": "local", "options": map[string]any{"latency_ms": 5000, "timeout_ms": 200}})
	e.model("slow-video", map[string]any{"type": "video", "price": "2.00", "provider": "local", "options": map[string]any{"latency_ms": 5000, "timeout_ms": 200}})
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)

	r := c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "x", "model": "always-fails"})
	if r.Status != 502 || errCode(r) != "provider_error" {
		t.Fatalf("failing provider: %d %s", r.Status, r.Raw)
	}
	r = c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "x", "model": "too-slow"})
	if r.Status != 504 || errCode(r) != "provider_timeout" {
		t.Fatalf("slow provider: %d %s", r.Status, r.Raw)
	}
	r = c.do("POST", "/api/v1/video/generate", map[string]any{"prompt": "x", "model": "slow-video"})
	if r.Status != 504 {
		t.Fatalf("slow video: %d %s", r.Status, r.Raw)
	}
	// An async task that fails is recorded as failed, and released.
	r = c.do("POST", "/api/v1/generateTask/always-fails", map[string]any{"request_type": "async", "input": map[string]any{"prompt": "x"}})
	id, _ := r.Body["data"].(map[string]any)["taskId"].(string)
	var task response
	waitUntil(t, 5*time.Second, func() bool {
		task = c.do("GET", "/api/v1/tasks/"+id, nil)
		return task.Body["status"] == "failed"
	})
	if task.Body["cost"] != "0.00" || task.Body["error"].(map[string]any)["code"] != "provider_error" {
		t.Fatalf("failed task: %s", task.Raw)
	}
	if got := e.wallet(); got != "20.00/0.00/20.00" {
		t.Fatalf("wallet after failures %s, want 20.00/0.00/20.00", got)
	}
}

// TestBadGenerationInputReservesNothing: every rejection before the call
// leaves the stream and the wallet as they were.
func TestBadGenerationInputReservesNothing(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("10.00", "fund")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	videoOnly, _ := newKey(t, e.cust, map[string]any{"name": "video", "scopes": []string{"video:generate"}})
	pinned, _ := newKey(t, e.cust, map[string]any{"name": "pinned", "scopes": []string{"image:generate", "model:recraft-v3"}})
	quota, _ := newKey(t, e.cust, map[string]any{"name": "quota", "monthly_quota": map[string]any{"calls": 1}})
	big := `{"prompt":"` + strings.Repeat("x", 1<<20) + `","model":"nano-banana-2"}`
	before := e.messages()
	tests := []struct {
		name   string
		key    string
		path   string
		body   any
		status int
		code   string
	}{
		{"missing prompt", key, "/api/v1/image/generate", `{"model":"nano-banana-2"}`, 422, "validation_error"},
		{"blank prompt", key, "/api/v1/image/generate", `{"prompt":"   ","model":"nano-banana-2"}`, 422, "validation_error"},
		{"missing model", key, "/api/v1/image/generate", `{"prompt":"x"}`, 422, "validation_error"},
		{"unknown model", key, "/api/v1/image/generate", `{"prompt":"x","model":"nope"}`, 404, "not_found"},
		{"video model on image route", key, "/api/v1/image/generate", `{"prompt":"x","model":"kling-3"}`, 422, "validation_error"},
		{"size outside options", key, "/api/v1/image/generate", `{"prompt":"x","model":"nano-banana-2","size":"3x3"}`, 422, "validation_error"},
		{"duration outside options", key, "/api/v1/video/generate", `{"prompt":"x","model":"kling-3","duration":7}`, 422, "validation_error"},
		{"resolution outside options", key, "/api/v1/video/generate", `{"prompt":"x","model":"kling-3","resolution":"8k"}`, 422, "validation_error"},
		{"duration not a number", key, "/api/v1/video/generate", `{"prompt":"x","model":"kling-3","duration":"five"}`, 422, "validation_error"},
		{"unknown field", key, "/api/v1/image/generate", `{"prompt":"x","model":"nano-banana-2","seed":1}`, 422, "validation_error"},
		{"broken json", key, "/api/v1/image/generate", `{"prompt":`, 400, "invalid_json"},
		{"oversize body", key, "/api/v1/image/generate", big, 413, "payload_too_large"},
		{"scope", videoOnly, "/api/v1/image/generate", `{"prompt":"x","model":"nano-banana-2"}`, 403, "forbidden_scope"},
		{"model pin", pinned, "/api/v1/image/generate", `{"prompt":"x","model":"nano-banana-2"}`, 403, "forbidden_scope"},
		{"bad request_type", key, "/api/v1/generateTask/nano-banana-2", `{"request_type":"later","input":{"prompt":"x"}}`, 422, "validation_error"},
		{"no input", key, "/api/v1/generateTask/nano-banana-2", `{"request_type":"async"}`, 422, "validation_error"},
		{"bad callback", key, "/api/v1/generateTask/nano-banana-2", `{"input":{"prompt":"x"},"callback_url":"ftp://x"}`, 422, "validation_error"},
		{"no credentials", "", "/api/v1/image/generate", `{"prompt":"x","model":"nano-banana-2"}`, 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := withKey(e.anon, tt.key)
			c.t = t
			r := c.do("POST", tt.path, tt.body)
			if r.Status != tt.status || errCode(r) != tt.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, truncate(r.Raw), tt.status, tt.code)
			}
		})
	}
	if after := e.messages(); after != before {
		t.Fatalf("rejected calls appended %d events", after-before)
	}
	// The vendor's route carries top-level code and message on errors.
	r := withKey(e.anon, key).do("POST", "/api/v1/generateTask/nope", `{"input":{"prompt":"x"}}`)
	if r.Body["code"] != float64(404) || r.Body["message"] == nil || errCode(r) != "not_found" {
		t.Fatalf("generateTask error body: %s", r.Raw)
	}
	// The monthly quota: one call, then 429 with Retry-After.
	if r := withKey(e.anon, quota).do("POST", "/api/v1/image/generate", image("q1")); r.Status != 200 {
		t.Fatalf("first call within quota: %d %s", r.Status, r.Raw)
	}
	r = withKey(e.anon, quota).do("POST", "/api/v1/image/generate", image("q2"))
	if r.Status != 429 || errCode(r) != "quota_exceeded" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("over quota: %d %s", r.Status, r.Raw)
	}
	if got := e.wallet(); got != "9.20/0.00/9.20" {
		t.Fatalf("wallet %s, want 9.20/0.00/9.20 (one call)", got)
	}
}

func TestIdempotentGeneration(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("10.00", "fund")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)
	first := c.do("POST", "/api/v1/image/generate", image("same"), "Idempotency-Key", "order-1")
	if first.Status != 200 {
		t.Fatalf("first: %d %s", first.Status, first.Raw)
	}
	for range 3 {
		again := c.do("POST", "/api/v1/image/generate", image("same"), "Idempotency-Key", "order-1")
		if again.Status != 200 || again.Raw != first.Raw {
			t.Fatalf("retry: %d %s, want the first response %s", again.Status, again.Raw, first.Raw)
		}
	}
	r := c.do("POST", "/api/v1/image/generate", image("different"), "Idempotency-Key", "order-1")
	if r.Status != 409 || errCode(r) != "idempotency_conflict" {
		t.Fatalf("same key, other body: %d %s", r.Status, r.Raw)
	}
	// Concurrent retries of a new key: one call, one charge.
	var wg sync.WaitGroup
	ids := make(chan string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := c
			cc.t = t
			r := cc.do("POST", "/api/v1/generateTask/nano-banana-2", `{"request_type":"sync","input":{"prompt":"race"}}`, "Idempotency-Key", "order-2")
			if r.Status == 200 {
				ids <- r.Body["data"].(map[string]any)["taskId"].(string)
			} else {
				t.Errorf("concurrent retry: %d %s", r.Status, r.Raw)
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 {
		t.Fatalf("concurrent retries made %d tasks, want 1", len(seen))
	}
	if got := e.wallet(); got != "8.40/0.00/8.40" {
		t.Fatalf("wallet %s, want 8.40 (two calls charged)", got)
	}
	// Other POSTs: the same key replays a top-up's response.
	t1 := e.admin.do("POST", "/api/admin/accounts/"+e.acc+"/topups", map[string]string{"amount": "10.00", "reference": "ik-1"}, "Idempotency-Key", "topup-1")
	t2 := e.admin.do("POST", "/api/admin/accounts/"+e.acc+"/topups", map[string]string{"amount": "10.00", "reference": "ik-1"}, "Idempotency-Key", "topup-1")
	if t1.Status != 201 || t2.Raw != t1.Raw || t2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("top-up replay: %d %s / %d %s", t1.Status, t1.Raw, t2.Status, t2.Raw)
	}
	t3 := e.admin.do("POST", "/api/admin/accounts/"+e.acc+"/topups", map[string]string{"amount": "11.00", "reference": "ik-2"}, "Idempotency-Key", "topup-1")
	if t3.Status != 409 || errCode(t3) != "idempotency_conflict" {
		t.Fatalf("top-up key reuse: %d %s", t3.Status, t3.Raw)
	}
	// A replayed key creation names the key but never shows its secret again.
	k1 := e.cust.do("POST", "/api/users/me/api-keys", map[string]string{"name": "once"}, "Idempotency-Key", "key-1")
	k2 := e.cust.do("POST", "/api/users/me/api-keys", map[string]string{"name": "once"}, "Idempotency-Key", "key-1")
	if k1.Status != 201 || k2.Status != 201 || k2.Body["id"] != k1.Body["id"] || k2.Body["key"] != nil || k1.Body["key"] == nil {
		t.Fatalf("key creation replay: %s / %s", k1.Raw, k2.Raw)
	}
}

func TestPriceChangeAppliesToLaterCalls(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("10.00", "fund")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)
	r1 := c.do("POST", "/api/v1/image/generate", image("before"))
	e.model("nano-banana-2", map[string]any{"type": "image", "price": "1.10", "provider": "local"})
	r2 := c.do("POST", "/api/v1/image/generate", image("after"))
	if r1.Body["cost"] != "0.80" || r2.Body["cost"] != "1.10" {
		t.Fatalf("costs %v then %v, want 0.80 then 1.10", r1.Body["cost"], r2.Body["cost"])
	}
	models := e.anon.do("GET", "/api/v1/models", nil)
	if !strings.Contains(models.Raw, `"model":"nano-banana-2","price":"1.10"`) && !strings.Contains(models.Raw, `"price":"1.10"`) {
		t.Fatalf("price list: %s", models.Raw)
	}
	if got := e.wallet(); got != "8.10/0.00/8.10" {
		t.Fatalf("wallet %s, want 8.10", got)
	}
	// Invalid price changes are refused and change nothing.
	for _, body := range []map[string]any{
		{"type": "image", "price": "0", "provider": "local"},
		{"type": "audio", "price": "1.00", "provider": "local"},
		{"type": "image", "price": "1.00", "provider": "acme"},
		{"type": "image", "price": "1.001", "provider": "local"},
		{"type": "image", "price": "1.00", "provider": "local", "options": map[string]any{"failure_rate": 3}},
	} {
		if r := e.admin.do("PUT", "/api/admin/models/nano-banana-2", body); r.Status != 422 {
			t.Fatalf("invalid model %v: %d %s", body, r.Status, r.Raw)
		}
	}
	if r := e.cust.do("PUT", "/api/admin/models/nano-banana-2", map[string]any{"type": "image", "price": "0.01", "provider": "local"}); r.Status != 403 {
		t.Fatalf("customer changing prices: %d", r.Status)
	}
}

func TestAsyncTaskWithSignedCallback(t *testing.T) {
	type delivery struct {
		sig  string
		body []byte
	}
	got := make(chan delivery, 4)
	fails := 1
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 { // the first delivery fails: it must be retried
			fails--
			w.WriteHeader(503)
			return
		}
		got <- delivery{r.Header.Get("X-Ledger-Signature"), b}
	}))
	defer srv.Close()
	e := newChargingEnv(t, map[string]string{"LEDGER_CALLBACK_BASE_DELAY": "100ms"})
	e.topUp("10.00", "fund")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k", "scopes": []string{"image:generate", "tasks:read", "keys:manage"}})
	c := withKey(e.anon, key)
	r := c.do("POST", "/api/v1/generateTask/nano-banana-2", map[string]any{
		"request_type": "async", "input": map[string]any{"prompt": "A sunset", "aspect_ratio": "16:9"}, "callback_url": srv.URL + "/hook"})
	if r.Status != 200 || r.Body["code"] != float64(200) || r.Body["message"] != "success" {
		t.Fatalf("async: %d %s", r.Status, r.Raw)
	}
	id := r.Body["data"].(map[string]any)["taskId"].(string)
	secret := c.do("GET", "/api/v1/webhook-secret", nil).Body["secret"].(string)
	select {
	case d := <-got:
		var body map[string]any
		if err := json.Unmarshal(d.body, &body); err != nil || body["taskId"] != id || body["status"] != "succeeded" || body["cost"] != "0.80" {
			t.Fatalf("callback body %s", d.body)
		}
		ts := strings.TrimPrefix(strings.Split(d.sig, ",")[0], "t=")
		var unix int64
		fmt.Sscan(ts, &unix)
		if want := callbacks.Sign(secret, time.Unix(unix, 0), d.body); d.sig != want {
			t.Fatalf("signature %s, want %s", d.sig, want)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no callback delivered")
	}
}

// TestNewAccountReadsItsOwnWallet: an account created a moment ago is
// readable at once by its owner (the read waits for the wallet read
// model to show the creation instead of answering 404).
func TestNewAccountReadsItsOwnWallet(t *testing.T) {
	e := newChargingEnv(t, nil)
	for i := range 15 {
		email := fmt.Sprintf("fresh%d@example.com", i)
		pw := "password-" + email
		if r := e.admin.do("POST", "/api/admin/accounts", map[string]string{"email": email, "password": pw, "plan": "api"}); r.Status != 201 {
			t.Fatalf("create: %d %s", r.Status, r.Raw)
		}
		c := client{t: t, base: e.a.URL()}.login(email, pw)
		if w := c.do("GET", "/api/v1/wallet", nil); w.Status != 200 || w.Body["balance"] != "0.00" {
			t.Fatalf("account %d: wallet right after creation: %d %s", i, w.Status, w.Raw)
		}
	}
}

// TestCallEndedElsewhereAnswersItsOutcome: when a call's outcome is
// written by someone else than its runner (its own capture whose answer
// was lost and is then found done, another instance's sweeper), the
// caller gets what the task came to, charged once, never a 503, which
// says nothing was charged.
func TestCallEndedElsewhereAnswersItsOutcome(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("10.00", "fund")
	e.model("slowish", map[string]any{"type": "image", "price": "1.00", "provider": "local", "options": map[string]any{"latency_ms": 1500}})
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)

	answered := make(chan response, 1)
	go func() {
		cc := c
		cc.t = t
		answered <- cc.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "x", "model": "slowish"}, "Idempotency-Key", "elsewhere-1")
	}()
	ctx := context.Background()
	var taskID string
	waitUntil(t, 5*time.Second, func() bool {
		row, err := e.a.reader.TaskByIdempotencyKey(ctx, e.acc, "elsewhere-1")
		taskID = row.ID
		return err == nil
	})
	// The capture lands before the call's own runner gets to record it.
	out := account.TaskOutput{ImageURL: "http://elsewhere.example/a.png", URLs: []string{"http://elsewhere.example/a.png"}}
	if err := e.a.Ledger.CompleteTask(ctx, e.acc, taskID, out); err != nil {
		t.Fatal(err)
	}
	r := <-answered
	if r.Status != 200 || r.Body["taskId"] != taskID || r.Body["imageUrl"] != out.ImageURL || r.Body["cost"] != "1.00" {
		t.Fatalf("call ended elsewhere: %d %s, want 200 with the recorded outcome", r.Status, r.Raw)
	}
	if got := e.wallet(); got != "9.00/0.00/9.00" {
		t.Fatalf("wallet %s, want 9.00 (charged once)", got)
	}
}
