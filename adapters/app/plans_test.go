package app

import (
	"strings"
	"testing"
	"time"
)

// TestPlansAndSubscription: plans are data an admin defines; a customer
// subscribes with a session, paying the fee from paid money (402 and
// nothing changes when it cannot), and receives the plan's credits until
// the period ends; the plan's key limit and API access apply at once.
func TestPlansAndSubscription(t *testing.T) {
	e := newChargingEnv(t, nil)
	plans := e.anon.do("GET", "/api/v1/plans", nil)
	if plans.Status != 200 || !strings.Contains(plans.Raw, `"plan":"free","api_access":false`) {
		t.Fatalf("default plans: %d %s", plans.Status, plans.Raw)
	}
	for _, tc := range []struct {
		name string
		c    client
		path string
		body map[string]any
		want int
	}{
		{"customer", e.cust, "/api/admin/plans/gold", map[string]any{"api_access": true}, 403},
		{"no access flag", e.admin, "/api/admin/plans/gold", map[string]any{"monthly_fee": "1.00"}, 422},
		{"negative fee", e.admin, "/api/admin/plans/gold", map[string]any{"api_access": true, "monthly_fee": "-1.00"}, 422},
		{"bad name", e.admin, "/api/admin/plans/Gold!", map[string]any{"api_access": true}, 422},
		{"free with a fee", e.admin, "/api/admin/plans/free", map[string]any{"api_access": false, "monthly_fee": "5.00"}, 422},
	} {
		if r := tc.c.do("PUT", tc.path, tc.body); r.Status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, r.Status, r.Raw, tc.want)
		}
	}
	r := e.admin.do("PUT", "/api/admin/plans/gold", map[string]any{"api_access": true, "monthly_fee": "20.00",
		"included_credits": "5.00", "max_keys": 1})
	if r.Status != 200 || r.Body["monthly_fee"] != "20.00" || r.Body["max_keys"] != float64(1) {
		t.Fatalf("define gold: %d %s", r.Status, r.Raw)
	}
	r = e.admin.do("PUT", "/api/admin/plans/viewer", map[string]any{"api_access": false})
	if r.Status != 200 {
		t.Fatalf("define viewer: %d %s", r.Status, r.Raw)
	}

	// Not enough paid money: 402, nothing recorded.
	e.topUp("10.00", "small")
	before := e.messages()
	if r := e.cust.do("POST", "/api/v1/subscription", map[string]any{"plan": "gold"}); r.Status != 402 || errCode(r) != "insufficient_balance" {
		t.Fatalf("subscribing without the fee: %d %s", r.Status, r.Raw)
	}
	if r := e.cust.do("POST", "/api/v1/subscription", map[string]any{"plan": "nosuch"}); r.Status != 422 {
		t.Fatalf("subscribing to an unknown plan: %d %s", r.Status, r.Raw)
	}
	if e.messages() != before {
		t.Fatal("a refused subscription appended events")
	}
	e.topUp("15.00", "more")
	// The customer's live stream says so when the plan changes.
	stream, status := openSSE(t, e.a.URL(), "/api/v1/usage/stream", e.cust.token)
	if status != 200 {
		t.Fatalf("stream: %d", status)
	}
	r = e.cust.do("POST", "/api/v1/subscription", map[string]any{"plan": "gold"})
	if r.Status != 200 || r.Body["plan"] != "gold" || r.Body["active"] != true || r.Body["fee"] != "20.00" {
		t.Fatalf("subscribe: %d %s", r.Status, r.Raw)
	}
	end, _ := time.Parse(time.RFC3339, r.Body["period_end"].(string))
	if d := time.Until(end); d < 27*24*time.Hour || d > 32*24*time.Hour {
		t.Fatalf("period ends %s", end)
	}
	w := e.cust.do("GET", "/api/v1/wallet", nil)
	if w.Body["balance"] != "5.00" || w.Body["credits"] != "5.00" || w.Body["available"] != "10.00" {
		t.Fatalf("wallet after subscribing: %s", w.Raw)
	}
	evs := until(t, stream.events, 0, 10*time.Second, func(ev streamEvent) bool {
		return ev.Type == "wallet" && ev.str("credits") == "5.00"
	})
	var sawPlan bool
	for _, ev := range evs {
		if ev.Type == "plan" {
			sawPlan = ev.str("event") == "subscribed" && ev.str("plan") == "gold" && ev.str("fee") == "20.00" && ev.str("period_end") == r.Body["period_end"]
		}
	}
	if last := evs[len(evs)-1]; !sawPlan || last.str("balance") != "5.00" || last.str("available") != "10.00" {
		t.Fatalf("stream after subscribing: %+v", evs)
	}
	stream.close()
	if g := e.cust.do("GET", "/api/v1/subscription", nil); g.Body["plan"] != "gold" || g.Body["period_end"] != r.Body["period_end"] {
		t.Fatalf("subscription: %s", g.Raw)
	}
	// An API key cannot subscribe.
	key, _ := newKey(t, e.cust, map[string]any{"name": "k", "scopes": []string{"keys:manage", "image:generate"}})
	if r := withKey(e.anon, key).do("POST", "/api/v1/subscription", map[string]any{"plan": "gold"}); r.Status != 403 {
		t.Fatalf("subscribing with a key: %d %s", r.Status, r.Raw)
	}
	// gold allows one key: the second is refused.
	if r := e.cust.do("POST", "/api/users/me/api-keys", map[string]any{"name": "k2"}); r.Status != 409 || errCode(r) != "key_limit_reached" {
		t.Fatalf("second key on gold: %d %s", r.Status, r.Raw)
	}
	// The credits pay for a call.
	if r := withKey(e.anon, key).do("POST", "/api/v1/image/generate", image("x")); r.Status != 200 {
		t.Fatalf("call on gold: %d %s", r.Status, r.Raw)
	}
	waitUntil(t, 5*time.Second, func() bool {
		w := e.cust.do("GET", "/api/v1/wallet", nil)
		return w.Body["balance"] == "5.00" && w.Body["credits"] == "4.20"
	})
	// A plan without API access takes it away at once.
	if r := e.admin.do("PATCH", "/api/admin/accounts/"+e.acc, map[string]any{"plan": "viewer"}); r.Status != 200 {
		t.Fatalf("move to viewer: %d %s", r.Status, r.Raw)
	}
	waitUntil(t, 5*time.Second, func() bool {
		r := withKey(e.anon, key).do("POST", "/api/v1/image/generate", image("x"))
		return r.Status == 403 && errCode(r) == "plan_required"
	})
	if g := e.cust.do("GET", "/api/v1/subscription", nil); g.Body["active"] != false || g.Body["plan"] != "viewer" {
		t.Fatalf("subscription after a staff change of plan: %s", g.Raw)
	}
	if r := e.admin.do("PATCH", "/api/admin/accounts/"+e.acc, map[string]any{"plan": "nosuch"}); r.Status != 422 {
		t.Fatalf("move to an unknown plan: %d %s", r.Status, r.Raw)
	}
	var lines []string
	for _, x := range e.cust.do("GET", "/api/v1/wallet/entries", nil).Body["entries"].([]any) {
		l := x.(map[string]any)
		lines = append(lines, l["type"].(string)+" "+l["amount"].(string)+" credits "+l["credits"].(string))
	}
	if got := strings.Join(lines, ", "); got != "charge 0.00 credits -0.80, grant 0.00 credits 5.00, subscription -20.00 credits 0.00, topup 15.00 credits 0.00, topup 10.00 credits 0.00" {
		t.Fatalf("statement: %s", got)
	}
	waitUntil(t, 10*time.Second, func() bool {
		r := e.admin.do("GET", "/api/admin/verify?account="+e.acc, nil)
		return r.Status == 200 && r.Body["ok"] == true
	})
}
