// Package fal drives generation calls on fal.ai through its Queue API
// (https://fal.ai/docs/documentation/model-apis/inference/queue).
//
// A call is submitted with POST {queue}/{model_id}; fal answers with a
// request_id and the status_url, response_url and cancel_url to use from
// then on (fal asks clients not to build those URLs themselves: they carry
// only the model's owner and app, not its sub-path). Poll reads the status
// (IN_QUEUE, IN_PROGRESS, COMPLETED) and, once completed, the result;
// Cancel is a PUT on the cancel URL. The URLs are recorded in the handle's
// Ref, so a restarted ledgerd polls the same request instead of paying for
// a second one.
//
// The adapter never retries by itself: failures worth another try (5xx,
// 429, broken connections) are marked with tasks.Retryable and the runner
// retries them within the model's timeout.
//
// The key is sent only as "Authorization: Key <key>", and only to the
// origin (scheme, host and port) of the configured queue URL: URLs fal
// returns, or a Ref read back from the ledger, that point elsewhere are
// refused. The key is never part of an error, a Ref or an output; any text
// from fal that is quoted in an error has it redacted.
//
// Input mapping. Every model has its own schema; the adapter sends prompt,
// image_size for images ("1024x768" becomes {"width":1024,"height":768};
// any other value, such as fal's presets "square_hd" or "landscape_16_9",
// is sent as given), and duration and resolution for videos. The duration
// goes as a string of seconds ("5"), the form fal's video models (Kling,
// Sora 2, Seedance) document for their duration enums. Fields named in the
// model's Passthrough are copied from the caller's input, except those
// ledgerd derives from the priced input above, which cannot be overridden.
//
// Error mapping. 400/404/413/422 are ErrInvalidInput carrying fal's detail
// (except a 404 on a status or result URL, which means fal no longer knows
// the request: ErrProvider). 401/403 are ErrProvider ("fal rejected the
// credentials"). 429, 408, 5xx and broken connections are retryable, with
// Retry-After honoured, unless fal marks a 5xx X-Fal-Retryable: false or
// the 5xx is the stored outcome of a completed request. The call's own
// deadline is ErrTimeout. A malformed 2xx body is ErrProvider, not
// retried (retrying a submit would pay twice).
package fal

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

const (
	// DefaultQueueURL is fal's queue (LEDGER_FAL_QUEUE_URL overrides it).
	DefaultQueueURL = "https://queue.fal.run"
	// DefaultJWKSURL publishes the Ed25519 keys fal signs webhooks with.
	DefaultJWKSURL = "https://rest.fal.ai/.well-known/jwks.json"

	// maxBody bounds every response body read.
	maxBody = 4 << 20
	// maxRef bounds the recorded handle.
	maxRef = 1024
	// maxDetail bounds fal's error text quoted in an error.
	maxDetail = 500
	// maxRetryAfter caps a Retry-After so a silly value cannot overflow.
	maxRetryAfter = time.Hour
)

// Config configures the provider.
type Config struct {
	QueueURL string       // LEDGER_FAL_QUEUE_URL; default DefaultQueueURL
	Key      string       // FAL_KEY, sent as "Authorization: Key <key>"
	Client   *http.Client // default: a client with a 30s timeout
	// WebhookURL, if set, is passed as fal_webhook=WebhookURL/<taskID> on
	// submit, so fal also POSTs the outcome there. Poll works regardless.
	WebhookURL string
	// JWKSURL is where VerifyWebhook fetches fal's webhook signing keys;
	// default DefaultJWKSURL. It is fetched without credentials.
	JWKSURL string
}

// String keeps the key out of logs that print the config.
func (c Config) String() string {
	return fmt.Sprintf("fal.Config{QueueURL:%q Key:%s WebhookURL:%q JWKSURL:%q}", c.QueueURL, redactedIf(c.Key), c.WebhookURL, c.JWKSURL)
}

// GoString keeps the key out of %#v.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the key out of slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("queue_url", c.QueueURL), slog.String("key", redactedIf(c.Key)),
		slog.String("webhook_url", c.WebhookURL))
}

func redactedIf(key string) string {
	if key == "" {
		return `""`
	}
	return "[redacted]"
}

// Provider is the fal adapter. It is safe for concurrent use.
type Provider struct {
	queue   string // QueueURL without a trailing slash
	origin  string // scheme://host[:port] the key may be sent to
	key     string
	client  *http.Client
	webhook string
	jwksURL string
	now     func() time.Time

	jwksMu      sync.Mutex
	jwks        []ed25519.PublicKey
	jwksAt      time.Time // when jwks was fetched
	jwksTriedAt time.Time // last fetch attempt, to rate-limit refreshes
}

var _ tasks.Provider = (*Provider)(nil)

// New returns a provider; the key is required.
func New(cfg Config) (*Provider, error) {
	if strings.TrimSpace(cfg.Key) == "" {
		return nil, errors.New("fal provider: Config.Key (FAL_KEY) is required")
	}
	for _, c := range cfg.Key {
		if c < 0x20 || c == 0x7f {
			return nil, errors.New("fal provider: Config.Key contains control characters")
		}
	}
	queue := cfg.QueueURL
	if queue == "" {
		queue = DefaultQueueURL
	}
	qu, err := baseURL(queue)
	if err != nil {
		return nil, fmt.Errorf("fal provider: QueueURL: %w", err)
	}
	p := &Provider{
		queue:   strings.TrimRight(qu.String(), "/"),
		origin:  originOf(qu),
		key:     strings.TrimSpace(cfg.Key),
		client:  cfg.Client,
		jwksURL: cfg.JWKSURL,
		now:     time.Now,
	}
	if p.client == nil {
		p.client = &http.Client{Timeout: 30 * time.Second}
	}
	if p.jwksURL == "" {
		p.jwksURL = DefaultJWKSURL
	}
	if _, err := baseURL(p.jwksURL); err != nil {
		return nil, fmt.Errorf("fal provider: JWKSURL: %w", err)
	}
	if cfg.WebhookURL != "" {
		wu, err := baseURL(cfg.WebhookURL)
		if err != nil {
			return nil, fmt.Errorf("fal provider: WebhookURL: %w", err)
		}
		p.webhook = strings.TrimRight(wu.String(), "/")
	}
	return p, nil
}

// baseURL accepts an absolute http(s) URL without query or fragment.
func baseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", s)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q must be an absolute http(s) URL", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%q must not carry a query, fragment or credentials", s)
	}
	return u, nil
}

func originOf(u *url.URL) string {
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
}

// Name implements tasks.Provider.
func (p *Provider) Name() string { return "fal" }

// String keeps the key out of logs that print the provider.
func (p *Provider) String() string { return "fal.Provider{" + p.queue + "}" }

// GoString keeps the key out of %#v.
func (p *Provider) GoString() string { return p.String() }

// submitResponse is the queue's answer to a submit.
type submitResponse struct {
	RequestID   string `json:"request_id"`
	StatusURL   string `json:"status_url"`
	ResponseURL string `json:"response_url"`
	CancelURL   string `json:"cancel_url"`
}

// Submit queues the job on fal and returns a handle to poll.
func (p *Provider) Submit(ctx context.Context, job tasks.Job) (tasks.Handle, error) {
	endpoint, err := p.submitURL(job)
	if err != nil {
		return tasks.Handle{}, err
	}
	body, err := json.Marshal(input(job))
	if err != nil {
		return tasks.Handle{}, fmt.Errorf("fal: submit: encoding the input: %w", tasks.ErrInvalidInput)
	}
	resp, err := p.call(ctx, "submit", kindSubmit, http.MethodPost, endpoint, body)
	if err != nil {
		return tasks.Handle{}, err
	}
	var sr submitResponse
	if err := json.Unmarshal(resp.body, &sr); err != nil {
		return tasks.Handle{}, fmt.Errorf("fal: submit: %w: malformed submit response (not the documented JSON object)", tasks.ErrProvider)
	}
	if sr.CancelURL == "" && sr.ResponseURL != "" {
		sr.CancelURL = strings.TrimRight(sr.ResponseURL, "/") + "/cancel" // the documented layout
	}
	r := ref{ID: sr.RequestID, Status: sr.StatusURL, Response: sr.ResponseURL, Cancel: sr.CancelURL}
	if err := p.checkRef(r); err != nil {
		return tasks.Handle{}, fmt.Errorf("fal: submit: %w: malformed submit response: %s", tasks.ErrProvider, err)
	}
	enc, err := r.encode()
	if err != nil {
		return tasks.Handle{}, fmt.Errorf("fal: submit: %w: %s", tasks.ErrProvider, err)
	}
	return tasks.Handle{Ref: enc}, nil
}

// submitURL is {queue}/{model_id}[?fal_webhook=...]. The model id is the
// path fal documents (owner/app[/sub-path]); it is checked segment by
// segment so a price-list entry cannot steer the request elsewhere.
func (p *Provider) submitURL(job tasks.Job) (string, error) {
	model := job.ProviderModel
	if model == "" {
		return "", fmt.Errorf("fal: submit: %w: model %q has no provider_model (a fal model id such as fal-ai/flux/dev)", tasks.ErrProvider, job.Model)
	}
	for _, seg := range strings.Split(model, "/") {
		if seg == "" || seg == "." || seg == ".." || !validSegment(seg) {
			return "", fmt.Errorf("fal: submit: %w: provider_model %q is not a fal model id", tasks.ErrProvider, model)
		}
	}
	u := p.queue + "/" + model
	if p.webhook != "" && job.TaskID != "" {
		u += "?" + url.Values{"fal_webhook": {p.webhook + "/" + url.PathEscape(job.TaskID)}}.Encode()
	}
	return u, nil
}

func validSegment(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~') {
			return false
		}
	}
	return true
}

// derived names the input fields ledgerd sets from the call's priced,
// validated input; a passthrough field of the same name is ignored, so a
// caller cannot get a bigger image or a longer video than was paid for.
var derived = map[string]bool{"prompt": true, "image_size": true, "duration": true, "resolution": true}

// input is the JSON body of a submit.
func input(job tasks.Job) map[string]any {
	in := map[string]any{}
	for _, name := range job.Options.Passthrough {
		if v, ok := job.Input[name]; ok && !derived[name] {
			in[name] = v
		}
	}
	in["prompt"] = job.Prompt
	switch job.Type {
	case pricing.TypeImage:
		if job.Size != "" {
			in["image_size"] = imageSize(job.Size)
		}
	case pricing.TypeVideo, pricing.TypeDirector:
		if job.Duration > 0 {
			// fal's video models take the duration as a string enum
			// ("5", "10"); see the package documentation.
			in["duration"] = strconv.Itoa(job.Duration)
		}
		if job.Resolution != "" {
			in["resolution"] = job.Resolution
		}
	}
	return in
}

// imageSize maps "1024x768" to fal's custom size {"width":1024,"height":768};
// anything else (fal's presets such as "square_hd" or "landscape_16_9") is
// sent as the string it is, for fal to validate.
func imageSize(size string) any {
	w, h, ok := strings.Cut(strings.ToLower(size), "x")
	if ok {
		wi, err1 := strconv.Atoi(w)
		hi, err2 := strconv.Atoi(h)
		if err1 == nil && err2 == nil && wi > 0 && hi > 0 && isDigits(w) && isDigits(h) {
			return map[string]int{"width": wi, "height": hi}
		}
	}
	return size
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// statusResponse is the queue's status of a request.
type statusResponse struct {
	Status    string `json:"status"`
	Error     string `json:"error"`
	ErrorType string `json:"error_type"`
}

// Poll reads the request's status and, once completed, its result.
func (p *Provider) Poll(ctx context.Context, job tasks.Job, encRef string) (bool, tasks.Output, error) {
	r, err := p.decodeRef(encRef)
	if err != nil {
		return false, tasks.Output{}, fmt.Errorf("fal: poll: %w: %s", tasks.ErrProvider, err)
	}
	resp, err := p.call(ctx, "status", kindStatus, http.MethodGet, r.statusURL(), nil)
	if err != nil {
		return false, tasks.Output{}, err
	}
	var st statusResponse
	if err := json.Unmarshal(resp.body, &st); err != nil {
		return false, tasks.Output{}, fmt.Errorf("fal: status: %w: malformed status response for request %s", tasks.ErrProvider, r.ID)
	}
	switch st.Status {
	case "IN_QUEUE", "IN_PROGRESS":
		return false, tasks.Output{}, nil
	case "COMPLETED":
	case "":
		return false, tasks.Output{}, fmt.Errorf("fal: status: %w: malformed status response for request %s (no status)", tasks.ErrProvider, r.ID)
	default:
		return false, tasks.Output{}, fmt.Errorf("fal: status: %w: request %s is %s", tasks.ErrProvider, r.ID, p.scrub(clip(st.Status)))
	}
	// Completed: the result endpoint answers with the model's own status
	// code and body, so a failed request comes back as its error.
	res, err := p.call(ctx, "result", kindResult, http.MethodGet, r.responseURL(), nil)
	if err != nil {
		return false, tasks.Output{}, err
	}
	if st.Error != "" {
		msg := p.scrub(clip(st.Error))
		if st.ErrorType != "" {
			msg += " (" + p.scrub(clip(st.ErrorType)) + ")"
		}
		return false, tasks.Output{}, fmt.Errorf("fal: result: %w: request %s failed: %s", tasks.ErrProvider, r.ID, msg)
	}
	out, err := parseOutput(res.body, job.Prompt)
	if err != nil {
		return false, tasks.Output{}, fmt.Errorf("fal: result: %w: request %s: %s", tasks.ErrProvider, r.ID, err)
	}
	return true, out, nil
}

// Cancel asks fal to drop the request (PUT on its cancel URL). It is best
// effort: fal's answer (cancellation requested, already completed, not
// found, or an error) is not reported; only a request that could not be
// made is.
func (p *Provider) Cancel(ctx context.Context, job tasks.Job, encRef string) error {
	r, err := p.decodeRef(encRef)
	if err != nil {
		return fmt.Errorf("fal: cancel: %w: %s", tasks.ErrProvider, err)
	}
	_, err = p.call(ctx, "cancel", kindCancel, http.MethodPut, r.cancelURL(), nil)
	return err
}

// callKind tells the error mapping which operation answered.
type callKind int

const (
	kindSubmit callKind = iota
	kindStatus
	kindResult
	kindCancel
)

type response struct {
	code int
	body []byte
}

// call makes one request with the key and maps every failure to the tasks
// errors. For kindCancel any HTTP answer is a success.
func (p *Provider) call(ctx context.Context, op string, kind callKind, method, target string, body []byte) (response, error) {
	if !p.sameOrigin(target) {
		// Never send the key anywhere but the configured queue.
		return response{}, fmt.Errorf("fal: %s: %w: refusing to send credentials to a URL outside %s", op, tasks.ErrProvider, p.origin)
	}
	if err := ctx.Err(); err != nil {
		return response{}, ctxError(op, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return response{}, fmt.Errorf("fal: %s: %w: building the request: %s", op, tasks.ErrProvider, p.scrub(err.Error()))
	}
	req.Header.Set("Authorization", "Key "+p.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ledgerd-fal")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return response{}, p.transportError(ctx, op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return response{}, p.transportError(ctx, op, err)
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if kind == kindCancel {
		return response{code: resp.StatusCode}, nil
	}
	if !ok {
		return response{}, p.statusError(op, kind, resp.StatusCode, resp.Header, data)
	}
	if len(data) > maxBody {
		return response{}, fmt.Errorf("fal: %s: %w: response larger than %d bytes", op, tasks.ErrProvider, maxBody)
	}
	return response{code: resp.StatusCode, body: data}, nil
}

func (p *Provider) sameOrigin(target string) bool {
	u, err := url.Parse(target)
	if err != nil || u.User != nil {
		return false
	}
	return originOf(u) == p.origin
}

// ctxError: the call's own deadline passed (ErrTimeout), or it was
// cancelled (not retried either way).
func ctxError(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("fal: %s: %w: %w", op, tasks.ErrTimeout, err)
	}
	return fmt.Errorf("fal: %s: %w", op, err)
}

// transportError maps a failed exchange: the context's end, or a broken
// connection (dial, reset, EOF, the client's own timeout), which is worth
// another try. The transport error is quoted, not wrapped, so its own
// context.DeadlineExceeded (a client timeout) is not taken for the task's.
func (p *Provider) transportError(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return ctxError(op, cerr)
	}
	return tasks.Uncertain(fmt.Errorf("fal: %s: %w: %s", op, tasks.ErrProvider, p.scrub(err.Error())))
}

// statusError maps a non-2xx answer.
func (p *Provider) statusError(op string, kind callKind, code int, h http.Header, body []byte) error {
	detail, falErr := errorDetail(body)
	text := p.scrub(detail)
	if text == "" {
		text = http.StatusText(code)
	}
	if text == "" {
		text = "no detail"
	}
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("fal: %s: %w: fal rejected the credentials (HTTP %d: %s)", op, tasks.ErrProvider, code, text)
	case code == http.StatusTooManyRequests:
		return tasks.Retryable(fmt.Errorf("fal: %s: %w: rate limited (HTTP 429: %s)", op, tasks.ErrProvider, text), retryAfter(h, p.now()))
	case code == http.StatusNotFound && (kind == kindStatus || kind == kindResult):
		// Not the caller's input: fal no longer knows the request (results
		// are kept for a limited time) or the URL is wrong.
		return fmt.Errorf("fal: %s: %w: fal does not know the request (HTTP 404: %s)", op, tasks.ErrProvider, text)
	case code == http.StatusBadRequest || code == http.StatusNotFound || code == http.StatusRequestEntityTooLarge || code == http.StatusUnprocessableEntity:
		return fmt.Errorf("fal: %s: %w: %s (HTTP %d)", op, tasks.ErrInvalidInput, text, code)
	case code == http.StatusRequestTimeout:
		return tasks.Retryable(fmt.Errorf("fal: %s: %w: HTTP 408: %s", op, tasks.ErrProvider, text), retryAfter(h, p.now()))
	case code >= 500:
		err := fmt.Errorf("fal: %s: %w: HTTP %d: %s", op, tasks.ErrProvider, code, text)
		if kind == kindResult && (falErr || h.Get("X-Fal-Error-Type") != "") {
			// The completed request's own outcome: fal already retried it,
			// and asking for the result again gives the same error.
			return err
		}
		if strings.EqualFold(strings.TrimSpace(h.Get("X-Fal-Retryable")), "false") {
			return err
		}
		return tasks.Retryable(err, retryAfter(h, p.now()))
	}
	return fmt.Errorf("fal: %s: %w: unexpected HTTP %d: %s", op, tasks.ErrProvider, code, text)
}

// errorDetail reads fal's documented error bodies: model errors carry
// {"detail":[{"loc":[...],"msg":"...","type":"..."}]}, request errors
// {"detail":"...","error_type":"..."}. ok reports that the body was one.
func errorDetail(body []byte) (detail string, ok bool) {
	var b struct {
		Detail    json.RawMessage `json:"detail"`
		Message   string          `json:"message"`
		ErrorType string          `json:"error_type"`
	}
	if len(bytes.TrimSpace(body)) == 0 || json.Unmarshal(body, &b) != nil {
		return "", false
	}
	var s string
	var items []struct {
		Loc []any  `json:"loc"`
		Msg string `json:"msg"`
	}
	switch {
	case len(b.Detail) == 0 || string(b.Detail) == "null":
	case json.Unmarshal(b.Detail, &s) == nil:
		detail = s
	case json.Unmarshal(b.Detail, &items) == nil:
		parts := make([]string, 0, len(items))
		for _, it := range items {
			loc := make([]string, 0, len(it.Loc))
			for i, l := range it.Loc {
				if i == 0 && l == "body" && len(it.Loc) > 1 {
					continue
				}
				loc = append(loc, fmt.Sprint(l))
			}
			if len(loc) > 0 {
				parts = append(parts, strings.Join(loc, ".")+": "+it.Msg)
			} else {
				parts = append(parts, it.Msg)
			}
		}
		detail = strings.Join(parts, "; ")
	}
	if detail == "" {
		detail = b.Message
	}
	if detail == "" && b.ErrorType != "" {
		detail = b.ErrorType
	}
	return clip(detail), detail != "" || b.ErrorType != ""
}

// clip flattens and bounds text quoted from fal.
func clip(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxDetail {
		s = string(r[:maxDetail]) + "…"
	}
	return s
}

// scrub redacts the key (and each long part of a "id:secret" key) from
// text quoted in errors, in case fal ever echoes it.
func (p *Provider) scrub(s string) string {
	if p.key == "" || s == "" {
		return s
	}
	s = strings.ReplaceAll(s, p.key, "[redacted]")
	for _, part := range strings.Split(p.key, ":") {
		if len(part) >= 8 {
			s = strings.ReplaceAll(s, part, "[redacted]")
		}
	}
	return s
}

// retryAfter reads Retry-After as seconds or an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}
