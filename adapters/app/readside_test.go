package app

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestStatementAndUsage(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("10.00", "first")
	e.model("fails", map[string]any{"type": "image", "price": "1.00", "provider": "local", "options": map[string]any{"failure_rate": 1}})
	key, keyID := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)
	for i := range 3 {
		if r := c.do("POST", "/api/v1/image/generate", image(fmt.Sprint("p", i))); r.Status != 200 {
			t.Fatalf("call: %d %s", r.Status, r.Raw)
		}
	}
	if r := c.do("POST", "/api/v1/video/generate", map[string]any{"prompt": "v", "model": "kling-3"}); r.Status != 200 {
		t.Fatalf("video: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "x", "model": "fails"}); r.Status != 502 {
		t.Fatalf("failing call: %d", r.Status)
	}
	if r := e.admin.do("POST", "/api/admin/accounts/"+e.acc+"/adjustments", map[string]string{"amount": "-1.00", "reason": "goodwill reversal"}); r.Status != 201 {
		t.Fatalf("adjustment: %d %s", r.Status, r.Raw)
	}
	// 10.00 - 3 × 0.80 - 2.50 - 1.00 = 4.10; the failed call is not a line.
	r := e.cust.do("GET", "/api/v1/wallet/entries", nil)
	if r.Status != 200 {
		t.Fatalf("entries: %d %s", r.Status, r.Raw)
	}
	entries := r.Body["entries"].([]any)
	var got []string
	for _, x := range entries {
		m := x.(map[string]any)
		got = append(got, fmt.Sprintf("%s %s=%s", m["type"], m["amount"], m["balance_after"]))
	}
	want := []string{"adjustment -1.00=4.10", "charge -2.50=5.10", "charge -0.80=7.60", "charge -0.80=8.40", "charge -0.80=9.20", "topup 10.00=10.00"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("statement\n got %v\nwant %v", got, want)
	}
	if r.Body["next_cursor"] != nil {
		t.Fatalf("next_cursor on the last page: %v", r.Body["next_cursor"])
	}

	// Keyset pages stay stable when lines arrive between them.
	page1 := e.cust.do("GET", "/api/v1/wallet/entries?limit=2", nil)
	cursor := page1.Body["next_cursor"].(string)
	e.topUp("10.00", "between pages")
	page2 := e.cust.do("GET", "/api/v1/wallet/entries?limit=2&cursor="+cursor, nil)
	p2 := page2.Body["entries"].([]any)
	if len(p2) != 2 || p2[0].(map[string]any)["balance_after"] != "7.60" || p2[1].(map[string]any)["balance_after"] != "8.40" {
		t.Fatalf("second page after a new line: %s", page2.Raw)
	}
	for _, bad := range []string{"limit=0", "limit=501", "limit=x", "cursor=nope!"} {
		if r := e.cust.do("GET", "/api/v1/wallet/entries?"+bad, nil); r.Status != 422 {
			t.Fatalf("entries?%s: %d", bad, r.Status)
		}
	}

	// Usage by model, per minute: calls, spend and failures.
	from := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339)
	u := e.cust.do("GET", "/api/v1/usage?granularity=minute&group_by=model&from="+from, nil)
	if u.Status != 200 {
		t.Fatalf("usage: %d %s", u.Status, u.Raw)
	}
	perModel := map[string]string{}
	for _, x := range u.Body["series"].([]any) {
		m := x.(map[string]any)
		perModel[m["model"].(string)] += fmt.Sprintf("%v/%v/%v", m["calls"], m["spend"], m["failures"])
	}
	if perModel["nano-banana-2"] != "3/2.40/0" || perModel["kling-3"] != "1/2.50/0" || perModel["fails"] != "0/0.00/1" {
		t.Fatalf("usage per model: %v", perModel)
	}
	day := e.cust.do("GET", "/api/v1/usage?granularity=day&group_by=key&from="+from, nil)
	if !strings.Contains(day.Raw, `"key_id":"`+keyID+`"`) || !strings.Contains(day.Raw, `"calls":4`) {
		t.Fatalf("usage per key per day: %s", day.Raw)
	}
	// A key with usage:read may read it; staff name the account.
	if r := c.do("GET", "/api/v1/usage", nil); r.Status != 200 {
		t.Fatalf("usage by key: %d", r.Status)
	}
	if r := e.admin.do("GET", "/api/v1/usage?account="+e.acc+"&from="+from+"&granularity=hour", nil); r.Status != 200 || !strings.Contains(r.Raw, `"calls":4`) {
		t.Fatalf("usage by admin: %d %s", r.Status, r.Raw)
	}
	if r := e.admin.do("GET", "/api/v1/usage", nil); r.Status != 422 {
		t.Fatalf("admin without account: %d", r.Status)
	}
	for _, bad := range []string{"granularity=week", "group_by=color", "from=yesterday", "from=2030-01-01T00:00:00Z", "granularity=minute&from=2000-01-01T00:00:00Z"} {
		if r := e.cust.do("GET", "/api/v1/usage?"+bad, nil); r.Status != 422 {
			t.Fatalf("usage?%s: %d %s", bad, r.Status, r.Raw)
		}
	}
	// The key list shows this month's charged use.
	keys := e.cust.do("GET", "/api/users/me/api-keys", nil)
	if !strings.Contains(keys.Raw, `"usage_this_month":{"calls":4,"spend":"4.90"}`) {
		t.Fatalf("key usage this month: %s", keys.Raw)
	}
}
