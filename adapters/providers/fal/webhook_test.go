package fal

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger/tasks"
)

func TestWebhookResult(t *testing.T) {
	p := newProvider(t, "https://queue.fal.run")
	tests := []struct {
		name    string
		body    string
		id      string
		want    tasks.Output
		wantErr error
		msg     string
	}{
		{
			name: "OK with images",
			body: `{"request_id":"123e4567","gateway_request_id":"123e4567","status":"OK","payload":{"images":[{"url":"https://url.to/image.png","content_type":"image/png","file_name":"image.png","file_size":1824075,"width":1024,"height":1024}],"seed":196619188014358660},"error":null}`,
			id:   "123e4567",
			want: tasks.Output{ImageURL: "https://url.to/image.png", URLs: []string{"https://url.to/image.png"}},
		},
		{
			name: "OK with a video and a prompt",
			body: `{"request_id":"v1","status":"OK","payload":{"video":{"url":"https://url.to/v.mp4"},"prompt":"enhanced"}}`,
			id:   "v1",
			want: tasks.Output{VideoURL: "https://url.to/v.mp4", URLs: []string{"https://url.to/v.mp4"}, EnhancedPrompt: "enhanced"},
		},
		{
			name:    "ERROR with a validation detail",
			body:    `{"request_id":"e1","gateway_request_id":"e1","status":"ERROR","error":"Invalid status code: 422","payload":{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}}`,
			id:      "e1",
			wantErr: tasks.ErrInvalidInput,
			msg:     "Invalid status code: 422: prompt: field required",
		},
		{
			name:    "ERROR from the runner",
			body:    `{"request_id":"e2","status":"ERROR","error":"Invalid status code: 500","payload":{"detail":"Runner crashed"}}`,
			id:      "e2",
			wantErr: tasks.ErrProvider,
			msg:     "failed: Invalid status code: 500: Runner crashed",
		},
		{
			name:    "OK whose payload could not be serialized",
			body:    `{"request_id":"p1","status":"OK","payload":null,"payload_error":"Response payload is not JSON serializable"}`,
			id:      "p1",
			wantErr: tasks.ErrProvider,
			msg:     "payload error: Response payload is not JSON serializable",
		},
		{
			name:    "OK without media",
			body:    `{"request_id":"m1","status":"OK","payload":{"seed":1}}`,
			id:      "m1",
			wantErr: tasks.ErrProvider,
			msg:     "no image or video URL",
		},
		{name: "unknown status", body: `{"request_id":"u1","status":"WEIRD"}`, id: "u1", wantErr: tasks.ErrProvider, msg: `status "WEIRD"`},
		{name: "malformed", body: `{"request_id":`, wantErr: tasks.ErrProvider, msg: "malformed webhook body"},
		{name: "no request id", body: `{"status":"OK","payload":{}}`, wantErr: tasks.ErrProvider, msg: "no request_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, out, err := p.WebhookResult([]byte(tc.body))
			if id != tc.id {
				t.Fatalf("request id %q, want %q", id, tc.id)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("err %v, want %v mentioning %q", err, tc.wantErr, tc.msg)
				}
				if _, ok := isRetryable(err); ok {
					t.Fatal("a webhook outcome is final, not retryable")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(out)
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Fatalf("output\n got %s\nwant %s", got, want)
			}
		})
	}
}

// jwksServer publishes keys as fal does and counts fetches.
type jwksServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    []ed25519.PublicKey
	fetches atomic.Int32
	auth    atomic.Value // Authorization header seen
}

func newJWKS(t *testing.T, keys ...ed25519.PublicKey) *jwksServer {
	j := &jwksServer{keys: keys}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.fetches.Add(1)
		j.auth.Store(r.Header.Get("Authorization"))
		j.mu.Lock()
		defer j.mu.Unlock()
		set := []map[string]string{{"kty": "RSA", "n": "ignored"}}
		for _, k := range j.keys {
			set = append(set, map[string]string{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(k), "kid": "k"})
		}
		writeJSON(w, 200, map[string]any{"keys": set})
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jwksServer) set(keys ...ed25519.PublicKey) {
	j.mu.Lock()
	j.keys = keys
	j.mu.Unlock()
}

func genKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// signed builds the headers fal sends with a delivery.
func signed(priv ed25519.PrivateKey, reqID, userID string, at time.Time, body []byte) http.Header {
	ts := strconv.FormatInt(at.Unix(), 10)
	sum := sha256.Sum256(body)
	msg := reqID + "\n" + userID + "\n" + ts + "\n" + hex.EncodeToString(sum[:])
	h := http.Header{}
	h.Set("X-Fal-Webhook-Request-Id", reqID)
	h.Set("X-Fal-Webhook-User-Id", userID)
	h.Set("X-Fal-Webhook-Timestamp", ts)
	h.Set("X-Fal-Webhook-Signature", hex.EncodeToString(ed25519.Sign(priv, []byte(msg))))
	return h
}

func TestVerifyWebhook(t *testing.T) {
	pub, priv := genKey(t)
	_, otherPriv := genKey(t)
	j := newJWKS(t, pub)
	now := time.Unix(1_760_000_000, 0)
	p := newProvider(t, "https://queue.fal.run", func(c *Config) { c.JWKSURL = j.srv.URL })
	p.now = func() time.Time { return now }
	body := []byte(`{"request_id":"r1","status":"OK","payload":{"images":[{"url":"https://x.test/a.png"}]}}`)

	if err := p.VerifyWebhook(signed(priv, "r1", "u1", now.Add(-time.Minute), body), body); err != nil {
		t.Fatalf("valid delivery: %v", err)
	}
	if a, _ := j.auth.Load().(string); a != "" {
		t.Fatalf("the key set was fetched with credentials: %q", a)
	}

	bad := map[string]http.Header{
		"tampered body":    signed(priv, "r1", "u1", now, []byte(`{"request_id":"r1","status":"OK"}`)),
		"other signer":     signed(otherPriv, "r1", "u1", now, body),
		"stale timestamp":  signed(priv, "r1", "u1", now.Add(-6*time.Minute), body),
		"future timestamp": signed(priv, "r1", "u1", now.Add(6*time.Minute), body),
		"missing headers":  {},
	}
	swapped := signed(priv, "r1", "u1", now, body)
	swapped.Set("X-Fal-Webhook-Request-Id", "r2")
	bad["request id not the signed one"] = swapped
	garbled := signed(priv, "r1", "u1", now, body)
	garbled.Set("X-Fal-Webhook-Signature", "zz")
	bad["malformed signature"] = garbled
	for name, h := range bad {
		if err := p.VerifyWebhook(h, body); !errors.Is(err, ErrWebhookSignature) {
			t.Errorf("%s: err %v, want ErrWebhookSignature", name, err)
		}
	}
	// Forged deliveries do not make us refetch the keys more than once a minute.
	if n := j.fetches.Load(); n > 2 {
		t.Fatalf("%d key fetches", n)
	}

	// fal rotates its key: the next unknown signature refreshes the set
	// (once the minute since the last fetch has passed).
	newPub, newPriv := genKey(t)
	j.set(newPub)
	now = now.Add(2 * time.Minute)
	if err := p.VerifyWebhook(signed(newPriv, "r1", "u1", now, body), body); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
}

func TestVerifyWebhookKeysUnavailable(t *testing.T) {
	_, priv := genKey(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	}))
	defer srv.Close()
	p := newProvider(t, "https://queue.fal.run", func(c *Config) { c.JWKSURL = srv.URL })
	body := []byte(`{}`)
	err := p.VerifyWebhook(signed(priv, "r", "u", time.Now(), body), body)
	if err == nil || errors.Is(err, ErrWebhookSignature) {
		t.Fatalf("err %v: want a key-fetch error, not a signature verdict", err)
	}
}
