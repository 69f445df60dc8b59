// Package openai drives OpenAI's Images API (POST /v1/images/generations)
// as a ledgerd generation provider.
//
// The API is synchronous: one request generates the image and answers with
// it, so Submit returns a finished Handle and there is nothing to poll or
// cancel. The adapter never retries by itself: it classifies each failure
// (tasks.ErrInvalidInput, tasks.ErrProvider, tasks.ErrTimeout, and
// tasks.Retryable for rate limits, 5xx and broken connections) and leaves
// retries, backoff and the circuit breaker to the task runner.
//
// Image URLs: ledgerd asks for response_format "url", which OpenAI documents
// for dall-e-2 and dall-e-3 only (GPT image models always answer inline
// base64, which this adapter refuses). OpenAI documents those URLs as valid
// for 60 minutes after generation; the URL is recorded on the task as is.
package openai

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	"unicode"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

const (
	// DefaultBaseURL is OpenAI's API root (LEDGER_OPENAI_BASE_URL overrides it).
	DefaultBaseURL = "https://api.openai.com/v1"
	// DefaultTimeout bounds one HTTP exchange when Config.Client is nil.
	// Image generation is slow (tens of seconds for dall-e-3 at hd quality);
	// the task's own timeout (its ctx) still applies on top.
	DefaultTimeout = 120 * time.Second

	// maxBody caps how much of a response is read. A URL answer is a few
	// hundred bytes; anything near this is an inline image we did not ask
	// for.
	maxBody = 4 << 20
	// maxMessage caps how much of OpenAI's error message is kept in an error.
	maxMessage = 300
	// maxRetryAfter caps a provider's Retry-After (the runner gives up on
	// waits past the task's deadline anyway; this only guards overflow).
	maxRetryAfter = time.Hour
	// refPrefix marks the references this provider hands out.
	refPrefix = "openai_"
	// redacted replaces anything credential-like in provider text.
	redacted = "[redacted]"
)

// Config configures the provider.
type Config struct {
	BaseURL      string       // LEDGER_OPENAI_BASE_URL; default DefaultBaseURL
	APIKey       string       // OPENAI_API_KEY; sent as a bearer token, never logged or echoed
	Client       *http.Client // default: a client with DefaultTimeout
	Organization string       // optional OpenAI-Organization header
}

// String describes the configuration without the API key, so logging a
// Config by mistake does not leak it.
func (c Config) String() string {
	key := "unset"
	if c.APIKey != "" {
		key = redacted
	}
	return fmt.Sprintf("openai.Config{BaseURL: %q, APIKey: %s, Organization: %q}", c.BaseURL, key, c.Organization)
}

// GoString keeps %#v from printing the key too.
func (c Config) GoString() string { return c.String() }

// Provider calls OpenAI's Images API. It is safe for concurrent use: it
// holds no mutable state besides the http.Client, which is.
type Provider struct {
	endpoint string // {BaseURL}/images/generations
	baseURL  string
	apiKey   string
	org      string
	client   *http.Client
}

var _ tasks.Provider = (*Provider)(nil)

// New returns a provider. The API key is required; the base URL must be an
// absolute http(s) URL.
func New(cfg Config) (*Provider, error) {
	if strings.TrimSpace(cfg.APIKey) == "" {
		return nil, errors.New("openai provider: Config.APIKey (OPENAI_API_KEY) is required")
	}
	base := strings.TrimRight(strings.TrimSpace(cfg.BaseURL), "/")
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("openai provider: base URL %q must be an absolute http(s) URL", base)
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Timeout: DefaultTimeout}
	}
	return &Provider{
		endpoint: base + "/images/generations",
		baseURL:  base,
		apiKey:   cfg.APIKey,
		org:      cfg.Organization,
		client:   client,
	}, nil
}

// Name implements tasks.Provider.
func (p *Provider) Name() string { return "openai" }

// String describes the provider without its API key.
func (p *Provider) String() string { return "openai provider at " + p.baseURL }

// GoString keeps %#v from printing the key.
func (p *Provider) GoString() string { return p.String() }

// reserved are request fields the adapter sets itself. A passthrough entry
// naming one is ignored: n would multiply what OpenAI bills for a call
// ledgerd priced once, size was checked against the price list, and
// response_format must stay "url".
var reserved = map[string]bool{"model": true, "prompt": true, "n": true, "size": true, "response_format": true}

// imagesResponse is the documented 200 answer (created, data[]).
type imagesResponse struct {
	Data []struct {
		URL           string `json:"url"`
		B64JSON       string `json:"b64_json"`
		RevisedPrompt string `json:"revised_prompt"`
	} `json:"data"`
}

// apiError is OpenAI's error envelope:
// {"error": {"message", "type", "param", "code"}}. param and code are often
// null; code has been seen as a string, so both are decoded loosely.
type apiError struct {
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Param   any    `json:"param"`
		Code    any    `json:"code"`
	} `json:"error"`
}

// Submit generates the image synchronously and returns the finished output.
func (p *Provider) Submit(ctx context.Context, job tasks.Job) (tasks.Handle, error) {
	body, err := requestBody(job)
	if err != nil {
		return tasks.Handle{}, err
	}
	if err := ctx.Err(); err != nil {
		return tasks.Handle{}, ctxError(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint, bytes.NewReader(body))
	if err != nil {
		return tasks.Handle{}, fmt.Errorf("openai: build request: %w: %v", tasks.ErrProvider, err)
	}
	req.Header.Set("Authorization", "Bearer "+p.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if p.org != "" {
		req.Header.Set("OpenAI-Organization", p.org)
	}

	resp, err := p.client.Do(req)
	if err != nil {
		return tasks.Handle{}, p.transportError(ctx, err)
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	reqID := requestID(resp.Header)
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return tasks.Handle{}, p.transportError(ctx, err)
	}
	if resp.StatusCode/100 != 2 {
		// An oversized error page is still classified by its status.
		return tasks.Handle{}, p.statusError(resp.StatusCode, resp.Header, data[:min(len(data), maxBody)], reqID)
	}
	if len(data) > maxBody {
		return tasks.Handle{}, fmt.Errorf("openai: %w: response larger than %d bytes (an inline b64_json image? ledgerd asks for response_format \"url\")%s",
			tasks.ErrProvider, maxBody, ridSuffix(reqID))
	}
	return p.success(job, data, reqID)
}

// Poll cannot recover a call. The Images API is synchronous and keeps
// nothing to fetch later: the image URL exists only in the response to the
// generation request. Submit always finishes the call (Handle.Done), so Poll
// is reached only when a restarted ledgerd resumes a call whose response was
// lost with the old process; that image is gone, so the call fails for good
// (not retryable) and its hold is released rather than charged for nothing.
func (p *Provider) Poll(_ context.Context, _ tasks.Job, ref string) (bool, tasks.Output, error) {
	return false, tasks.Output{}, fmt.Errorf("openai: %w: openai calls cannot be resumed; the call is released (ref %s)", tasks.ErrProvider, ref)
}

// Cancel is a no-op: a synchronous call is over when Submit returns (a call
// cut short by its ctx is abandoned by closing the connection).
func (p *Provider) Cancel(context.Context, tasks.Job, string) error { return nil }

// requestBody builds the documented JSON request for job.
func requestBody(job tasks.Job) ([]byte, error) {
	switch job.Type {
	case pricing.TypeImage:
	case pricing.TypeVideo, pricing.TypeDirector:
		return nil, fmt.Errorf("openai: %w: openai images provider handles image models only (model %q is %s)", tasks.ErrInvalidInput, job.Model, job.Type)
	default:
		return nil, fmt.Errorf("openai: %w: unsupported type %q; openai images provider handles image models only", tasks.ErrInvalidInput, job.Type)
	}
	if strings.TrimSpace(job.Prompt) == "" {
		return nil, fmt.Errorf("openai: %w: prompt is empty", tasks.ErrInvalidInput)
	}
	model := job.ProviderModel
	if model == "" {
		model = job.Model // the price-list name when unmapped, as the local provider does
	}
	body := map[string]any{
		"model":           model,
		"prompt":          job.Prompt,
		"n":               1,
		"response_format": "url",
	}
	if job.Size != "" {
		body["size"] = job.Size
	}
	for _, name := range job.Options.Passthrough {
		if reserved[name] {
			continue
		}
		if v, ok := job.Input[name]; ok {
			body[name] = v
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("openai: %w: input cannot be encoded as JSON: %v", tasks.ErrInvalidInput, err)
	}
	return b, nil
}

// success maps a 2xx answer to the finished handle.
func (p *Provider) success(job tasks.Job, data []byte, reqID string) (tasks.Handle, error) {
	var r imagesResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return tasks.Handle{}, fmt.Errorf("openai: %w: malformed response: %v%s", tasks.ErrProvider, err, ridSuffix(reqID))
	}
	if len(r.Data) == 0 {
		return tasks.Handle{}, fmt.Errorf("openai: %w: response has no images%s", tasks.ErrProvider, ridSuffix(reqID))
	}
	img := r.Data[0]
	if img.URL == "" {
		if img.B64JSON != "" {
			return tasks.Handle{}, fmt.Errorf("openai: %w: the image came back inline as b64_json, not as a URL: ledgerd sends response_format \"url\", "+
				"which OpenAI honours for dall-e-2 and dall-e-3 only (GPT image models always answer b64_json); map only dall-e models to this provider%s",
				tasks.ErrProvider, ridSuffix(reqID))
		}
		return tasks.Handle{}, fmt.Errorf("openai: %w: response has neither url nor b64_json%s", tasks.ErrProvider, ridSuffix(reqID))
	}
	if u, err := url.Parse(img.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return tasks.Handle{}, fmt.Errorf("openai: %w: response image url is not an http(s) URL%s", tasks.ErrProvider, ridSuffix(reqID))
	}
	prompt := strings.TrimSpace(img.RevisedPrompt)
	if prompt == "" {
		prompt = job.Prompt
	}
	ref := reqID
	if ref == "" {
		sum := sha256.Sum256([]byte(img.URL))
		ref = hex.EncodeToString(sum[:16])
	}
	return tasks.Handle{
		Ref:  refPrefix + ref,
		Done: true,
		Output: tasks.Output{
			ImageURL:       img.URL,
			URLs:           []string{img.URL},
			EnhancedPrompt: prompt,
		},
	}, nil
}

// statusError maps a non-2xx answer to the tasks error the runner expects.
func (p *Provider) statusError(status int, h http.Header, data []byte, reqID string) error {
	var msg, typ, param, code string
	var env apiError
	if json.Unmarshal(data, &env) == nil && env.Error != nil {
		msg, typ = p.sanitize(env.Error.Message), env.Error.Type
		param, code = p.sanitize(scalar(env.Error.Param)), p.sanitize(scalar(env.Error.Code))
	}
	// detail leads with the status for the provider-side failures.
	detail := fmt.Sprintf("HTTP %d: %s", status, msg)
	if msg == "" {
		msg = strings.TrimSpace(fmt.Sprintf("HTTP %d %s", status, http.StatusText(status)))
		detail = msg
	}
	rid := ridSuffix(reqID)
	codeNote := ""
	if code != "" {
		codeNote = ", code " + code
	}

	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// OpenAI's 401 message quotes part of the key; it is left out.
		return fmt.Errorf("openai: %w: openai rejected the credentials (HTTP %d%s)%s", tasks.ErrProvider, status, codeNote, rid)
	case code == "insufficient_quota" || typ == "insufficient_quota" || code == "billing_hard_limit_reached":
		// The platform's OpenAI account is out of credit: retrying cannot
		// help, and it is no fault of the caller's input. (Images answer
		// billing_hard_limit_reached as a 400.)
		return fmt.Errorf("openai: %w: the platform's OpenAI account is out of quota (HTTP %d%s)%s", tasks.ErrProvider, status, codeNote, rid)
	case status == http.StatusTooManyRequests:
		return tasks.Retryable(fmt.Errorf("openai: %w: rate limited: %s%s", tasks.ErrProvider, msg, rid), retryAfter(h))
	case status == http.StatusRequestTimeout || status == http.StatusConflict || status >= 500:
		return tasks.Retryable(fmt.Errorf("openai: %w: %s%s", tasks.ErrProvider, detail, rid), retryAfter(h))
	case status == http.StatusBadRequest || status == http.StatusNotFound || status == http.StatusRequestEntityTooLarge ||
		status == http.StatusUnsupportedMediaType || status == http.StatusUnprocessableEntity:
		if code == "content_policy_violation" || code == "moderation_blocked" {
			return fmt.Errorf("openai: %w: refused by openai's content policy: %s%s", tasks.ErrInvalidInput, msg, rid)
		}
		if param != "" {
			msg += " (param " + param + ")"
		}
		return fmt.Errorf("openai: %w: %s%s", tasks.ErrInvalidInput, msg, rid)
	default:
		return fmt.Errorf("openai: %w: %s%s", tasks.ErrProvider, detail, rid)
	}
}

// transportError maps a failed exchange (no usable answer).
func (p *Provider) transportError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return ctxError(cerr)
	}
	detail := p.sanitize(err.Error())
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// The HTTP client's own timeout, with the task's time left: the
		// provider is slow, worth another try if time allows.
		return tasks.Uncertain(fmt.Errorf("openai: %w: no answer within the HTTP client's timeout: %s", tasks.ErrTimeout, detail))
	}
	return tasks.Uncertain(fmt.Errorf("openai: %w: request failed: %s", tasks.ErrProvider, detail))
}

// ctxError maps a context error to the tasks error the caller expects.
func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("openai: %w: %w", tasks.ErrTimeout, err)
	}
	return fmt.Errorf("openai: %w", err)
}

// retryAfter reads how long OpenAI asks us to wait: retry-after-ms (which
// OpenAI's own SDKs prefer for its precision), else Retry-After in seconds
// or as an HTTP date; 0 when absent or unreadable.
func retryAfter(h http.Header) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil {
			return seconds(ms / 1000)
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		return seconds(s)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, min(time.Until(t), maxRetryAfter))
	}
	return 0
}

// seconds converts a header's number of seconds, clamped to
// [0, maxRetryAfter] (NaN gives 0).
func seconds(s float64) time.Duration {
	switch {
	case !(s > 0): // also NaN
		return 0
	case s >= maxRetryAfter.Seconds():
		return maxRetryAfter
	}
	return time.Duration(s * float64(time.Second))
}

// requestID is OpenAI's x-request-id, kept only if it is a plausible ID (it
// becomes part of the task's ref and of error text).
func requestID(h http.Header) string {
	id := strings.TrimSpace(h.Get("X-Request-Id"))
	if id == "" || len(id) > 128 {
		return ""
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return ""
		}
	}
	return id
}

func ridSuffix(id string) string {
	if id == "" {
		return ""
	}
	return " [request " + id + "]"
}

// scalar renders a loosely typed JSON scalar (param, code) as text.
func scalar(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return ""
}

// sanitize makes provider text safe to put in an error: the API key and
// anything shaped like an OpenAI key (sk-...) are redacted, control
// characters and whitespace runs become single spaces, and it is cut to
// maxMessage characters.
func (p *Provider) sanitize(s string) string {
	if p.apiKey != "" {
		s = strings.ReplaceAll(s, p.apiKey, redacted)
	}
	words := strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
	for i, w := range words {
		if strings.HasPrefix(strings.TrimLeft(w, "\"'`(<[:="), "sk-") {
			words[i] = redacted
		}
	}
	s = strings.Join(words, " ")
	if utf8.RuneCountInString(s) > maxMessage {
		s = string([]rune(s)[:maxMessage]) + "…"
	}
	return s
}
