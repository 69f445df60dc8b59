package fal

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger/tasks"
)

// answer is one canned HTTP response.
type answer struct {
	code   int
	header map[string]string
	body   string
}

func serveAnswer(a answer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(a.code)
		io.WriteString(w, a.body)
	}
}

// expect describes the error wanted.
type expect struct {
	is        error // sentinel it must wrap
	retryable bool  // must be a tasks.RetryableError
	after     time.Duration
	contains  string // must be in the message
}

func check(t *testing.T, err error, want expect) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want.is)
	}
	noKey(t, err)
	if !errors.Is(err, want.is) {
		t.Fatalf("error %q does not wrap %v", err, want.is)
	}
	re, ok := isRetryable(err)
	if ok != want.retryable {
		t.Fatalf("error %q: retryable %v, want %v", err, ok, want.retryable)
	}
	if ok && re.After != want.after {
		t.Fatalf("error %q: after %v, want %v", err, re.After, want.after)
	}
	if !strings.Contains(err.Error(), want.contains) {
		t.Fatalf("error %q does not mention %q", err, want.contains)
	}
	// The runner must not take an adapter error for its own deadline.
	if !errors.Is(want.is, tasks.ErrTimeout) && errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %q wraps context.DeadlineExceeded", err)
	}
}

const validationBody = `{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"missing","url":"https://docs.fal.ai/errors/#missing"},
	{"loc":["body","image_size","width"],"msg":"Input should be less than or equal to 14142","type":"less_than_equal"}]}`

// Every HTTP answer to a submit, mapped to the tasks errors.
func TestSubmitErrors(t *testing.T) {
	httpDate := time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name string
		a    answer
		want expect
	}{
		{"422 validation detail", answer{422, map[string]string{"Content-Type": "application/json"}, validationBody},
			expect{is: tasks.ErrInvalidInput, contains: "prompt: field required; image_size.width: Input should be less than or equal to 14142"}},
		{"422 string detail", answer{422, nil, `{"detail":"Prompt must be non-empty"}`},
			expect{is: tasks.ErrInvalidInput, contains: "Prompt must be non-empty"}},
		{"400 without body falls back to the status text", answer{400, nil, ``},
			expect{is: tasks.ErrInvalidInput, contains: "Bad Request"}},
		{"404 unknown model", answer{404, nil, `{"detail":"Application 'nope' not found"}`},
			expect{is: tasks.ErrInvalidInput, contains: "Application 'nope' not found"}},
		{"413", answer{413, nil, `<html>too big</html>`}, expect{is: tasks.ErrInvalidInput, contains: "Request Entity Too Large"}},
		{"401", answer{401, nil, `{"detail":"No user found for Key ID and Secret"}`},
			expect{is: tasks.ErrProvider, contains: "fal rejected the credentials"}},
		{"403", answer{403, nil, `{"detail":"User is locked. Reason: Exhausted balance."}`},
			expect{is: tasks.ErrProvider, contains: "fal rejected the credentials"}},
		{"401 echoing the key is redacted", answer{401, nil, `{"detail":"bad key ` + testKey + `"}`},
			expect{is: tasks.ErrProvider, contains: "[redacted]"}},
		{"429 Retry-After seconds", answer{429, map[string]string{"Retry-After": "2"}, `{"detail":"Too many requests"}`},
			expect{is: tasks.ErrProvider, retryable: true, after: 2 * time.Second, contains: "rate limited"}},
		{"429 without Retry-After", answer{429, nil, ``}, expect{is: tasks.ErrProvider, retryable: true, contains: "rate limited"}},
		{"500", answer{500, nil, `{"detail":"Internal error","error_type":"internal_error"}`},
			expect{is: tasks.ErrProvider, retryable: true, contains: "HTTP 500: Internal error"}},
		{"502 html", answer{502, nil, `<html>nginx</html>`}, expect{is: tasks.ErrProvider, retryable: true, contains: "Bad Gateway"}},
		{"503 with Retry-After", answer{503, map[string]string{"Retry-After": "1"}, ``},
			expect{is: tasks.ErrProvider, retryable: true, after: time.Second, contains: "503"}},
		{"5xx marked not retryable", answer{500, map[string]string{"X-Fal-Retryable": "false"}, `{"detail":[{"loc":["body"],"msg":"model crashed","type":"internal"}]}`},
			expect{is: tasks.ErrProvider, contains: "model crashed"}},
		{"408", answer{408, nil, ``}, expect{is: tasks.ErrProvider, retryable: true, contains: "408"}},
		{"other 4xx", answer{405, nil, ``}, expect{is: tasks.ErrProvider, contains: "unexpected HTTP 405"}},
		{"malformed JSON in a 200", answer{200, nil, `{"request_id": `}, expect{is: tasks.ErrProvider, contains: "malformed submit response"}},
		{"200 without request_id", answer{200, nil, `{"status":"IN_QUEUE"}`}, expect{is: tasks.ErrProvider, contains: "no request_id"}},
		{"200 without URLs", answer{200, nil, `{"request_id":"abc"}`}, expect{is: tasks.ErrProvider, contains: "no response_url"}},
		{"body over 4 MiB", answer{200, nil, `{"request_id":"` + strings.Repeat("a", maxBody) + `"}`},
			expect{is: tasks.ErrProvider, contains: "larger than"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(serveAnswer(tc.a))
			defer srv.Close()
			_, err := newProvider(t, srv.URL).Submit(context.Background(), imageJob())
			check(t, err, tc.want)
		})
	}

	t.Run("429 Retry-After HTTP date", func(t *testing.T) {
		srv := httptest.NewServer(serveAnswer(answer{429, map[string]string{"Retry-After": httpDate}, ``}))
		defer srv.Close()
		_, err := newProvider(t, srv.URL).Submit(context.Background(), imageJob())
		re, ok := isRetryable(err)
		if !ok || re.After <= 0 || re.After > 3*time.Second {
			t.Fatalf("err %v, retryable %v", err, ok)
		}
	})
}

// Answers to the status and result requests of a completed submit.
func TestPollErrors(t *testing.T) {
	completed := answer{200, nil, `{"status":"COMPLETED","logs":null}`}
	tests := []struct {
		name           string
		status, result answer
		want           expect
	}{
		{"status 404: fal forgot the request", answer{404, nil, `{"detail":"Request not found"}`}, answer{},
			expect{is: tasks.ErrProvider, contains: "fal does not know the request"}},
		{"status 500 is retryable", answer{500, nil, ``}, answer{}, expect{is: tasks.ErrProvider, retryable: true, contains: "500"}},
		{"status 401", answer{401, nil, `{"detail":"Unauthorized"}`}, answer{}, expect{is: tasks.ErrProvider, contains: "fal rejected the credentials"}},
		{"status 429", answer{429, map[string]string{"Retry-After": "2"}, ``}, answer{},
			expect{is: tasks.ErrProvider, retryable: true, after: 2 * time.Second, contains: "429"}},
		{"malformed status JSON", answer{200, nil, `<html>`}, answer{}, expect{is: tasks.ErrProvider, contains: "malformed status response"}},
		{"status without status", answer{200, nil, `{}`}, answer{}, expect{is: tasks.ErrProvider, contains: "no status"}},
		{"unknown status", answer{200, nil, `{"status":"FAILED"}`}, answer{}, expect{is: tasks.ErrProvider, contains: "is FAILED"}},
		{"result 422: the model refused the input", completed, answer{422, nil, `{"detail":[{"loc":["body","prompt"],"msg":"flagged by the content checker","type":"content_policy_violation"}]}`},
			expect{is: tasks.ErrInvalidInput, contains: "prompt: flagged by the content checker"}},
		{"result 500 with fal's error: the request failed for good", completed, answer{500, nil, `{"detail":"Runner crashed","error_type":"runner_server_error"}`},
			expect{is: tasks.ErrProvider, contains: "Runner crashed"}},
		{"result 504 with X-Fal-Error-Type", completed, answer{504, map[string]string{"X-Fal-Error-Type": "request_timeout"}, ``},
			expect{is: tasks.ErrProvider, contains: "504"}},
		{"result 502 from a proxy is retryable", completed, answer{502, nil, `<html>bad gateway</html>`},
			expect{is: tasks.ErrProvider, retryable: true, contains: "502"}},
		{"result 404: expired", completed, answer{404, nil, ``}, expect{is: tasks.ErrProvider, contains: "fal does not know the request"}},
		{"completed status with an error", answer{200, nil, `{"status":"COMPLETED","error":"Internal error","error_type":"internal_error"}`},
			answer{200, nil, `{"images":[]}`}, expect{is: tasks.ErrProvider, contains: "failed: Internal error (internal_error)"}},
		{"malformed result JSON", completed, answer{200, nil, `{"images":`}, expect{is: tasks.ErrProvider, contains: "malformed result"}},
		{"result without media", completed, answer{200, nil, `{"images":[],"seed":1}`}, expect{is: tasks.ErrProvider, contains: "no image or video URL"}},
		{"result with only a data URI", completed, answer{200, nil, `{"images":[{"url":"data:image/png;base64,AAAA"}]}`},
			expect{is: tasks.ErrProvider, contains: "no image or video URL"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/status") {
					serveAnswer(tc.status)(w, r)
				} else {
					serveAnswer(tc.result)(w, r)
				}
			}))
			defer srv.Close()
			p := newProvider(t, srv.URL)
			enc, _ := ref{ID: "x", Response: srv.URL + "/fal-ai/flux/requests/x"}.encode()
			done, _, err := p.Poll(context.Background(), imageJob(), enc)
			if done {
				t.Fatal("done")
			}
			check(t, err, tc.want)
		})
	}
	t.Run("a Ref that is not fal's", func(t *testing.T) {
		_, _, err := newProvider(t, "https://queue.fal.run").Poll(context.Background(), imageJob(), "local_abc")
		check(t, err, expect{is: tasks.ErrProvider, contains: "not a fal request reference"})
	})
}

// A server slower than the call's deadline gives ErrTimeout, promptly.
func TestDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	defer close(release)
	p := newProvider(t, srv.URL)
	enc, _ := ref{ID: "x", Response: srv.URL + "/fal-ai/flux/requests/x"}.encode()
	calls := map[string]func(ctx context.Context) error{
		"submit": func(ctx context.Context) error { _, err := p.Submit(ctx, imageJob()); return err },
		"poll":   func(ctx context.Context) error { _, _, err := p.Poll(ctx, imageJob(), enc); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := call(ctx)
			if took := time.Since(start); took > time.Second {
				t.Fatalf("took %v", took)
			}
			check(t, err, expect{is: tasks.ErrTimeout, contains: "timed out"})
		})
	}
	t.Run("already expired", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), -time.Second)
		defer cancel()
		_, err := p.Submit(ctx, imageJob())
		check(t, err, expect{is: tasks.ErrTimeout, contains: "timed out"})
	})
	t.Run("cancelled is neither a timeout nor retryable", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := p.Submit(ctx, imageJob())
		if !errors.Is(err, context.Canceled) || errors.Is(err, tasks.ErrTimeout) {
			t.Fatalf("err %v", err)
		}
		if _, ok := isRetryable(err); ok {
			t.Fatal("retryable")
		}
	})
}

// The client's own timeout (not the task's deadline) is a broken
// exchange, worth another try.
func TestClientTimeoutIsRetryable(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	defer close(release)
	p := newProvider(t, srv.URL, func(c *Config) { c.Client = &http.Client{Timeout: 50 * time.Millisecond} })
	_, err := p.Submit(context.Background(), imageJob())
	check(t, err, expect{is: tasks.ErrProvider, retryable: true, contains: "Timeout"})
}

func TestNetworkErrorsAreRetryable(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		dead := deadURL(t)
		_, err := newProvider(t, dead).Submit(context.Background(), imageJob())
		check(t, err, expect{is: tasks.ErrProvider, retryable: true, contains: "refused"})
	})
	t.Run("connection dropped mid-response", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(200)
			io.WriteString(w, `{"request_id":`)
			hj, ok := w.(http.Hijacker)
			if !ok {
				t.Error("no hijacker")
				return
			}
			conn, _, _ := hj.Hijack()
			conn.Close()
		}))
		defer srv.Close()
		_, err := newProvider(t, srv.URL).Submit(context.Background(), imageJob())
		check(t, err, expect{is: tasks.ErrProvider, retryable: true, contains: "submit"})
	})
}

// The key is never in an error, whatever fal answers and whatever fails.
func TestKeyNeverInErrors(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A hostile or buggy server echoing the credentials everywhere.
		auth := r.Header.Get("Authorization")
		w.Header().Set("X-Echo", auth)
		code := 422
		switch {
		case strings.HasSuffix(r.URL.Path, "/status"):
			code = 200
			io.WriteString(w, `{"status":"`+auth+`","error":"`+auth+`"}`)
			return
		case r.Method == http.MethodGet:
			code = 500
		}
		w.WriteHeader(code)
		io.WriteString(w, `{"detail":"`+auth+`","message":"`+auth+`"}`)
	}))
	defer echo.Close()
	p := newProvider(t, echo.URL)
	_, err := p.Submit(context.Background(), imageJob())
	if err == nil {
		t.Fatal("want an error")
	}
	noKey(t, err)
	enc, _ := ref{ID: "x", Response: echo.URL + "/a/b/requests/x"}.encode()
	if strings.Contains(enc, testKey) {
		t.Fatal("ref has the key")
	}
	_, _, err = p.Poll(context.Background(), imageJob(), enc)
	if err == nil {
		t.Fatal("want an error")
	}
	noKey(t, err)
	_, out, err := p.WebhookResult([]byte(`{"request_id":"x","status":"ERROR","error":"` + testKey + `","payload":{"detail":"` + testKey + `"}}`))
	if err == nil || out.ImageURL != "" {
		t.Fatal("want an error")
	}
	noKey(t, err)
}
