package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// bodyRoute is one write route's body and what must hold of anything its
// check accepts.
type bodyRoute struct {
	method, path string
	new          func() body
	accepted     func(t *testing.T, b body)
	seed         string // a valid body
}

// bodilessWrites are the write routes that read no JSON body of their own:
// actions named by their path, and webhooks whose body is verified by a
// provider's library (Stripe, fal) rather than decoded here.
var bodilessWrites = map[string]bool{
	"POST /api/users/me/api-keys/{id}/rotate":  true,
	"POST /api/admin/projections/replay":       true,
	"POST /api/admin/projections/{name}/retry": true,
	"POST /api/webhooks/stripe":                true,
	"POST /api/webhooks/fal/{taskId}":          true,
}

func bodyRoutes() []bodyRoute {
	amt := func(t *testing.T, field string, a money.Amount) {
		t.Helper()
		// Anything accepted is whole cents within bounds and survives
		// its own text.
		back, err := money.Parse(a.String())
		if err != nil || !back.Equal(a) {
			t.Fatalf("%s %s does not survive its text: %v %v", field, a, back, err)
		}
		if a.Abs().Cmp(money.MustParse("999999999999.99")) > 0 {
			t.Fatalf("%s %s accepted beyond the maximum", field, a)
		}
	}
	return []bodyRoute{
		{"POST", "/api/auth/login", func() body { return &credentialsBody{} }, func(t *testing.T, b body) {
			_, _ = user.NormalizeEmail(b.(*credentialsBody).Email)
		}, `{"email":"a@example.com","password":"password1"}`},
		{"POST", "/api/auth/signup", func() body { return &signupBody{} }, func(t *testing.T, b body) {
			in := b.(*signupBody)
			_, _ = user.NormalizeEmail(in.Email)
			_ = user.CheckPassword(in.Password)
		}, `{"email":"a@example.com","password":"password1"}`},
		{"POST", "/api/v1/wallet/checkout", func() body { return &checkoutBody{} }, func(t *testing.T, b body) {
			in := b.(*checkoutBody)
			amt(t, "amount", in.amount)
			if in.amount.Cmp(money.MustParse("10.00")) < 0 {
				t.Fatalf("checkout of %s accepted below the minimum", in.amount)
			}
		}, `{"amount":"25.00"}`},
		{"PUT", "/api/v1/notifications", func() body { return &notificationsBody{} }, func(t *testing.T, b body) {
			in := b.(*notificationsBody)
			if in.threshold != nil {
				amt(t, "low_balance_threshold", *in.threshold)
				if in.threshold.IsNegative() || in.url == "" {
					t.Fatalf("threshold %s accepted negative or without a URL %q", in.threshold, in.url)
				}
			}
			plainURL(t, in.url)
		}, `{"low_balance_threshold":"5.00","webhook_url":"https://example.com/hook"}`},
		{"POST", "/api/admin/accounts", func() body { return &createAccountBody{} }, func(t *testing.T, b body) {
			in := b.(*createAccountBody)
			if in.plan == "" {
				t.Fatalf("no plan decided")
			}
			_, _ = user.NormalizeEmail(in.Email)
			_ = user.CheckPassword(in.Password)
		}, `{"email":"a@example.com","password":"password1","plan":"api"}`},
		{"PATCH", "/api/admin/accounts/{id}", func() body { return &updateAccountBody{} }, func(t *testing.T, b body) {
			in := b.(*updateAccountBody)
			if in.plan == nil && in.status == nil {
				t.Fatalf("an update of nothing accepted")
			}
		}, `{"plan":"pro","status":"active"}`},
		{"POST", "/api/admin/accounts/{id}/topups", func() body { return &topUpBody{} }, func(t *testing.T, b body) {
			amt(t, "amount", b.(*topUpBody).amount)
		}, `{"amount":"10.00","reference":"wire-1"}`},
		{"POST", "/api/admin/users", func() body { return &staffBody{} }, func(t *testing.T, b body) {
			if r := b.(*staffBody).role; r != user.RoleAdmin && r != user.RoleFinance {
				t.Fatalf("staff role %q accepted", r)
			}
		}, `{"email":"f@example.com","password":"password1","role":"finance"}`},
		{"POST", "/api/users/me/api-keys", func() body { return &createKeyBody{} }, func(t *testing.T, b body) {
			in := b.(*createKeyBody)
			if q := in.spec.Quota.Spend; q != nil {
				amt(t, "monthly_quota.spend", *q)
			}
			// The domain's rules run on what the body let through.
			if spec, err := apikey.NewSpec(in.spec, time.Now(), 600); err == nil {
				plainText(t, "name", spec.Name)
			}
		}, `{"name":"ci","scopes":["image:generate"],"monthly_quota":{"calls":10,"spend":"5.00"},"ip_allowlist":["203.0.113.0/24"],"expires_at":"2099-01-01T00:00:00Z","rate_limit_per_minute":60}`},
		{"POST", "/api/v1/image/generate", func() body { return &imageBody{} }, func(t *testing.T, b body) {
			in := b.(*imageBody)
			storable(t, map[string]any{"prompt": in.Prompt, "size": in.Size})
		}, `{"prompt":"a cat","model":"nano-banana-2","size":"1024x1024"}`},
		{"POST", "/api/v1/video/generate", func() body { return &videoBody{} }, func(t *testing.T, b body) {
			in := b.(*videoBody)
			if in.duration < 0 || in.duration > 600 {
				t.Fatalf("duration %d accepted", in.duration)
			}
			storable(t, map[string]any{"prompt": in.Prompt, "resolution": in.Resolution})
		}, `{"prompt":"a cat","model":"kling-3","duration":5,"resolution":"720p"}`},
		{"POST", "/api/v1/generateTask/{model}", func() body { return &taskBody{} }, func(t *testing.T, b body) {
			in := b.(*taskBody)
			// The input is stored as jsonb in the tasks read model.
			raw, err := json.Marshal(in.input)
			if err != nil {
				t.Fatalf("accepted input does not encode: %v", err)
			}
			var v any
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("accepted input does not decode: %v", err)
			}
			storable(t, v)
			plainURL(t, in.input.CallbackURL)
		}, `{"request_type":"async","input":{"prompt":"a cat","size":"1024x1024","seed":42,"style":{"tone":"warm"}},"callback_url":"https://example.com/cb"}`},
		{"PUT", "/api/admin/models/{model}", func() body { return &modelBody{} }, func(t *testing.T, b body) {
			in := b.(*modelBody)
			amt(t, "price", in.price)
			m := pricing.Model{Name: "m", Type: pricing.Type(in.Type), Price: in.price, Currency: money.USD,
				Provider: in.Provider, ProviderModel: in.ProviderModel, Options: in.Options}
			if m.Check() == nil {
				storable(t, map[string]any{"provider_model": m.ProviderModel, "sizes": anySlice(m.Options.Sizes),
					"resolutions": anySlice(m.Options.Resolutions)})
			}
		}, `{"type":"image","price":"0.80","provider":"local","options":{"sizes":["1024x1024"],"latency_ms":5}}`},
		{"POST", "/api/admin/accounts/{id}/adjustments", func() body { return &adjustBody{} }, func(t *testing.T, b body) {
			amt(t, "amount", b.(*adjustBody).amount)
		}, `{"amount":"-1.50","reason":"goodwill"}`},
		{"POST", "/api/admin/accounts/{id}/grants", func() body { return &grantBody{} }, func(t *testing.T, b body) {
			in := b.(*grantBody)
			amt(t, "amount", in.amount)
			if in.expires.IsZero() {
				t.Fatalf("grant accepted without an expiry")
			}
		}, `{"amount":"5.00","expires_at":"2099-01-01T00:00:00Z","reason":"promo"}`},
		{"PUT", "/api/admin/plans/{plan}", func() body { return &planBody{} }, func(t *testing.T, b body) {
			in := b.(*planBody)
			amt(t, "monthly_fee", in.def.MonthlyFee)
			amt(t, "included_credits", in.def.IncludedCredits)
			def := in.def
			def.Name = "p"
			_ = def.Check()
		}, `{"api_access":true,"monthly_fee":"20.00","included_credits":"5.00","max_keys":10,"default_rate_limit":120}`},
		{"POST", "/api/v1/subscription", func() body { return &subscribeBody{} }, func(t *testing.T, b body) {
			plainText(t, "plan", b.(*subscribeBody).Plan)
		}, `{"plan":"pro"}`},
	}
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// plainText fails on text that would be refused by Postgres or shown
// misleadingly.
func plainText(t *testing.T, field, s string) {
	t.Helper()
	if p := validation.TextProblem(s); p != "" {
		t.Fatalf("%s %q accepted: %s", field, s, p)
	}
}

func plainURL(t *testing.T, u string) {
	t.Helper()
	if strings.ContainsFunc(u, func(r rune) bool { return r < 0x20 || r == 0x7f }) || len(u) > 2048 {
		t.Fatalf("URL %q accepted", u)
	}
}

// storable fails on a JSON value Postgres would refuse in a jsonb column:
// NUL in a string or key, a number outside its range, very deep nesting.
func storable(t *testing.T, v any) {
	t.Helper()
	var walk func(v any, depth int)
	walk = func(v any, depth int) {
		if depth > 12 {
			t.Fatalf("value nested %d deep accepted", depth)
		}
		switch x := v.(type) {
		case string:
			if strings.ContainsRune(x, 0) || !utf8.ValidString(x) {
				t.Fatalf("string %q accepted", x)
			}
		case json.Number:
			f, err := strconv.ParseFloat(string(x), 64)
			if err != nil || math.IsInf(f, 0) || len(x) > 64 {
				t.Fatalf("number %s accepted", x)
			}
		case map[string]any:
			for k, e := range x {
				if strings.ContainsRune(k, 0) {
					t.Fatalf("key %q accepted", k)
				}
				walk(e, depth+1)
			}
		case []any:
			for _, e := range x {
				walk(e, depth+1)
			}
		}
	}
	walk(v, 0)
}

// TestEveryWriteRouteHasABody keeps the fuzzed table in step with the
// routes served.
func TestEveryWriteRouteHasABody(t *testing.T) {
	fuzzed := map[string]bool{}
	for _, br := range bodyRoutes() {
		fuzzed[br.method+" "+br.path] = true
	}
	for _, r := range (&Server{}).routeTable() {
		key := r.method + " " + r.path
		if r.method == "GET" || r.method == "DELETE" || bodilessWrites[key] {
			continue
		}
		if !fuzzed[key] {
			t.Errorf("%s has no entry in bodyRoutes: its body is not fuzzed", key)
		}
	}
	// Every seed is accepted, so the fuzzer starts from bodies that reach
	// the accepted path.
	for _, br := range bodyRoutes() {
		if _, err := decodeFuzzed(br, "application/json", []byte(br.seed)); err != nil {
			t.Errorf("%s %s: seed %s refused: %v", br.method, br.path, br.seed, err)
		}
	}
}

// fuzzBodyLimit is small so that the fuzzer reaches the 413 path too.
const fuzzBodyLimit = 16 << 10

func decodeFuzzed(br bodyRoute, contentType string, raw []byte) (body, error) {
	r := httptest.NewRequest(br.method, "/", bytes.NewReader(raw))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, fuzzBodyLimit)
	b := br.new()
	return b, decodeBody(r, b)
}

// FuzzDecodeBodies feeds arbitrary bytes, under an arbitrary content type,
// through every write route's decoding and validation. It never panics; a
// refusal is always one of the contract's client errors (400 bad_request or
// invalid_json, 413, 422 with the fields named) rendered in the contract's
// format; a broken body is always 400, never 422; and whatever is accepted
// is valid JSON without duplicate keys, and its values are what the ledger
// and the read models can hold.
func FuzzDecodeBodies(f *testing.F) {
	routes := bodyRoutes()
	for i, br := range routes {
		f.Add(uint8(i), "application/json", []byte(br.seed))
	}
	f.Fuzz(func(t *testing.T, route uint8, contentType string, raw []byte) {
		br := routes[int(route)%len(routes)]
		b, err := decodeFuzzed(br, contentType, raw)
		if err != nil {
			refused(t, br, raw, err)
			return
		}
		trimmed := bytes.TrimSpace(raw)
		if !json.Valid(trimmed) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("%s %s accepted a body that is not one JSON object: %q", br.method, br.path, raw)
		}
		if len(raw) > fuzzBodyLimit {
			t.Fatalf("%s %s accepted a body over the limit", br.method, br.path)
		}
		br.accepted(t, b)
	})
}

func refused(t *testing.T, br bodyRoute, raw []byte, err error) {
	t.Helper()
	ae, known := toAPIError(err)
	if !known {
		t.Fatalf("%s %s: %q refused with an unmapped error (a 500): %v", br.method, br.path, raw, err)
	}
	switch {
	case ae.Status == http.StatusBadRequest && (ae.Code == "bad_request" || ae.Code == "invalid_json"):
	case ae.Status == http.StatusRequestEntityTooLarge && ae.Code == "payload_too_large":
		if len(raw) <= fuzzBodyLimit {
			t.Fatalf("%d bytes refused as too large", len(raw))
		}
	case ae.Status == http.StatusUnprocessableEntity && ae.Code == "validation_error":
		if !json.Valid(bytes.TrimSpace(raw)) {
			t.Fatalf("%s %s: broken JSON %q answered 422, want 400: %v", br.method, br.path, raw, err)
		}
		if len(ae.Details) == 0 {
			t.Fatalf("422 without details: %v", err)
		}
		for _, d := range ae.Details {
			if d.Field == "" || d.Message == "" {
				t.Fatalf("422 detail without field or message: %+v", ae.Details)
			}
		}
	default:
		t.Fatalf("%s %s: %q refused with %d %s, want 400, 413 or 422", br.method, br.path, raw, ae.Status, ae.Code)
	}
	// The rendered answer is the contract's error JSON.
	s := &Server{log: slog.New(slog.DiscardHandler)}
	rec := httptest.NewRecorder()
	s.writeError(rec, httptest.NewRequest(br.method, "/", nil), err)
	var out errorBody
	if rec.Code != ae.Status || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out.Error.Code != ae.Code || out.Error.Message == "" {
		t.Fatalf("rendered %d %s, want %d in the contract's format", rec.Code, rec.Body, ae.Status)
	}
	var verr *validation.Error
	if errors.As(err, &verr) && ae.Status != http.StatusUnprocessableEntity {
		t.Fatalf("a validation error mapped to %d", ae.Status)
	}
}
