package app

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

func TestFinance(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("20.00", "first")
	beforeSecond := time.Now().UTC()
	time.Sleep(20 * time.Millisecond)
	e.topUp("10.00", "second")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	for range 2 {
		if r := withKey(e.anon, key).do("POST", "/api/v1/image/generate", image("x")); r.Status != 200 {
			t.Fatal(r.Raw)
		}
	}
	if r := e.admin.do("POST", "/api/admin/users", map[string]string{"email": "auditor@example.com", "password": "auditor-pass", "role": "finance"}); r.Status != 201 {
		t.Fatal(r.Raw)
	}
	fin := client{t: t, base: e.a.URL()}.login("auditor@example.com", "auditor-pass")

	// Verify: everything checks out, read by finance staff.
	waitUntil(t, 10*time.Second, func() bool {
		r := fin.do("GET", "/api/admin/verify", nil)
		return r.Status == 200 && r.Body["ok"] == true
	})
	r := fin.do("GET", "/api/admin/verify?account="+e.acc, nil)
	if r.Body["ok"] != true || len(r.Body["checks"].([]any)) != 8 {
		t.Fatalf("verify one account: %s", r.Raw)
	}

	// As-of: before the second top-up the balance was 20.00.
	r = fin.do("GET", "/api/admin/accounts/"+e.acc+"/balance?as_of="+beforeSecond.Format(time.RFC3339Nano), nil)
	if r.Status != 200 || r.Body["balance"] != "20.00" || r.Body["held"] != "0.00" {
		t.Fatalf("balance as of before the second top-up: %s", r.Raw)
	}
	if r := fin.do("GET", "/api/admin/accounts/"+e.acc+"/balance", nil); r.Body["balance"] != "28.40" {
		t.Fatalf("balance now: %s", r.Raw)
	}

	// Audit: every event, in order, chained; CSV too.
	r = fin.do("GET", "/api/admin/audit?account="+e.acc, nil)
	if r.Status != 200 || r.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("audit: %d %s", r.Status, r.Header)
	}
	var events []eventstore.Event
	var types []string
	sc := bufio.NewScanner(strings.NewReader(r.Raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			eventstore.Event
			AccountID string `json:"account_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		line.Event.AggregateType, line.Event.AggregateID = "account", line.AccountID
		events = append(events, line.Event)
		types = append(types, line.Type)
	}
	if err := eventstore.VerifyChain(0, "", events); err != nil {
		t.Fatalf("exported chain does not verify: %v", err)
	}
	if !strings.Contains(strings.Join(types, ","), "account.opened,account.topped_up,account.topped_up,account.key_created,account.task_requested,account.task_succeeded") {
		t.Fatalf("audit event order: %v", types)
	}
	if strings.Contains(r.Raw, key[len("nx_live_"):]) {
		t.Fatal("a key secret is in the audit export")
	}
	c := fin.do("GET", "/api/admin/audit?format=csv&account="+e.acc+"&from="+beforeSecond.Format(time.RFC3339Nano), nil)
	rows, err := csv.NewReader(strings.NewReader(c.Raw)).ReadAll()
	if err != nil || rows[0][0] != "seq" || rows[1][2] != "account.topped_up" {
		t.Fatalf("csv export (from filter): %v %v", err, rows[:min(2, len(rows))])
	}
	for _, bad := range []string{"", "account=nope", "account=" + e.acc + "&format=xml", "account=" + e.acc + "&from=yesterday"} {
		if r := fin.do("GET", "/api/admin/audit?"+bad, nil); r.Status != 422 {
			t.Fatalf("audit?%s: %d", bad, r.Status)
		}
	}
	if r := fin.do("GET", "/api/admin/audit?account=acc_00000000000000000000000000", nil); r.Status != 404 {
		t.Fatalf("audit of an unknown account: %d", r.Status)
	}

	// Finance reads, never writes.
	for _, w := range []struct{ method, path string }{
		{"POST", "/api/admin/accounts/" + e.acc + "/topups"},
		{"POST", "/api/admin/accounts/" + e.acc + "/adjustments"},
		{"PATCH", "/api/admin/accounts/" + e.acc},
		{"PUT", "/api/admin/models/nano-banana-2"},
		{"POST", "/api/admin/users"},
	} {
		if r := fin.do(w.method, w.path, map[string]string{}); r.Status != http.StatusForbidden {
			t.Fatalf("finance %s %s: %d", w.method, w.path, r.Status)
		}
	}
	if r := fin.do("GET", "/api/admin/projections", nil); r.Status != 200 {
		t.Fatalf("finance projections: %d", r.Status)
	}
	if r := fin.do("GET", "/api/admin/accounts?limit=1", nil); r.Status != 200 || r.Body["next_cursor"] == nil {
		t.Fatalf("accounts list: %s", r.Raw)
	}

	// A read model that no longer matches the events is reported, by name.
	if _, err := e.a.db.ExecContext(context.Background(), "UPDATE wallets SET available = available + 1 WHERE account_id = ?", e.acc); err != nil {
		t.Fatal(err)
	}
	r = fin.do("GET", "/api/admin/verify", nil)
	if r.Body["ok"] != false || !strings.Contains(r.Raw, `"name":"read_model:wallets","ok":false`) || !strings.Contains(r.Raw, e.acc) {
		t.Fatalf("verify after tampering with wallets: %s", r.Raw)
	}
}

func TestEventStream(t *testing.T) {
	e := newChargingEnv(t, nil)
	req, _ := http.NewRequest("GET", e.a.URL()+"/api/admin/events/stream?account="+e.acc+"&type=account.topped_up", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin.token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	<-lines // the comment line
	e.topUp("10.00", "streamed")
	var got []string
	for l := range lines {
		got = append(got, l)
		if strings.HasPrefix(l, "data: ") {
			break
		}
	}
	joined := strings.Join(got, "\n")
	if !strings.Contains(joined, "event: account.topped_up") || !strings.Contains(joined, `"reference":"streamed"`) {
		t.Fatalf("stream: %s", joined)
	}
}
