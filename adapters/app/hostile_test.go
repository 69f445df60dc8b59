package app

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hostileEndpoint is one write route with a body it accepts, and which of
// its fields are money and which are text that is stored.
type hostileEndpoint struct {
	method, path string
	as           client
	valid        map[string]any
	money, text  []string // fields of valid
}

type hostileCase struct {
	name        string
	body        string
	contentType string // "" sends application/json; "-" sends none
	status      int
	code        string
}

// body returns ep's valid body with field set to the raw JSON value.
func (ep hostileEndpoint) with(field, raw string) string {
	m := map[string]json.RawMessage{}
	for k, v := range ep.valid {
		b, _ := json.Marshal(v)
		m[k] = b
	}
	m[field] = json.RawMessage(raw)
	var b strings.Builder
	b.WriteString("{")
	first := true
	for k, v := range m {
		if !first {
			b.WriteString(",")
		}
		first = false
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteString(":")
		b.Write(v)
	}
	b.WriteString("}")
	return b.String()
}

func (ep hostileEndpoint) validJSON() string {
	b, _ := json.Marshal(ep.valid)
	return string(b)
}

// cases are the hostile bodies for ep: the same for every route (broken,
// ambiguous, oversize, wrongly typed), then for its money and text fields.
func (ep hostileEndpoint) cases() []hostileCase {
	valid := ep.validJSON()
	first := ""
	for k := range ep.valid {
		first = k
		break
	}
	deep := `{"` + first + `":` + strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000) + `}`
	out := []hostileCase{
		{"empty body", "", "", 400, "invalid_json"},
		{"null", "null", "", 400, "invalid_json"},
		{"array", "[" + valid + "]", "", 400, "invalid_json"},
		{"string", `"hello"`, "", 400, "invalid_json"},
		{"truncated", valid[:len(valid)-1], "", 400, "invalid_json"},
		{"trailing garbage", valid + " garbage", "", 400, "invalid_json"},
		{"two objects", valid + valid, "", 400, "invalid_json"},
		{"bare NaN", ep.with(first, "NaN"), "", 400, "invalid_json"},
		{"bare Infinity", ep.with(first, "Infinity"), "", 400, "invalid_json"},
		{"single quotes", strings.ReplaceAll(valid, `"`, `'`), "", 400, "invalid_json"},
		{"nested 20,000 deep", deep, "", 400, "invalid_json"},
		{"text/plain", valid, "text/plain", 400, "bad_request"},
		{"form encoded", "a=1&b=2", "application/x-www-form-urlencoded", 400, "bad_request"},
		{"multipart", valid, "multipart/form-data; boundary=x", 400, "bad_request"},
		{"unparsable content type", valid, "application/json; ====", 400, "bad_request"},
		{"over the limit", `{"` + first + `":"` + strings.Repeat("x", 1<<20) + `"}`, "", 413, "payload_too_large"},
		{"duplicate key", valid[:len(valid)-1] + `,"` + first + `":` + mustJSON(ep.valid[first]) + "}", "", 422, "validation_error"},
		{"duplicate key in upper case", valid[:len(valid)-1] + `,"` + strings.ToUpper(first) + `":` + mustJSON(ep.valid[first]) + "}", "", 422, "validation_error"},
		{"unknown field", valid[:len(valid)-1] + `,"surprise":1}`, "", 422, "validation_error"},
		{"invalid UTF-8 key", valid[:len(valid)-1] + ",\"\xff\xfe\":1}", "", 422, "validation_error"},
		{"NUL key", valid[:len(valid)-1] + `,"\u0000":1}`, "", 422, "validation_error"},
	}
	for k := range ep.valid {
		if _, isStr := ep.valid[k].(string); isStr && !slices.Contains(ep.money, k) {
			out = append(out,
				hostileCase{k + " as a number", ep.with(k, "12345"), "", 422, "validation_error"},
				hostileCase{k + " as an object", ep.with(k, `{"a":1}`), "", 422, "validation_error"},
				hostileCase{k + " as an array", ep.with(k, `["a"]`), "", 422, "validation_error"},
				hostileCase{k + " as a boolean", ep.with(k, `true`), "", 422, "validation_error"})
		}
	}
	for _, f := range ep.money {
		for _, v := range []string{`"NaN"`, `"Infinity"`, `"-Infinity"`, `"nan"`, `1e400`, `"1e400"`, `1e3`, `"0x10"`,
			`"` + strings.Repeat("9", 10_000) + `"`, strings.Repeat("9", 10_000), `"0.` + strings.Repeat("1", 10_000) + `"`,
			`99999999999999999999999999999999`, `"1000000000000.00"`, `"0.001"`, `"10.00 "`, `" 10.00"`, `"1,000.00"`, `"$10"`,
			`"10.0.0"`, `""`, `true`, `{"amount":"10.00"}`, `["10.00"]`, `"١٠"`, `"１０"`} {
			out = append(out, hostileCase{f + " = " + truncate(v), ep.with(f, v), "", 422, "validation_error"})
		}
	}
	for _, f := range ep.text {
		for _, v := range []string{`"\u0000"`, `"a\u0000b"`, `"bell\u0007"`, `"\u202egnp.exe"`, `"a\u2066b"`, `"line\u0085"`} {
			out = append(out, hostileCase{f + " = " + v, ep.with(f, v), "", 422, "validation_error"})
		}
	}
	return out
}

// send posts raw bytes as they are (the client helper would re-encode).
func send(t *testing.T, c client, method, path, body, contentType string) response {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	switch contentType {
	case "":
		req.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

// contractError fails unless r is the contract's error JSON with status
// and code.
func contractError(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	e, _ := r.Body["error"].(map[string]any)
	msg, _ := e["message"].(string)
	reqID, _ := r.Body["request_id"].(string)
	if r.Status != status || errCode(r) != code || msg == "" || !strings.HasPrefix(reqID, "req_") ||
		!strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("%s: got %d %s, want %d %s in the contract's error format", what, r.Status, truncate(r.Raw), status, code)
	}
	if status == 422 {
		details, _ := e["details"].([]any)
		if len(details) == 0 {
			t.Fatalf("%s: 422 without details: %s", what, truncate(r.Raw))
		}
	}
}

// TestHostileInput sends every write route bodies that are broken,
// ambiguous, oversize, wrongly typed, absurd as money or laced with
// control characters. Each gets the contract's error with the right
// status, and the event stream and the wallet do not move. Slow clients
// are cut off by the server's deadlines while others are served.
func TestHostileInput(t *testing.T) {
	e := newChargingEnv(t, map[string]string{
		"LEDGER_HTTP_READ_HEADER_TIMEOUT": "1s",
		"LEDGER_HTTP_READ_TIMEOUT":        "2s",
	})
	e.topUp("50.00", "fund")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	keyed := withKey(e.anon, key)
	acc := e.acc

	endpoints := []hostileEndpoint{
		{"POST", "/api/auth/login", e.anon, map[string]any{"email": "payer@example.com", "password": "x"}, nil, nil},
		{"POST", "/api/admin/accounts", e.admin, map[string]any{"email": "new@example.com", "password": "password-1", "plan": "api"}, nil, []string{"email"}},
		{"PATCH", "/api/admin/accounts/" + acc, e.admin, map[string]any{"plan": "pro"}, nil, nil},
		{"POST", "/api/admin/accounts/" + acc + "/topups", e.admin, map[string]any{"amount": "10.00", "reference": "hostile"}, []string{"amount"}, []string{"reference"}},
		{"POST", "/api/admin/accounts/" + acc + "/adjustments", e.admin, map[string]any{"amount": "1.00", "reason": "hostile"}, []string{"amount"}, []string{"reason"}},
		{"POST", "/api/admin/accounts/" + acc + "/grants", e.admin, map[string]any{"amount": "1.00", "expires_at": "2099-01-01T00:00:00Z", "reason": "hostile"}, []string{"amount"}, []string{"reason"}},
		{"PUT", "/api/admin/models/hostile", e.admin, map[string]any{"type": "image", "price": "1.00", "provider": "local"}, []string{"price"}, nil},
		{"POST", "/api/admin/users", e.admin, map[string]any{"email": "staff@example.com", "password": "password-1", "role": "finance"}, nil, []string{"email"}},
		{"PUT", "/api/admin/plans/hostile", e.admin, map[string]any{"api_access": true, "monthly_fee": "5.00"}, []string{"monthly_fee"}, nil},
		{"POST", "/api/users/me/api-keys", e.cust, map[string]any{"name": "hostile"}, nil, []string{"name"}},
		{"PUT", "/api/v1/notifications", e.cust, map[string]any{"low_balance_threshold": "5.00", "webhook_url": "http://127.0.0.1:9/hook"}, []string{"low_balance_threshold"}, []string{"webhook_url"}},
		{"POST", "/api/v1/subscription", e.cust, map[string]any{"plan": "pro"}, nil, []string{"plan"}},
		{"POST", "/api/v1/image/generate", keyed, map[string]any{"prompt": "a cat", "model": "nano-banana-2", "size": "1024x1024"}, nil, []string{"size"}},
		{"POST", "/api/v1/video/generate", keyed, map[string]any{"prompt": "a cat", "model": "kling-3"}, nil, nil},
		{"POST", "/api/v1/generateTask/nano-banana-2", keyed, map[string]any{"request_type": "async", "input": map[string]any{"prompt": "a cat"}}, nil, nil},
	}
	// Bodies only some routes have.
	extra := map[string][]hostileCase{
		"/api/v1/image/generate": {
			{"prompt with NUL", `{"prompt":"a\u0000cat","model":"nano-banana-2"}`, "", 422, "validation_error"},
			{"prompt of 10,001 characters", `{"prompt":"` + strings.Repeat("é", 10_001) + `","model":"nano-banana-2"}`, "", 422, "validation_error"},
			{"model with NUL", `{"prompt":"a cat","model":"nano\u0000"}`, "", 404, "not_found"},
		},
		"/api/v1/video/generate": {
			{"duration NaN", `{"prompt":"a cat","model":"kling-3","duration":"NaN"}`, "", 422, "validation_error"},
			{"duration 1e400", `{"prompt":"a cat","model":"kling-3","duration":1e400}`, "", 422, "validation_error"},
			{"duration of 10,000 digits", `{"prompt":"a cat","model":"kling-3","duration":` + strings.Repeat("9", 10_000) + `}`, "", 422, "validation_error"},
			{"duration negative", `{"prompt":"a cat","model":"kling-3","duration":-5}`, "", 422, "validation_error"},
			{"duration fractional", `{"prompt":"a cat","model":"kling-3","duration":5.5}`, "", 422, "validation_error"},
		},
		"/api/v1/generateTask/nano-banana-2": {
			{"passthrough NUL string", `{"input":{"prompt":"a cat","style":"a\u0000"}}`, "", 422, "validation_error"},
			{"passthrough NUL key", `{"input":{"prompt":"a cat","a\u0000":1}}`, "", 422, "validation_error"},
			{"passthrough NUL deep", `{"input":{"prompt":"a cat","style":{"x":["\u0000"]}}}`, "", 422, "validation_error"},
			{"passthrough 1e999999", `{"input":{"prompt":"a cat","seed":1e999999}}`, "", 422, "validation_error"},
			{"passthrough 10,000 digits", `{"input":{"prompt":"a cat","seed":` + strings.Repeat("9", 10_000) + `}}`, "", 422, "validation_error"},
			{"passthrough nested 100 deep", `{"input":{"prompt":"a cat","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}`, "", 422, "validation_error"},
			{"passthrough 33 fields", `{"input":{"prompt":"a cat"` + manyFields(33) + `}}`, "", 422, "validation_error"},
			{"size with bidi override", `{"input":{"prompt":"a cat","size":"\u202e1024"}}`, "", 422, "validation_error"},
			{"callback with control characters", `{"input":{"prompt":"a cat"},"callback_url":"http://example.com/\u0000"}`, "", 422, "validation_error"},
			{"request_type number", `{"input":{"prompt":"a cat"},"request_type":1}`, "", 422, "validation_error"},
			{"input array", `{"input":["a cat"]}`, "", 422, "validation_error"},
		},
		"/api/users/me/api-keys": {
			{"quota spend NaN", `{"name":"k","monthly_quota":{"spend":"NaN"}}`, "", 422, "validation_error"},
			{"quota spend 10,000 digits", `{"name":"k","monthly_quota":{"spend":` + strings.Repeat("9", 10_000) + `}}`, "", 422, "validation_error"},
			{"quota calls 1e400", `{"name":"k","monthly_quota":{"calls":1e400}}`, "", 422, "validation_error"},
			{"quota calls beyond int64", `{"name":"k","monthly_quota":{"calls":99999999999999999999}}`, "", 422, "validation_error"},
			{"quota duplicate spend", `{"name":"k","monthly_quota":{"spend":"1.00","spend":"999.00"}}`, "", 422, "validation_error"},
			{"rate limit float", `{"name":"k","rate_limit_per_minute":1.5}`, "", 422, "validation_error"},
			{"scope with NUL", `{"name":"k","scopes":["image:generate\u0000"]}`, "", 422, "validation_error"},
			{"allowlist garbage", `{"name":"k","ip_allowlist":["999.1.1.1/99"]}`, "", 422, "validation_error"},
			{"name of 10,000 emoji", `{"name":"` + strings.Repeat("🔑", 10_000) + `"}`, "", 422, "validation_error"},
		},
		"/api/admin/models/hostile": {
			{"failure rate 1e400", `{"type":"image","price":"1.00","provider":"local","options":{"failure_rate":1e400}}`, "", 422, "validation_error"},
			{"sizes with NUL", `{"type":"image","price":"1.00","provider":"local","options":{"sizes":["a\u0000"]}}`, "", 422, "validation_error"},
			{"provider model with RTL override", `{"type":"image","price":"1.00","provider":"local","provider_model":"\u202ex"}`, "", 422, "validation_error"},
		},
	}

	before, wallet := e.messages(), e.wallet()
	n := 0
	for _, ep := range endpoints {
		for _, tc := range append(ep.cases(), extra[ep.path]...) {
			n++
			c := ep.as
			c.t = t
			r := send(t, c, ep.method, ep.path, tc.body, tc.contentType)
			contractError(t, ep.method+" "+ep.path+" "+tc.name, r, tc.status, tc.code)
		}
	}
	if after := e.messages(); after != before {
		t.Fatalf("%d hostile requests appended %d messages, want 0", n, after-before)
	}
	if got := e.wallet(); got != wallet {
		t.Fatalf("wallet %s after hostile requests, want %s", got, wallet)
	}
	t.Logf("%d hostile requests refused, nothing written", n)

	// Unicode that is not a control character is welcome, and kept as
	// given.
	name := "ключ 🔑 مفتاح 名前"
	r := e.cust.do("POST", "/api/users/me/api-keys", map[string]any{"name": name})
	if r.Status != 201 || r.Body["name"] != name {
		t.Fatalf("unicode key name: %d %s", r.Status, truncate(r.Raw))
	}
	if r := keyed.do("POST", "/api/v1/image/generate", map[string]any{"prompt": "a café ☕ with ‮reversed‬ text", "model": "nano-banana-2"}); r.Status != 200 {
		t.Fatalf("unicode prompt: %d %s", r.Status, truncate(r.Raw))
	}

	t.Run("slow headers are cut", func(t *testing.T) {
		slowloris(t, e, keyed, func(conn net.Conn) error {
			if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
				return err
			}
			return trickle(conn, strings.Repeat("a", 100)+"\r\n\r\n")
		})
	})
	t.Run("slow body is cut", func(t *testing.T) {
		before := balanceCents(t, e)
		slowloris(t, e, keyed, func(conn net.Conn) error {
			body := mustJSON(map[string]string{"prompt": strings.Repeat("slow ", 20), "model": "nano-banana-2"})
			head := "POST /api/v1/image/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
				"\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n"
			if _, err := io.WriteString(conn, head); err != nil {
				return err
			}
			return trickle(conn, body)
		})
		// Three calls served meanwhile at 0.80 each; the cut one is not
		// charged.
		if after := balanceCents(t, e); after != before-3*80 {
			t.Fatalf("balance %d cents, want %d: only the three served calls are charged", after, before-3*80)
		}
	})
}

func balanceCents(t *testing.T, e chargingEnv) int {
	t.Helper()
	bal, _, _ := strings.Cut(e.wallet(), "/")
	whole, frac, _ := strings.Cut(bal, ".")
	w, err1 := strconv.Atoi(whole)
	f, err2 := strconv.Atoi(frac)
	if err1 != nil || err2 != nil || held(e) != "0.00" {
		t.Fatalf("wallet %s", e.wallet())
	}
	return w*100 + f
}

func held(e chargingEnv) string {
	parts := strings.Split(e.wallet(), "/")
	return parts[1]
}

func manyFields(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `,"f%d":1`, i)
	}
	return b.String()
}

// trickle writes s a byte every 100 ms: 100 bytes take 10 s, far past the
// server's deadlines (1 s for headers, 2 s for the whole request).
func trickle(conn net.Conn, s string) error {
	for i := range len(s) {
		if _, err := conn.Write([]byte{s[i]}); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// slowloris runs a slow client and, meanwhile, a normal client that must be
// served (health and a charged call). The slow client must be cut off
// before it finishes: its connection is closed, or answered with the
// contract's error, without a success.
func slowloris(t *testing.T, e chargingEnv, keyed client, slow func(net.Conn) error) {
	u, _ := url.Parse(e.a.URL())
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	done := make(chan error, 1)
	go func() { done <- slow(conn) }()
	// Read whatever the server says until it closes the connection.
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(bufio.NewReader(conn))
		got <- string(b)
	}()
	c := keyed
	c.t = t
	for range 3 {
		if r := e.anon.do("GET", "/healthz", nil); r.Status != 200 {
			t.Fatalf("healthz during a slow client: %d", r.Status)
		}
		if r := c.do("POST", "/api/v1/image/generate", image("served meanwhile")); r.Status != 200 {
			t.Fatalf("charged call during a slow client: %d %s", r.Status, truncate(r.Raw))
		}
	}
	// The server closes the connection long before the client would
	// have finished (10 s); the bound only keeps a broken server from
	// hanging the test.
	var answer string
	select {
	case answer = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not cut the slow client")
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the slow client finished sending before the server cut it")
		}
	default:
	}
	if strings.HasPrefix(answer, "HTTP/1.1 2") {
		t.Fatalf("slow client was served: %s", truncate(answer))
	}
	if answer != "" && !strings.Contains(answer, `"error"`) && !strings.HasPrefix(answer, "HTTP/1.1 408") {
		t.Fatalf("slow client got %q, want the connection closed or the contract's error", truncate(answer))
	}
}

// TestTenThousandIdleConnections holds 10,000 TCP connections open to one
// ledgerd, idle, and checks it still answers health and a charged call
// correctly, then closes them and checks it is still up. The connections
// are held by a child process (this test binary again): with both ends in
// one process, 10,000 connections need 20,000 descriptors, more than the
// hard limit of many machines allows.
func TestTenThousandIdleConnections(t *testing.T) {
	const conns = 10_000
	if addr := os.Getenv("LEDGER_TEST_HOLD_CONNECTIONS"); addr != "" {
		holdConnections(addr, conns)
		return
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if need := uint64(conns + 2_000); lim.Cur < need {
		old := lim
		lim.Cur = need
		lim.Max = max(lim.Max, need)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Skipf("the open-file limit %d/%d is below the %d that 10,000 connections need and cannot be raised: %v", old.Cur, old.Max, need, err)
		}
		t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	}
	// Idle connections are cut after the header deadline; a long one keeps
	// them open for the whole check, which is the point.
	e := newChargingEnv(t, map[string]string{"LEDGER_HTTP_READ_HEADER_TIMEOUT": "2m"})
	e.topUp("10.00", "fund")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	u, _ := url.Parse(e.a.URL())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	holder := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestTenThousandIdleConnections$")
	holder.Env = append(os.Environ(), "LEDGER_TEST_HOLD_CONNECTIONS="+u.Host)
	holder.Stderr = os.Stderr
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = holder.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "holding ") {
		t.Fatalf("connection holder: %q %v", line, err)
	}
	t.Log(strings.TrimSpace(line))

	if r := e.anon.do("GET", "/healthz", nil); r.Status != 200 {
		t.Fatalf("healthz with %d idle connections: %d", conns, r.Status)
	}
	r := withKey(e.anon, key).do("POST", "/api/v1/image/generate", image("ten thousand"))
	if r.Status != 200 || r.Body["cost"] != "0.80" {
		t.Fatalf("charged call with %d idle connections: %d %s", conns, r.Status, truncate(r.Raw))
	}
	if got := e.wallet(); got != "9.20/0.00/9.20" {
		t.Fatalf("wallet %s, want 9.20/0.00/9.20", got)
	}
	// The holder checks its connections are still open, then closes them.
	stdin.Close()
	if err := holder.Wait(); err != nil {
		t.Fatalf("connection holder: %v", err)
	}
	if r := e.anon.do("GET", "/healthz", nil); r.Status != 200 {
		t.Fatalf("healthz after closing them: %d", r.Status)
	}
}

// holdConnections opens n idle connections to addr, says so on stdout,
// and holds them until stdin closes; it exits non-zero if the server
// dropped any meanwhile.
func holdConnections(addr string, n int) {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "holder: "+format+"\n", args...)
		os.Exit(1)
	}
	opened := make([]net.Conn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	const workers = 32
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: 30 * time.Second}
			for i := w; i < n; i += workers {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				opened[i] = c
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		fail("opening %d connections: %v", n, firstErr)
	}
	fmt.Printf("holding %d idle connections\n", n)
	_, _ = io.Copy(io.Discard, os.Stdin)
	// Still open: a read finds neither data nor a close.
	for i, c := range opened {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var ne net.Error
		if _, err := c.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
			fail("connection %d was not held open: %v", i, err)
		}
		c.Close()
	}
}
