package app

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v85/webhook"
)

const (
	testStripeKey    = "sk_test_ledgerd_secret_key_123"
	testStripeSecret = "whsec_ledgerd_webhook_secret_456"
)

// fakeStripe stands in for api.stripe.com: it speaks the documented wire
// format of POST /v1/checkout/sessions (form-encoded request, JSON
// object back) and records what it was sent.
type fakeStripe struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []stripeRequest
}

type stripeRequest struct {
	method, path, auth string
	form               url.Values
}

func newFakeStripe(t *testing.T) *fakeStripe {
	f := &fakeStripe{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(b))
		f.mu.Lock()
		n := len(f.reqs) + 1
		f.reqs = append(f.reqs, stripeRequest{r.Method, r.URL.Path, r.Header.Get("Authorization"), form})
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.Method != "POST" || r.URL.Path != "/v1/checkout/sessions" {
			w.WriteHeader(404)
			fmt.Fprint(w, `{"error":{"type":"invalid_request_error","message":"Unrecognized request URL"}}`)
			return
		}
		if form.Get("line_items[0][price_data][unit_amount]") == "1313" { // a refusal, for the error path
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":{"type":"invalid_request_error","code":"parameter_invalid","message":"No such thing"}}`)
			return
		}
		id := fmt.Sprintf("cs_test_%d", n)
		fmt.Fprintf(w, `{"id":%q,"object":"checkout.session","mode":"payment","status":"open","payment_status":"unpaid",
			"amount_total":%s,"currency":%q,"client_reference_id":%q,"url":"https://checkout.stripe.com/c/pay/%s"}`,
			id, form.Get("line_items[0][price_data][unit_amount]"), form.Get("line_items[0][price_data][currency]"),
			form.Get("client_reference_id"), id)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeStripe) requests() []stripeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stripeRequest(nil), f.reqs...)
}

type stripeEnv struct {
	chargingEnv
	stripe *fakeStripe
}

func newStripeEnv(t *testing.T, extra map[string]string) stripeEnv {
	t.Helper()
	f := newFakeStripe(t)
	env := map[string]string{"STRIPE_SECRET_KEY": testStripeKey, "STRIPE_WEBHOOK_SECRET": testStripeSecret,
		"LEDGER_STRIPE_API_URL": f.srv.URL, "LEDGER_STRIPE_SUCCESS_URL": "https://app.example.com/paid",
		"LEDGER_STRIPE_CANCEL_URL": "https://app.example.com/cancelled"}
	for k, v := range extra {
		env[k] = v
	}
	return stripeEnv{chargingEnv: newChargingEnv(t, env), stripe: f}
}

// deliver posts a Stripe event signed with secret at ts.
func (e stripeEnv) deliver(payload string, secret string, ts time.Time) response {
	e.anon.t.Helper()
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(payload), Secret: secret, Timestamp: ts})
	return e.anon.do("POST", "/api/webhooks/stripe", []byte(payload), "Stripe-Signature", sig.Header)
}

func (e stripeEnv) deliverOK(payload string) response {
	e.anon.t.Helper()
	r := e.deliver(payload, testStripeSecret, time.Now())
	if r.Status != 200 {
		e.anon.t.Fatalf("webhook: %d %s", r.Status, r.Raw)
	}
	return r
}

func sessionEvent(evID, typ, session, acc string, cents int, currency, status, pi string) string {
	return fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2026-03-25.dahlia","type":%q,"created":1767225600,"livemode":false,
		"data":{"object":{"id":%q,"object":"checkout.session","mode":"payment","amount_total":%d,"currency":%q,
		"payment_status":%q,"status":"complete","client_reference_id":%q,"metadata":{"ledgerd_account_id":%q},"payment_intent":%q}}}`,
		evID, typ, session, cents, currency, status, acc, acc, pi)
}

func refundEvent(evID, charge, pi string, refundedCents int) string {
	return fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2026-03-25.dahlia","type":"charge.refunded","created":1767225600,
		"data":{"object":{"id":%q,"object":"charge","amount":100000,"amount_refunded":%d,"currency":"usd","refunded":false,"payment_intent":%q}}}`,
		evID, charge, refundedCents, pi)
}

func (e stripeEnv) full() string {
	e.cust.t.Helper()
	r := e.cust.do("GET", "/api/v1/wallet", nil)
	if r.Status != 200 {
		e.cust.t.Fatalf("wallet: %d %s", r.Status, r.Raw)
	}
	return fmt.Sprintf("%s/%s/%s owed %s", r.Body["balance"], r.Body["held"], r.Body["available"], r.Body["owed"])
}

// verified asserts that GET /api/admin/verify is ok once the read models
// have caught up.
func verified(t *testing.T, admin client) {
	t.Helper()
	var last string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		r := admin.do("GET", "/api/admin/verify", nil)
		if r.Status == 200 && r.Body["ok"] == true {
			return
		}
		last = r.Raw
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("verify not ok: %s", last)
}

func TestStripeCheckout(t *testing.T) {
	e := newStripeEnv(t, nil)
	r := e.cust.do("POST", "/api/v1/wallet/checkout", map[string]any{"amount": "25.50"})
	if r.Status != 200 || !strings.HasPrefix(r.Body["session_id"].(string), "cs_test_") ||
		r.Body["url"] != "https://checkout.stripe.com/c/pay/"+r.Body["session_id"].(string) {
		t.Fatalf("checkout: %d %s", r.Status, r.Raw)
	}
	reqs := e.stripe.requests()
	if len(reqs) != 1 {
		t.Fatalf("stand-in got %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	want := map[string]string{
		"mode": "payment", "line_items[0][price_data][unit_amount]": "2550", "line_items[0][price_data][currency]": "usd",
		"line_items[0][quantity]": "1", "metadata[ledgerd_account_id]": e.acc, "client_reference_id": e.acc,
		"payment_intent_data[metadata][ledgerd_account_id]": e.acc,
		"success_url": "https://app.example.com/paid", "cancel_url": "https://app.example.com/cancelled",
	}
	for k, v := range want {
		if got.form.Get(k) != v {
			t.Errorf("form %s = %q, want %q", k, got.form.Get(k), v)
		}
	}
	if got.auth != "Bearer "+testStripeKey || got.path != "/v1/checkout/sessions" {
		t.Errorf("request %s %s auth %q", got.method, got.path, got.auth)
	}

	key, _ := newKey(t, e.cust, map[string]any{"name": "k", "scopes": []string{"keys:manage"}})
	tests := []struct {
		name   string
		c      client
		body   any
		status int
		code   string
	}{
		{"below the minimum", e.cust, `{"amount":"9.99"}`, 422, "validation_error"},
		{"not a number", e.cust, `{"amount":"ten"}`, 422, "validation_error"},
		{"too precise", e.cust, `{"amount":"10.001"}`, 422, "validation_error"},
		{"missing", e.cust, `{}`, 422, "validation_error"},
		{"an API key", withKey(e.anon, key), `{"amount":"10.00"}`, 403, "forbidden"},
		{"no credentials", e.anon, `{"amount":"10.00"}`, 401, "unauthorized"},
		{"staff", e.admin, `{"amount":"10.00"}`, 403, "forbidden"},
		{"Stripe refuses", e.cust, `{"amount":"13.13"}`, 502, "provider_error"},
	}
	for _, tt := range tests {
		r := tt.c.do("POST", "/api/v1/wallet/checkout", tt.body)
		if r.Status != tt.status || errCode(r) != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, r.Status, r.Raw, tt.status, tt.code)
		}
		if strings.Contains(r.Raw, testStripeKey) {
			t.Errorf("%s: the secret key is in the response", tt.name)
		}
	}
	// Only the refused call reached the stand-in; nothing was credited.
	if n := len(e.stripe.requests()); n != 2 {
		t.Errorf("stand-in got %d requests, want 2", n)
	}
	if got := e.full(); got != "0.00/0.00/0.00 owed 0.00" {
		t.Errorf("wallet %s", got)
	}
}

func TestStripeNotConfigured(t *testing.T) {
	f := newFakeStripe(t)
	e := newChargingEnv(t, map[string]string{"LEDGER_STRIPE_API_URL": f.srv.URL})
	r := e.cust.do("POST", "/api/v1/wallet/checkout", map[string]any{"amount": "20.00"})
	if r.Status != 503 || errCode(r) != "unavailable" || !strings.Contains(r.Raw, "not configured") {
		t.Fatalf("checkout: %d %s", r.Status, r.Raw)
	}
	payload := sessionEvent("evt_1", "checkout.session.completed", "cs_1", e.acc, 2000, "usd", "paid", "pi_1")
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(payload), Secret: testStripeSecret})
	r = e.anon.do("POST", "/api/webhooks/stripe", []byte(payload), "Stripe-Signature", sig.Header)
	if r.Status != 503 || errCode(r) != "unavailable" {
		t.Fatalf("webhook: %d %s", r.Status, r.Raw)
	}
	if n := len(f.requests()); n != 0 {
		t.Fatalf("the stand-in got %d requests, want none", n)
	}
	// A fresh account's wallet row may trail its creation (nothing in
	// this test moved money, so there is no write to wait for).
	waitUntil(t, 10*time.Second, func() bool { return e.cust.do("GET", "/api/v1/wallet", nil).Status == 200 })
	if got := e.wallet(); got != "0.00/0.00/0.00" {
		t.Fatalf("wallet %s", got)
	}
}

func TestStripeWebhookSignatures(t *testing.T) {
	e := newStripeEnv(t, nil)
	paid := sessionEvent("evt_1", "checkout.session.completed", "cs_sig", e.acc, 2000, "usd", "paid", "pi_sig")
	sign := func(p string, secret string, ts time.Time) string {
		return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(p), Secret: secret, Timestamp: ts}).Header
	}
	before := e.messages()
	tests := []struct {
		name, body, header string
	}{
		{"wrong secret", paid, sign(paid, "whsec_other", time.Now())},
		{"stale timestamp", paid, sign(paid, testStripeSecret, time.Now().Add(-10*time.Minute))},
		{"body altered after signing", strings.Replace(paid, "2000", "200000", 1), sign(paid, testStripeSecret, time.Now())},
		{"no signature", paid, ""},
		{"garbage header", paid, "t=abc,v1=zz"},
	}
	for _, tt := range tests {
		r := e.anon.do("POST", "/api/webhooks/stripe", []byte(tt.body), "Stripe-Signature", tt.header)
		if r.Status != 400 || errCode(r) != "bad_request" {
			t.Errorf("%s: %d %s, want 400 bad_request", tt.name, r.Status, r.Raw)
		}
		if strings.Contains(r.Raw, testStripeSecret) {
			t.Errorf("%s: the webhook secret is in the response", tt.name)
		}
	}
	if after := e.messages(); after != before {
		t.Fatalf("bad signatures appended %d events", after-before)
	}
	// A valid one credits, also when the endpoint's API version is older
	// than the library's.
	old := strings.Replace(paid, "2026-03-25.dahlia", "2024-06-20", 1)
	r := e.deliverOK(old)
	if r.Body["result"] != "credited" || r.Body["amount"] != "20.00" {
		t.Fatalf("valid: %s", r.Raw)
	}
	if got := e.full(); got != "20.00/0.00/20.00 owed 0.00" {
		t.Fatalf("wallet %s", got)
	}
	verified(t, e.admin)
}

// TestStripeDeliveredFiveTimesCreditsOnce: Stripe retries and replays;
// concurrent deliveries of the same paid session credit once.
func TestStripeDeliveredFiveTimesCreditsOnce(t *testing.T) {
	e := newStripeEnv(t, nil)
	payload := sessionEvent("evt_5", "checkout.session.completed", "cs_five", e.acc, 2500, "usd", "paid", "pi_five")
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.deliver(payload, testStripeSecret, time.Now())
			mu.Lock()
			defer mu.Unlock()
			results[fmt.Sprintf("%d %v", r.Status, r.Body["result"])]++
		}()
	}
	wg.Wait()
	if results["200 credited"] != 1 || results["200 duplicate"] != 4 {
		t.Fatalf("results %v, want one credited and four duplicates", results)
	}
	// The async-payment event for the same session is the same payment.
	r := e.deliverOK(sessionEvent("evt_6", "checkout.session.async_payment_succeeded", "cs_five", e.acc, 2500, "usd", "paid", "pi_five"))
	if r.Body["result"] != "duplicate" {
		t.Fatalf("async event: %s", r.Raw)
	}
	if got := e.full(); got != "25.00/0.00/25.00 owed 0.00" {
		t.Fatalf("wallet %s, want 25.00 credited once", got)
	}
	// A delayed payment that succeeds later credits too.
	r = e.deliverOK(sessionEvent("evt_7", "checkout.session.async_payment_succeeded", "cs_async", e.acc, 1000, "usd", "paid", "pi_async"))
	if r.Body["result"] != "credited" {
		t.Fatalf("async payment: %s", r.Raw)
	}
	entries := e.cust.do("GET", "/api/v1/wallet/entries", nil)
	if n := len(entries.Body["entries"].([]any)); n != 2 {
		t.Fatalf("%d statement lines, want 2: %s", n, entries.Raw)
	}
	verified(t, e.admin)
}

func TestStripeEventsThatChangeNothing(t *testing.T) {
	e := newStripeEnv(t, nil)
	before := e.messages()
	tests := []struct {
		name    string
		payload string
		status  int
		code    string // error code, or the result for 200
	}{
		{"unpaid session", sessionEvent("evt_1", "checkout.session.completed", "cs_1", e.acc, 2000, "usd", "unpaid", "pi_1"), 200, "ignored"},
		{"unknown event type", `{"id":"evt_2","object":"event","type":"customer.created","data":{"object":{"id":"cus_1","object":"customer"}}}`, 200, "ignored"},
		{"refund of a charge that paid no top-up", refundEvent("evt_3", "ch_x", "pi_unknown", 500), 200, "ignored"},
		{"unknown account", sessionEvent("evt_4", "checkout.session.completed", "cs_4", "acc_01zzzzzzzzzzzzzzzzzzzzzzzz", 2000, "usd", "paid", "pi_4"), 404, "not_found"},
		{"malformed account id", sessionEvent("evt_5", "checkout.session.completed", "cs_5", "nobody", 2000, "usd", "paid", "pi_5"), 404, "not_found"},
		{"no account", sessionEvent("evt_6", "checkout.session.completed", "cs_6", "", 2000, "usd", "paid", "pi_6"), 422, "validation_error"},
		{"other currency", sessionEvent("evt_7", "checkout.session.completed", "cs_7", e.acc, 2000, "eur", "paid", "pi_7"), 422, "validation_error"},
		{"not an event", `{"object":"charge","id":"ch_1"}`, 400, "bad_request"},
	}
	for _, tt := range tests {
		r := e.deliver(tt.payload, testStripeSecret, time.Now())
		got := errCode(r)
		if r.Status == 200 {
			got, _ = r.Body["result"].(string)
		}
		if r.Status != tt.status || got != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, r.Status, r.Raw, tt.status, tt.code)
		}
	}
	if after := e.messages(); after != before {
		t.Fatalf("%d events appended, want none", after-before)
	}
	if got := e.full(); got != "0.00/0.00/0.00 owed 0.00" {
		t.Fatalf("wallet %s", got)
	}
}

func TestStripeRefunds(t *testing.T) {
	e := newStripeEnv(t, nil)
	e.model("flat-5", map[string]any{"type": "image", "price": "5.00", "provider": "local"})
	call := func() response {
		return e.cust.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "p", "model": "flat-5"})
	}
	step := func(name, payload, wantResult, wantWallet string) {
		t.Helper()
		r := e.deliverOK(payload)
		if r.Body["result"] != wantResult {
			t.Fatalf("%s: %s, want %s", name, r.Raw, wantResult)
		}
		if got := e.full(); got != wantWallet {
			t.Fatalf("%s: wallet %s, want %s", name, got, wantWallet)
		}
	}
	// Full refund of money not spent.
	step("pay A", sessionEvent("evt_a", "checkout.session.completed", "cs_a", e.acc, 3000, "usd", "paid", "pi_a"), "credited", "30.00/0.00/30.00 owed 0.00")
	step("refund A", refundEvent("evt_ra", "ch_a", "pi_a", 3000), "refunded", "0.00/0.00/0.00 owed 0.00")
	step("refund A again", refundEvent("evt_ra", "ch_a", "pi_a", 3000), "duplicate", "0.00/0.00/0.00 owed 0.00")
	verified(t, e.admin)

	// Two partial refunds take only their increments; an old one replayed
	// takes nothing.
	step("pay B", sessionEvent("evt_b", "checkout.session.completed", "cs_b", e.acc, 4000, "usd", "paid", "pi_b"), "credited", "40.00/0.00/40.00 owed 0.00")
	step("refund B 10", refundEvent("evt_rb1", "ch_b", "pi_b", 1000), "refunded", "30.00/0.00/30.00 owed 0.00")
	step("refund B 25", refundEvent("evt_rb2", "ch_b", "pi_b", 2500), "refunded", "15.00/0.00/15.00 owed 0.00")
	step("refund B 10 replayed", refundEvent("evt_rb1", "ch_b", "pi_b", 1000), "duplicate", "15.00/0.00/15.00 owed 0.00")
	r := e.deliver(refundEvent("evt_rb9", "ch_b", "pi_b", 4001), testStripeSecret, time.Now())
	if r.Status != 422 {
		t.Fatalf("refund beyond the top-up: %d %s", r.Status, r.Raw)
	}
	verified(t, e.admin)

	// Spend it all, then the rest of B is refunded: the shortfall is owed
	// and calls are refused until a top-up settles it.
	for range 3 {
		if r := call(); r.Status != 200 {
			t.Fatalf("call: %d %s", r.Status, r.Raw)
		}
	}
	step("refund the rest of B after spending it", refundEvent("evt_rb3", "ch_b", "pi_b", 4000), "refunded", "0.00/0.00/0.00 owed 15.00")
	if r := call(); r.Status != 402 || errCode(r) != "insufficient_balance" || !strings.Contains(r.Raw, "owes 15.00") {
		t.Fatalf("call in debt: %d %s", r.Status, r.Raw)
	}
	verified(t, e.admin)
	step("pay C settles the debt first", sessionEvent("evt_c", "checkout.session.completed", "cs_c", e.acc, 2000, "usd", "paid", "pi_c"), "credited", "5.00/0.00/5.00 owed 0.00")
	if r := call(); r.Status != 200 || r.Body["cost"] != "5.00" {
		t.Fatalf("call after settling: %d %s", r.Status, r.Raw)
	}
	if got := e.full(); got != "0.00/0.00/0.00 owed 0.00" {
		t.Fatalf("wallet %s", got)
	}
	// The statement shows the refunds as lines of their own.
	entries := e.cust.do("GET", "/api/v1/wallet/entries?limit=50", nil)
	refunds := 0
	for _, x := range entries.Body["entries"].([]any) {
		if x.(map[string]any)["type"] == "refund" {
			refunds++
		}
	}
	if refunds != 4 {
		t.Fatalf("%d refund lines, want 4: %s", refunds, entries.Raw)
	}
	verified(t, e.admin)
}

// TestStripeSecretsStayOut: neither Stripe secret appears in the logs, the
// events or the read models, whatever path a request took.
func TestStripeSecretsStayOut(t *testing.T) {
	f := newFakeStripe(t)
	var logs syncBuffer
	a := startAppWithLog(t, testConfigTB(t, testDir(t), map[string]string{"STRIPE_SECRET_KEY": testStripeKey,
		"STRIPE_WEBHOOK_SECRET": testStripeSecret, "LEDGER_STRIPE_API_URL": f.srv.URL}), &logs)
	defer stopApp(t, a)
	admin := client{t: t, base: a.URL()}.login("root@example.com", "root-password")
	cust, acc := customer(t, admin, "sec@example.com", "api")
	newKey(t, cust, map[string]any{"name": "k"})
	e := stripeEnv{chargingEnv: chargingEnv{a: a, admin: admin, cust: cust, acc: acc, anon: client{t: t, base: a.URL()}}, stripe: f}
	if r := cust.do("POST", "/api/v1/wallet/checkout", map[string]any{"amount": "10.00"}); r.Status != 200 {
		t.Fatalf("checkout: %d %s", r.Status, r.Raw)
	}
	if r := cust.do("POST", "/api/v1/wallet/checkout", map[string]any{"amount": "13.13"}); r.Status != 502 {
		t.Fatalf("refused checkout: %d %s", r.Status, r.Raw)
	}
	paid := sessionEvent("evt_s", "checkout.session.completed", "cs_s", acc, 1000, "usd", "paid", "pi_s")
	if r := e.deliver(paid, "whsec_wrong", time.Now()); r.Status != 400 {
		t.Fatalf("bad signature: %d", r.Status)
	}
	e.deliverOK(paid)
	e.deliverOK(refundEvent("evt_r", "ch_s", "pi_s", 500))
	verified(t, admin)
	scanForSecrets(t, a, logs.String(), []string{testStripeKey, testStripeSecret})
}
