//go:build faults

// The fault scenarios start real nats-server, Postgres and ledgerd
// processes and take minutes: they run with `make faults` (full lengths)
// or `make faults-short`, not in `make test`, whose timing they would make
// depend on how fast a NATS cluster re-elects on a loaded machine.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ledgerd/ledgerd/adapters/pgembed"
)

// The fault tests run real processes: three nats-server nodes, Postgres,
// two API-only ledgerd instances taking the load and one projector+worker
// instance. Each scenario charges through both API instances while one
// part is broken and mended, then checks the promises: every 200 charged
// exactly once, nothing charged twice, nothing left held, the balance
// equal to the charges, verify ok (hash chains, balanced transactions,
// read models equal to a fresh fold of the events).
//
// make faults-short runs a short version (shorter load and outages);
// LEDGER_FAULTS_FULL=1 (make faults) runs the lengths the issue names.

const (
	apiA, apiB, projector = 0, 1, 2
	price                 = "0.10"
)

type faultEnv struct {
	t     *testing.T
	c     *Cluster
	admin string // admin session token
	full  bool
}

func TestFaults(t *testing.T) {
	full := os.Getenv("LEDGER_FAULTS_FULL") != ""
	dir, err := os.MkdirTemp("", "ledgerd-faults-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept for inspection (process logs in ledgerd-N/ledgerd.log, nats-N/nats.log): %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	if err := pgembed.PrepareTestDir(dir); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := Start(ctx, Spec{
		Dir: dir, NATSNodes: 3, Roles: []string{"api", "api", "projector,worker"},
		AdminEmail: "admin@faults.test", AdminPassword: "faults-admin-password", Quiet: true,
		Log: slog.New(slog.DiscardHandler),
		Env: []string{"LEDGER_BCRYPT_COST=4", "LEDGER_SWEEP_INTERVAL=200ms", "LEDGER_READY_MAX_LAG=2s",
			"LEDGER_LOG_LEVEL=warn"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	e := &faultEnv{t: t, c: c, full: full}
	e.admin = e.login(apiA, "admin@faults.test", "faults-admin-password")
	e.must(apiA, "PUT", "/api/admin/models/fault", e.admin,
		`{"type":"image","price":"`+price+`","provider":"local","options":{"latency_ms":20}}`, 200)

	outage := func(short, long time.Duration) time.Duration {
		if full {
			return long
		}
		return short
	}
	var reports []report
	run := func(name string, fault func() (restored time.Time)) {
		t.Run(name, func(t *testing.T) {
			e.t = t
			r := e.scenario(name, fault)
			reports = append(reports, r)
		})
	}
	run("kill -9 one NATS node", func() time.Time {
		e.check(c.KillNATS(0))
		time.Sleep(outage(2*time.Second, 5*time.Second))
		e.check(c.StartNATS(0))
		return time.Now()
	})
	run("kill -9 one ledgerd", func() time.Time {
		e.check(c.KillLedgerd(apiA))
		time.Sleep(outage(time.Second, 3*time.Second))
		e.check(c.StartLedgerd(context.Background(), apiA))
		return time.Now()
	})
	run("restart Postgres", func() time.Time {
		e.check(c.RestartPostgres(context.Background()))
		return time.Now()
	})
	run("kill -9 the whole NATS cluster for 5 s", func() time.Time {
		for i := range 3 {
			e.check(c.KillNATS(i))
		}
		time.Sleep(outage(2*time.Second, 5*time.Second))
		for i := range 3 {
			e.check(c.StartNATS(i))
		}
		return time.Now()
	})
	run("SIGSTOP the projector for 10 s", func() time.Time {
		e.check(c.PauseLedgerd(projector))
		paused := time.Now()
		// Lag rises, and the API instances' /readyz says so once the
		// projections are LEDGER_READY_MAX_LAG behind.
		sawUnready := false
		for time.Since(paused) < outage(4*time.Second, 10*time.Second) {
			if st, body := e.readyz(apiB); st == http.StatusServiceUnavailable && strings.Contains(body, "lagging") {
				sawUnready = true
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !sawUnready {
			e.t.Errorf("/readyz on an API instance never reported the paused projector's lag")
		}
		e.check(c.ResumeLedgerd(projector))
		return time.Now()
	})
	t.Logf("\n%s", table(reports))
}

// report is one scenario's figures.
type report struct {
	name                  string
	attempted, succeeded  int64
	failures              map[string]int64
	charged, acknowledged decimal.Decimal
	chargedUnacked        int
	recovery              time.Duration
}

func table(rs []report) string {
	var b strings.Builder
	b.WriteString("| fault | attempted | 200 | failed (code: n) | charged | acknowledged | recovery |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		var fails []string
		for k, v := range r.failures {
			fails = append(fails, fmt.Sprintf("%s: %d", k, v))
		}
		slices.Sort(fails)
		if len(fails) == 0 {
			fails = []string{"none"}
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | $%s | $%s | %.1f s |\n", r.name, r.attempted, r.succeeded,
			strings.Join(fails, ", "), r.charged.StringFixed(2), r.acknowledged.StringFixed(2), r.recovery.Seconds())
	}
	return b.String()
}

// scenario runs load through both API instances, applies the fault, waits
// for recovery, stops the load and checks the invariants.
func (e *faultEnv) scenario(name string, fault func() time.Time) report {
	t := e.t
	acc, key := e.newCustomer(name)
	l := startLoad(e.c, key, 8)
	warm := 1500 * time.Millisecond
	if e.full {
		warm = 3 * time.Second
	}
	time.Sleep(warm)
	restored := fault()
	// Recovered: every instance ready and a charge through each API
	// instance succeeded after the fault was mended.
	for i := range 3 {
		if err := e.c.WaitReady(context.Background(), i, 90*time.Second); err != nil {
			t.Fatalf("after %s: %v", name, err)
		}
	}
	l.waitSuccessAfter(t, restored, 60*time.Second)
	recovery := time.Since(restored)
	time.Sleep(warm) // load goes on after recovery
	l.stop()

	r := report{name: name, attempted: l.attempted.Load(), failures: l.failureCounts(), recovery: recovery}
	acked := l.acked()
	r.succeeded = int64(len(acked))
	r.acknowledged = decimal.RequireFromString(price).Mul(decimal.NewFromInt(r.succeeded))
	if r.succeeded == 0 {
		t.Fatalf("%s: no call succeeded; the load did not run", name)
	}

	// Nothing held forever: every hold ends (charged or released).
	deadline := time.Now().Add(90 * time.Second)
	var w map[string]any
	for {
		w = e.must(apiA, "GET", "/api/v1/wallet", key, "", 200)
		if w["held"] == "0.00" && e.projectionsCaughtUp() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: holds never ended: %v", name, w)
		}
		time.Sleep(200 * time.Millisecond)
	}
	charged := e.chargesByTask(key)
	for _, id := range acked {
		if charged[id] != 1 {
			t.Errorf("%s: task %s answered 200 but charged %d times", name, id, charged[id])
		}
	}
	for id, n := range charged {
		if n != 1 {
			t.Errorf("%s: task %s charged %d times", name, id, n)
		}
	}
	r.charged = decimal.RequireFromString(price).Mul(decimal.NewFromInt(int64(len(charged))))
	r.chargedUnacked = len(charged) - len(acked)
	wantBalance := decimal.RequireFromString("1000.00").Sub(r.charged)
	if w["balance"] != wantBalance.StringFixed(2) {
		t.Errorf("%s: balance %v, want %s (1000.00 - %d charges of %s)", name, w["balance"], wantBalance.StringFixed(2), len(charged), price)
	}
	for _, path := range []string{"/api/admin/verify?account=" + acc, "/api/admin/verify"} {
		v := e.must(apiA, "GET", path, e.admin, "", 200)
		if v["ok"] != true {
			checks, _ := v["checks"].([]any)
			for _, c := range checks {
				if c, _ := c.(map[string]any); c["ok"] != true {
					t.Errorf("%s: GET %s: check %v failed: %v", name, path, c["name"], c["detail"])
				}
			}
		}
	}
	t.Logf("%s: attempted %d, 200 %d, failed %v; charged $%s for %d tasks vs acknowledged $%s (%d charged without a 200: calls in flight at the fault, finished after); recovered %.1f s after the fault was mended",
		name, r.attempted, r.succeeded, r.failures, r.charged.StringFixed(2), len(charged), r.acknowledged.StringFixed(2),
		r.chargedUnacked, recovery.Seconds())
	return r
}

// projectionsCaughtUp asks the projector for each projection's lag.
func (e *faultEnv) projectionsCaughtUp() bool {
	st, body := e.do(projector, "GET", "/api/admin/projections", e.admin, "")
	if st != 200 {
		return false
	}
	var out struct {
		Projections []struct {
			Lag    uint64 `json:"lag_events"`
			Status string `json:"status"`
		} `json:"projections"`
	}
	if json.Unmarshal([]byte(body), &out) != nil || len(out.Projections) == 0 {
		// The shape differs: fall back to a text check.
		return strings.Contains(body, `"lag_events":0`) && !strings.Contains(body, `"status":"failed"`)
	}
	for _, p := range out.Projections {
		if p.Lag != 0 || p.Status != "running" {
			return false
		}
	}
	return true
}

func (e *faultEnv) chargesByTask(key string) map[string]int {
	charged := map[string]int{}
	cursor := ""
	for {
		path := "/api/v1/wallet/entries?limit=500"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		page := e.must(apiA, "GET", path, key, "", 200)
		for _, x := range page["entries"].([]any) {
			ent := x.(map[string]any)
			if ent["type"] == "charge" {
				charged[ent["task_id"].(string)]++
			}
		}
		next, _ := page["next_cursor"].(string)
		if next == "" {
			return charged
		}
		cursor = next
	}
}

var customers atomic.Int64

func (e *faultEnv) newCustomer(name string) (acc, key string) {
	n := customers.Add(1)
	email := fmt.Sprintf("fault%d@faults.test", n)
	res := e.must(apiA, "POST", "/api/admin/accounts", e.admin, fmt.Sprintf(`{"email":%q,"password":"password-%d","plan":"api"}`, email, n), 201)
	acc = res["id"].(string)
	e.must(apiA, "POST", "/api/admin/accounts/"+acc+"/topups", e.admin, fmt.Sprintf(`{"amount":"1000.00","reference":"fault-%d"}`, n), 201)
	sess := e.login(apiA, email, fmt.Sprintf("password-%d", n))
	key = e.must(apiA, "POST", "/api/users/me/api-keys", sess, `{"name":"load","rate_limit_per_minute":1000000}`, 201)["key"].(string)
	// The key reaches the other API instance through the stream.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, body := e.do(apiB, "GET", "/api/v1/wallet", key, "")
		if st == 200 {
			return acc, key
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("key never reached the second API instance: %d %s", st, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *faultEnv) login(i int, email, password string) string {
	res := e.must(i, "POST", "/api/auth/login", "", fmt.Sprintf(`{"email":%q,"password":%q}`, email, password), 200)
	return res["access_token"].(string)
}

func (e *faultEnv) readyz(i int) (int, string) { return e.do(i, "GET", "/readyz", "", "") }

func (e *faultEnv) check(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

var httpClient = &http.Client{Timeout: 15 * time.Second}

func (e *faultEnv) do(i int, method, path, token, body string) (int, string) {
	req, _ := http.NewRequest(method, e.c.URL(i)+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (e *faultEnv) must(i int, method, path, token, body string, want int) map[string]any {
	e.t.Helper()
	// Reads and setup right after a fault may meet a moment's 503: retry
	// those briefly, never a wrong answer.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, raw := e.do(i, method, path, token, body)
		if st == want {
			var m map[string]any
			if raw != "" {
				if err := json.Unmarshal([]byte(raw), &m); err != nil {
					e.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
				}
			}
			return m
		}
		if (st != 0 && st != http.StatusServiceUnavailable) || time.Now().After(deadline) {
			e.t.Fatalf("%s %s on instance %d: %d %s, want %d", method, path, i, st, raw, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// load makes charged calls from several clients, alternating between the
// two API instances, each call with its own Idempotency-Key.
type load struct {
	attempted atomic.Int64
	mu        sync.Mutex
	ok        map[string]string // idempotency key → task id
	okAt      []time.Time
	fails     map[string]int64
	stopping  atomic.Bool
	wg        sync.WaitGroup
}

func startLoad(c *Cluster, key string, clients int) *load {
	// Stopping lets each client finish its call: a call cut short by the
	// test would be charged without its 200 being seen, blurring the
	// figures of the fault.
	l := &load{ok: map[string]string{}, fails: map[string]int64{}}
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; !l.stopping.Load(); i++ {
				inst := (w + i) % 2
				idem := fmt.Sprintf("%s-%d-%d", key[len(key)-6:], w, i)
				req, _ := http.NewRequest("POST", c.URL(inst)+"/api/v1/image/generate",
					strings.NewReader(`{"prompt":"fault load","model":"fault"}`))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", idem)
				l.attempted.Add(1)
				res, err := client.Do(req)
				if err != nil {
					l.fail("connection error")
					time.Sleep(50 * time.Millisecond)
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == 200 {
					var out struct {
						TaskID string `json:"taskId"`
					}
					_ = json.Unmarshal(b, &out)
					l.mu.Lock()
					l.ok[idem] = out.TaskID
					l.okAt = append(l.okAt, time.Now())
					l.mu.Unlock()
					continue
				}
				var out struct {
					Error struct {
						Code string `json:"code"`
					} `json:"error"`
				}
				_ = json.Unmarshal(b, &out)
				l.fail(fmt.Sprintf("%d %s", res.StatusCode, out.Error.Code))
				time.Sleep(50 * time.Millisecond) // a failing server is not hammered
			}
		}()
	}
	return l
}

func (l *load) fail(code string) {
	l.mu.Lock()
	l.fails[code]++
	l.mu.Unlock()
}

func (l *load) stop() {
	l.stopping.Store(true)
	l.wg.Wait()
}

func (l *load) acked() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.ok))
	for _, id := range l.ok {
		ids = append(ids, id)
	}
	return ids
}

func (l *load) failureCounts() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int64, len(l.fails))
	for k, v := range l.fails {
		out[k] = v
	}
	return out
}

// waitSuccessAfter waits until calls succeed again after t0: a few 200s
// answered after it.
func (l *load) waitSuccessAfter(t *testing.T, t0 time.Time, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		l.mu.Lock()
		n := 0
		for _, at := range l.okAt {
			if at.After(t0) {
				n++
			}
		}
		l.mu.Unlock()
		if n >= 10 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls did not succeed again within %v of the fault being mended", bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
