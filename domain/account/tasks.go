package account

import (
	"errors"
	"fmt"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
)

// A generation call moves money in two steps. Accepting it reserves its
// price (available → held) in the same event that records the request;
// success captures the hold (held → revenue), failure releases it in full
// (held → available). The account never has less than zero available or
// held, and every hold ends exactly once.

// Hold is an accepted call whose outcome is not yet recorded.
type Hold struct {
	TaskID      string
	KeyID       string
	Model       string
	Type        pricing.Type
	Amount      money.Amount
	Month       string // UTC calendar month the call counts against
	Owner       string // the ledgerd instance driving it
	Started     bool
	ProviderRef string
	Callback    bool
	RequestedAt time.Time
	ExpiresAt   time.Time
	Grants      []GrantDraw // the part of Amount grants pay for
	// The request's idempotency key and hash: an open call keeps its key
	// however long it runs, beyond IdempotencyWindow.
	IdempotencyKey, RequestHash string
}

// IdempotencyWindow is how long the aggregate itself remembers generation
// idempotency keys; older ones are answered from the tasks read model, which
// trails the stream by far less than this.
const IdempotencyWindow = 10 * time.Minute

type idemEntry struct {
	taskID string
	hash   string
	at     time.Time
}

type keyUsage struct {
	month string
	calls int64
	spend money.Amount
}

// TaskInput is what the caller asked for.
type TaskInput struct {
	Prompt      string         `json:"prompt"`
	Size        string         `json:"size,omitempty"`
	Duration    int            `json:"duration,omitempty"`
	Resolution  string         `json:"resolution,omitempty"`
	RequestType string         `json:"request_type"` // sync or async
	CallbackURL string         `json:"callback_url,omitempty"`
	Extra       map[string]any `json:"extra,omitempty"`
}

// TaskRequest is a call to accept.
type TaskRequest struct {
	TaskID         string
	KeyID          string // empty for a user session
	Model          pricing.Model
	Input          TaskInput
	IdempotencyKey string
	RequestHash    string
	Owner          string
	HoldTTL        time.Duration
	// APIAccess says whether a plan may generate, from the plan
	// definitions; nil: the built-in rule (Plan.HasAPIAccess).
	APIAccess func(Plan) bool
}

var (
	// ErrInsufficientFunds: available balance below the price.
	ErrInsufficientFunds = errors.New("insufficient balance")
	// ErrPlanRequired: the plan has no API access.
	ErrPlanRequired = errors.New("plan has no api access")
	// ErrInactive: the account is suspended or closed.
	ErrInactive = errors.New("account suspended or closed")
	// ErrKeyInactive: the key was revoked or expired before the call was
	// decided (it may have passed authentication a moment earlier).
	ErrKeyInactive = errors.New("api key revoked or expired")
	// ErrScope: the key's scopes do not cover the model.
	ErrScope = errors.New("api key scope does not allow this model")
	// ErrIdempotencyMismatch: the idempotency key was used for another
	// request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrTaskNotOpen: the task has no open hold (finished, or unknown).
	ErrTaskNotOpen = errors.New("task is not open")
	// ErrNotOwner: the task is driven by another instance.
	ErrNotOwner = errors.New("task is owned by another instance")
	// ErrTaskStarted: a provider has the call, so it cannot be a call
	// refused before it ran.
	ErrTaskStarted = errors.New("task was started at its provider")
)

// DuplicateError says the idempotency key names an earlier call.
type DuplicateError struct{ TaskID string }

func (e *DuplicateError) Error() string { return "duplicate of task " + e.TaskID }

// QuotaError says a key's monthly quota is used up until RetryAt.
type QuotaError struct {
	Limit   string
	RetryAt time.Time
}

func (e *QuotaError) Error() string { return "monthly " + e.Limit + " quota of the api key used up" }

// Month is the quota period of t.
func Month(t time.Time) string { return t.UTC().Format("2006-01") }

func nextMonth(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

// Hold returns an open hold.
func (a *Account) Hold(taskID string) (Hold, bool) {
	h, ok := a.holds[taskID]
	if !ok {
		return Hold{}, false
	}
	return *h, true
}

// Holds returns every open hold.
func (a *Account) Holds() []Hold {
	out := make([]Hold, 0, len(a.holds))
	for _, h := range a.holds {
		out = append(out, *h)
	}
	return out
}

// RecentTask returns the task an idempotency key named within the window.
func (a *Account) RecentTask(idemKey string) (taskID, hash string, ok bool) {
	e, ok := a.idem[idemKey]
	return e.taskID, e.hash, ok
}

// KeyUsage is what a key has used in month: calls and spend, counting
// calls in flight and calls charged.
func (a *Account) KeyUsage(keyID, month string) (int64, money.Amount) {
	u := a.usage[keyID]
	if u == nil || u.month != month {
		return 0, money.Zero
	}
	return u.calls, u.spend
}

// RequestTask decides accepting a call: every check, then the request and
// its reservation as one event.
func (a *Account) RequestTask(req TaskRequest, now time.Time) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	if a.status != StatusActive {
		return nil, ErrInactive
	}
	if access := req.APIAccess; (access == nil && !a.plan.HasAPIAccess()) || (access != nil && !access(a.plan)) {
		return nil, ErrPlanRequired
	}
	if req.IdempotencyKey != "" {
		if taskID, hash, ok := a.keyedTask(req.IdempotencyKey, now); ok {
			if hash != req.RequestHash {
				return nil, ErrIdempotencyMismatch
			}
			return nil, &DuplicateError{TaskID: taskID}
		}
	}
	if _, dup := a.holds[req.TaskID]; dup {
		return nil, &DuplicateError{TaskID: req.TaskID}
	}
	price := req.Model.Price
	month := Month(now)
	if req.KeyID != "" {
		k, ok := a.keys[req.KeyID]
		if !ok || !k.ActiveAt(now) {
			return nil, ErrKeyInactive
		}
		if !k.Scopes.Has(apikey.Scope(req.Model.Type.Scope())) || !k.Scopes.AllowsModel(req.Model.Name) {
			return nil, ErrScope
		}
		calls, spend := a.KeyUsage(k.ID, month)
		if k.Quota.Calls > 0 && calls+1 > k.Quota.Calls {
			return nil, &QuotaError{Limit: "calls", RetryAt: nextMonth(now)}
		}
		if k.Quota.Spend != nil && spend.Add(price).Cmp(*k.Quota.Spend) > 0 {
			return nil, &QuotaError{Limit: "spend", RetryAt: nextMonth(now)}
		}
	}
	if a.receivable.IsPositive() {
		return nil, &DebtError{Owed: a.receivable}
	}
	// Grants due now expire in the same append, before the price is
	// split between the grants left and paid money.
	events := a.expireDue(now)
	draws, paid := a.draw(price, expiredIn(events))
	if a.available.Cmp(paid) < 0 {
		return nil, ErrInsufficientFunds
	}
	tx := journal.Move(journal.Available(a.id), journal.Held(a.id), price)
	if len(draws) > 0 {
		tx = journal.Moves(
			journal.Leg{From: journal.Credits(a.id), To: journal.HeldCredits(a.id), Amount: sumDraws(draws)},
			journal.Leg{From: journal.Available(a.id), To: journal.Held(a.id), Amount: paid})
	}
	return append(events, TaskRequested{
		TaskID: req.TaskID, KeyID: req.KeyID, Model: req.Model.Name, Type: req.Model.Type,
		Price: price, Currency: req.Model.Currency, Provider: req.Model.Provider, ProviderModel: req.Model.ProviderModel,
		Input: req.Input, IdempotencyKey: req.IdempotencyKey, RequestHash: req.RequestHash,
		Owner: req.Owner, RequestedAt: now.UTC(), HoldExpiresAt: now.Add(req.HoldTTL).UTC(),
		Grants: draws, Transaction: tx,
	}), nil
}

// keyedTask is the call an idempotency key names: one requested within
// the window, or one still open.
func (a *Account) keyedTask(key string, now time.Time) (taskID, hash string, ok bool) {
	if e, ok := a.idem[key]; ok && now.Sub(e.at) < IdempotencyWindow {
		return e.taskID, e.hash, true
	}
	if h, ok := a.openKeys[key]; ok {
		return h.TaskID, h.RequestHash, true
	}
	return "", "", false
}

// StartTask records that the provider accepted the call (and its handle,
// which a restarted instance polls).
func (a *Account) StartTask(taskID, owner, providerRef string) ([]Event, error) {
	h, ok := a.holds[taskID]
	if !ok {
		return nil, ErrTaskNotOpen
	}
	if h.Owner != owner {
		return nil, ErrNotOwner
	}
	return []Event{TaskStarted{TaskID: taskID, ProviderRef: providerRef}}, nil
}

// CompleteTask decides capturing a finished call's hold.
func (a *Account) CompleteTask(taskID, owner string, out TaskOutput) ([]Event, error) {
	h, ok := a.holds[taskID]
	if !ok {
		return nil, ErrTaskNotOpen
	}
	if h.Owner != owner {
		return nil, ErrNotOwner
	}
	tx := journal.Move(journal.Held(a.id), journal.PlatformRevenue, h.Amount)
	if credit := sumDraws(h.Grants); credit.IsPositive() {
		// The grant's money was reserved before it could expire: it is
		// spent, whenever the call ends.
		tx = journal.Moves(
			journal.Leg{From: journal.HeldCredits(a.id), To: journal.PlatformRevenue, Amount: credit},
			journal.Leg{From: journal.Held(a.id), To: journal.PlatformRevenue, Amount: h.Amount.Sub(credit)})
	}
	return []Event{TaskSucceeded{TaskID: taskID, Output: out, Amount: h.Amount, Transaction: tx}}, nil
}

// FailTask decides releasing a failed, timed-out or abandoned call's hold.
// owner "" is the sweeper, which may release any expired hold.
func (a *Account) FailTask(taskID, owner, code, reason string, now time.Time) ([]Event, error) {
	h, ok := a.holds[taskID]
	if !ok {
		return nil, ErrTaskNotOpen
	}
	if owner == "" {
		if now.Before(h.ExpiresAt) {
			return nil, fmt.Errorf("%w: hold on %s expires at %s", ErrNotOwner, taskID, h.ExpiresAt.Format(time.RFC3339))
		}
	} else if h.Owner != owner {
		return nil, ErrNotOwner
	}
	return a.release(h, code, reason, now), nil
}

// ReleaseRefused releases the hold of a call whose caller was answered
// 503, nothing charged, while the append of its reservation had an
// unknown outcome, and which landed after all. The call was never run and
// must not be: the caller was told it was refused. Whoever owns it, it is
// released at once, and its idempotency key is free again, so that the
// caller's retry with it is a new call, as the 503 promised.
func (a *Account) ReleaseRefused(taskID string, now time.Time) ([]Event, error) {
	h, ok := a.holds[taskID]
	if !ok {
		return nil, ErrTaskNotOpen
	}
	if h.Started {
		return nil, ErrTaskStarted
	}
	events := a.release(h, CodeUnavailable, "the call was answered 503 (event store unavailable) while its reservation was in doubt", now)
	failed := events[len(events)-1].(TaskFailed)
	failed.Refused = true
	events[len(events)-1] = failed
	return events, nil
}

// CodeUnavailable is the failure code of a call ended because a part it
// needs was unavailable (its caller is answered 503).
const CodeUnavailable = "unavailable"

// release decides releasing an open hold in full: the events end with the
// TaskFailed.
func (a *Account) release(h *Hold, code, reason string, now time.Time) []Event {
	taskID := h.TaskID
	if len(h.Grants) == 0 {
		return []Event{TaskFailed{TaskID: taskID, Code: code, Reason: reason, Amount: h.Amount,
			Transaction: journal.Move(journal.Held(a.id), journal.Available(a.id), h.Amount)}}
	}
	// Each part goes back where it came from: paid money to available, a
	// grant's part to the grant, or, if the grant has expired meanwhile, to
	// the platform (it expires now).
	events := a.expireDue(now)
	expired := expiredIn(events)
	credit := sumDraws(h.Grants)
	legs := []journal.Leg{{From: journal.Held(a.id), To: journal.Available(a.id), Amount: h.Amount.Sub(credit)}}
	returns := make([]GrantReturn, 0, len(h.Grants))
	for _, d := range h.Grants {
		gone := expired[d.GrantID]
		if g := a.grants[d.GrantID]; g == nil || g.Expired {
			gone = true
		}
		to := journal.Credits(a.id)
		if gone {
			to = journal.PlatformPromotions
		}
		legs = append(legs, journal.Leg{From: journal.HeldCredits(a.id), To: to, Amount: d.Amount})
		returns = append(returns, GrantReturn{GrantID: d.GrantID, Amount: d.Amount, Expired: gone})
	}
	return append(events, TaskFailed{TaskID: taskID, Code: code, Reason: reason, Amount: h.Amount,
		Grants: returns, Transaction: journal.Moves(legs...)})
}

// AdoptTask moves a task from a dead instance to a live one. Naming the
// owner it takes over from makes two adopters race on the aggregate: one
// wins, the other gets ErrNotOwner.
func (a *Account) AdoptTask(taskID, from, to string) ([]Event, error) {
	h, ok := a.holds[taskID]
	if !ok {
		return nil, ErrTaskNotOpen
	}
	if h.Owner != from {
		return nil, ErrNotOwner
	}
	return []Event{TaskAdopted{TaskID: taskID, From: from, To: to}}, nil
}

// RecordCallback records one delivery attempt of a task's callback.
func (a *Account) RecordCallback(c CallbackAttempted) ([]Event, error) {
	if !a.opened {
		return nil, ErrNotFound
	}
	return []Event{c}, nil
}

func (a *Account) applyTask(e Event) {
	switch e := e.(type) {
	case TaskRequested:
		a.holds[e.TaskID] = &Hold{TaskID: e.TaskID, KeyID: e.KeyID, Model: e.Model, Type: e.Type, Amount: e.Price,
			Month: Month(e.RequestedAt), Owner: e.Owner, Callback: e.Input.CallbackURL != "",
			RequestedAt: e.RequestedAt, ExpiresAt: e.HoldExpiresAt, Grants: e.Grants,
			IdempotencyKey: e.IdempotencyKey, RequestHash: e.RequestHash}
		for _, d := range e.Grants {
			if g := a.grants[d.GrantID]; g != nil {
				g.Remaining = g.Remaining.Sub(d.Amount)
			}
		}
		a.applyTransaction(e.Transaction)
		if e.KeyID != "" {
			u := a.usage[e.KeyID]
			if u == nil || u.month != Month(e.RequestedAt) {
				u = &keyUsage{month: Month(e.RequestedAt)}
				a.usage[e.KeyID] = u
			}
			u.calls++
			u.spend = u.spend.Add(e.Price)
		}
		if e.IdempotencyKey != "" {
			a.openKeys[e.IdempotencyKey] = a.holds[e.TaskID]
			a.idem[e.IdempotencyKey] = idemEntry{taskID: e.TaskID, hash: e.RequestHash, at: e.RequestedAt}
			a.idemOrder = append(a.idemOrder, e.IdempotencyKey)
		}
		a.pruneIdem(e.RequestedAt)
	case TaskStarted:
		if h := a.holds[e.TaskID]; h != nil {
			h.Started, h.ProviderRef = true, e.ProviderRef
		}
	case TaskAdopted:
		if h := a.holds[e.TaskID]; h != nil {
			h.Owner = e.To
		}
	case TaskSucceeded:
		a.forgetHold(e.TaskID)
		a.applyTransaction(e.Transaction)
	case TaskFailed:
		for _, r := range e.Grants {
			if g := a.grants[r.GrantID]; g != nil && !r.Expired {
				g.Remaining = g.Remaining.Add(r.Amount)
			}
		}
		if h := a.holds[e.TaskID]; h != nil {
			// A released call is not charged, so it uses no quota.
			if u := a.usage[h.KeyID]; u != nil && u.month == h.Month {
				u.calls--
				u.spend = u.spend.Sub(h.Amount)
			}
			if e.Refused && h.IdempotencyKey != "" && a.idem[h.IdempotencyKey].taskID == e.TaskID {
				delete(a.idem, h.IdempotencyKey)
			}
		}
		a.forgetHold(e.TaskID)
		a.applyTransaction(e.Transaction)
	}
}

// forgetHold removes an ended call's hold.
func (a *Account) forgetHold(taskID string) {
	if h := a.holds[taskID]; h != nil && h.IdempotencyKey != "" && a.openKeys[h.IdempotencyKey] == h {
		delete(a.openKeys, h.IdempotencyKey)
	}
	delete(a.holds, taskID)
}

// pruneIdem forgets idempotency keys older than the window, oldest first,
// so the aggregate's memory is bounded by the request rate, not by time.
func (a *Account) pruneIdem(now time.Time) {
	n := 0
	for _, k := range a.idemOrder {
		e, ok := a.idem[k]
		if ok && now.Sub(e.at) < IdempotencyWindow {
			break
		}
		if ok {
			delete(a.idem, k)
		}
		n++
	}
	if n > 0 {
		a.idemOrder = append(a.idemOrder[:0:0], a.idemOrder[n:]...)
	}
}

// TaskOutput is what a successful call produced.
type TaskOutput struct {
	ImageURL       string   `json:"imageUrl,omitempty"`
	VideoURL       string   `json:"videoUrl,omitempty"`
	URLs           []string `json:"urls,omitempty"`
	EnhancedPrompt string   `json:"enhancedPrompt,omitempty"`
}

// TaskRequested records an accepted call and reserves its price.
type TaskRequested struct {
	TaskID         string              `json:"task_id"`
	KeyID          string              `json:"key_id,omitempty"`
	Model          string              `json:"model"`
	Type           pricing.Type        `json:"type"`
	Price          money.Amount        `json:"price"`
	Currency       money.Currency      `json:"currency"`
	Provider       string              `json:"provider"`
	ProviderModel  string              `json:"provider_model,omitempty"`
	Input          TaskInput           `json:"input"`
	IdempotencyKey string              `json:"idempotency_key,omitempty"`
	RequestHash    string              `json:"request_hash,omitempty"`
	Owner          string              `json:"owner"`
	RequestedAt    time.Time           `json:"requested_at"`
	HoldExpiresAt  time.Time           `json:"hold_expires_at"`
	Grants         []GrantDraw         `json:"grants,omitempty"` // the part of the price grants pay
	Transaction    journal.Transaction `json:"transaction"`
}

// TaskStarted records the provider's handle for the call.
type TaskStarted struct {
	TaskID      string `json:"task_id"`
	ProviderRef string `json:"provider_ref,omitempty"`
}

// TaskAdopted moves a task to a live instance.
type TaskAdopted struct {
	TaskID string `json:"task_id"`
	From   string `json:"from"`
	To     string `json:"to"`
}

// TaskSucceeded records the output and captures the hold.
type TaskSucceeded struct {
	TaskID      string              `json:"task_id"`
	Output      TaskOutput          `json:"output"`
	Amount      money.Amount        `json:"amount"`
	Transaction journal.Transaction `json:"transaction"`
}

// TaskFailed records why a call failed and releases its hold in full.
type TaskFailed struct {
	TaskID string `json:"task_id"`
	Code   string `json:"code"` // provider_error, provider_timeout, invalid_input, unavailable, abandoned, cancelled
	Reason string `json:"reason"`
	// Refused: the caller was answered 503 for this call, which was never
	// run (see ReleaseRefused); its idempotency key is free again.
	Refused     bool                `json:"refused,omitempty"`
	Amount      money.Amount        `json:"amount"`
	Grants      []GrantReturn       `json:"grants,omitempty"` // where the grants' part went
	Transaction journal.Transaction `json:"transaction"`
}

// CallbackAttempted records one delivery of a task's callback.
type CallbackAttempted struct {
	TaskID        string     `json:"task_id"`
	Attempt       int        `json:"attempt"`
	Status        int        `json:"status,omitempty"` // HTTP status, 0 if none
	Error         string     `json:"error,omitempty"`
	Delivered     bool       `json:"delivered"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"` // nil: no further attempt
}

const (
	EventTaskRequested     = "account.task_requested"
	EventTaskStarted       = "account.task_started"
	EventTaskAdopted       = "account.task_adopted"
	EventTaskSucceeded     = "account.task_succeeded"
	EventTaskFailed        = "account.task_failed"
	EventCallbackAttempted = "account.callback_attempted"
)

func (TaskRequested) EventName() string     { return EventTaskRequested }
func (TaskStarted) EventName() string       { return EventTaskStarted }
func (TaskAdopted) EventName() string       { return EventTaskAdopted }
func (TaskSucceeded) EventName() string     { return EventTaskSucceeded }
func (TaskFailed) EventName() string        { return EventTaskFailed }
func (CallbackAttempted) EventName() string { return EventCallbackAttempted }
