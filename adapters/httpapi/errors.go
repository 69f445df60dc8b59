package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/ledgerd/ledgerd/adapters/idempotency"
	"github.com/ledgerd/ledgerd/adapters/payments/stripe"
	"github.com/ledgerd/ledgerd/adapters/session"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/aggregates"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/tasks"
	"github.com/ledgerd/ledgerd/projections"
)

// apiError is an error with its place in the contract's error table.
type apiError struct {
	Status  int
	Code    string
	Message string
	Details []validation.FieldError
	// RetryAfter, in seconds, for 429 and 503.
	RetryAfter int
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errStatus(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}

// Errors the HTTP layer raises itself.
var (
	errUnauthorized = errStatus(http.StatusUnauthorized, "unauthorized", "Missing or invalid credentials")
	errForbidden    = errStatus(http.StatusForbidden, "forbidden", "Your role does not allow this")
	errNotFound     = errStatus(http.StatusNotFound, "not_found", "Not found")
	errTooLarge     = errStatus(http.StatusRequestEntityTooLarge, "payload_too_large", "Request body is larger than the limit")
)

// errorTable maps domain and infrastructure errors onto the contract, in
// one place. The first entry that matches wins.
var errorTable = []struct {
	err    error
	status int
	code   string
	msg    string
}{
	{ledger.ErrBadCredentials, http.StatusUnauthorized, "unauthorized", "Invalid email or password"},
	{session.ErrInvalid, http.StatusUnauthorized, "unauthorized", "Invalid or expired session token"},
	{account.ErrNotFound, http.StatusNotFound, "not_found", "Account not found"},
	{user.ErrNotFound, http.StatusNotFound, "not_found", "User not found"},
	{account.ErrKeyNotFound, http.StatusNotFound, "not_found", "API key not found"},
	{account.ErrKeyLimit, http.StatusConflict, "key_limit_reached", "The account already has its maximum number of active API keys"},
	{projections.ErrNotFound, http.StatusNotFound, "not_found", "Not found"},
	{user.ErrEmailTaken, http.StatusConflict, "email_taken", "A user with this email already exists"},
	{account.ErrReferenceReused, http.StatusConflict, "idempotency_conflict", "This reference was already used for a different top-up"},
	{account.ErrClosed, http.StatusConflict, "account_closed", "The account is closed"},
	{account.ErrInsufficientFunds, http.StatusPaymentRequired, "insufficient_balance", "Insufficient API balance"},
	{account.ErrTopUpNotFound, http.StatusNotFound, "not_found", "Top-up not found"},
	{account.ErrRefundTooLarge, http.StatusUnprocessableEntity, "validation_error", "The refunded amount exceeds the top-up"},
	{stripe.ErrProvider, http.StatusBadGateway, "provider_error", "The payment provider failed to start the payment; nothing was charged"},
	{account.ErrPlanRequired, http.StatusForbidden, "plan_required", "API access requires a paid plan"},
	{account.ErrInactive, http.StatusForbidden, "forbidden", "The account is suspended"},
	{account.ErrKeyInactive, http.StatusUnauthorized, "unauthorized", "Invalid or missing API key"},
	{account.ErrScope, http.StatusForbidden, "forbidden_scope", "API key scope does not allow this model"},
	{account.ErrIdempotencyMismatch, http.StatusConflict, "idempotency_conflict", "This Idempotency-Key was used with a different request"},
	{pricing.ErrUnknownModel, http.StatusNotFound, "not_found", "Unknown model"},
	{idempotency.ErrConflict, http.StatusConflict, "idempotency_conflict", "This Idempotency-Key was used with a different request"},
	{idempotency.ErrInProgress, http.StatusConflict, "idempotency_conflict", "A request with this Idempotency-Key is still in progress; retry shortly"},
	{idempotency.ErrInvalidKey, http.StatusBadRequest, "bad_request", "Idempotency-Key must be 1-255 printable ASCII characters"},
	{idempotency.ErrUnavailable, http.StatusServiceUnavailable, "unavailable", "The idempotency store is unreachable; nothing was changed"},
	{tasks.ErrUnavailable, http.StatusServiceUnavailable, "unavailable", "The provider for this model is unavailable; nothing was charged"},
	{aggregates.ErrTooManyConflicts, http.StatusServiceUnavailable, "unavailable", "The account is busy; retry shortly"},
	{eventstore.ErrUnavailable, http.StatusServiceUnavailable, "unavailable", "The event store is unreachable; nothing was changed"},
	{errDatabase, http.StatusServiceUnavailable, "unavailable", "The database is unreachable; nothing was changed"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "unavailable", "The request timed out"},
}

// statusClientClosed is what a request the client abandoned is logged with.
const statusClientClosed = 499

// errDatabase marks a read-model query that failed because Postgres is
// unreachable.
var errDatabase = errors.New("database unavailable")

// toAPIError finds err's row in the table; anything unknown is internal.
func toAPIError(err error) (*apiError, bool) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae, true
	}
	var qe *account.QuotaError
	if errors.As(err, &qe) {
		return &apiError{Status: http.StatusTooManyRequests, Code: "quota_exceeded",
			Message:    "Monthly " + qe.Limit + " quota of this API key is used up",
			RetryAfter: max(1, int(time.Until(qe.RetryAt).Seconds()+0.999))}, true
	}
	var de *account.DebtError
	if errors.As(err, &de) {
		return &apiError{Status: http.StatusPaymentRequired, Code: "insufficient_balance",
			Message: "The account owes " + de.Owed.String() + " after a refund of a top-up; calls are refused until a top-up settles it"}, true
	}
	var verr *validation.Error
	if errors.As(err, &verr) {
		return &apiError{Status: http.StatusUnprocessableEntity, Code: "validation_error",
			Message: "The request is invalid", Details: verr.Fields}, true
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			e := &apiError{Status: row.status, Code: row.code, Message: row.msg}
			if row.status == http.StatusServiceUnavailable {
				e.RetryAfter = 1
			}
			return e, true
		}
	}
	return &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "Internal error"}, false
}

type errorBody struct {
	Error struct {
		Code    string                  `json:"code"`
		Message string                  `json:"message"`
		Details []validation.FieldError `json:"details,omitempty"`
	} `json:"error"`
	RequestID string `json:"request_id"`
	// On generateTask only, as that vendor's clients read them.
	Code    int    `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// writeError renders err in the contract's format. Internal errors are
// logged with their cause once, here, and the body says nothing more.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	log := s.log.With("request_id", requestID(r.Context()), "method", r.Method, "route", r.Pattern)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away and reads no answer: not a server fault.
		// 499 (nginx's "client closed request") keeps it apart in logs
		// and metrics; the work it started finishes or is resumed.
		log.Info("client closed the request", "err", err)
		w.WriteHeader(statusClientClosed)
		return
	}
	ae, known := toAPIError(err)
	switch {
	case !known:
		log.Error("internal error", "err", err)
	case ae.Status >= 500:
		log.Warn("request failed", "code", ae.Code, "err", err)
	}
	var body errorBody
	body.Error.Code, body.Error.Message, body.Error.Details = ae.Code, ae.Message, ae.Details
	body.RequestID = requestID(r.Context())
	if v, _ := r.Context().Value(vendorKey{}).(bool); v {
		body.Code, body.Message = ae.Status, ae.Message
	}
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", itoa(ae.RetryAfter))
	}
	writeJSON(w, ae.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		slog.Error("encoding response", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"Internal error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
