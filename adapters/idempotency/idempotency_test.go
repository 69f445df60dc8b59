package idempotency

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
)

// harness is one Store with its rendered errors and a movable clock.
type harness struct {
	*Store
	mu   sync.Mutex
	errs []error
	now  time.Time
}

func newHarness(t *testing.T, js jetstream.JetStream, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg := Config{
		JS:     js,
		Bucket: "idem_test",
		Logger: slog.New(slog.DiscardHandler),
		Now: func() time.Time {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.now
		},
		WriteError: func(w http.ResponseWriter, r *http.Request, err error) {
			h.mu.Lock()
			h.errs = append(h.errs, err)
			h.mu.Unlock()
			defaultWriteError(w, r, err)
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Store = s
	return h
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	h.now = h.now.Add(d)
	h.mu.Unlock()
}

func (h *harness) lastErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) == 0 {
		return nil
	}
	return h.errs[len(h.errs)-1]
}

func setup(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.JetStream(t, natstest.Server(t))
	return js
}

// handler counts its runs and answers with status and body.
type handler struct {
	runs   atomic.Int32
	status int
	body   string
}

func (c *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.runs.Add(1)
	// It must see the whole request body even though Wrap read it first.
	in, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/api/v1/things/1")
	w.WriteHeader(c.status)
	_, _ = io.WriteString(w, strings.ReplaceAll(c.body, "$in", string(in)))
}

func post(s *Store, scope, key, body string, next http.Handler) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/things?x=1", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if key != "" {
		r.Header.Set(HeaderKey, key)
	}
	w := httptest.NewRecorder()
	s.Wrap(w, r, scope, next)
	return w
}

func TestNoHeaderAlwaysRuns(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	next := &handler{status: http.StatusCreated, body: `{}`}
	for range 3 {
		if w := post(h.Store, "acct_1", "", `{"a":1}`, next); w.Code != http.StatusCreated {
			t.Fatalf("status %d", w.Code)
		}
	}
	if n := next.runs.Load(); n != 3 {
		t.Fatalf("next ran %d times, want 3", n)
	}
}

func TestSameRequestIsReplayed(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	next := &handler{status: http.StatusCreated, body: `{"echo":$in}`}
	first := post(h.Store, "acct_1", "k1", `{"a":1}`, next)
	second := post(h.Store, "acct_1", "k1", `{"a":1}`, next)

	if n := next.runs.Load(); n != 1 {
		t.Fatalf("next ran %d times, want 1", n)
	}
	if first.Code != http.StatusCreated || first.Body.String() != `{"echo":{"a":1}}` {
		t.Fatalf("first: %d %q", first.Code, first.Body)
	}
	if first.Header().Get(HeaderReplayed) != "" {
		t.Fatal("first response marked as replayed")
	}
	if second.Code != first.Code || second.Body.String() != first.Body.String() {
		t.Fatalf("replay %d %q, want %d %q", second.Code, second.Body, first.Code, first.Body)
	}
	for _, hdr := range []string{"Content-Type", "Location"} {
		if got, want := second.Header().Get(hdr), first.Header().Get(hdr); got != want {
			t.Errorf("replayed %s = %q, want %q", hdr, got, want)
		}
	}
	if second.Header().Get(HeaderReplayed) != "true" {
		t.Fatalf("%s header = %q", HeaderReplayed, second.Header().Get(HeaderReplayed))
	}
}

func TestDifferentRequestConflicts(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	next := &handler{status: http.StatusOK, body: `{}`}
	post(h.Store, "acct_1", "k1", `{"a":1}`, next)

	w := post(h.Store, "acct_1", "k1", `{"a":2}`, next)
	if !errors.Is(h.lastErr(), ErrConflict) || w.Code != http.StatusConflict {
		t.Fatalf("different body: status %d err %v", w.Code, h.lastErr())
	}

	// Path, query and content type are part of the request too.
	for name, mutate := range map[string]func(*http.Request){
		"path":         func(r *http.Request) { r.URL.Path = "/api/v1/other" },
		"query":        func(r *http.Request) { r.URL.RawQuery = "x=2" },
		"content-type": func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") },
	} {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/things?x=1", strings.NewReader(`{"a":1}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set(HeaderKey, "k1")
		mutate(r)
		h.errs = nil
		h.Wrap(httptest.NewRecorder(), r, "acct_1", next)
		if !errors.Is(h.lastErr(), ErrConflict) {
			t.Errorf("different %s: err %v, want ErrConflict", name, h.lastErr())
		}
	}
	if n := next.runs.Load(); n != 1 {
		t.Fatalf("next ran %d times, want 1", n)
	}
}

func TestScopesAreSeparate(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	next := &handler{status: http.StatusOK, body: `{}`}
	a := post(h.Store, "acct_1", "k1", `{"a":1}`, next)
	b := post(h.Store, "acct_2", "k1", `{"a":1}`, next)
	if n := next.runs.Load(); n != 2 {
		t.Fatalf("next ran %d times, want 2", n)
	}
	if a.Header().Get(HeaderReplayed) != "" || b.Header().Get(HeaderReplayed) != "" {
		t.Fatal("a response was replayed across scopes")
	}
}

func TestRetryableStatusReleasesKey(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			h := newHarness(t, setup(t), nil)
			next := &handler{status: status, body: `{"error":{}}`}
			post(h.Store, "acct_1", "k1", `{"a":1}`, next)
			next.status = http.StatusCreated
			w := post(h.Store, "acct_1", "k1", `{"a":1}`, next)
			if n := next.runs.Load(); n != 2 || w.Code != http.StatusCreated || w.Header().Get(HeaderReplayed) != "" {
				t.Fatalf("retry after %d: runs %d, status %d, replayed %q", status, n, w.Code, w.Header().Get(HeaderReplayed))
			}
			// The successful retry is now the stored response.
			w = post(h.Store, "acct_1", "k1", `{"a":1}`, next)
			if n := next.runs.Load(); n != 2 || w.Code != http.StatusCreated || w.Header().Get(HeaderReplayed) != "true" {
				t.Fatalf("third call: runs %d, status %d", n, w.Code)
			}
		})
	}
}

func TestClientErrorIsStored(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	next := &handler{status: http.StatusUnprocessableEntity, body: `{"error":{"code":"validation_error"}}`}
	post(h.Store, "acct_1", "k1", `{"a":1}`, next)
	w := post(h.Store, "acct_1", "k1", `{"a":1}`, next)
	if n := next.runs.Load(); n != 1 {
		t.Fatalf("next ran %d times, want 1", n)
	}
	if w.Code != http.StatusUnprocessableEntity || w.Body.String() != next.body || w.Header().Get(HeaderReplayed) != "true" {
		t.Fatalf("replay: %d %q", w.Code, w.Body)
	}
}

func TestPanicReleasesKey(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	boom := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Fatalf("recovered %v, want the handler's panic", p)
			}
		}()
		post(h.Store, "acct_1", "k1", `{"a":1}`, boom)
	}()
	next := &handler{status: http.StatusOK, body: `{}`}
	if w := post(h.Store, "acct_1", "k1", `{"a":1}`, next); w.Code != http.StatusOK || next.runs.Load() != 1 {
		t.Fatalf("retry after panic: status %d runs %d", w.Code, next.runs.Load())
	}
}

// TestConcurrent sends the same request 20 times at once through two
// Stores on separate connections, as two ledgerd instances would.
func TestConcurrent(t *testing.T) {
	srv := natstest.Server(t)
	_, js1 := natstest.JetStream(t, srv)
	_, js2 := natstest.JetStream(t, srv)
	stores := []*harness{newHarness(t, js1, nil), newHarness(t, js2, nil)}
	next := &handler{status: http.StatusCreated, body: `{"id":"t_1"}`}
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		next.ServeHTTP(w, r)
	})

	const n = 20
	codes := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			codes[i] = post(stores[i%2].Store, "acct_1", "k1", `{"a":1}`, slow)
		})
	}
	close(start)
	wg.Wait()

	if got := next.runs.Load(); got != 1 {
		t.Fatalf("next ran %d times, want exactly 1", got)
	}
	var ran, replayed, inProgress int
	for _, w := range codes {
		switch {
		case w.Code == http.StatusCreated && w.Header().Get(HeaderReplayed) == "true":
			replayed++
		case w.Code == http.StatusCreated:
			ran++
		case w.Code == http.StatusConflict && strings.Contains(w.Body.String(), "in progress"):
			inProgress++
		default:
			t.Errorf("unexpected response %d %q", w.Code, w.Body)
		}
	}
	if ran != 1 || ran+replayed+inProgress != n {
		t.Fatalf("ran %d, replayed %d, in progress %d", ran, replayed, inProgress)
	}
	for _, h := range stores {
		for _, err := range h.errs {
			if !errors.Is(err, ErrInProgress) {
				t.Errorf("rendered %v, want only ErrInProgress", err)
			}
		}
	}
}

func TestInProgress(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	release, started := make(chan struct{}), make(chan struct{})
	next := &handler{status: http.StatusOK, body: `{}`}
	blocking := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		next.ServeHTTP(w, r)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		post(h.Store, "acct_1", "k1", `{"a":1}`, blocking)
	}()
	<-started
	w := post(h.Store, "acct_1", "k1", `{"a":1}`, next)
	if !errors.Is(h.lastErr(), ErrInProgress) || w.Code != http.StatusConflict {
		t.Fatalf("while running: status %d err %v", w.Code, h.lastErr())
	}
	close(release)
	<-done
	if w := post(h.Store, "acct_1", "k1", `{"a":1}`, next); w.Header().Get(HeaderReplayed) != "true" || next.runs.Load() != 1 {
		t.Fatalf("after finishing: status %d, runs %d", w.Code, next.runs.Load())
	}
}

// TestStalePendingIsTakenOver: a request that never finishes (a crashed
// instance) blocks its key only for the lease.
func TestStalePendingIsTakenOver(t *testing.T) {
	h := newHarness(t, setup(t), func(c *Config) { c.Lease = time.Minute })
	release, started := make(chan struct{}), make(chan struct{})
	crashed := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		w.WriteHeader(http.StatusTeapot) // too late: the key was taken over
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		post(h.Store, "acct_1", "k1", `{"a":1}`, crashed)
	}()
	<-started

	next := &handler{status: http.StatusCreated, body: `{"id":"t_2"}`}
	h.advance(59 * time.Second)
	if post(h.Store, "acct_1", "k1", `{"a":1}`, next); !errors.Is(h.lastErr(), ErrInProgress) {
		t.Fatalf("within the lease: err %v, want ErrInProgress", h.lastErr())
	}
	h.advance(2 * time.Second)
	if w := post(h.Store, "acct_1", "k1", `{"a":1}`, next); w.Code != http.StatusCreated || next.runs.Load() != 1 {
		t.Fatalf("after the lease: status %d, runs %d", w.Code, next.runs.Load())
	}

	// The stale request finishing late must not overwrite the take-over.
	close(release)
	<-done
	w := post(h.Store, "acct_1", "k1", `{"a":1}`, next)
	if w.Code != http.StatusCreated || w.Body.String() != next.body || w.Header().Get(HeaderReplayed) != "true" {
		t.Fatalf("replay after late finish: %d %q", w.Code, w.Body)
	}
}

// TestSurvivesRestart stores a response, restarts the NATS server on the
// same storage, and replays it from a new Store.
func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.ServerAt(t, dir)
	nc, js := natstest.JetStream(t, srv)
	next := &handler{status: http.StatusCreated, body: `{"id":"t_1"}`}
	post(newHarness(t, js, nil).Store, "acct_1", "k1", `{"a":1}`, next)

	nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()
	_, js = natstest.JetStream(t, natstest.ServerAt(t, dir))

	w := post(newHarness(t, js, nil).Store, "acct_1", "k1", `{"a":1}`, next)
	if next.runs.Load() != 1 || w.Code != http.StatusCreated || w.Body.String() != next.body || w.Header().Get(HeaderReplayed) != "true" {
		t.Fatalf("after restart: runs %d, %d %q", next.runs.Load(), w.Code, w.Body)
	}
}

func TestRedact(t *testing.T) {
	h := newHarness(t, setup(t), func(c *Config) {
		c.Redact = func(_ *http.Request, body []byte) []byte {
			return []byte(strings.ReplaceAll(string(body), `,"secret":"s3cr3t"`, ""))
		}
	})
	next := &handler{status: http.StatusCreated, body: `{"id":"key_1","secret":"s3cr3t"}`}
	first := post(h.Store, "acct_1", "k1", `{}`, next)
	second := post(h.Store, "acct_1", "k1", `{}`, next)
	if first.Body.String() != next.body {
		t.Fatalf("first response %q must carry the secret", first.Body)
	}
	if second.Body.String() != `{"id":"key_1"}` {
		t.Fatalf("replayed %q, want the secret removed", second.Body)
	}
	entry, err := h.kv.Get(context.Background(), kvKey("acct_1", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(entry.Value()), "s3cr3t") || strings.Contains(string(entry.Value()), "czNjcjN0") {
		t.Fatal("the secret was stored")
	}
}

func TestInvalidKey(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	next := &handler{status: http.StatusOK, body: `{}`}
	for name, vals := range map[string][]string{
		"empty":     {""},
		"too long":  {strings.Repeat("a", 256)},
		"space":     {"a b"},
		"control":   {"a\tb"},
		"non-ascii": {"ключ"},
		"del":       {"a\x7f"},
		"repeated":  {"a", "b"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/things", strings.NewReader(`{}`))
		r.Header[HeaderKey] = vals
		w := httptest.NewRecorder()
		h.Wrap(w, r, "acct_1", next)
		if !errors.Is(h.lastErr(), ErrInvalidKey) || w.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d err %v", name, w.Code, h.lastErr())
		}
		h.errs = nil
	}
	if next.runs.Load() != 0 {
		t.Fatal("next ran for an invalid key")
	}
	if w := post(h.Store, "acct_1", strings.Repeat("~", 255), `{}`, next); w.Code != http.StatusOK {
		t.Fatalf("255 printable bytes: status %d err %v", w.Code, h.lastErr())
	}
}

func TestStoreUnavailable(t *testing.T) {
	nc, js := natstest.JetStream(t, natstest.Server(t))
	h := newHarness(t, js, nil)
	nc.Close()
	next := &handler{status: http.StatusOK, body: `{}`}
	w := post(h.Store, "acct_1", "k1", `{}`, next)
	if !errors.Is(h.lastErr(), ErrUnavailable) || w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d err %v", w.Code, h.lastErr())
	}
	if next.runs.Load() != 0 {
		t.Fatal("next ran without an idempotency record")
	}
}

// TestBodyTooLarge: the handler sees the MaxBytesError and renders its own
// 413; nothing is recorded.
func TestBodyTooLarge(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	var runs atomic.Int32
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		b, err := io.ReadAll(r.Body)
		var tooBig *http.MaxBytesError
		if !errors.As(err, &tooBig) || string(b) != `{"a":` {
			t.Errorf("handler read %q, %v; want the prefix and a MaxBytesError", b, err)
		}
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	})
	for range 2 {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/things", strings.NewReader(`{"a":"long"}`))
		r.Header.Set(HeaderKey, "k1")
		w := httptest.NewRecorder()
		r.Body = http.MaxBytesReader(w, r.Body, 5)
		h.Wrap(w, r, "acct_1", next)
		if w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d", w.Code)
		}
	}
	if runs.Load() != 2 {
		t.Fatalf("next ran %d times, want 2", runs.Load())
	}
}

// TestHugeResponse: a response beyond the copy limit still streams in
// full and still blocks re-execution, but cannot be replayed.
func TestHugeResponse(t *testing.T) {
	h := newHarness(t, setup(t), nil)
	next := &handler{status: http.StatusOK, body: strings.Repeat("x", maxBodyCopy+1)}
	if w := post(h.Store, "acct_1", "k1", `{}`, next); w.Body.Len() != maxBodyCopy+1 {
		t.Fatalf("streamed %d bytes", w.Body.Len())
	}
	w := post(h.Store, "acct_1", "k1", `{}`, next)
	if next.runs.Load() != 1 || !errors.Is(h.lastErr(), ErrConflict) || w.Code != http.StatusConflict {
		t.Fatalf("retry: runs %d, status %d, err %v", next.runs.Load(), w.Code, h.lastErr())
	}
}
