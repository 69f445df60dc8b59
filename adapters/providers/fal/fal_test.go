package fal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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

// testKey looks like a fal key ("key_id:key_secret").
const testKey = "0f4c2a1e-7d3b-4c55-9e1a-58b2c0d9e4f1:3b9f0c6d8e2a4f17b5c3d1e0a9f8b7c6"

// noKey fails the test if the key (or either half of it) is in err's text.
func noKey(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, part := range append([]string{testKey}, strings.Split(testKey, ":")...) {
		if strings.Contains(msg, part) {
			t.Fatalf("error text contains the key: %q", msg)
		}
	}
}

func isRetryable(err error) (*tasks.RetryableError, bool) {
	var re *tasks.RetryableError
	ok := errors.As(err, &re)
	return re, ok
}

// fakeFal speaks fal's queue protocol: POST /{owner}/{app}[/{path}] queues
// a request, answering with the status, response and cancel URLs under
// /{owner}/{app}/requests/{id}; the status goes IN_QUEUE, IN_PROGRESS,
// COMPLETED on successive polls; the result is the configured body.
type fakeFal struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	submits   []submitted
	polls     map[string]int
	result    string // JSON body of the result
	cancelled []string
	nextID    int
	requests  []string // "METHOD path"
}

type submitted struct {
	path, query, auth, ctype string
	body                     map[string]any
}

func newFake(t *testing.T, result string) *fakeFal {
	f := &fakeFal{t: t, polls: map[string]int{}, result: result}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeFal) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "Key "+testKey {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"detail":"No user found for Key ID and Secret"}`)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.Method == http.MethodPost:
		var body map[string]any
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &body); err != nil {
			f.t.Errorf("submit body is not JSON: %q", data)
		}
		f.submits = append(f.submits, submitted{path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization"),
			ctype: r.Header.Get("Content-Type"), body: body})
		f.nextID++
		id := fmt.Sprintf("req-%d", f.nextID)
		base := f.srv.URL + "/" + parts[0] + "/" + parts[1] + "/requests/" + id
		writeJSON(w, http.StatusOK, map[string]any{"request_id": id, "response_url": base,
			"status_url": base + "/status", "cancel_url": base + "/cancel", "queue_position": 0})
	case len(parts) == 5 && parts[2] == "requests" && parts[4] == "status" && r.Method == http.MethodGet:
		id := parts[3]
		n := f.polls[id]
		f.polls[id] = n + 1
		base := f.srv.URL + "/" + parts[0] + "/" + parts[1] + "/requests/" + id
		switch n {
		case 0:
			writeJSON(w, http.StatusAccepted, map[string]any{"status": "IN_QUEUE", "queue_position": 2, "response_url": base})
		case 1:
			writeJSON(w, http.StatusAccepted, map[string]any{"status": "IN_PROGRESS", "logs": []any{}, "response_url": base})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"status": "COMPLETED", "logs": nil,
				"metrics": map[string]any{"inference_time": 1.5}, "response_url": base})
		}
	case len(parts) == 4 && parts[2] == "requests" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, f.result)
	case len(parts) == 5 && parts[4] == "cancel" && r.Method == http.MethodPut:
		f.cancelled = append(f.cancelled, parts[3])
		writeJSON(w, http.StatusAccepted, map[string]any{"status": "CANCELLATION_REQUESTED"})
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func newProvider(t *testing.T, queue string, mod ...func(*Config)) *Provider {
	t.Helper()
	cfg := Config{QueueURL: queue, Key: testKey}
	for _, m := range mod {
		m(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func imageJob() tasks.Job {
	return tasks.Job{TaskID: "task_1", Model: "flux-dev", Type: pricing.TypeImage, ProviderModel: "fal-ai/flux/dev",
		Prompt: "a red fox", Size: "1024x768"}
}

func videoJob() tasks.Job {
	return tasks.Job{TaskID: "task_2", Model: "kling-3", Type: pricing.TypeVideo, ProviderModel: "fal-ai/kling-video/v2.5-turbo/pro/text-to-video",
		Prompt: "a fox runs", Duration: 5, Resolution: "720p"}
}

const imageResult = `{"images":[{"url":"https://v3.fal.media/files/a.png","content_type":"image/png","width":1024,"height":768},
	{"url":"https://v3.fal.media/files/b.png"}],"seed":42,"has_nsfw_concepts":[false,false],"prompt":"a red fox, golden hour"}`

const videoResult = `{"video":{"url":"https://v3.fal.media/files/out.mp4","content_type":"video/mp4","file_name":"out.mp4","file_size":123}}`

func TestNew(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a key: want an error")
	}
	if _, err := New(Config{Key: "  "}); err == nil {
		t.Fatal("New with a blank key: want an error")
	}
	for _, q := range []string{"queue.fal.run", "ftp://queue.fal.run", "https://queue.fal.run?x=1"} {
		if _, err := New(Config{Key: testKey, QueueURL: q}); err == nil {
			t.Errorf("New(QueueURL %q): want an error", q)
		} else {
			noKey(t, err)
		}
	}
	p, err := New(Config{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "fal" || p.queue != DefaultQueueURL || p.client == nil || p.client.Timeout != 30*time.Second {
		t.Fatalf("defaults: name %q queue %q client %v", p.Name(), p.queue, p.client)
	}
	// Printing the config or the provider never shows the key.
	cfg := Config{Key: testKey, QueueURL: DefaultQueueURL}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprint(p), fmt.Sprintf("%#v", p), fmt.Sprintf("%+v", p)} {
		noKey(t, errors.New(s))
	}
}

func TestSubmitRequest(t *testing.T) {
	tests := []struct {
		name    string
		job     func() tasks.Job
		webhook string
		path    string
		want    map[string]any // expected body (JSON-decoded)
		query   string
	}{
		{
			name: "image WxH size becomes width/height",
			job:  imageJob,
			path: "/fal-ai/flux/dev",
			want: map[string]any{"prompt": "a red fox", "image_size": map[string]any{"width": 1024.0, "height": 768.0}},
		},
		{
			name: "image preset size is sent as is",
			job: func() tasks.Job {
				j := imageJob()
				j.Size = "landscape_16_9"
				return j
			},
			path: "/fal-ai/flux/dev",
			want: map[string]any{"prompt": "a red fox", "image_size": "landscape_16_9"},
		},
		{
			name: "image without size",
			job: func() tasks.Job {
				j := imageJob()
				j.Size = ""
				return j
			},
			path: "/fal-ai/flux/dev",
			want: map[string]any{"prompt": "a red fox"},
		},
		{
			name: "passthrough fields only when listed; priced fields cannot be overridden",
			job: func() tasks.Job {
				j := imageJob()
				j.Input = map[string]any{"seed": json.Number("7"), "num_images": 4, "output_format": "png", "image_size": "square_hd"}
				j.Options.Passthrough = []string{"seed", "output_format", "image_size", "absent"}
				return j
			},
			path: "/fal-ai/flux/dev",
			want: map[string]any{"prompt": "a red fox", "image_size": map[string]any{"width": 1024.0, "height": 768.0},
				"seed": 7.0, "output_format": "png"},
		},
		{
			name: "video duration and resolution",
			job:  videoJob,
			path: "/fal-ai/kling-video/v2.5-turbo/pro/text-to-video",
			want: map[string]any{"prompt": "a fox runs", "duration": "5", "resolution": "720p"},
		},
		{
			name: "video without duration or resolution",
			job: func() tasks.Job {
				j := videoJob()
				j.Duration, j.Resolution = 0, ""
				return j
			},
			path: "/fal-ai/kling-video/v2.5-turbo/pro/text-to-video",
			want: map[string]any{"prompt": "a fox runs"},
		},
		{
			name:    "webhook parameter",
			job:     imageJob,
			webhook: "https://ledgerd.example/hooks/fal/",
			path:    "/fal-ai/flux/dev",
			want:    map[string]any{"prompt": "a red fox", "image_size": map[string]any{"width": 1024.0, "height": 768.0}},
			query:   "fal_webhook=https%3A%2F%2Fledgerd.example%2Fhooks%2Ffal%2Ftask_1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, imageResult)
			p := newProvider(t, f.srv.URL, func(c *Config) { c.WebhookURL = tc.webhook })
			h, err := p.Submit(context.Background(), tc.job())
			if err != nil {
				t.Fatal(err)
			}
			if h.Done || h.Ref == "" || len(h.Ref) >= 1024 || strings.Contains(h.Ref, testKey) {
				t.Fatalf("handle %+v", h)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.submits) != 1 || f.requests[0] != "POST "+tc.path {
				t.Fatalf("requests %v", f.requests)
			}
			s := f.submits[0]
			if s.auth != "Key "+testKey || s.ctype != "application/json" || s.query != tc.query {
				t.Fatalf("auth %q content type %q query %q", s.auth, s.ctype, s.query)
			}
			got, _ := json.Marshal(s.body)
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Fatalf("body\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestSubmitRejectsBadModelID(t *testing.T) {
	f := newFake(t, imageResult)
	p := newProvider(t, f.srv.URL)
	for _, m := range []string{"", "../admin", "fal-ai//flux", "fal-ai/flux?x=1", "https://evil.example/x"} {
		j := imageJob()
		j.ProviderModel = m
		_, err := p.Submit(context.Background(), j)
		if !errors.Is(err, tasks.ErrProvider) {
			t.Errorf("provider_model %q: err %v, want ErrProvider", m, err)
		}
		if _, ok := isRetryable(err); ok {
			t.Errorf("provider_model %q: retryable", m)
		}
	}
	if len(f.requests) != 0 {
		t.Fatalf("requests sent: %v", f.requests)
	}
}

// pollUntilDone polls like the runner does (without its waits).
func pollUntilDone(t *testing.T, p *Provider, job tasks.Job, ref string) (tasks.Output, int) {
	t.Helper()
	for n := 1; n <= 10; n++ {
		done, out, err := p.Poll(context.Background(), job, ref)
		if err != nil {
			t.Fatalf("poll %d: %v", n, err)
		}
		if done {
			return out, n
		}
	}
	t.Fatal("not done after 10 polls")
	return tasks.Output{}, 0
}

func TestFullFlow(t *testing.T) {
	tests := []struct {
		name   string
		job    tasks.Job
		result string
		want   tasks.Output
	}{
		{"image", imageJob(), imageResult, tasks.Output{ImageURL: "https://v3.fal.media/files/a.png",
			URLs: []string{"https://v3.fal.media/files/a.png", "https://v3.fal.media/files/b.png"}, EnhancedPrompt: "a red fox, golden hour"}},
		{"image revised prompt", imageJob(), `{"images":[{"url":"https://x.test/1.png"}],"prompt":"p","revised_prompt":"better"}`,
			tasks.Output{ImageURL: "https://x.test/1.png", URLs: []string{"https://x.test/1.png"}, EnhancedPrompt: "better"}},
		{"single image, no prompt echoed", imageJob(), `{"image":{"url":"https://x.test/1.png"}}`,
			tasks.Output{ImageURL: "https://x.test/1.png", URLs: []string{"https://x.test/1.png"}, EnhancedPrompt: "a red fox"}},
		{"video", videoJob(), videoResult, tasks.Output{VideoURL: "https://v3.fal.media/files/out.mp4",
			URLs: []string{"https://v3.fal.media/files/out.mp4"}, EnhancedPrompt: "a fox runs"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.result)
			p := newProvider(t, f.srv.URL)
			h, err := p.Submit(context.Background(), tc.job)
			if err != nil {
				t.Fatal(err)
			}
			out, polls := pollUntilDone(t, p, tc.job, h.Ref)
			if polls != 3 {
				t.Fatalf("done after %d polls, want 3 (IN_QUEUE, IN_PROGRESS, COMPLETED)", polls)
			}
			got, _ := json.Marshal(out)
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Fatalf("output\n got %s\nwant %s", got, want)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			owner := strings.Join(strings.Split(tc.job.ProviderModel, "/")[:2], "/")
			wantReqs := []string{"POST /" + tc.job.ProviderModel, "GET /" + owner + "/requests/req-1/status",
				"GET /" + owner + "/requests/req-1/status", "GET /" + owner + "/requests/req-1/status", "GET /" + owner + "/requests/req-1"}
			if strings.Join(f.requests, "\n") != strings.Join(wantReqs, "\n") {
				t.Fatalf("requests\n%s\nwant\n%s", strings.Join(f.requests, "\n"), strings.Join(wantReqs, "\n"))
			}
		})
	}
}

func TestPollAfterRestart(t *testing.T) {
	f := newFake(t, imageResult)
	job := imageJob()
	h, err := newProvider(t, f.srv.URL).Submit(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	// A new process: a new provider with the same config, only the Ref.
	restarted := newProvider(t, f.srv.URL)
	out, _ := pollUntilDone(t, restarted, job, h.Ref)
	if out.ImageURL != "https://v3.fal.media/files/a.png" {
		t.Fatalf("output %+v", out)
	}
	if id, err := RequestID(h.Ref); err != nil || id != "req-1" {
		t.Fatalf("RequestID = %q, %v", id, err)
	}
}

func TestRef(t *testing.T) {
	p := newProvider(t, "https://queue.fal.run")
	base := "https://queue.fal.run/fal-ai/flux/requests/80e732af-660e-45cd-bd63-580e4f2a94cc"
	r := ref{ID: "80e732af-660e-45cd-bd63-580e4f2a94cc", Response: base, Status: base + "/status", Cancel: base + "/cancel"}
	enc, err := r.encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) > 200 {
		t.Fatalf("ref is %d bytes: %s", len(enc), enc)
	}
	got, err := p.decodeRef(enc)
	if err != nil || got.statusURL() != r.Status || got.cancelURL() != r.Cancel || got.responseURL() != base || got.ID != r.ID {
		t.Fatalf("decode(%s) = %+v, %v", enc, got, err)
	}
	// Non-standard URLs are kept as given.
	odd := ref{ID: "x", Response: base, Status: "https://queue.fal.run/s/x", Cancel: "https://queue.fal.run/c/x"}
	enc, _ = odd.encode()
	if got, err := p.decodeRef(enc); err != nil || got != odd {
		t.Fatalf("decode(%s) = %+v, %v", enc, got, err)
	}
	for _, bad := range []string{"", "local_abc", `{"id":"x"}`, `{"id":"","r":"` + base + `"}`,
		`{"id":"x","r":"https://evil.example/requests/x"}`, `{"id":"x","r":"` + base + `","s":"https://evil.example/s"}`,
		`{"id":"x","r":"/relative"}`, strings.Repeat("x", 2000)} {
		if _, err := p.decodeRef(bad); err == nil {
			t.Errorf("decodeRef(%.60q): want an error", bad)
		}
	}
}

// A Ref pointing outside the queue's origin (a tampered ledger row) never
// gets the key.
func TestForeignRefGetsNoKey(t *testing.T) {
	var hits atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	defer evil.Close()
	f := newFake(t, imageResult)
	p := newProvider(t, f.srv.URL)
	enc, _ := ref{ID: "x", Response: evil.URL + "/a/b/requests/x"}.encode()
	if _, _, err := p.Poll(context.Background(), imageJob(), enc); !errors.Is(err, tasks.ErrProvider) {
		t.Fatalf("poll: %v", err)
	}
	if err := p.Cancel(context.Background(), imageJob(), enc); err == nil {
		t.Fatal("cancel: want an error")
	}
	// Nor do URLs fal would return on another origin.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := evil.URL + "/a/b/requests/x"
		writeJSON(w, 200, map[string]any{"request_id": "x", "response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"})
	}))
	defer srv.Close()
	_, err := newProvider(t, srv.URL).Submit(context.Background(), imageJob())
	if !errors.Is(err, tasks.ErrProvider) || !strings.Contains(err.Error(), "malformed submit response") {
		t.Fatalf("submit: %v", err)
	}
	if _, ok := isRetryable(err); ok {
		t.Fatal("submit: retryable")
	}
	if hits.Load() != 0 {
		t.Fatalf("the foreign server got %d requests", hits.Load())
	}
}

func TestCancel(t *testing.T) {
	f := newFake(t, imageResult)
	p := newProvider(t, f.srv.URL)
	h, err := p.Submit(context.Background(), imageJob())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Cancel(context.Background(), imageJob(), h.Ref); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	if last := f.requests[len(f.requests)-1]; last != "PUT /fal-ai/flux/requests/req-1/cancel" || len(f.cancelled) != 1 {
		t.Fatalf("requests %v", f.requests)
	}
	f.mu.Unlock()

	// fal's refusals are not errors: cancelling is best effort.
	for _, answer := range []struct {
		code int
		body string
	}{{400, `{"status":"ALREADY_COMPLETED"}`}, {404, `{"status":"NOT_FOUND"}`}, {500, `oops`}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPut {
				t.Errorf("cancel method %s", r.Method)
			}
			w.WriteHeader(answer.code)
			io.WriteString(w, answer.body)
		}))
		enc, _ := ref{ID: "x", Response: srv.URL + "/a/b/requests/x"}.encode()
		if err := newProvider(t, srv.URL).Cancel(context.Background(), imageJob(), enc); err != nil {
			t.Errorf("cancel answered %d: %v", answer.code, err)
		}
		srv.Close()
	}
	// A request that cannot be made is reported.
	dead := deadURL(t)
	enc, _ := ref{ID: "x", Response: dead + "/a/b/requests/x"}.encode()
	err = newProvider(t, dead).Cancel(context.Background(), imageJob(), enc)
	if err == nil {
		t.Fatal("cancel to a closed port: want an error")
	}
	noKey(t, err)
}

// deadURL is a URL nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}
