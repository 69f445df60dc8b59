package app

import (
	"strings"
	"testing"
	"time"
)

// TestGrants: credits granted by staff are spent before paid money; a call
// whose hold drew on a grant that expires while it runs gives that part
// back to the platform, not the customer; the statement shows grant
// movements apart from paid money; verify stays green. Bad grants change
// nothing.
func TestGrants(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("10.00", "fund")
	e.model("slow-fail", map[string]any{"type": "image", "price": "1.00", "provider": "local",
		"options": map[string]any{"latency_ms": 4000, "failure_rate": 1, "timeout_ms": 20000}})
	grants := "/api/admin/accounts/" + e.acc + "/grants"

	before := e.messages()
	for _, tc := range []struct {
		name  string
		c     client
		path  string
		body  map[string]any
		want  int
		field string
	}{
		{"past expiry", e.admin, grants, map[string]any{"amount": "1.00", "expires_at": "2020-01-01T00:00:00Z", "reason": "r"}, 422, "expires_at"},
		{"no expiry", e.admin, grants, map[string]any{"amount": "1.00", "reason": "r"}, 422, "expires_at"},
		{"bad expiry", e.admin, grants, map[string]any{"amount": "1.00", "expires_at": "tomorrow", "reason": "r"}, 422, "expires_at"},
		{"no reason", e.admin, grants, map[string]any{"amount": "1.00", "expires_at": "2099-01-01T00:00:00Z"}, 422, "reason"},
		{"negative", e.admin, grants, map[string]any{"amount": "-1.00", "expires_at": "2099-01-01T00:00:00Z", "reason": "r"}, 422, "amount"},
		{"too precise", e.admin, grants, map[string]any{"amount": "1.001", "expires_at": "2099-01-01T00:00:00Z", "reason": "r"}, 422, "amount"},
		{"unknown field", e.admin, grants, map[string]any{"amount": "1.00", "expires_at": "2099-01-01T00:00:00Z", "reason": "r", "x": 1}, 422, ""},
		{"unknown account", e.admin, "/api/admin/accounts/acc_01nosuchaccount0000000000/grants", map[string]any{"amount": "1.00", "expires_at": "2099-01-01T00:00:00Z", "reason": "r"}, 404, ""},
		{"customer", e.cust, grants, map[string]any{"amount": "1.00", "expires_at": "2099-01-01T00:00:00Z", "reason": "r"}, 403, ""},
	} {
		r := tc.c.do("POST", tc.path, tc.body)
		if r.Status != tc.want || (tc.field != "" && !strings.Contains(r.Raw, `"field":"`+tc.field+`"`)) {
			t.Errorf("%s: %d %s, want %d on %q", tc.name, r.Status, r.Raw, tc.want, tc.field)
		}
	}
	if e.messages() != before {
		t.Fatal("a refused grant appended events")
	}

	expires := time.Now().Add(2500 * time.Millisecond).UTC().Truncate(time.Second).Add(time.Second)
	r := e.admin.do("POST", grants, map[string]any{"amount": "1.00", "expires_at": expires.Format(time.RFC3339), "reason": "welcome"})
	if r.Status != 201 || !strings.HasPrefix(r.Body["id"].(string), "grt_") {
		t.Fatalf("grant: %d %s", r.Status, r.Raw)
	}
	w := e.cust.do("GET", "/api/v1/wallet", nil)
	if w.Body["balance"] != "10.00" || w.Body["credits"] != "1.00" || w.Body["available"] != "11.00" || w.Body["held"] != "0.00" {
		t.Fatalf("wallet after the grant: %s", w.Raw)
	}

	// 0.80 comes from the grant; the slow call takes its last 0.20 and
	// 0.80 of paid money.
	if r := e.cust.do("POST", "/api/v1/image/generate", image("x")); r.Status != 200 {
		t.Fatalf("call on credits: %d %s", r.Status, r.Raw)
	}
	r = e.cust.do("POST", "/api/v1/generateTask/slow-fail", map[string]any{"input": map[string]any{"prompt": "x"}})
	if r.Status != 200 {
		t.Fatalf("slow call: %d %s", r.Status, r.Raw)
	}
	task := r.Body["data"].(map[string]any)["taskId"].(string)
	w = e.cust.do("GET", "/api/v1/wallet", nil)
	if w.Body["balance"] != "10.00" || w.Body["credits"] != "0.20" || w.Body["held"] != "1.00" || w.Body["available"] != "9.20" {
		t.Fatalf("wallet with the slow call held: %s", w.Raw)
	}
	if !time.Now().Before(expires) {
		t.Fatal("the machine was too slow to reach the slow call before the grant expired")
	}

	// The grant expires while the call runs; the call fails after it.
	waitUntil(t, 15*time.Second, func() bool {
		return e.cust.do("GET", "/api/v1/tasks/"+task, nil).Body["status"] == "failed"
	})
	waitUntil(t, 5*time.Second, func() bool { return e.wallet() == "10.00/0.00/10.00" })
	if w := e.cust.do("GET", "/api/v1/wallet", nil); w.Body["credits"] != "0.00" {
		t.Fatalf("wallet at the end: %s", w.Raw)
	}
	var lines []string
	waitUntil(t, 5*time.Second, func() bool {
		lines = lines[:0]
		for _, x := range e.cust.do("GET", "/api/v1/wallet/entries", nil).Body["entries"].([]any) {
			l := x.(map[string]any)
			lines = append(lines, l["type"].(string)+" "+l["amount"].(string)+" "+l["balance_after"].(string)+" credits "+l["credits"].(string)+" "+l["credits_after"].(string))
		}
		return len(lines) == 4
	})
	want := []string{
		"grant_expired 0.00 10.00 credits -0.20 0.00",
		"charge 0.00 10.00 credits -0.80 0.20",
		"grant 0.00 10.00 credits 1.00 1.00",
		"topup 10.00 10.00 credits 0.00 0.00",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("statement:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	waitUntil(t, 10*time.Second, func() bool {
		r := e.admin.do("GET", "/api/admin/verify?account="+e.acc, nil)
		return r.Status == 200 && r.Body["ok"] == true
	})
	if r := e.admin.do("GET", "/api/admin/accounts/"+e.acc+"/balance", nil); r.Body["credits"] != "0.00" || r.Body["available"] != "10.00" {
		t.Fatalf("balance from the events: %s", r.Raw)
	}
}
