package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeFal speaks fal's queue API: each model path behaves as its name says.
type fakeFal struct {
	srv       *httptest.Server
	mu        sync.Mutex
	polls     map[string]int
	cancelled atomic.Int32
	submits   atomic.Int32
	sawKey    atomic.Bool
}

func newFakeFal(t *testing.T) *fakeFal {
	f := &fakeFal{polls: map[string]int{}}
	write := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Key fal-secret-key" {
			f.sawKey.Store(true)
		}
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		app := parts[0] + "/" + parts[1]
		base := f.srv.URL + "/" + app + "/requests/"
		switch {
		case r.Method == "POST" && len(parts) == 2:
			f.submits.Add(1)
			switch parts[1] {
			case "bad":
				write(w, 422, map[string]any{"detail": []any{map[string]any{"loc": []string{"body", "prompt"}, "msg": "prompt is not allowed", "type": "value_error"}}})
				return
			case "down":
				write(w, 503, map[string]any{"detail": "service unavailable"})
				return
			}
			id := "req-" + parts[1]
			write(w, 200, map[string]any{"request_id": id, "response_url": base + id, "status_url": base + id + "/status", "cancel_url": base + id + "/cancel"})
		case r.Method == "GET" && len(parts) == 5 && parts[4] == "status":
			f.mu.Lock()
			f.polls[parts[1]]++
			n := f.polls[parts[1]]
			f.mu.Unlock()
			if parts[1] == "slow" || n < 2 || (parts[1] == "later" && n < 8) {
				write(w, 202, map[string]any{"status": "IN_PROGRESS"})
				return
			}
			write(w, 200, map[string]any{"status": "COMPLETED"})
		case r.Method == "GET" && len(parts) == 4:
			write(w, 200, map[string]any{"images": []any{map[string]any{"url": "https://fal.media/files/out.png"}}, "prompt": "A polished prompt."})
		case r.Method == "PUT" && len(parts) == 5 && parts[4] == "cancel":
			f.cancelled.Add(1)
			write(w, 202, map[string]any{"status": "CANCELLATION_REQUESTED"})
		default:
			write(w, 404, map[string]any{"detail": "not found"})
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// TestFalThroughLedgerd: a model mapped to fal is charged when fal
// succeeds, and not charged for each way it can fail; while fal is down
// its circuit opens and calls are refused before anything is reserved.
func TestFalThroughLedgerd(t *testing.T) {
	f := newFakeFal(t)
	e := newChargingEnv(t, map[string]string{"FAL_KEY": "fal-secret-key", "LEDGER_FAL_QUEUE_URL": f.srv.URL,
		"LEDGER_BREAKER_THRESHOLD": "2", "LEDGER_BREAKER_COOLDOWN": "1h"})
	e.topUp("20.00", "fund")
	for name, opts := range map[string]map[string]any{
		"ok": nil, "bad": nil, "slow": {"timeout_ms": 700}, "down": {"timeout_ms": 600},
	} {
		e.model("fal-"+name, map[string]any{"type": "image", "price": "1.00", "provider": "fal", "provider_model": "fal-ai/" + name, "options": opts})
	}
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)

	r := c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "a cat", "model": "fal-ok"})
	if r.Status != 200 || r.Body["imageUrl"] != "https://fal.media/files/out.png" || r.Body["enhancedPrompt"] != "A polished prompt." || r.Body["cost"] != "1.00" {
		t.Fatalf("fal success: %d %s", r.Status, r.Raw)
	}
	if !f.sawKey.Load() {
		t.Fatal("fal never saw the key in Authorization: Key")
	}
	r = c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "a cat", "model": "fal-bad"})
	if r.Status != 422 || errCode(r) != "validation_error" || !strings.Contains(r.Raw, "prompt is not allowed") {
		t.Fatalf("fal rejecting the input: %d %s", r.Status, r.Raw)
	}
	r = c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "a cat", "model": "fal-slow"})
	if r.Status != 504 || errCode(r) != "provider_timeout" || f.cancelled.Load() == 0 {
		t.Fatalf("fal too slow: %d %s (cancels %d)", r.Status, r.Raw, f.cancelled.Load())
	}
	before := f.submits.Load()
	r = c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "a cat", "model": "fal-down"})
	if r.Status != 502 || errCode(r) != "provider_error" || f.submits.Load()-before < 2 {
		t.Fatalf("fal down: %d %s after %d submits, want 502 after retries", r.Status, r.Raw, f.submits.Load()-before)
	}
	// Two failures in a row (timeout, then down): the circuit is open; the
	// next call is refused at once and reserves nothing.
	msgs := e.messages()
	r = c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "a cat", "model": "fal-ok"})
	if r.Status != 503 || errCode(r) != "unavailable" {
		t.Fatalf("with the circuit open: %d %s", r.Status, r.Raw)
	}
	if e.messages() != msgs {
		t.Fatal("a call refused by the open circuit appended events")
	}
	ready := e.anon.do("GET", "/readyz", nil)
	if !strings.Contains(ready.Raw, `"provider":"fal","state":"open"`) {
		t.Fatalf("readyz does not show the open circuit: %s", ready.Raw)
	}
	if m := e.anon.do("GET", "/metrics", nil); !strings.Contains(m.Raw, `ledgerd_provider_circuit_state{provider="fal"} 2`) {
		t.Fatal("metrics do not show the open circuit")
	}
	// One charged call in all: 20.00 - 1.00.
	waitUntil(t, 5*time.Second, func() bool { return e.wallet() == "19.00/0.00/19.00" })
	// fal's key appears nowhere a customer or auditor can read.
	audit := e.admin.do("GET", "/api/admin/audit?account="+e.acc, nil)
	if strings.Contains(audit.Raw, "fal-secret-key") {
		t.Fatal("the fal key is in the events")
	}
}

// TestFalTaskResumedAfterRestart: an async call still running at fal when
// ledgerd stops is polled to completion by the restarted ledgerd, from the
// handle recorded when it was submitted (not submitted again).
func TestFalTaskResumedAfterRestart(t *testing.T) {
	f := newFakeFal(t)
	dir := testDirTB(t)
	cfg := testConfigTB(t, dir, map[string]string{"FAL_KEY": "fal-secret-key", "LEDGER_FAL_QUEUE_URL": f.srv.URL,
		"LEDGER_SWEEP_INTERVAL": "100ms"})
	a := startAppTB(t, cfg)
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	cust, acc := customer(t, admin, "resume@example.com", "api")
	if r := admin.do("POST", "/api/admin/accounts/"+acc+"/topups", map[string]string{"amount": "10.00", "reference": "f"}); r.Status != 201 {
		t.Fatal(r.Raw)
	}
	if r := admin.do("PUT", "/api/admin/models/fal-later", map[string]any{"type": "image", "price": "2.00", "provider": "fal", "provider_model": "fal-ai/later"}); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	r := cust.do("POST", "/api/v1/generateTask/fal-later", map[string]any{"input": map[string]any{"prompt": "x"}})
	id := r.Body["data"].(map[string]any)["taskId"].(string)
	waitUntil(t, 5*time.Second, func() bool { return cust.do("GET", "/api/v1/tasks/"+id, nil).Body["status"] == "running" })
	ctx, cancel := contextWithTimeout(10 * time.Millisecond)
	_ = a.Close(ctx)
	cancel()

	a = startAppTB(t, cfg)
	defer stopApp(t, a)
	cust = client{t: t, base: a.URL()}.login("resume@example.com", "password-resume@example.com")
	var task response
	waitUntil(t, 20*time.Second, func() bool {
		task = cust.do("GET", "/api/v1/tasks/"+id, nil)
		return task.Body["status"] == "succeeded" || task.Body["status"] == "failed"
	})
	if task.Body["status"] != "succeeded" || task.Body["cost"] != "2.00" {
		t.Fatalf("task after restart: %s", task.Raw)
	}
	if n := f.submits.Load(); n != 1 {
		t.Fatalf("fal got %d submits, want 1 (the restarted ledgerd polls, it does not resubmit)", n)
	}
	if w := cust.do("GET", "/api/v1/wallet", nil); w.Body["balance"] != "8.00" || w.Body["held"] != "0.00" {
		t.Fatalf("wallet: %s", w.Raw)
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
