package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const userAgent = "ledgerctl/1"

// client speaks ledgerd's admin HTTP API.
type client struct {
	base    string // no trailing slash
	token   string
	hc      *http.Client
	idemKey string // sent with every POST
	// retryWait is the first pause before retrying a request that failed
	// to reach the server or found it unavailable; it doubles each time.
	retryWait time.Duration
	attempts  int
}

func newClient(base, token string) *client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	// No overall timeout: replay and the event stream are long by design,
	// and every request carries the command's context (Ctrl-C ends it).
	return &client{base: base, token: token, hc: &http.Client{Transport: tr},
		retryWait: 300 * time.Millisecond, attempts: 3}
}

// apiError is an error response of the API.
type apiError struct {
	Status    int
	Code      string
	Message   string
	Details   []fieldError
	RequestID string
}

type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// transportError: the request did not get an HTTP answer.
type transportError struct {
	method, url string
	err         error
	idemKey     string // set for a POST, whose outcome is then unknown
}

func (e *transportError) Error() string {
	return fmt.Sprintf("cannot reach ledgerd (%s %s): %v", e.method, e.url, e.err)
}

func (e *transportError) Unwrap() error { return e.err }

// do sends a request with body (JSON-encoded unless nil) and decodes a
// 2xx answer into out: nil discards it, *[]byte or *json.RawMessage keep
// it as is, anything else is JSON-decoded. A non-2xx answer is an
// *apiError.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	_, err := c.doHeader(ctx, method, path, body, out)
	return err
}

// doHeader is do, also returning the response headers.
func (c *client) doHeader(ctx context.Context, method, path string, body, out any) (http.Header, error) {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		payload = b
	}
	wait := c.retryWait
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, method, path, payload, nil)
		retry := false
		if err != nil {
			// The same Idempotency-Key makes resending a POST safe.
			retry = ctx.Err() == nil
		} else if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable ||
			resp.StatusCode == http.StatusGatewayTimeout {
			retry = true
			if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
				wait = min(time.Duration(s)*time.Second, 5*time.Second)
			}
		}
		if !retry || attempt >= c.attempts {
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			return resp.Header, decodeResponse(resp, out)
		}
		if resp != nil {
			drain(resp)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// stream sends a GET and returns the 2xx response for the caller to read
// (and close); any other answer is an *apiError.
func (c *client) stream(ctx context.Context, path string, hdr http.Header) (*http.Response, error) {
	resp, err := c.send(ctx, http.MethodGet, path, nil, hdr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp, nil
}

func (c *client) send(ctx context.Context, method, path string, payload []byte, hdr http.Header) (*http.Response, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", userAgent)
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if method == http.MethodPost && c.idemKey != "" {
		req.Header.Set("Idempotency-Key", c.idemKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		te := &transportError{method: method, url: c.base + path, err: unwrapURLError(err)}
		// Unless the connection was never made, a POST may have been
		// applied: say how to retry it safely.
		var oe *net.OpError
		if method == http.MethodPost && !(errors.As(err, &oe) && oe.Op == "dial") {
			te.idemKey = c.idemKey
		}
		return nil, te
	}
	return resp, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func decodeResponse(resp *http.Response, out any) error {
	if resp.StatusCode/100 != 2 {
		return readAPIError(resp)
	}
	switch o := out.(type) {
	case nil:
		drain(resp)
		return nil
	case *[]byte:
		b, err := io.ReadAll(resp.Body)
		*o = b
		return err
	case *json.RawMessage:
		b, err := io.ReadAll(resp.Body)
		*o = b
		return err
	default:
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("reading the answer to %s %s: %w", resp.Request.Method, resp.Request.URL.Path, err)
		}
		return nil
	}
}

// readAPIError turns an error response into an *apiError, also when the
// body is not the API's JSON (a proxy's error page, say).
func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body struct {
		Error struct {
			Code    string       `json:"code"`
			Message string       `json:"message"`
			Details []fieldError `json:"details"`
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	ae := &apiError{Status: resp.StatusCode}
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		ae.Code, ae.Message, ae.Details, ae.RequestID = body.Error.Code, body.Error.Message, body.Error.Details, body.RequestID
		return ae
	}
	ae.Code = "http_" + strconv.Itoa(resp.StatusCode)
	ae.Message = http.StatusText(resp.StatusCode)
	if s := strings.TrimSpace(string(b)); s != "" {
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		ae.Message += ": " + s
	}
	return ae
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// newIdempotencyKey is a random key for this invocation's POSTs.
func newIdempotencyKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "ledgerctl-" + hex.EncodeToString(b)
}

// validIdempotencyKey: 1-255 printable ASCII characters, as ledgerd wants.
func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// normalizeURL checks a base URL and drops its trailing slash.
func normalizeURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("invalid ledgerd URL %q: want http(s)://host[:port]", raw)
	}
	u.RawQuery, u.Fragment = "", ""
	return strings.TrimRight(u.String(), "/"), nil
}

// query builds "?k=v&..." from pairs, leaving out empty values.
func query(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			v.Set(kv[i], kv[i+1])
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

func esc(s string) string { return url.PathEscape(s) }
