package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

const (
	testToken = "r8_TestSecretToken0123456789abcdef"
	versionID = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
)

// call is one request the fake API received.
type call struct {
	Method, Path string
	Header       http.Header
	Body         map[string]any
}

// fakeAPI speaks Replicate's documented wire format through a handler
// each test supplies, recording every request.
type fakeAPI struct {
	*httptest.Server
	mu    sync.Mutex
	calls []call
}

func newFake(t *testing.T, h func(f *fakeAPI, w http.ResponseWriter, r *http.Request)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		c := call{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &c.Body); err != nil {
				t.Errorf("request body is not JSON: %v", err)
			}
		}
		f.mu.Lock()
		f.calls = append(f.calls, c)
		f.mu.Unlock()
		h(f, w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) base() string { return f.URL + "/v1" }

func (f *fakeAPI) recorded() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// prediction renders a prediction object the way Replicate does.
func (f *fakeAPI) prediction(id, status string, output, errText any) map[string]any {
	return map[string]any{
		"id": id, "model": "owner/model", "version": versionID, "status": status,
		"input": map[string]any{"prompt": "x"}, "output": output, "error": errText, "logs": "",
		"created_at": "2026-01-01T00:00:00Z",
		"urls": map[string]any{
			"get":    f.URL + "/v1/predictions/" + id,
			"cancel": f.URL + "/v1/predictions/" + id + "/cancel",
			"web":    "https://replicate.com/p/" + id,
		},
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func newProvider(t *testing.T, base string) *Provider {
	t.Helper()
	p, err := New(Config{BaseURL: base, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// noToken fails the test if err's text carries the API token.
func noToken(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), testToken) {
		t.Fatalf("error text leaks the API token: %v", err)
	}
}

func imageJob(model string) tasks.Job {
	return tasks.Job{TaskID: "task_1", Model: "img", Type: pricing.TypeImage, ProviderModel: model, Prompt: "a red fox", Size: "1024x768"}
}

func videoJob(model string, typ pricing.Type) tasks.Job {
	return tasks.Job{TaskID: "task_2", Model: "vid", Type: typ, ProviderModel: model, Prompt: "waves at dusk", Duration: 5, Resolution: "720p"}
}

func retryable(err error) (*tasks.RetryableError, bool) {
	var re *tasks.RetryableError
	ok := errors.As(err, &re)
	return re, ok
}

func TestNew(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}); err == nil {
		t.Error("New without token: want error")
	}
	if _, err := New(Config{Token: "  "}); err == nil {
		t.Error("New with blank token: want error")
	}
	if _, err := New(Config{Token: testToken, BaseURL: "ftp://x"}); err == nil {
		t.Error("New with a non-http base: want error")
	}
	p, err := New(Config{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "replicate" {
		t.Errorf("Name = %q", p.Name())
	}
	if p.baseS != DefaultBaseURL {
		t.Errorf("base = %q, want %q", p.baseS, DefaultBaseURL)
	}
	if p.client == nil || p.client.Timeout != 30*time.Second {
		t.Errorf("default client timeout = %v", p.client.Timeout)
	}
	p, _ = New(Config{Token: testToken, BaseURL: "http://example.test/v1/"})
	if p.baseS != "http://example.test/v1" {
		t.Errorf("trailing slash kept: %q", p.baseS)
	}
}

func TestSubmitRequestShape(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		job       tasks.Job
		wantPath  string
		wantVer   string // "" : no version field
		wantInput map[string]any
	}{
		{
			name: "official model, size to width/height, passthrough only when listed",
			job: func() tasks.Job {
				j := imageJob("black-forest-labs/flux-schnell")
				j.Input = map[string]any{"aspect_ratio": "16:9", "seed": 7.0, "secret": "x"}
				j.Options.Passthrough = []string{"seed", "missing"}
				return j
			}(),
			wantPath:  "/v1/models/black-forest-labs/flux-schnell/predictions",
			wantInput: map[string]any{"prompt": "a red fox", "width": 1024.0, "height": 768.0, "seed": 7.0},
		},
		{
			name: "aspect_ratio passed when listed",
			job: func() tasks.Job {
				j := imageJob("owner/model")
				j.Size = ""
				j.Input = map[string]any{"aspect_ratio": "16:9"}
				j.Options.Passthrough = []string{"aspect_ratio"}
				return j
			}(),
			wantPath:  "/v1/models/owner/model/predictions",
			wantInput: map[string]any{"prompt": "a red fox", "aspect_ratio": "16:9"},
		},
		{
			name: "priced fields win over passthrough",
			job: func() tasks.Job {
				j := imageJob("owner/model")
				j.Input = map[string]any{"prompt": "other", "width": 4096.0}
				j.Options.Passthrough = []string{"prompt", "width"}
				return j
			}(),
			wantPath:  "/v1/models/owner/model/predictions",
			wantInput: map[string]any{"prompt": "a red fox", "width": 1024.0, "height": 768.0},
		},
		{
			name:      "non WxH size is not sent",
			job:       func() tasks.Job { j := imageJob("owner/model"); j.Size = "auto"; return j }(),
			wantPath:  "/v1/models/owner/model/predictions",
			wantInput: map[string]any{"prompt": "a red fox"},
		},
		{
			name:      "owner/name:version",
			job:       imageJob("stability-ai/sdxl:" + versionID),
			wantPath:  "/v1/predictions",
			wantVer:   versionID,
			wantInput: map[string]any{"prompt": "a red fox", "width": 1024.0, "height": 768.0},
		},
		{
			name:      "bare version id",
			job:       videoJob(strings.ToUpper(versionID), pricing.TypeVideo),
			wantPath:  "/v1/predictions",
			wantVer:   versionID,
			wantInput: map[string]any{"prompt": "waves at dusk", "duration": 5.0, "resolution": "720p"},
		},
		{
			name:      "director without duration",
			job:       func() tasks.Job { j := videoJob("kwaivgi/kling-v2.1", pricing.TypeDirector); j.Duration = 0; return j }(),
			wantPath:  "/v1/models/kwaivgi/kling-v2.1/predictions",
			wantInput: map[string]any{"prompt": "waves at dusk", "resolution": "720p"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
				writeJSON(w, http.StatusCreated, f.prediction("p1", "starting", nil, nil))
			})
			h, err := newProvider(t, f.base()).Submit(context.Background(), tc.job)
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			if h.Done || h.Ref == "" {
				t.Fatalf("handle = %+v, want pending with a ref", h)
			}
			calls := f.recorded()
			if len(calls) != 1 {
				t.Fatalf("%d requests, want 1", len(calls))
			}
			c := calls[0]
			if c.Method != http.MethodPost || c.Path != tc.wantPath {
				t.Errorf("request = %s %s, want POST %s", c.Method, c.Path, tc.wantPath)
			}
			if got := c.Header.Get("Authorization"); got != "Bearer "+testToken {
				t.Errorf("Authorization = %q", got)
			}
			if got := c.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			if got := c.Header.Get("Prefer"); got != "" {
				t.Errorf("Prefer = %q, want none (we poll)", got)
			}
			ver, hasVer := c.Body["version"]
			switch {
			case tc.wantVer == "" && hasVer:
				t.Errorf("official model request carries version %v", ver)
			case tc.wantVer != "" && ver != tc.wantVer:
				t.Errorf("version = %v, want %s", ver, tc.wantVer)
			}
			if !reflect.DeepEqual(c.Body["input"], tc.wantInput) {
				t.Errorf("input = %v, want %v", c.Body["input"], tc.wantInput)
			}
			for k := range c.Body {
				if k != "input" && k != "version" {
					t.Errorf("unexpected top-level field %q", k)
				}
			}
		})
	}
}

func TestSubmitBadProviderModel(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	f := newFake(t, func(*fakeAPI, http.ResponseWriter, *http.Request) { hits.Add(1) })
	p := newProvider(t, f.base())
	for _, m := range []string{"", "noslash", "a/b/c", "owner/", "/name", "owner/name:", "owner/name:ab/cd", "own er/name", "../x"} {
		_, err := p.Submit(context.Background(), imageJob(m))
		if !errors.Is(err, tasks.ErrProvider) {
			t.Errorf("%q: err = %v, want ErrProvider", m, err)
		}
		if _, ok := retryable(err); ok {
			t.Errorf("%q: misconfiguration marked retryable", m)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("%d requests sent for bad models", hits.Load())
	}
}

// TestFullFlow: starting → processing → succeeded, then the same Ref
// polled by a new Provider (a restarted ledgerd).
func TestFullFlow(t *testing.T) {
	t.Parallel()
	imgs := []any{"https://replicate.delivery/a/out-0.webp", "https://replicate.delivery/a/out-1.webp"}
	vid := "https://replicate.delivery/b/output.mp4"
	cases := []struct {
		name   string
		job    tasks.Job
		output any
		want   tasks.Output
	}{
		{"image array output", imageJob("black-forest-labs/flux-schnell"), imgs, tasks.Output{
			ImageURL: imgs[0].(string), URLs: []string{imgs[0].(string), imgs[1].(string)}, EnhancedPrompt: "a red fox"}},
		{"video string output", videoJob("owner/video:"+versionID, pricing.TypeVideo), vid, tasks.Output{
			VideoURL: vid, URLs: []string{vid}, EnhancedPrompt: "waves at dusk"}},
		{"director string output", videoJob(versionID, pricing.TypeDirector), vid, tasks.Output{
			VideoURL: vid, URLs: []string{vid}, EnhancedPrompt: "waves at dusk"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var gets atomic.Int32
			f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
				switch {
				case r.Method == http.MethodPost:
					writeJSON(w, http.StatusCreated, f.prediction("gm3qorzdhgbfurvjtvhg6dckhu", "starting", nil, nil))
				case r.Method == http.MethodGet && r.URL.Path == "/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu":
					switch gets.Add(1) {
					case 1:
						writeJSON(w, http.StatusOK, f.prediction("gm3qorzdhgbfurvjtvhg6dckhu", "starting", nil, nil))
					case 2:
						writeJSON(w, http.StatusOK, f.prediction("gm3qorzdhgbfurvjtvhg6dckhu", "processing", nil, nil))
					default:
						writeJSON(w, http.StatusOK, f.prediction("gm3qorzdhgbfurvjtvhg6dckhu", "succeeded", tc.output, nil))
					}
				default:
					http.NotFound(w, r)
				}
			})
			ctx := context.Background()
			p := newProvider(t, f.base())
			h, err := p.Submit(ctx, tc.job)
			if err != nil {
				t.Fatal(err)
			}
			if h.Done || len(h.Ref) == 0 || len(h.Ref) >= 1024 {
				t.Fatalf("handle = %+v", h)
			}
			for i := 1; i <= 2; i++ {
				done, _, err := p.Poll(ctx, tc.job, h.Ref)
				if err != nil || done {
					t.Fatalf("poll %d: done=%v err=%v, want pending", i, done, err)
				}
			}
			done, out, err := p.Poll(ctx, tc.job, h.Ref)
			if err != nil || !done {
				t.Fatalf("poll 3: done=%v err=%v", done, err)
			}
			if !reflect.DeepEqual(out, tc.want) {
				t.Errorf("output = %+v, want %+v", out, tc.want)
			}

			// Restart: a new provider polls from the recorded Ref alone.
			p2 := newProvider(t, f.base())
			done, out, err = p2.Poll(ctx, tc.job, h.Ref)
			if err != nil || !done || !reflect.DeepEqual(out, tc.want) {
				t.Errorf("poll after restart: done=%v out=%+v err=%v", done, out, err)
			}
			for _, c := range f.recorded() {
				if c.Method == http.MethodGet && c.Header.Get("Authorization") != "Bearer "+testToken {
					t.Errorf("GET without the bearer token")
				}
			}
		})
	}
}

func TestSubmitAlreadySucceeded(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusCreated, f.prediction("p1", "succeeded", "https://replicate.delivery/x.png", nil))
	})
	h, err := newProvider(t, f.base()).Submit(context.Background(), imageJob("owner/model"))
	if err != nil {
		t.Fatal(err)
	}
	want := tasks.Output{ImageURL: "https://replicate.delivery/x.png", URLs: []string{"https://replicate.delivery/x.png"}, EnhancedPrompt: "a red fox"}
	if !h.Done || !reflect.DeepEqual(h.Output, want) {
		t.Errorf("handle = %+v", h)
	}
}

func TestTerminalFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, status string
		output       any
		errText      any
		want         string
	}{
		{"failed", "failed", nil, "CUDA out of memory", "prediction failed: CUDA out of memory"},
		{"failed blaming input is still a provider failure", "failed", nil, "Invalid input: width must be a multiple of 64", "width must be a multiple of 64"},
		{"failed without text", "failed", nil, nil, "no error message"},
		{"failed text echoing the token", "failed", nil, "bad auth " + testToken, "[redacted]"},
		{"canceled", "canceled", nil, nil, "prediction canceled"},
		{"aborted", "aborted", nil, nil, "aborted"},
		{"succeeded without a URL", "succeeded", "hello Alice", nil, "not an http(s) URL"},
		{"succeeded with null output", "succeeded", nil, nil, "without a file URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
				writeJSON(w, http.StatusOK, f.prediction("p9", tc.status, tc.output, tc.errText))
			})
			done, _, err := newProvider(t, f.base()).Poll(context.Background(), imageJob("o/m"), `{"id":"p9"}`)
			noToken(t, err)
			if done || !errors.Is(err, tasks.ErrProvider) || errors.Is(err, tasks.ErrInvalidInput) {
				t.Fatalf("done=%v err=%v, want ErrProvider", done, err)
			}
			if _, ok := retryable(err); ok {
				t.Error("terminal prediction marked retryable")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		code      int
		header    map[string]string
		body      string
		sentinel  error
		retry     bool
		after     time.Duration
		afterSlop bool // HTTP-date: accept a range
		contains  []string
	}{
		{name: "422 invalid_fields", code: 422,
			body:     `{"title":"Input validation failed","status":422,"detail":"- input.width: Must be less than or equal to 1440","invalid_fields":[{"type":"maximum","field":"input.width","description":"Must be less than or equal to 1440"}]}`,
			sentinel: tasks.ErrInvalidInput, contains: []string{"HTTP 422", "input.width", "less than or equal to 1440"}},
		{name: "400", code: 400, body: `{"title":"Bad request","detail":"Additional property inptu is not allowed","status":400}`,
			sentinel: tasks.ErrInvalidInput, contains: []string{"inptu"}},
		{name: "404 unknown model", code: 404, body: `{"title":"Not found","detail":"The requested resource could not be found.","status":404}`,
			sentinel: tasks.ErrInvalidInput, contains: []string{"could not be found"}},
		{name: "401 echoing the token", code: 401, body: `{"title":"Unauthenticated","detail":"Invalid token ` + testToken + `","status":401}`,
			sentinel: tasks.ErrProvider, contains: []string{"HTTP 401", "REPLICATE_API_TOKEN", "[redacted]"}},
		{name: "403", code: 403, body: `{"detail":"You do not have permission to perform this action."}`,
			sentinel: tasks.ErrProvider, contains: []string{"HTTP 403", "permission"}},
		{name: "402 billing", code: 402, body: `{"title":"Payment required","detail":"You have insufficient credit to run this model.","status":402}`,
			sentinel: tasks.ErrProvider, contains: []string{"HTTP 402", "insufficient credit"}},
		{name: "429 Retry-After seconds", code: 429, header: map[string]string{"Retry-After": "4"},
			body:     `{"detail":"Request was throttled. Expected available in 4 seconds."}`,
			sentinel: tasks.ErrProvider, retry: true, after: 4 * time.Second, contains: []string{"throttled"}},
		{name: "429 Retry-After HTTP-date", code: 429, header: map[string]string{"Retry-After": time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat)},
			body: `{"detail":"Request was throttled."}`, sentinel: tasks.ErrProvider, retry: true, after: 10 * time.Second, afterSlop: true},
		{name: "429 without Retry-After", code: 429, body: `{"detail":"Request was throttled."}`, sentinel: tasks.ErrProvider, retry: true},
		{name: "500", code: 500, body: `{"title":"Internal server error","status":500}`, sentinel: tasks.ErrProvider, retry: true, contains: []string{"HTTP 500"}},
		{name: "503 with Retry-After", code: 503, header: map[string]string{"Retry-After": "2"}, body: `{"detail":"unavailable"}`,
			sentinel: tasks.ErrProvider, retry: true, after: 2 * time.Second},
		{name: "502 HTML from a proxy", code: 502, body: `<html>Bad Gateway</html>`, sentinel: tasks.ErrProvider, retry: true, contains: []string{"Bad Gateway"}},
		{name: "201 with malformed JSON", code: 201, body: `{"id": "p1", "status": `, sentinel: tasks.ErrProvider, contains: []string{"malformed"}},
		{name: "201 without an id", code: 201, body: `{"status":"starting"}`, sentinel: tasks.ErrProvider},
		{name: "201 larger than 4 MiB", code: 201, body: `{"id":"p1","status":"starting","logs":"` + strings.Repeat("x", 4<<20) + `"}`,
			sentinel: tasks.ErrProvider, contains: []string{"larger than"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			})
			_, err := newProvider(t, f.base()).Submit(context.Background(), imageJob("owner/model"))
			noToken(t, err)
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("err = %v, want %v", err, tc.sentinel)
			}
			if tc.sentinel == tasks.ErrProvider && errors.Is(err, tasks.ErrInvalidInput) {
				t.Errorf("err %v is also ErrInvalidInput", err)
			}
			re, ok := retryable(err)
			if ok != tc.retry {
				t.Fatalf("retryable = %v, want %v (%v)", ok, tc.retry, err)
			}
			if ok {
				switch {
				case tc.afterSlop && (re.After < tc.after-3*time.Second || re.After > tc.after):
					t.Errorf("After = %v, want about %v", re.After, tc.after)
				case !tc.afterSlop && re.After != tc.after:
					t.Errorf("After = %v, want %v", re.After, tc.after)
				}
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err = %q, want it to contain %q", err, s)
				}
			}
			var apiErr *APIError
			if tc.code >= 400 && !errors.As(err, &apiErr) {
				t.Errorf("err %v does not carry an *APIError", err)
			}
			if tc.code == 422 && (apiErr == nil || len(apiErr.InvalidFields) != 1 || apiErr.InvalidFields[0].Field != "input.width") {
				t.Errorf("invalid fields = %+v", apiErr)
			}
		})
	}
}

// A prediction Replicate no longer knows says nothing about the input.
func TestPollNotFound(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 404, map[string]any{"title": "Not found", "detail": "Not found.", "status": 404})
	})
	_, _, err := newProvider(t, f.base()).Poll(context.Background(), imageJob("o/m"), "gone1")
	if !errors.Is(err, tasks.ErrProvider) || errors.Is(err, tasks.ErrInvalidInput) {
		t.Errorf("err = %v, want ErrProvider only", err)
	}
	if _, ok := retryable(err); ok {
		t.Error("404 marked retryable")
	}
}

func TestPollBadRef(t *testing.T) {
	t.Parallel()
	p := newProvider(t, "http://127.0.0.1:1/v1")
	for _, ref := range []string{"", "{", `{"id":""}`, "../../account", "a b"} {
		_, _, err := p.Poll(context.Background(), imageJob("o/m"), ref)
		if !errors.Is(err, tasks.ErrProvider) {
			t.Errorf("ref %q: err = %v, want ErrProvider", ref, err)
		}
		if _, ok := retryable(err); ok {
			t.Errorf("ref %q: marked retryable", ref)
		}
	}
}

func TestSlowServerTimesOut(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	p := newProvider(t, f.base())
	for _, op := range []string{"submit", "poll", "cancel"} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		var err error
		switch op {
		case "submit":
			_, err = p.Submit(ctx, imageJob("owner/model"))
		case "poll":
			_, _, err = p.Poll(ctx, imageJob("owner/model"), "p1")
		case "cancel":
			err = p.Cancel(ctx, imageJob("owner/model"), "p1")
		}
		cancel()
		noToken(t, err)
		if !errors.Is(err, tasks.ErrTimeout) {
			t.Errorf("%s: err = %v, want ErrTimeout", op, err)
		}
		if _, ok := retryable(err); ok {
			t.Errorf("%s: timeout marked retryable", op)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: took %v, want prompt", op, d)
		}
	}
}

// The HTTP client's own timeout (not the task's deadline) is a transient
// network failure.
func TestClientTimeoutIsRetryable(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	p, err := New(Config{BaseURL: f.base(), Token: testToken, Client: &http.Client{Timeout: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Submit(context.Background(), imageJob("owner/model"))
	if _, ok := retryable(err); !ok || !errors.Is(err, tasks.ErrProvider) {
		t.Errorf("err = %v, want retryable ErrProvider", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := newProvider(t, "http://"+addr+"/v1")
	_, err = p.Submit(context.Background(), imageJob("owner/model"))
	noToken(t, err)
	re, ok := retryable(err)
	if !ok || !errors.Is(err, tasks.ErrProvider) {
		t.Fatalf("err = %v, want retryable ErrProvider", err)
	}
	if re.After != 0 {
		t.Errorf("After = %v, want 0", re.After)
	}
	_, _, err = p.Poll(context.Background(), imageJob("owner/model"), "p1")
	if _, ok := retryable(err); !ok {
		t.Errorf("poll: err = %v, want retryable", err)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/models/owner/model/predictions":
			writeJSON(w, http.StatusCreated, f.prediction("abc123", "starting", nil, nil))
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/cancel"):
			id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/predictions/"), "/cancel")
			writeJSON(w, http.StatusOK, f.prediction(id, "canceled", nil, nil))
		default:
			http.NotFound(w, r)
		}
	})
	p := newProvider(t, f.base())
	ctx := context.Background()
	h, err := p.Submit(ctx, imageJob("owner/model"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Cancel(ctx, imageJob("owner/model"), h.Ref); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	// A bare id (no URLs recorded) derives the cancel URL from the base.
	if err := p.Cancel(ctx, imageJob("owner/model"), "def456"); err != nil {
		t.Fatalf("Cancel bare id: %v", err)
	}
	calls := f.recorded()
	if len(calls) != 3 {
		t.Fatalf("%d requests, want 3", len(calls))
	}
	for i, want := range []string{"/v1/predictions/abc123/cancel", "/v1/predictions/def456/cancel"} {
		c := calls[i+1]
		if c.Method != http.MethodPost || c.Path != want || c.Header.Get("Authorization") != "Bearer "+testToken {
			t.Errorf("cancel %d = %s %s (auth %t), want POST %s", i, c.Method, c.Path, c.Header.Get("Authorization") != "", want)
		}
	}
}

// URLs pointing away from the configured API are not followed: the token
// goes to the API host only.
func TestForeignURLsNotFollowed(t *testing.T) {
	t.Parallel()
	var leaked atomic.Bool
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(evil.Close)
	f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
		pr := f.prediction("p7", "processing", nil, nil)
		pr["urls"] = map[string]any{"get": evil.URL + "/steal", "cancel": evil.URL + "/steal/cancel"}
		writeJSON(w, http.StatusOK, pr)
	})
	p := newProvider(t, f.base())
	ctx := context.Background()
	h, err := p.Submit(ctx, imageJob("owner/model"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h.Ref, evil.URL) {
		t.Errorf("ref keeps a foreign URL: %s", h.Ref)
	}
	// Even a tampered Ref naming the foreign host is not followed.
	tampered := fmt.Sprintf(`{"id":"p7","get":%q,"cancel":%q}`, evil.URL+"/steal", evil.URL+"/steal/cancel")
	if _, _, err := p.Poll(ctx, imageJob("owner/model"), tampered); err != nil {
		t.Fatalf("Poll: %v", err)
	}
	if err := p.Cancel(ctx, imageJob("owner/model"), tampered); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if leaked.Load() {
		t.Fatal("the token was sent to a foreign host")
	}
	paths := []string{}
	for _, c := range f.recorded() {
		paths = append(paths, c.Path)
	}
	want := []string{"/v1/models/owner/model/predictions", "/v1/predictions/p7", "/v1/predictions/p7/cancel"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("paths = %v, want %v", paths, want)
	}
}

func TestRefSize(t *testing.T) {
	t.Parallel()
	f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
		pr := f.prediction("p8", "starting", nil, nil)
		long := f.URL + "/v1/predictions/p8?pad=" + strings.Repeat("a", 2000)
		pr["urls"] = map[string]any{"get": long, "cancel": long}
		writeJSON(w, http.StatusCreated, pr)
	})
	h, err := newProvider(t, f.base()).Submit(context.Background(), imageJob("owner/model"))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Ref) >= 1024 {
		t.Errorf("ref is %d bytes, want < 1 KB", len(h.Ref))
	}
	if r, err := decodeRef(h.Ref); err != nil || r.ID != "p8" {
		t.Errorf("ref %q decodes to %+v, %v", h.Ref, r, err)
	}
}

// Concurrent use under -race.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	f := newFake(t, func(f *fakeAPI, w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			writeJSON(w, http.StatusCreated, f.prediction(fmt.Sprintf("p%d", n.Add(1)), "starting", nil, nil))
			return
		}
		id := strings.TrimPrefix(r.URL.Path, "/v1/predictions/")
		writeJSON(w, http.StatusOK, f.prediction(id, "succeeded", []string{"https://replicate.delivery/" + id + ".png"}, nil))
	})
	p := newProvider(t, f.base())
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Go(func() {
			h, err := p.Submit(context.Background(), imageJob("owner/model"))
			if err != nil {
				t.Error(err)
				return
			}
			done, out, err := p.Poll(context.Background(), imageJob("owner/model"), h.Ref)
			if err != nil || !done || out.ImageURL == "" {
				t.Errorf("poll: done=%v out=%+v err=%v", done, out, err)
			}
		})
	}
	wg.Wait()
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"": 0, "4": 4 * time.Second, "0": 0, "-3": 0, "soon": 0,
		time.Now().Add(-time.Minute).UTC().Format(http.TimeFormat): 0} {
		if got := retryAfter(in); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}
