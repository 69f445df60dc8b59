package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

// testKey looks like a real project key so the redaction of sk-... words is
// exercised too.
const testKey = "sk-proj-TESTKEY0123456789abcdefSECRET"

// A generated image as OpenAI documents it for dall-e-3 with
// response_format "url".
const okBody = `{
  "created": 1713833628,
  "data": [
    {
      "url": "https://oaidalleapiprodscus.blob.core.windows.net/private/org-x/img-abc.png?se=2026-01-01",
      "revised_prompt": "A watercolor painting of a red fox resting in fresh snow at dawn."
    }
  ]
}`

const okURL = "https://oaidalleapiprodscus.blob.core.windows.net/private/org-x/img-abc.png?se=2026-01-01"

// recorded is one request the fake server saw.
type recorded struct {
	Method, Path string
	Header       http.Header
	Body         map[string]any
}

// fake is an httptest server speaking the Images API wire format: each
// request is recorded and answered by respond.
type fake struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []recorded
	hits atomic.Int32
}

func newFake(t *testing.T, respond http.HandlerFunc) *fake {
	t.Helper()
	f := &fake{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		raw, _ := io.ReadAll(r.Body)
		rec := recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()}
		if err := json.Unmarshal(raw, &rec.Body); err != nil {
			t.Errorf("request body is not a JSON object: %v: %s", err, raw)
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, rec)
		f.mu.Unlock()
		respond(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) last(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	return f.reqs[len(f.reqs)-1]
}

// reply answers with status, headers and body.
func reply(status int, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func newProvider(t *testing.T, base string, org string) *Provider {
	t.Helper()
	p, err := New(Config{BaseURL: base + "/v1/", APIKey: testKey, Organization: org})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func imageJob() tasks.Job {
	return tasks.Job{
		TaskID: "task_1", Model: "dall-e-3-hd", Type: pricing.TypeImage, ProviderModel: "dall-e-3",
		Prompt: "a red fox in the snow", Size: "1024x1024",
	}
}

// noKey fails if the API key (or a recognisable part of it) is in s.
func noKey(t *testing.T, s string) {
	t.Helper()
	for _, part := range []string{testKey, "TESTKEY0123456789", "SECRET"} {
		if strings.Contains(s, part) {
			t.Errorf("text leaks the API key (%q): %s", part, s)
		}
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}); err == nil {
		t.Error("New without APIKey: want error")
	}
	if _, err := New(Config{APIKey: "  "}); err == nil {
		t.Error("New with blank APIKey: want error")
	}
	for _, bad := range []string{"api.openai.com/v1", "ftp://x/v1", "://"} {
		if _, err := New(Config{APIKey: testKey, BaseURL: bad}); err == nil {
			t.Errorf("New with base URL %q: want error", bad)
		}
	}
	p, err := New(Config{APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "openai" {
		t.Errorf("Name = %q", p.Name())
	}
	if p.endpoint != "https://api.openai.com/v1/images/generations" {
		t.Errorf("endpoint = %q", p.endpoint)
	}
	if p.client == nil || p.client.Timeout != 120*time.Second {
		t.Errorf("default client = %+v, want a 120s timeout", p.client)
	}
	own := &http.Client{Timeout: time.Second}
	if p, _ := New(Config{APIKey: testKey, Client: own}); p.client != own {
		t.Error("Config.Client not used")
	}
	if err := p.Cancel(context.Background(), imageJob(), "openai_x"); err != nil {
		t.Errorf("Cancel = %v", err)
	}
	// Printing the config or the provider does not show the key.
	cfg := Config{APIKey: testKey, Organization: "org-1"}
	for _, s := range []string{
		fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		fmt.Sprint(p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p),
	} {
		noKey(t, s)
	}
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	input := map[string]any{"quality": "hd", "style": "natural", "user": "end-user-7", "n": 4, "size": "256x256", "response_format": "b64_json"}
	tests := []struct {
		name        string
		org         string
		size        string
		passthrough []string
		want        map[string]any // exact body
		wantOrg     bool
	}{
		{
			name: "plain",
			size: "1024x1024",
			want: map[string]any{"model": "dall-e-3", "prompt": "a red fox in the snow", "n": 1.0, "size": "1024x1024", "response_format": "url"},
		},
		{
			name: "size omitted when empty",
			want: map[string]any{"model": "dall-e-3", "prompt": "a red fox in the snow", "n": 1.0, "response_format": "url"},
		},
		{
			name: "passthrough only listed fields; reserved fields are never overridden",
			org:  "org-abc", wantOrg: true,
			size:        "1792x1024",
			passthrough: []string{"quality", "style", "n", "size", "response_format", "missing"},
			want: map[string]any{"model": "dall-e-3", "prompt": "a red fox in the snow", "n": 1.0, "size": "1792x1024",
				"response_format": "url", "quality": "hd", "style": "natural"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, reply(200, okBody, "x-request-id", "req_1"))
			p := newProvider(t, f.srv.URL, tt.org)
			job := imageJob()
			job.Size = tt.size
			job.Input = input
			job.Options.Passthrough = tt.passthrough
			if _, err := p.Submit(context.Background(), job); err != nil {
				t.Fatalf("Submit: %v", err)
			}
			r := f.last(t)
			if r.Method != http.MethodPost || r.Path != "/v1/images/generations" {
				t.Errorf("request = %s %s, want POST /v1/images/generations", r.Method, r.Path)
			}
			if got := r.Header.Get("Authorization"); got != "Bearer "+testKey {
				t.Errorf("Authorization = %q", got)
			}
			if got := r.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			if got, has := r.Header.Get("OpenAI-Organization"), len(r.Header.Values("OpenAI-Organization")) > 0; has != tt.wantOrg || (tt.wantOrg && got != tt.org) {
				t.Errorf("OpenAI-Organization = %q (present %v), want %q (present %v)", got, has, tt.org, tt.wantOrg)
			}
			if len(r.Body) != len(tt.want) {
				t.Errorf("body = %v, want %v", r.Body, tt.want)
			}
			for k, v := range tt.want {
				if r.Body[k] != v {
					t.Errorf("body[%q] = %v, want %v (body %v)", k, r.Body[k], v, r.Body)
				}
			}
		})
	}
}

func TestSuccess(t *testing.T) {
	t.Parallel()
	noRevision := `{"created": 1713833628, "data": [{"url": "` + okURL + `", "revised_prompt": null}]}`
	tests := []struct {
		name       string
		body       string
		headers    []string
		wantPrompt string
		wantRef    string // "" : openai_ + 32 hex characters
	}{
		{"revised prompt and request id", okBody, []string{"x-request-id", "req_7f035dac6bd34715925c254fdb7b70de"},
			"A watercolor painting of a red fox resting in fresh snow at dawn.", "openai_req_7f035dac6bd34715925c254fdb7b70de"},
		{"no revised prompt, no request id", noRevision, nil, "a red fox in the snow", ""},
		{"implausible request id is hashed instead", noRevision, []string{"x-request-id", "bad id/with spaces"}, "a red fox in the snow", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, reply(200, tt.body, tt.headers...))
			h, err := newProvider(t, f.srv.URL, "").Submit(context.Background(), imageJob())
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			if !h.Done {
				t.Error("Handle not done")
			}
			out := h.Output
			if out.ImageURL != okURL || len(out.URLs) != 1 || out.URLs[0] != okURL || out.VideoURL != "" {
				t.Errorf("output = %+v", out)
			}
			if out.EnhancedPrompt != tt.wantPrompt {
				t.Errorf("EnhancedPrompt = %q, want %q", out.EnhancedPrompt, tt.wantPrompt)
			}
			if tt.wantRef != "" {
				if h.Ref != tt.wantRef {
					t.Errorf("Ref = %q, want %q", h.Ref, tt.wantRef)
				}
			} else if hash, ok := strings.CutPrefix(h.Ref, "openai_"); !ok || len(hash) != 32 || strings.Trim(hash, "0123456789abcdef") != "" {
				t.Errorf("Ref = %q, want openai_ + 32 hex", h.Ref)
			}
		})
	}
}

// Error bodies are OpenAI's documented and observed shapes.
const (
	bodyBadSize = `{"error": {"message": "'512x512' is not one of ['1024x1024', '1024x1792', '1792x1024'] - 'size'",
		"type": "invalid_request_error", "param": "size", "code": null}}`
	bodyPolicy = `{"error": {"code": "content_policy_violation", "message": "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
		"param": null, "type": "invalid_request_error"}}`
	bodyBadKey = `{"error": {"message": "Incorrect API key provided: ` + testKey + `. You can find your API key at https://platform.openai.com/account/api-keys.",
		"type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}`
	bodyRegion = `{"error": {"code": "unsupported_country_region_territory", "message": "Country, region, or territory not supported", "param": null, "type": "request_forbidden"}}`
	bodyRate   = `{"error": {"message": "Rate limit exceeded for images per minute in organization org-x. Limit: 5/1min. Current: 6/1min.",
		"type": "requests", "param": null, "code": "rate_limit_exceeded"}}`
	bodyQuota = `{"error": {"message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
		"type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}`
	bodyHardLimit = `{"error": {"code": "billing_hard_limit_reached", "message": "Billing hard limit has been reached", "param": null, "type": "invalid_request_error"}}`
	bodyServer    = `{"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}}`
	bodyModel     = `{"error": {"message": "The model ` + "`dall-e-9`" + ` does not exist or you do not have access to it.", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}`
	bodyEchoKey   = `{"error": {"message": "Invalid value for 'prompt' near ` + testKey + `", "type": "invalid_request_error", "param": "prompt", "code": null}}`
)

func TestErrors(t *testing.T) {
	t.Parallel()
	httpDate := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name      string
		respond   http.HandlerFunc
		wantIs    error
		retryable bool
		after     time.Duration // checked when retryable
		afterMin  time.Duration // if set, After must be within [afterMin, after]
		contains  []string
	}{
		{name: "400 invalid size", respond: reply(400, bodyBadSize, "x-request-id", "req_size"), wantIs: tasks.ErrInvalidInput,
			contains: []string{"is not one of", "(param size)", "req_size"}},
		{name: "400 content policy", respond: reply(400, bodyPolicy), wantIs: tasks.ErrInvalidInput,
			contains: []string{"content policy", "rejected as a result of our safety system"}},
		{name: "400 billing hard limit is the platform's problem", respond: reply(400, bodyHardLimit), wantIs: tasks.ErrProvider,
			contains: []string{"out of quota", "billing_hard_limit_reached"}},
		{name: "400 message quoting the key is redacted", respond: reply(400, bodyEchoKey), wantIs: tasks.ErrInvalidInput,
			contains: []string{"Invalid value for 'prompt'", redacted}},
		{name: "404 unknown model", respond: reply(404, bodyModel), wantIs: tasks.ErrInvalidInput, contains: []string{"does not exist"}},
		{name: "413", respond: reply(413, `{"error": {"message": "Request too large", "type": "invalid_request_error", "param": null, "code": null}}`),
			wantIs: tasks.ErrInvalidInput},
		{name: "415", respond: reply(415, `not json`), wantIs: tasks.ErrInvalidInput, contains: []string{"415"}},
		{name: "422", respond: reply(422, `{"error": {"message": "bad", "type": "invalid_request_error", "param": "quality", "code": null}}`),
			wantIs: tasks.ErrInvalidInput, contains: []string{"(param quality)"}},
		{name: "401 bad key", respond: reply(401, bodyBadKey, "x-request-id", "req_auth"), wantIs: tasks.ErrProvider,
			contains: []string{"openai rejected the credentials", "HTTP 401", "invalid_api_key", "req_auth"}},
		{name: "403 region", respond: reply(403, bodyRegion), wantIs: tasks.ErrProvider, contains: []string{"openai rejected the credentials", "HTTP 403"}},
		{name: "429 rate limit with Retry-After seconds", respond: reply(429, bodyRate, "Retry-After", "3"), wantIs: tasks.ErrProvider,
			retryable: true, after: 3 * time.Second, contains: []string{"rate limited", "Limit: 5/1min"}},
		{name: "429 with retry-after-ms preferred", respond: reply(429, bodyRate, "Retry-After", "3", "retry-after-ms", "1500"), wantIs: tasks.ErrProvider,
			retryable: true, after: 1500 * time.Millisecond},
		{name: "429 with Retry-After HTTP date", respond: reply(429, bodyRate, "Retry-After", httpDate), wantIs: tasks.ErrProvider,
			retryable: true, afterMin: 25 * time.Second, after: 30 * time.Second},
		{name: "429 without Retry-After", respond: reply(429, bodyRate), wantIs: tasks.ErrProvider, retryable: true, after: 0},
		{name: "429 garbage Retry-After", respond: reply(429, bodyRate, "Retry-After", "soon"), wantIs: tasks.ErrProvider, retryable: true, after: 0},
		{name: "429 insufficient quota", respond: reply(429, bodyQuota, "Retry-After", "3"), wantIs: tasks.ErrProvider,
			contains: []string{"out of quota", "insufficient_quota"}},
		{name: "500", respond: reply(500, bodyServer), wantIs: tasks.ErrProvider, retryable: true, after: 0,
			contains: []string{"HTTP 500", "server had an error"}},
		{name: "502 html from the edge", respond: reply(502, `<html><body>Bad gateway</body></html>`), wantIs: tasks.ErrProvider,
			retryable: true, after: 0, contains: []string{"HTTP 502 Bad Gateway"}},
		{name: "503 engine overloaded", respond: reply(503, `{"error": {"message": "The engine is currently overloaded, please try again later", "type": "server_error", "param": null, "code": null}}`),
			wantIs: tasks.ErrProvider, retryable: true, after: 0, contains: []string{"overloaded"}},
		{name: "418 other 4xx fails for good", respond: reply(418, `{}`), wantIs: tasks.ErrProvider, contains: []string{"HTTP 418"}},
		{name: "200 malformed JSON", respond: reply(200, `{"created": 1, "data": [{"url": `), wantIs: tasks.ErrProvider, contains: []string{"malformed"}},
		{name: "200 no images", respond: reply(200, `{"created": 1, "data": []}`), wantIs: tasks.ErrProvider, contains: []string{"no images"}},
		{name: "200 b64 only", respond: reply(200, `{"created": 1, "data": [{"b64_json": "iVBORw0KGgo="}]}`), wantIs: tasks.ErrProvider,
			contains: []string{"b64_json", `response_format "url"`}},
		{name: "200 non-http url", respond: reply(200, `{"created": 1, "data": [{"url": "javascript:alert(1)"}]}`), wantIs: tasks.ErrProvider},
		{name: "503 oversized error page is still retryable", respond: reply(503, strings.Repeat("x", maxBody+10)), wantIs: tasks.ErrProvider,
			retryable: true, after: 0, contains: []string{"HTTP 503"}},
		{name: "200 body over the limit", respond: reply(200, `{"created": 1, "data": [{"b64_json": "`+strings.Repeat("A", maxBody)+`"}]}`),
			wantIs: tasks.ErrProvider, contains: []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, tt.respond)
			_, err := newProvider(t, f.srv.URL, "").Submit(context.Background(), imageJob())
			if err == nil {
				t.Fatal("Submit: want error")
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.wantIs)
			}
			if tt.wantIs == tasks.ErrProvider && errors.Is(err, tasks.ErrInvalidInput) {
				t.Errorf("err = %v also wraps ErrInvalidInput", err)
			}
			var re *tasks.RetryableError
			if got := errors.As(err, &re); got != tt.retryable {
				t.Errorf("retryable = %v, want %v (err %v)", got, tt.retryable, err)
			} else if got {
				if tt.afterMin > 0 {
					if re.After < tt.afterMin || re.After > tt.after {
						t.Errorf("After = %v, want within [%v, %v]", re.After, tt.afterMin, tt.after)
					}
				} else if re.After != tt.after {
					t.Errorf("After = %v, want %v", re.After, tt.after)
				}
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err = %q, want it to contain %q", err, s)
				}
			}
			noKey(t, err.Error())
			if n := f.hits.Load(); n != 1 {
				t.Errorf("server saw %d requests, want 1 (the adapter must not retry by itself)", n)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		select { // slower than the caller's deadline
		case <-r.Context().Done():
		case <-release:
		case <-time.After(5 * time.Second):
		}
		reply(200, okBody)(w, r)
	})
	defer close(release)
	p := newProvider(t, f.srv.URL, "")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Submit(ctx, imageJob())
	if !errors.Is(err, tasks.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Submit took %v past a 100ms deadline", d)
	}
	noKey(t, err.Error())

	// An already expired context does not even send the request.
	expired, cancel2 := context.WithTimeout(context.Background(), -time.Second)
	defer cancel2()
	before := f.hits.Load()
	if _, err := p.Submit(expired, imageJob()); !errors.Is(err, tasks.ErrTimeout) {
		t.Errorf("expired ctx: err = %v, want ErrTimeout", err)
	}
	if f.hits.Load() != before {
		t.Error("expired ctx: request was sent")
	}
}

func TestClientTimeoutIsRetryable(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	p, err := New(Config{BaseURL: f.srv.URL, APIKey: testKey, Client: &http.Client{Timeout: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Submit(context.Background(), imageJob())
	var re *tasks.RetryableError
	if !errors.Is(err, tasks.ErrTimeout) || !errors.As(err, &re) {
		t.Errorf("err = %v, want a retryable ErrTimeout", err)
	}
	noKey(t, err.Error())
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // nothing listens there any more
	_, err := newProvider(t, base, "").Submit(context.Background(), imageJob())
	var re *tasks.RetryableError
	if !errors.As(err, &re) || !errors.Is(err, tasks.ErrProvider) || re.After != 0 {
		t.Fatalf("err = %v, want retryable ErrProvider with After 0", err)
	}
	noKey(t, err.Error())
}

func TestUnsupportedJobs(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply(200, okBody))
	p := newProvider(t, f.srv.URL, "")
	video := imageJob()
	video.Type, video.Duration, video.Resolution = pricing.TypeVideo, 5, "720p"
	director := video
	director.Type = pricing.TypeDirector
	empty := imageJob()
	empty.Prompt = "   "
	for name, job := range map[string]tasks.Job{"video": video, "director": director, "empty prompt": empty} {
		_, err := p.Submit(context.Background(), job)
		if !errors.Is(err, tasks.ErrInvalidInput) {
			t.Errorf("%s: err = %v, want ErrInvalidInput", name, err)
		}
		if name != "empty prompt" && (err == nil || !strings.Contains(err.Error(), "openai images provider handles image models only")) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if n := f.hits.Load(); n != 0 {
		t.Errorf("server saw %d requests for jobs refused up front", n)
	}
}

func TestPollNotResumable(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply(200, okBody))
	p := newProvider(t, f.srv.URL, "")
	done, out, err := p.Poll(context.Background(), imageJob(), "openai_req_123")
	if done || out.ImageURL != "" {
		t.Errorf("Poll = done %v, out %+v", done, out)
	}
	var re *tasks.RetryableError
	if !errors.Is(err, tasks.ErrProvider) || errors.As(err, &re) {
		t.Fatalf("err = %v, want a non-retryable ErrProvider", err)
	}
	if !strings.Contains(err.Error(), "openai calls cannot be resumed; the call is released") {
		t.Errorf("err = %q", err)
	}
	if f.hits.Load() != 0 {
		t.Error("Poll called the API")
	}
}

func TestConcurrentSubmits(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply(200, okBody, "x-request-id", "req_c"))
	p := newProvider(t, f.srv.URL, "org-1")
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if h, err := p.Submit(context.Background(), imageJob()); err != nil || h.Output.ImageURL != okURL {
				t.Errorf("Submit = %+v, %v", h, err)
			}
		})
	}
	wg.Wait()
	if n := f.hits.Load(); n != 16 {
		t.Errorf("server saw %d requests, want 16", n)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		headers []string
		want    time.Duration
	}{
		{nil, 0},
		{[]string{"Retry-After", "3"}, 3 * time.Second},
		{[]string{"Retry-After", "0.5"}, 500 * time.Millisecond},
		{[]string{"Retry-After", "-4"}, 0},
		{[]string{"Retry-After", "NaN"}, 0},
		{[]string{"Retry-After", "1e300"}, maxRetryAfter},
		{[]string{"Retry-After", time.Now().Add(-time.Minute).UTC().Format(http.TimeFormat)}, 0},
		{[]string{"retry-after-ms", "250"}, 250 * time.Millisecond},
		{[]string{"retry-after-ms", "junk", "Retry-After", "2"}, 2 * time.Second},
		{[]string{"retry-after-ms", "+Inf"}, maxRetryAfter},
	}
	for _, tt := range tests {
		h := http.Header{}
		for i := 0; i+1 < len(tt.headers); i += 2 {
			h.Set(tt.headers[i], tt.headers[i+1])
		}
		if got := retryAfter(h); got != tt.want {
			t.Errorf("retryAfter(%v) = %v, want %v", tt.headers, got, tt.want)
		}
	}
}
