package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/ledger/ids"
	"github.com/ledgerd/ledgerd/ledger/tasks"
	"github.com/ledgerd/ledgerd/projections"
)

// Limits on generation input.
const (
	maxPromptLen   = 10_000 // characters
	maxCallbackLen = 2048
	maxInputFields = 32
)

var (
	errProviderFailed  = errStatus(http.StatusBadGateway, "provider_error", "The generation provider failed; you were not charged")
	errProviderTimeout = errStatus(http.StatusGatewayTimeout, "provider_timeout", "The generation provider did not finish in time; you were not charged")
)

// outcome is a call as a response renders it, fresh or replayed.
type outcome struct {
	TaskID      string
	Model       string
	Status      string // pending, running, succeeded, failed
	Cost        money.Amount
	Output      account.TaskOutput
	ErrorCode   string
	ErrorMsg    string
	CreatedAt   time.Time
	CompletedAt *time.Time
}

// failure maps a failed call to the response its caller gets.
func (o outcome) failure() error {
	switch o.ErrorCode {
	case "":
		return nil
	case tasks.CodeInvalid:
		return &apiError{Status: http.StatusUnprocessableEntity, Code: "validation_error",
			Message: "The provider rejected the input; you were not charged",
			Details: []validation.FieldError{{Field: "input", Message: o.ErrorMsg}}}
	case tasks.CodeTimeout:
		return errProviderTimeout
	case tasks.CodeUnavailable:
		return errStatus(http.StatusServiceUnavailable, "unavailable", "The provider for this model is unavailable; you were not charged")
	default:
		return errProviderFailed
	}
}

type imageOut struct {
	ImageURL       string       `json:"imageUrl"`
	Model          string       `json:"model"`
	EnhancedPrompt string       `json:"enhancedPrompt"`
	TaskID         string       `json:"taskId"`
	Cost           money.Amount `json:"cost"`
}

type videoOut struct {
	VideoURL       string       `json:"videoUrl"`
	Model          string       `json:"model"`
	EnhancedPrompt string       `json:"enhancedPrompt"`
	TaskID         string       `json:"taskId"`
	Cost           money.Amount `json:"cost"`
}

// call is one generation request, validated.
type call struct {
	model pricing.Model
	input account.TaskInput
	async bool
}

// hash fingerprints the request for idempotency: the route, the model and
// the normalized input.
func (c call) hash(route string) string {
	b, _ := json.Marshal(struct {
		Route string            `json:"r"`
		Model string            `json:"m"`
		Input account.TaskInput `json:"i"`
	}{route, c.model.Name, c.input})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// resolveModel finds the model and checks the key may call it.
func (s *Server) resolveModel(p Principal, name string, want ...pricing.Type) (pricing.Model, error) {
	if strings.TrimSpace(name) == "" {
		return pricing.Model{}, validation.Field("model", "is required")
	}
	m, err := s.cfg.Commands.Model(name)
	if err != nil {
		return pricing.Model{}, err
	}
	if len(want) > 0 && !contains(want, m.Type) {
		return pricing.Model{}, validation.Field("model", name+" is a "+string(m.Type)+" model; use the "+string(m.Type)+" endpoint")
	}
	if p.KeyID != "" && (!p.Scopes.Has(apikey.Scope(m.Type.Scope())) || !p.Scopes.AllowsModel(m.Name)) {
		return pricing.Model{}, errStatus(http.StatusForbidden, "forbidden_scope", "API key scope does not allow "+m.Name)
	}
	return m, nil
}

func contains[T comparable](xs []T, x T) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func checkPrompt(prompt string, verr *validation.Error) {
	switch {
	case strings.TrimSpace(prompt) == "":
		verr.Add("prompt", "is required")
	case !utf8.ValidString(prompt):
		verr.Add("prompt", "must be valid UTF-8")
	case utf8.RuneCountInString(prompt) > maxPromptLen:
		verr.Add("prompt", "must be at most 10000 characters")
	case strings.ContainsRune(prompt, 0):
		verr.Add("prompt", "must not contain NUL characters")
	}
}

// checkCallback accepts an absolute http(s) URL. Addresses on private
// networks are refused at delivery time as well (a name can resolve
// anywhere), unless the operator allows them.
func checkCallback(raw string, verr *validation.Error) { checkURL("callback_url", raw, verr) }

// checkURL is checkCallback for any field ledgerd will POST to.
func checkURL(field, raw string, verr *validation.Error) {
	if raw == "" {
		return
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(raw) > maxCallbackLen || u.User != nil {
		verr.Add(field, "must be an absolute http or https URL of at most 2048 characters, without credentials")
		return
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil && strings.Contains(u.Host, ":") && !strings.HasPrefix(u.Host, "[") {
		verr.Add(field, "has an invalid host")
	}
}

func (s *Server) imageGenerate(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in imageBody
	if err := decode(r, &in); err != nil {
		return err
	}
	// The body's own errors and the model's are reported together; an
	// unknown model (404) wins over both.
	var verr validation.Error
	mergeValidation(&verr, in.check())
	m, err := s.resolveModel(p, in.Model, pricing.TypeImage)
	if err != nil {
		return mergeValidation(&verr, err)
	}
	if err := m.CheckInput(in.Size, 0, ""); err != nil {
		mergeValidation(&verr, err)
	}
	if err := verr.Err(); err != nil {
		return err
	}
	c := call{model: m, input: account.TaskInput{Prompt: in.Prompt, Size: in.Size, RequestType: "sync"}}
	o, err := s.generate(r, p, c, "image")
	if err != nil {
		return err
	}
	if err := o.failure(); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imageOut{ImageURL: o.Output.ImageURL, Model: o.Model,
		EnhancedPrompt: o.Output.EnhancedPrompt, TaskID: o.TaskID, Cost: o.Cost})
	return nil
}

func (s *Server) videoGenerate(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in videoBody
	if err := decode(r, &in); err != nil {
		return err
	}
	var verr validation.Error
	mergeValidation(&verr, in.check())
	duration := in.duration
	m, err := s.resolveModel(p, in.Model, pricing.TypeVideo, pricing.TypeDirector)
	if err != nil {
		return mergeValidation(&verr, err)
	}
	if err := m.CheckInput("", duration, in.Resolution); err != nil {
		mergeValidation(&verr, err)
	}
	if err := verr.Err(); err != nil {
		return err
	}
	c := call{model: m, input: account.TaskInput{Prompt: in.Prompt, Duration: duration, Resolution: in.Resolution, RequestType: "sync"}}
	o, err := s.generate(r, p, c, "video")
	if err != nil {
		return err
	}
	if err := o.failure(); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, videoOut{VideoURL: o.Output.VideoURL, Model: o.Model,
		EnhancedPrompt: o.Output.EnhancedPrompt, TaskID: o.TaskID, Cost: o.Cost})
	return nil
}

// seconds reads an optional whole number of seconds given as a number.
func seconds(field string, n json.Number, verr *validation.Error) int {
	if n == "" || n == "null" {
		return 0
	}
	v, err := n.Int64()
	if err != nil || v <= 0 || v > 600 || strings.HasPrefix(string(n), `"`) {
		verr.Add(field, "must be a whole number of seconds from 1 to 600")
		return 0
	}
	return int(v)
}

// mergeValidation adds err's fields to verr when it is a validation error
// and returns the combined error; any other error is returned as is.
func mergeValidation(verr *validation.Error, err error) error {
	var v *validation.Error
	if errors.As(err, &v) {
		verr.Fields = append(verr.Fields, v.Fields...)
		return verr
	}
	return err
}

func (s *Server) generateTask(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in taskBody
	if err := decode(r, &in); err != nil {
		return err
	}
	var verr validation.Error
	mergeValidation(&verr, in.check())
	input := in.input
	m, err := s.resolveModel(p, r.PathValue("model"))
	if err != nil {
		return mergeValidation(&verr, err)
	}
	if err := m.CheckInput(input.Size, input.Duration, input.Resolution); err != nil {
		mergeValidation(&verr, err)
	}
	if err := verr.Err(); err != nil {
		return err
	}
	o, err := s.generate(r, p, call{model: m, input: input, async: in.async}, "task")
	if err != nil {
		return err
	}
	if err := o.failure(); err != nil {
		return err
	}
	data := map[string]any{"taskId": o.TaskID, "status": o.Status}
	if o.Status == "succeeded" {
		data["output"], data["cost"] = o.Output, o.Cost
	}
	writeJSON(w, http.StatusOK, map[string]any{"code": 200, "message": "success", "data": data})
	return nil
}

// taskInput reads generateTask's free-form input: the fields ledgerd
// understands are typed and checked, the rest are kept for providers that
// pass them through.
func taskInput(raw map[string]any, in account.TaskInput, verr *validation.Error) account.TaskInput {
	if len(raw) > maxInputFields {
		verr.Add("input", "has too many fields (at most 32)")
		return in
	}
	for k, v := range raw {
		switch k {
		case "prompt":
			s, ok := v.(string)
			if !ok {
				verr.Add("input.prompt", "must be a string")
				continue
			}
			in.Prompt = s
		case "size", "resolution":
			s, ok := v.(string)
			if !ok {
				verr.Add("input."+k, "must be a string")
				continue
			}
			checkText("input."+k, s, 100, verr)
			if k == "size" {
				in.Size = s
			} else {
				in.Resolution = s
			}
		case "duration":
			n, ok := v.(json.Number)
			if !ok {
				verr.Add("input.duration", "must be a number of seconds")
				continue
			}
			in.Duration = seconds("input.duration", n, verr)
		default:
			if p := validation.TextProblem(k); p != "" || len(k) > 100 {
				verr.Add("input", "has a field name that is not plain text of at most 100 bytes")
				continue
			}
			checkPassthrough("input."+k, v, 1, verr)
			if in.Extra == nil {
				in.Extra = map[string]any{}
			}
			in.Extra[k] = v
		}
	}
	if _, ok := raw["prompt"]; !ok {
		verr.Add("input.prompt", "is required")
	} else if in.Prompt != "" || verr.Err() == nil {
		var pv validation.Error
		checkPrompt(in.Prompt, &pv)
		for _, f := range pv.Fields {
			verr.Add("input."+f.Field, f.Message)
		}
	}
	return in
}

// generate accepts and (unless async) runs a call. The price is reserved
// before the provider is asked anything; success captures it, any failure
// releases it, and a retry with the same Idempotency-Key gets the first
// call's outcome without a second charge.
func (s *Server) generate(r *http.Request, p Principal, c call, route string) (outcome, error) {
	ctx := r.Context()
	idemKey := r.Header.Get("Idempotency-Key")
	hash := ""
	if idemKey != "" {
		if len(idemKey) > 255 || !printableASCII(idemKey) {
			return outcome{}, errStatus(http.StatusBadRequest, "bad_request", "Idempotency-Key must be 1-255 printable ASCII characters")
		}
		hash = c.hash(route)
		// Keys older than the aggregate's memory are in the read model.
		row, err := s.cfg.Reads.TaskByIdempotencyKey(ctx, p.AccountID, idemKey)
		switch {
		case err == nil && row.RequestHash != hash:
			return outcome{}, account.ErrIdempotencyMismatch
		case err == nil && s.refusedEarlier(ctx, row):
			// Its caller was answered 503: this retry is a new call
			// (Reserve releases the refused one).
		case err == nil:
			return s.await(r, p.AccountID, row.ID, !c.async)
		case !errors.Is(err, projections.ErrNotFound):
			return outcome{}, readErr(err)
		}
	}
	if s.cfg.Tasks == nil {
		return outcome{}, tasks.ErrUnavailable
	}
	// A provider that is down (circuit open) or not configured refuses
	// the call before anything is reserved.
	if !s.cfg.Tasks.Available(c.model.Provider) {
		return outcome{}, tasks.ErrUnavailable
	}
	timeout, holdTTL := s.cfg.Timing.For(c.model)
	res, err := s.cfg.Commands.Reserve(ctx, s.meta(r, p), p.AccountID, account.TaskRequest{
		KeyID: p.KeyID, Model: c.model, Input: c.input, IdempotencyKey: idemKey, RequestHash: hash, HoldTTL: holdTTL,
	})
	if err != nil {
		return outcome{}, err
	}
	if res.Duplicate {
		return s.await(r, p.AccountID, res.TaskID, !c.async)
	}
	t := tasks.Task{AccountID: p.AccountID, Provider: c.model.Provider, Timeout: timeout, Job: tasks.Job{
		TaskID: res.TaskID, Model: c.model.Name, Type: c.model.Type, ProviderModel: c.model.ProviderModel,
		Prompt: c.input.Prompt, Size: c.input.Size, Duration: c.input.Duration, Resolution: c.input.Resolution,
		Input: c.input.Extra, Options: c.model.Options,
	}}
	o := outcome{TaskID: res.TaskID, Model: c.model.Name, Status: "pending", CreatedAt: time.Now().UTC()}
	if c.async {
		s.cfg.Tasks.Start(t)
		return o, nil
	}
	// The task's own timeout ends it (and releases the hold) before this
	// wait does; if the client goes away, the task still finishes.
	result, err := s.cfg.Tasks.Run(ctx, t)
	if err != nil {
		return outcome{}, err
	}
	if !result.Recorded {
		// This call's runner did not write the outcome: it was written
		// elsewhere (its own capture whose answer was lost, then found
		// ended; another instance's sweeper), or it is yet to be (this
		// instance is stopping; the task is resumed). Answer what the task
		// came to, as a retry with the same Idempotency-Key would, never a
		// 503: that says nothing was charged, and a client without a key
		// would pay again for a call it had been charged for.
		return s.await(r, p.AccountID, res.TaskID, true)
	}
	now := time.Now().UTC()
	o.CompletedAt = &now
	if result.Code != "" {
		o.Status, o.ErrorCode, o.ErrorMsg = "failed", result.Code, result.Err.Error()
		return o, nil
	}
	o.Status, o.Output, o.Cost = "succeeded", result.Output, res.Price
	return o, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// await returns a call's outcome, waiting (when wait is set) until it has
// ended: a retried request answers with what the first one got.
func (s *Server) await(r *http.Request, accountID, taskID string, wait bool) (outcome, error) {
	ctx := r.Context()
	delay := 20 * time.Millisecond
	for {
		_, open, err := s.cfg.Commands.OpenTask(ctx, accountID, taskID)
		if err != nil {
			return outcome{}, err
		}
		if !open || !wait {
			break
		}
		select {
		case <-ctx.Done():
			return outcome{}, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
	return s.taskOutcome(ctx, nil, accountID, taskID)
}

// refusedEarlier tells whether an open task named by a retry's key was
// answered 503 while its reservation was in doubt.
func (s *Server) refusedEarlier(ctx context.Context, row projections.TaskRow) bool {
	if row.Status != "pending" {
		return false
	}
	doubt, err := s.cfg.Commands.InDoubt(ctx, row.ID)
	return err == nil && doubt
}

// taskOutcome reads a task from the read model once it shows this
// instance's writes to the account.
func (s *Server) taskOutcome(ctx context.Context, w http.ResponseWriter, accountID, taskID string) (outcome, error) {
	if w == nil {
		w = discardHeaders{}
	}
	s.awaitOwnWrites(ctx, w, "tasks", s.cfg.Commands.AccountSeq(accountID))
	row, err := s.cfg.Reads.Task(ctx, accountID, taskID)
	if err != nil {
		return outcome{}, readErr(err)
	}
	return rowOutcome(row), nil
}

func rowOutcome(row projections.TaskRow) outcome {
	o := outcome{TaskID: row.ID, Model: row.Model, Status: row.Status, ErrorCode: row.ErrorCode, ErrorMsg: row.ErrorMessage,
		CreatedAt: row.RequestedAt, CompletedAt: row.CompletedAt}
	o.Cost, _ = money.FromDecimal(row.Cost)
	if len(row.Output) > 0 {
		_ = json.Unmarshal(row.Output, &o.Output)
	}
	return o
}

// discardHeaders lets a read wait for its own writes where no response
// headers are to be set.
type discardHeaders struct{}

func (discardHeaders) Header() http.Header         { return http.Header{} }
func (discardHeaders) Write(b []byte) (int, error) { return len(b), nil }
func (discardHeaders) WriteHeader(int)             {}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request, p Principal) error {
	o, err := s.taskOutcome(r.Context(), w, p.AccountID, r.PathValue("taskId"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, taskJSON(o))
	return nil
}

// taskJSON renders a task as GET /api/v1/tasks/{id} does.
func taskJSON(o outcome) map[string]any {
	out := map[string]any{
		"taskId": o.TaskID, "model": o.Model, "status": o.Status, "cost": o.Cost,
		"output": o.Output, "created_at": o.CreatedAt.UTC().Format(time.RFC3339Nano), "completed_at": nil,
	}
	if o.CompletedAt != nil {
		out["completed_at"] = o.CompletedAt.UTC().Format(time.RFC3339Nano)
	}
	if o.ErrorCode != "" {
		out["error"] = map[string]string{"code": o.ErrorCode, "message": o.ErrorMsg}
	}
	return out
}

func (s *Server) listModels(w http.ResponseWriter, _ *http.Request) {
	models := s.cfg.Commands.Models()
	out := make([]map[string]any, len(models))
	for i, m := range models {
		out[i] = map[string]any{"model": m.Name, "type": m.Type, "price": m.Price, "currency": m.Currency}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) putModel(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in modelBody
	if err := decode(r, &in); err != nil {
		return err
	}
	var verr validation.Error
	mergeValidation(&verr, in.check())
	price := in.price
	name := r.PathValue("model")
	if !pricing.ValidName(name) {
		verr.Add("model", "must be 1-100 characters of a-z, 0-9, - and _")
	}
	cur := s.cfg.Currency
	if in.Currency != "" && money.Currency(strings.ToUpper(in.Currency)) != s.cfg.Currency {
		verr.Add("currency", "must be "+string(s.cfg.Currency)+", the ledger's currency")
	}
	m := pricing.Model{Name: name, Type: pricing.Type(in.Type), Price: price, Currency: cur, Provider: in.Provider,
		ProviderModel: in.ProviderModel, Options: in.Options}
	if m.ProviderModel == "" {
		m.ProviderModel = name
	}
	if err := verr.Err(); err != nil {
		return err
	}
	saved, err := s.cfg.Commands.SetModel(r.Context(), s.meta(r, p), m)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, saved)
	return nil
}

func (s *Server) adjust(w http.ResponseWriter, r *http.Request, p Principal) error {
	var in adjustBody
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	amt := in.amount
	id, _, err := s.cfg.Commands.Adjust(r.Context(), s.meta(r, p), r.PathValue("id"), amt, in.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "account_id": r.PathValue("id"), "amount": amt,
		"reason": in.Reason, "actor": p.Actor()})
	return nil
}

func (s *Server) webhookSecret(w http.ResponseWriter, _ *http.Request, p Principal) error {
	if s.cfg.WebhookSecret == nil {
		return errNotFound
	}
	writeJSON(w, http.StatusOK, map[string]string{"secret": s.cfg.WebhookSecret(p.AccountID),
		"signature_header": "X-Ledger-Signature", "scheme": "t=<unix>,v1=<hex hmac-sha256 of \"<t>.<body>\">"})
	return nil
}

// vendorErrors renders this route's errors the way that vendor's clients
// expect: the contract's error object plus top-level "code" (the HTTP
// status) and "message".
func (s *Server) vendorErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), vendorKey{}, true)))
	})
}

type vendorKey struct{}

// listTasks serves the caller's recent tasks, newest first, with an
// opaque keyset cursor.
func (s *Server) listTasks(w http.ResponseWriter, r *http.Request, p Principal) error {
	q := r.URL.Query()
	var verr validation.Error
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			verr.Add("limit", "must be a whole number from 1 to 100")
		}
		limit = n
	}
	var at time.Time
	var after string
	if c := q.Get("cursor"); c != "" {
		var ok bool
		if at, after, ok = parseTaskCursor(c); !ok {
			verr.Add("cursor", "is not a cursor this API returned")
		}
	}
	if err := verr.Err(); err != nil {
		return err
	}
	s.awaitOwnWrites(r.Context(), w, "tasks", s.cfg.Commands.AccountSeq(p.AccountID))
	rows, err := s.cfg.Reads.Tasks(r.Context(), p.AccountID, at, after, limit+1)
	if err != nil {
		return readErr(err)
	}
	var next any
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(last.RequestedAt.UnixMicro(), 10) + "." + last.ID))
	}
	out := make([]map[string]any, len(rows))
	for i, row := range rows {
		out[i] = taskJSON(rowOutcome(row))
	}
	writeJSON(w, http.StatusOK, map[string]any{"tasks": out, "next_cursor": next})
	return nil
}

// parseTaskCursor reads "<requested_at in µs>.<task id>".
func parseTaskCursor(c string) (time.Time, string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", false
	}
	us, id, ok := strings.Cut(string(b), ".")
	n, err := strconv.ParseInt(us, 10, 64)
	if !ok || err != nil || n <= 0 || !ids.Valid("gen", id) {
		return time.Time{}, "", false
	}
	return time.UnixMicro(n).UTC(), id, true
}
