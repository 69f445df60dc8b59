package fal

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/ledger/tasks"
)

// ErrWebhookSignature: a webhook delivery is not signed by fal (missing or
// bad headers, a stale timestamp, or a signature no fal key verifies).
var ErrWebhookSignature = errors.New("fal webhook signature invalid")

const (
	// webhookTolerance is how far a delivery's timestamp may be from now.
	webhookTolerance = 5 * time.Minute
	// jwksTTL is how long fetched keys are trusted (fal allows caching
	// them for up to 24 hours).
	jwksTTL = 24 * time.Hour
	// jwksRetry rate-limits refetches triggered by unknown signatures, so
	// forged deliveries cannot make us hammer fal.
	jwksRetry = time.Minute
	// maxJWKS bounds the key set's size.
	maxJWKS = 64 << 10
)

// webhookBody is fal's webhook delivery: request_id, gateway_request_id,
// status (OK or ERROR), payload (the model's output, or its error detail),
// error (a message, on ERROR) and payload_error (set, with payload null,
// when the output could not be serialized).
type webhookBody struct {
	RequestID        string          `json:"request_id"`
	GatewayRequestID string          `json:"gateway_request_id"`
	Status           string          `json:"status"`
	Payload          json.RawMessage `json:"payload"`
	Error            string          `json:"error"`
	PayloadError     string          `json:"payload_error"`
}

var statusCodeRE = regexp.MustCompile(`(?i)status code:?\s*(\d{3})`)

// WebhookResult parses a fal webhook delivery (call VerifyWebhook on it
// first). It returns the queue request id (to match the task's Ref, see
// RequestID) and either the output or an error: ErrInvalidInput when the
// model refused the input (a 400/413/422 behind the ERROR), ErrProvider
// otherwise. The error is final; a webhook is never retried by the runner.
func (p *Provider) WebhookResult(body []byte) (requestID string, out tasks.Output, err error) {
	var wb webhookBody
	if err := json.Unmarshal(body, &wb); err != nil {
		return "", tasks.Output{}, fmt.Errorf("fal: webhook: %w: malformed webhook body", tasks.ErrProvider)
	}
	if wb.RequestID == "" {
		return "", tasks.Output{}, fmt.Errorf("fal: webhook: %w: malformed webhook body (no request_id)", tasks.ErrProvider)
	}
	id := wb.RequestID
	switch wb.Status {
	case "OK":
		if len(wb.Payload) == 0 || string(wb.Payload) == "null" {
			msg := "no payload"
			if wb.PayloadError != "" {
				msg = "payload error: " + p.scrub(clip(wb.PayloadError))
			}
			return id, tasks.Output{}, fmt.Errorf("fal: webhook: %w: request %s: %s", tasks.ErrProvider, id, msg)
		}
		out, err := parseOutput(wb.Payload, "")
		if err != nil {
			return id, tasks.Output{}, fmt.Errorf("fal: webhook: %w: request %s: %s", tasks.ErrProvider, id, err)
		}
		return id, out, nil
	case "ERROR":
		detail, _ := errorDetail(wb.Payload)
		msg := p.scrub(clip(wb.Error))
		if detail = p.scrub(detail); detail != "" {
			if msg != "" {
				msg += ": "
			}
			msg += detail
		}
		if msg == "" {
			msg = "no detail"
		}
		if m := statusCodeRE.FindStringSubmatch(wb.Error); m != nil {
			switch code, _ := strconv.Atoi(m[1]); code {
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
				return id, tasks.Output{}, fmt.Errorf("fal: webhook: %w: request %s: %s", tasks.ErrInvalidInput, id, msg)
			}
		}
		return id, tasks.Output{}, fmt.Errorf("fal: webhook: %w: request %s failed: %s", tasks.ErrProvider, id, msg)
	}
	return id, tasks.Output{}, fmt.Errorf("fal: webhook: %w: request %s has status %q", tasks.ErrProvider, id, p.scrub(clip(wb.Status)))
}

// VerifyWebhook checks a delivery's signature as fal documents it: an
// Ed25519 signature (hex, X-Fal-Webhook-Signature) over
//
//	request_id "\n" user_id "\n" timestamp "\n" hex(sha256(body))
//
// taken from X-Fal-Webhook-Request-Id, -User-Id and -Timestamp (Unix
// seconds, within five minutes of now), verified against any key of fal's
// JWKS (Config.JWKSURL). body must be the raw bytes received. It returns
// an error wrapping ErrWebhookSignature when the delivery is not fal's,
// and a different error when fal's keys could not be fetched.
//
// It proves the delivery came from fal, not that it is about one of this
// ledger's requests: the caller must also match the request id with the
// task's Ref (RequestID).
func (p *Provider) VerifyWebhook(h http.Header, body []byte) error {
	reqID := h.Get("X-Fal-Webhook-Request-Id")
	userID := h.Get("X-Fal-Webhook-User-Id")
	ts := h.Get("X-Fal-Webhook-Timestamp")
	sigHex := h.Get("X-Fal-Webhook-Signature")
	if reqID == "" || userID == "" || ts == "" || sigHex == "" {
		return fmt.Errorf("fal: webhook: %w: missing X-Fal-Webhook-* headers", ErrWebhookSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("fal: webhook: %w: bad timestamp", ErrWebhookSignature)
	}
	if d := p.now().Sub(time.Unix(sec, 0)); d > webhookTolerance || d < -webhookTolerance {
		return fmt.Errorf("fal: webhook: %w: timestamp outside ±%v", ErrWebhookSignature, webhookTolerance)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("fal: webhook: %w: malformed signature", ErrWebhookSignature)
	}
	sum := sha256.Sum256(body)
	msg := []byte(reqID + "\n" + userID + "\n" + ts + "\n" + hex.EncodeToString(sum[:]))

	keys, err := p.webhookKeys(false)
	if err != nil {
		return err
	}
	if verifyAny(keys, msg, sig) {
		return nil
	}
	// fal may have rotated its keys since they were fetched.
	fresh, err := p.webhookKeys(true)
	if err == nil && verifyAny(fresh, msg, sig) {
		return nil
	}
	return fmt.Errorf("fal: webhook: %w: no fal key verifies the signature", ErrWebhookSignature)
}

func verifyAny(keys []ed25519.PublicKey, msg, sig []byte) bool {
	for _, k := range keys {
		if ed25519.Verify(k, msg, sig) {
			return true
		}
	}
	return false
}

// webhookKeys returns fal's signing keys, fetching them when the cache is
// empty or stale, or (refresh) when a signature did not verify and the
// last fetch is more than jwksRetry old.
func (p *Provider) webhookKeys(refresh bool) ([]ed25519.PublicKey, error) {
	p.jwksMu.Lock()
	defer p.jwksMu.Unlock()
	now := p.now()
	fresh := len(p.jwks) > 0 && now.Sub(p.jwksAt) < jwksTTL
	if fresh && !refresh {
		return p.jwks, nil
	}
	if !p.jwksTriedAt.IsZero() && now.Sub(p.jwksTriedAt) < jwksRetry {
		if fresh {
			return p.jwks, nil
		}
		return nil, errors.New("fal: webhook keys: unavailable (the last fetch failed)")
	}
	p.jwksTriedAt = now
	keys, err := p.fetchJWKS()
	if err != nil {
		if fresh {
			return p.jwks, nil
		}
		return nil, err
	}
	p.jwks, p.jwksAt = keys, now
	return keys, nil
}

// fetchJWKS reads fal's key set: {"keys":[{"kty":"OKP","crv":"Ed25519",
// "x":"<base64url public key>"}, ...]}. No credentials are sent.
func (p *Provider) fetchJWKS() ([]ed25519.PublicKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.jwksURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fal: webhook keys: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fal: webhook keys: %s", p.scrub(err.Error()))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fal: webhook keys: HTTP %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
	if err != nil || len(data) > maxJWKS {
		return nil, errors.New("fal: webhook keys: unreadable or oversized key set")
	}
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			X   string `json:"x"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, errors.New("fal: webhook keys: malformed key set")
	}
	var keys []ed25519.PublicKey
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.X, "="))
		if err != nil || len(raw) != ed25519.PublicKeySize {
			continue
		}
		keys = append(keys, ed25519.PublicKey(raw))
	}
	if len(keys) == 0 {
		return nil, errors.New("fal: webhook keys: no Ed25519 key in the key set")
	}
	return keys, nil
}
