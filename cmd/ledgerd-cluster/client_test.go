package main

// What the fault scenarios and the cluster benchmark share: a client of
// the ledgerd instances' HTTP API (setup through the admin API, the
// charged-call load, and the checks that every 200 was charged once).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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

// workDir is a fresh directory for a cluster's binaries, stores and logs,
// removed afterwards unless the test failed: then the logs are wanted.
func workDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("kept for inspection (process logs in ledgerd-N/ledgerd.log, nats-N/nats.log): %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	// Postgres runs as an unprivileged user when we are root: it must be
	// able to reach its data dir.
	if err := pgembed.PrepareTestDir(dir); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// api talks to a cluster's ledgerd instances over HTTP, as customers and
// staff do. A wrong answer fails tb.
type api struct {
	tb         testing.TB
	c          *Cluster
	admin      string // admin session token
	serving    []int  // instances serving the customer API
	projectors []int  // instances running the projections
	customers  atomic.Int64
}

var httpClient = &http.Client{Timeout: 15 * time.Second}

func (a *api) do(i int, method, path, token, body string) (int, string) {
	req, _ := http.NewRequest(method, a.c.URL(i)+path, strings.NewReader(body))
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

func (a *api) must(i int, method, path, token, body string, want int) map[string]any {
	a.tb.Helper()
	// Reads and setup right after a fault may meet a moment's 503: retry
	// those briefly, never a wrong answer.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, raw := a.do(i, method, path, token, body)
		if st == want {
			var m map[string]any
			if raw != "" {
				if err := json.Unmarshal([]byte(raw), &m); err != nil {
					a.tb.Fatalf("%s %s: %v: %s", method, path, err, raw)
				}
			}
			return m
		}
		if (st != 0 && st != http.StatusServiceUnavailable) || time.Now().After(deadline) {
			a.tb.Fatalf("%s %s on instance %d: %d %s, want %d", method, path, i, st, raw, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (a *api) check(err error) {
	a.tb.Helper()
	if err != nil {
		a.tb.Fatal(err)
	}
}

func (a *api) login(i int, email, password string) string {
	res := a.must(i, "POST", "/api/auth/login", "", fmt.Sprintf(`{"email":%q,"password":%q}`, email, password), 200)
	return res["access_token"].(string)
}

func (a *api) readyz(i int) (int, string) { return a.do(i, "GET", "/readyz", "", "") }

// newCustomer makes an account on plan api, tops it up with funds and
// returns it with an API key, once every serving instance knows the key.
func (a *api) newCustomer(funds string) (acc, key string) {
	n := a.customers.Add(1)
	email := fmt.Sprintf("customer%d@ledgerd.test", n)
	res := a.must(0, "POST", "/api/admin/accounts", a.admin, fmt.Sprintf(`{"email":%q,"password":"password-%d","plan":"api"}`, email, n), 201)
	acc = res["id"].(string)
	a.must(0, "POST", "/api/admin/accounts/"+acc+"/topups", a.admin, fmt.Sprintf(`{"amount":%q,"reference":"funds-%d"}`, funds, n), 201)
	sess := a.login(0, email, fmt.Sprintf("password-%d", n))
	key = a.must(0, "POST", "/api/users/me/api-keys", sess, `{"name":"load","rate_limit_per_minute":1000000}`, 201)["key"].(string)
	// The key reaches the other instances through the stream.
	for _, i := range a.serving {
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, body := a.do(i, "GET", "/api/v1/wallet", key, "")
			if st == 200 {
				break
			}
			if time.Now().After(deadline) {
				a.tb.Fatalf("key never reached instance %d: %d %s", i, st, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return acc, key
}

// projectionsCaughtUp asks each projector for each projection's lag.
func (a *api) projectionsCaughtUp() bool {
	for _, i := range a.projectors {
		st, body := a.do(i, "GET", "/api/admin/projections", a.admin, "")
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
			if !strings.Contains(body, `"lag_events":0`) || strings.Contains(body, `"status":"failed"`) {
				return false
			}
			continue
		}
		for _, p := range out.Projections {
			// Where several instances run the projections, each one
			// leads some and stands by for the rest.
			if p.Lag != 0 || (p.Status != "running" && p.Status != "standby") {
				return false
			}
		}
	}
	return true
}

func (a *api) chargesByTask(key string) map[string]int {
	charged := map[string]int{}
	cursor := ""
	for {
		path := "/api/v1/wallet/entries?limit=500"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		page := a.must(0, "GET", path, key, "", 200)
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

// settle checks, once a load on one account has stopped, the promises of
// a charged call: nothing held forever, every 200 charged exactly once,
// no task charged twice, the balance (in the read model and as computed
// from the events) equal to the funds less the charges, verify ok for the
// account. It returns how many tasks were charged.
func (a *api) settle(name, acc, key string, acked []string, funds, price decimal.Decimal) (charged int) {
	a.tb.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var w map[string]any
	for {
		w = a.must(0, "GET", "/api/v1/wallet", key, "", 200)
		if w["held"] == "0.00" && a.projectionsCaughtUp() {
			break
		}
		if time.Now().After(deadline) {
			a.tb.Fatalf("%s: holds never ended: %v", name, w)
		}
		time.Sleep(200 * time.Millisecond)
	}
	byTask := a.chargesByTask(key)
	for _, id := range acked {
		if byTask[id] != 1 {
			a.tb.Errorf("%s: task %s answered 200 but charged %d times", name, id, byTask[id])
		}
	}
	answered := make(map[string]bool, len(acked))
	for _, id := range acked {
		answered[id] = true
	}
	var late []string
	for id, n := range byTask {
		if n != 1 {
			a.tb.Errorf("%s: task %s charged %d times", name, id, n)
		}
		if !answered[id] {
			late = append(late, id)
		}
	}
	if len(late) > 0 {
		// Allowed only for calls whose answer was lost: the caller
		// judges; the ids lead to the instances' logs.
		slices.Sort(late)
		a.tb.Logf("%s: %d tasks charged without a 200: %s", name, len(late), strings.Join(late[:min(len(late), 10)], " "))
	}
	want := funds.Sub(price.Mul(decimal.NewFromInt(int64(len(byTask))))).StringFixed(2)
	if w["balance"] != want {
		a.tb.Errorf("%s: balance %v, want %s (%s - %d charges of %s)", name, w["balance"], want, funds.StringFixed(2), len(byTask), price)
	}
	if b := a.must(0, "GET", "/api/admin/accounts/"+acc+"/balance", a.admin, "", 200); b["balance"] != want || b["held"] != "0.00" {
		a.tb.Errorf("%s: from the events balance %v held %v, want %s held 0.00", name, b["balance"], b["held"], want)
	}
	a.verify(name, "/api/admin/verify?account="+acc)
	return len(byTask)
}

// verify asks GET /api/admin/verify (path with its query) and reports
// each failed check.
func (a *api) verify(name, path string) {
	a.tb.Helper()
	v := a.must(0, "GET", path, a.admin, "", 200)
	if v["ok"] == true {
		return
	}
	checks, _ := v["checks"].([]any)
	for _, c := range checks {
		if c, _ := c.(map[string]any); c["ok"] != true {
			a.tb.Errorf("%s: GET %s: check %v failed: %v", name, path, c["name"], c["detail"])
		}
	}
}

// routing is how the clients of a load spread their calls over the
// instances.
type routing int

const (
	// roundRobin sends each call to the next instance, as an HTTP
	// balancer does: one customer's consecutive calls meet different
	// instances.
	roundRobin routing = iota
	// pinned keeps each client on one instance (clients alternate), as a
	// TCP balancer keeps a kept-alive connection.
	pinned
)

// load makes charged calls from several clients, each using one of the
// keys, each call with its own Idempotency-Key.
type load struct {
	attempted atomic.Int64
	mu        sync.Mutex
	tasks     map[string][]string // API key → task ids answered 200
	calls     []call              // every 200, in the order answered
	fails     map[string]int64
	stopping  atomic.Bool
	wg        sync.WaitGroup
	began     time.Time
	ended     time.Time
}

// call is one call answered 200.
type call struct{ start, end time.Time }

func startLoad(urls, keys []string, body string, clients int, route routing) *load {
	// Stopping lets each client finish its call: a call cut short by the
	// test would be charged without its 200 being seen, blurring the
	// figures.
	l := &load{tasks: map[string][]string{}, fails: map[string]int64{}, began: time.Now()}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// The default of 2 idle connections per host would reconnect for
	// most calls. The timeout is noAnswerInTime's.
	tr.MaxIdleConnsPerHost = clients
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	for w := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			key := keys[w%len(keys)]
			for i := 0; !l.stopping.Load(); i++ {
				base := urls[w%len(urls)]
				if route == roundRobin {
					base = urls[(w+i)%len(urls)]
				}
				idem := fmt.Sprintf("%s-%d-%d", key[len(key)-6:], w, i)
				req, _ := http.NewRequest("POST", base+"/api/v1/image/generate", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", idem)
				l.attempted.Add(1)
				start := time.Now()
				res, err := client.Do(req)
				if err != nil {
					l.fail(unanswered(err))
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
					l.tasks[key] = append(l.tasks[key], out.TaskID)
					l.calls = append(l.calls, call{start, time.Now()})
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

// Calls that got no HTTP answer, by why: such a call may still finish,
// and be charged, after the client gave up on it.
const (
	noConnection   = "connection error"
	noAnswerInTime = "no answer within 10 s"
)

func unanswered(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return noAnswerInTime
	}
	return noConnection
}

// unanswered counts the calls that got no HTTP answer.
func (l *load) unanswered() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fails[noConnection] + l.fails[noAnswerInTime]
}

func (l *load) fail(code string) {
	l.mu.Lock()
	l.fails[code]++
	l.mu.Unlock()
}

func (l *load) stop() {
	l.stopping.Store(true)
	l.wg.Wait()
	l.ended = time.Now()
}

// acked is the tasks answered 200 to key.
func (l *load) acked(key string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.tasks[key])
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
func (l *load) waitSuccessAfter(tb testing.TB, t0 time.Time, bound time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(bound)
	for {
		l.mu.Lock()
		n := 0
		for _, c := range l.calls {
			if c.end.After(t0) {
				n++
			}
		}
		l.mu.Unlock()
		if n >= 10 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("calls did not succeed again within %v of the fault being mended", bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
