// Package replicate drives Replicate (https://replicate.com) predictions
// over its HTTP API: Submit creates a prediction, Poll reads it until it
// reaches a terminal status, Cancel asks Replicate to stop it.
//
// Wire format, as documented by Replicate:
//
//   - Official models are run with POST /v1/models/{owner}/{name}/predictions
//     and body {"input": {...}}; a model version with POST /v1/predictions and
//     body {"version": "<64-hex id>", "input": {...}}.
//   - The answer (201) is a prediction object: id, status (starting,
//     processing, succeeded, failed, canceled, and on newer accounts
//     aborted), output (a file URL, an array of them, or model-specific
//     JSON), error, logs, urls.get and urls.cancel.
//   - Without the "Prefer: wait" header the create call returns at once; this
//     provider never sends it: the runner polls, which keeps a request from
//     being held open for up to a minute inside the model's timeout.
//   - Errors are JSON problems ({"title", "status", "detail"}, 422 adds
//     "invalid_fields": [{"type", "field", "description"}]); 429 means
//     throttled ({"detail": "Request was throttled. ..."}), possibly with
//     Retry-After.
//
// The provider never retries by itself: it marks failures worth repeating
// with tasks.Retryable and the runner decides (backoff, circuit breaker).
//
// The API token is sent only as "Authorization: Bearer <token>", only to
// the configured API host, and is scrubbed from any text the API returns
// before that text becomes part of an error.
package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

// DefaultBaseURL is Replicate's API root.
const DefaultBaseURL = "https://api.replicate.com/v1"

const (
	defaultTimeout = 30 * time.Second
	// maxBody bounds every response body read.
	maxBody = 4 << 20
	// maxRef bounds an encoded handle; past it the URLs are dropped and
	// Poll and Cancel derive them from the id.
	maxRef = 1024
	// maxText bounds provider-supplied text (error messages) kept in errors.
	maxText = 2000
)

// Config configures the provider.
type Config struct {
	BaseURL string       // LEDGER_REPLICATE_BASE_URL; default DefaultBaseURL
	Token   string       // REPLICATE_API_TOKEN; never logged, never in errors
	Client  *http.Client // default: a client with a 30s timeout
}

// Provider runs Replicate predictions. It is safe for concurrent use.
type Provider struct {
	base   *url.URL
	baseS  string // base without trailing slash
	token  string
	client *http.Client
}

var _ tasks.Provider = (*Provider)(nil)

// New returns a provider; it fails without a token or with a bad base URL.
func New(cfg Config) (*Provider, error) {
	if strings.TrimSpace(cfg.Token) == "" {
		return nil, errors.New("replicate provider: Config.Token (REPLICATE_API_TOKEN) is required")
	}
	base := strings.TrimRight(strings.TrimSpace(cfg.BaseURL), "/")
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("replicate provider: base URL %q must be an absolute http(s) URL", base)
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Timeout: defaultTimeout}
	}
	return &Provider{base: u, baseS: base, token: cfg.Token, client: client}, nil
}

// Name implements tasks.Provider.
func (p *Provider) Name() string { return "replicate" }

// Submit creates the prediction. A prediction that is already finished in
// the create answer is returned as done; otherwise the handle's Ref names
// it for Poll and Cancel, including after a restart.
func (p *Provider) Submit(ctx context.Context, job tasks.Job) (tasks.Handle, error) {
	const op = "create prediction"
	target, err := parseModel(job.ProviderModel)
	if err != nil {
		return tasks.Handle{}, fmt.Errorf("replicate: %s: %w: %w", op, tasks.ErrProvider, err)
	}
	body := map[string]any{"input": buildInput(job)}
	endpoint := p.baseS + "/predictions"
	if target.version != "" {
		body["version"] = target.version
	} else {
		endpoint = p.baseS + "/models/" + url.PathEscape(target.owner) + "/" + url.PathEscape(target.name) + "/predictions"
	}
	data, err := p.do(ctx, op, http.MethodPost, endpoint, body)
	if err != nil {
		return tasks.Handle{}, err
	}
	pr, err := p.decode(op, data)
	if err != nil {
		return tasks.Handle{}, err
	}
	done, out, err := p.outcome(job, pr)
	if err != nil {
		return tasks.Handle{}, fmt.Errorf("replicate: prediction %s: %w", pr.ID, err)
	}
	if done {
		return tasks.Handle{Ref: p.encodeRef(pr), Done: true, Output: out}, nil
	}
	return tasks.Handle{Ref: p.encodeRef(pr)}, nil
}

// Poll reads the prediction ref names.
func (p *Provider) Poll(ctx context.Context, job tasks.Job, ref string) (bool, tasks.Output, error) {
	const op = "get prediction"
	r, err := decodeRef(ref)
	if err != nil {
		return false, tasks.Output{}, fmt.Errorf("replicate: %s: %w: %w", op, tasks.ErrProvider, err)
	}
	data, err := p.do(ctx, op, http.MethodGet, p.follow(r.Get, "/predictions/"+url.PathEscape(r.ID)), nil)
	if err != nil {
		return false, tasks.Output{}, err
	}
	pr, err := p.decode(op, data)
	if err != nil {
		return false, tasks.Output{}, err
	}
	if pr.ID != r.ID {
		return false, tasks.Output{}, fmt.Errorf("replicate: %s: %w: asked for prediction %s, got %s", op, tasks.ErrProvider, r.ID, pr.ID)
	}
	done, out, err := p.outcome(job, pr)
	if err != nil {
		return false, tasks.Output{}, fmt.Errorf("replicate: prediction %s: %w", pr.ID, err)
	}
	return done, out, nil
}

// Cancel asks Replicate to cancel the prediction (best effort; canceling a
// finished prediction changes nothing).
func (p *Provider) Cancel(ctx context.Context, _ tasks.Job, ref string) error {
	const op = "cancel prediction"
	r, err := decodeRef(ref)
	if err != nil {
		return fmt.Errorf("replicate: %s: %w: %w", op, tasks.ErrProvider, err)
	}
	_, err = p.do(ctx, op, http.MethodPost, p.follow(r.Cancel, "/predictions/"+url.PathEscape(r.ID)+"/cancel"), nil)
	return err
}

// --- model identifiers -----------------------------------------------------

type target struct {
	owner, name string // official model (version empty)
	version     string // a version id
}

// parseModel reads "owner/name" (an official model), "owner/name:version"
// or a bare version id.
func parseModel(s string) (target, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return target{}, errors.New("model has no provider_model (want owner/name, owner/name:version or a version id)")
	}
	ref, version, hasVersion := strings.Cut(s, ":")
	if hasVersion {
		if !validVersion(version) {
			return target{}, fmt.Errorf("provider_model %q: bad version id", s)
		}
	}
	owner, name, hasSlash := strings.Cut(ref, "/")
	switch {
	case !hasSlash && !hasVersion && isHex64(s):
		return target{version: strings.ToLower(s)}, nil
	case !hasSlash || !validSegment(owner) || !validSegment(name):
		return target{}, fmt.Errorf("provider_model %q: want owner/name, owner/name:version or a 64-hex version id", s)
	case hasVersion:
		return target{owner: owner, name: name, version: version}, nil
	}
	return target{owner: owner, name: name}, nil
}

func validSegment(s string) bool {
	if s == "" || len(s) > 200 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validVersion(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// --- input -----------------------------------------------------------------

// buildInput is the prediction's input: the fields the model's options let
// through as given, then the prompt and the priced parameters, which win
// over a passed-through field of the same name (they are what was billed).
func buildInput(job tasks.Job) map[string]any {
	in := map[string]any{}
	for _, k := range job.Options.Passthrough {
		if v, ok := job.Input[k]; ok {
			in[k] = v
		}
	}
	in["prompt"] = job.Prompt
	switch job.Type {
	case pricing.TypeVideo, pricing.TypeDirector:
		if job.Duration > 0 {
			in["duration"] = job.Duration
		}
		if job.Resolution != "" {
			in["resolution"] = job.Resolution
		}
	default:
		if w, h, ok := parseSize(job.Size); ok {
			in["width"], in["height"] = w, h
		}
	}
	return in
}

// parseSize reads "WxH".
func parseSize(s string) (w, h int, ok bool) {
	a, b, found := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "x")
	if !found {
		return 0, 0, false
	}
	w, err1 := strconv.Atoi(a)
	h, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || w <= 0 || h <= 0 {
		return 0, 0, false
	}
	return w, h, true
}

// --- predictions -----------------------------------------------------------

type prediction struct {
	ID     string          `json:"id"`
	Status string          `json:"status"`
	Output json.RawMessage `json:"output"`
	Error  json.RawMessage `json:"error"`
	URLs   struct {
		Get    string `json:"get"`
		Cancel string `json:"cancel"`
	} `json:"urls"`
}

func (p *Provider) decode(op string, data []byte) (prediction, error) {
	var pr prediction
	if err := json.Unmarshal(data, &pr); err != nil {
		return prediction{}, fmt.Errorf("replicate: %s: %w: malformed prediction JSON: %v", op, tasks.ErrProvider, err)
	}
	if pr.ID == "" || !validID(pr.ID) || pr.Status == "" {
		return prediction{}, fmt.Errorf("replicate: %s: %w: prediction without a usable id or status", op, tasks.ErrProvider)
	}
	return pr, nil
}

// outcome maps a prediction's status. A failed prediction is a provider
// outcome (ErrProvider) even when its error text blames the input: by then
// the input passed Replicate's validation and the model ran, and the text
// is free-form model output that cannot be classified reliably.
func (p *Provider) outcome(job tasks.Job, pr prediction) (bool, tasks.Output, error) {
	switch pr.Status {
	case "succeeded":
		out, err := mapOutput(job, pr.Output)
		if err != nil {
			return false, tasks.Output{}, err
		}
		return true, out, nil
	case "failed":
		msg := clip(p.scrub(errorText(pr.Error)), maxText)
		if msg == "" {
			msg = "no error message"
		}
		return false, tasks.Output{}, fmt.Errorf("%w: prediction failed: %s", tasks.ErrProvider, msg)
	case "canceled":
		return false, tasks.Output{}, fmt.Errorf("%w: prediction canceled", tasks.ErrProvider)
	case "aborted":
		return false, tasks.Output{}, fmt.Errorf("%w: prediction aborted before it started", tasks.ErrProvider)
	}
	// starting, processing, or a status added since: not finished yet.
	return false, tasks.Output{}, nil
}

// errorText renders a prediction's error (documented as a string).
func errorText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}

// mapOutput reads a succeeded prediction's output: a file URL or an array
// of them.
func mapOutput(job tasks.Job, raw json.RawMessage) (tasks.Output, error) {
	var urls []string
	var one string
	var many []*string
	switch {
	case json.Unmarshal(raw, &one) == nil && one != "":
		urls = []string{one}
	case json.Unmarshal(raw, &many) == nil:
		for _, s := range many {
			if s != nil && *s != "" {
				urls = append(urls, *s)
			}
		}
	}
	if len(urls) == 0 {
		return tasks.Output{}, fmt.Errorf("%w: prediction succeeded without a file URL in its output", tasks.ErrProvider)
	}
	for _, u := range urls {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			return tasks.Output{}, fmt.Errorf("%w: prediction output %q is not an http(s) URL", tasks.ErrProvider, clip(u, 100))
		}
	}
	out := tasks.Output{URLs: urls, EnhancedPrompt: job.Prompt}
	switch job.Type {
	case pricing.TypeVideo, pricing.TypeDirector:
		out.VideoURL = urls[0]
	default:
		out.ImageURL = urls[0]
	}
	return out, nil
}

// --- handles ---------------------------------------------------------------

// handle is what a Ref carries: the prediction id and the URLs Replicate
// gave for it.
type handle struct {
	ID     string `json:"id"`
	Get    string `json:"get,omitempty"`
	Cancel string `json:"cancel,omitempty"`
}

func (p *Provider) encodeRef(pr prediction) string {
	h := handle{ID: pr.ID, Get: pr.URLs.Get, Cancel: pr.URLs.Cancel}
	if !p.sameHost(h.Get) {
		h.Get = ""
	}
	if !p.sameHost(h.Cancel) {
		h.Cancel = ""
	}
	b, _ := json.Marshal(h)
	if len(b) > maxRef {
		b, _ = json.Marshal(handle{ID: pr.ID})
	}
	return string(b)
}

// decodeRef reads a Ref; a bare prediction id is accepted too.
func decodeRef(ref string) (handle, error) {
	ref = strings.TrimSpace(ref)
	var h handle
	if strings.HasPrefix(ref, "{") {
		if err := json.Unmarshal([]byte(ref), &h); err != nil {
			return handle{}, fmt.Errorf("unreadable handle: %v", err)
		}
	} else {
		h.ID = ref
	}
	if !validID(h.ID) {
		return handle{}, fmt.Errorf("handle has no valid prediction id")
	}
	return h, nil
}

func validID(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// follow is the URL to call: the one Replicate gave, when it points at the
// configured API (the token goes nowhere else), else the one derived from
// the base URL.
func (p *Provider) follow(given, path string) string {
	if given != "" && p.sameHost(given) {
		return given
	}
	return p.baseS + path
}

func (p *Provider) sameHost(raw string) bool {
	if raw == "" {
		return false
	}
	u, err := url.Parse(raw)
	return err == nil && u.User == nil && strings.EqualFold(u.Scheme, p.base.Scheme) && strings.EqualFold(u.Host, p.base.Host)
}

// --- HTTP ------------------------------------------------------------------

// do sends one request and returns the body of a 2xx answer; any other
// outcome is mapped to the tasks errors.
func (p *Provider) do(ctx context.Context, op, method, endpoint string, body any) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(op, err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("replicate: %s: %w: encode request: %v", op, tasks.ErrInvalidInput, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return nil, fmt.Errorf("replicate: %s: %w: build request: %v", op, tasks.ErrProvider, err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ledgerd")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(op, ctx.Err())
		}
		return nil, tasks.Uncertain(fmt.Errorf("replicate: %s: %w: %s", op, tasks.ErrProvider, p.scrub(err.Error())))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(op, ctx.Err())
		}
		return nil, tasks.Uncertain(fmt.Errorf("replicate: %s: %w: reading response: %s", op, tasks.ErrProvider, p.scrub(err.Error())))
	}
	if len(data) > maxBody {
		return nil, fmt.Errorf("replicate: %s: %w: response larger than %d bytes", op, tasks.ErrProvider, maxBody)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return data, nil
	}
	return nil, p.statusError(op, resp, data)
}

// statusError maps a non-2xx answer.
func (p *Provider) statusError(op string, resp *http.Response, data []byte) error {
	apiErr := p.parseAPIError(resp.StatusCode, data)
	wrap := func(sentinel error) error { return fmt.Errorf("replicate: %s: %w: %w", op, sentinel, apiErr) }
	code := resp.StatusCode
	switch {
	case code == http.StatusNotFound && op != "create prediction":
		// An unknown prediction says nothing about the caller's input.
		return wrap(tasks.ErrProvider)
	case code == http.StatusBadRequest, code == http.StatusNotFound, code == http.StatusUnprocessableEntity:
		return wrap(tasks.ErrInvalidInput)
	case code == http.StatusTooManyRequests:
		return tasks.Retryable(wrap(tasks.ErrProvider), retryAfter(resp.Header.Get("Retry-After")))
	case code == http.StatusRequestTimeout, code >= 500:
		return tasks.Retryable(wrap(tasks.ErrProvider), retryAfter(resp.Header.Get("Retry-After")))
	}
	// 401/403 (credentials), 402 (billing) and any other refusal: asking
	// again will not help.
	return wrap(tasks.ErrProvider)
}

// APIError is an error answer from Replicate's API.
type APIError struct {
	StatusCode    int
	Title         string
	Detail        string
	InvalidFields []InvalidField
}

// InvalidField is one entry of a 422's invalid_fields.
type InvalidField struct {
	Type        string `json:"type"`
	Field       string `json:"field"`
	Description string `json:"description"`
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP %d", e.StatusCode)
	if e.Title != "" {
		b.WriteString(" " + e.Title)
	}
	switch code := e.StatusCode; {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		b.WriteString(" (check REPLICATE_API_TOKEN)")
	case code == http.StatusPaymentRequired:
		b.WriteString(" (Replicate account billing)")
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	if len(e.InvalidFields) > 0 {
		b.WriteString(" (invalid fields:")
		for i, f := range e.InvalidFields {
			if i > 0 {
				b.WriteString(";")
			}
			name := f.Field
			if name == "" {
				name = "(request)"
			}
			b.WriteString(" " + name + ": " + f.Description)
		}
		b.WriteString(")")
	}
	return b.String()
}

func (p *Provider) parseAPIError(code int, data []byte) *APIError {
	e := &APIError{StatusCode: code}
	var body struct {
		Title         string          `json:"title"`
		Detail        json.RawMessage `json:"detail"`
		InvalidFields []InvalidField  `json:"invalid_fields"`
	}
	if json.Unmarshal(data, &body) == nil {
		e.Title = clip(p.scrub(body.Title), 200)
		e.Detail = clip(p.scrub(errorText(body.Detail)), maxText)
		for i, f := range body.InvalidFields {
			if i == 20 {
				break
			}
			e.InvalidFields = append(e.InvalidFields, InvalidField{
				Type: clip(p.scrub(f.Type), 100), Field: clip(p.scrub(f.Field), 200), Description: clip(p.scrub(f.Description), 500),
			})
		}
	} else if text := strings.TrimSpace(string(data)); text != "" {
		e.Detail = clip(p.scrub(text), 300)
	}
	if e.Title == "" && e.Detail == "" {
		e.Title = http.StatusText(code)
	}
	return e
}

// retryAfter reads Retry-After: delay-seconds or an HTTP-date.
func retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, 24*3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// ctxError maps a context error: a deadline is the model's timeout.
func ctxError(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("replicate: %s: %w: %w", op, tasks.ErrTimeout, err)
	}
	return fmt.Errorf("replicate: %s: %w", op, err)
}

// scrub removes the token from text bound for an error.
func (p *Provider) scrub(s string) string {
	if p.token == "" {
		return s
	}
	return strings.ReplaceAll(s, p.token, "[redacted]")
}

// clip shortens s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
