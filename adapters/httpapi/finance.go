package httpapi

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/ledger/audit"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/ids"
	"github.com/ledgerd/ledgerd/projections"
)

// Finance is what staff read to prove the ledger.
type Finance interface {
	// AccountEvents calls fn with the account's events in order.
	AccountEvents(ctx context.Context, accountID string, fn func(eventstore.Event) error) error
	BalanceAsOf(ctx context.Context, accountID string, asOf time.Time) (audit.Balance, error)
	Verify(ctx context.Context, accountID string) (audit.Report, error)
	// Follow calls fn with every commit stored after seq (0: from now),
	// until ctx ends.
	Follow(ctx context.Context, after uint64, fn func(eventstore.Commit) error) error
	Accounts(ctx context.Context, after string, limit int) ([]projections.AccountRow, error)
	// Head is the stream's last sequence.
	Head(ctx context.Context) (uint64, error)
}

// auditLine is one event as the audit export writes it. It never holds a
// key secret: only hashes of keys are ever in events.
type auditLine struct {
	Seq           uint64          `json:"seq"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Version       int             `json:"v"`
	AccountID     string          `json:"account_id"`
	OccurredAt    string          `json:"occurred_at"`
	Actor         string          `json:"actor"`
	CausationID   string          `json:"causation_id,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Data          json.RawMessage `json:"data"`
	PrevHash      string          `json:"prev_hash"`
	Hash          string          `json:"hash"`
	StreamSeq     uint64          `json:"stream_seq"`
}

func timeParam(r *http.Request, field string, verr *validation.Error) time.Time {
	v := r.URL.Query().Get(field)
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		verr.Add(field, "must be an RFC 3339 time such as 2026-11-23T00:00:00Z")
	}
	return t
}

// auditExport streams an account's events, in order, as JSON lines or CSV.
// The whole chain is walked (so from/to only filter what is written, and
// the lines written still carry their prev_hash for checking).
func (s *Server) auditExport(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var verr validation.Error
	acc := r.URL.Query().Get("account")
	if !ids.Valid("acc", acc) {
		verr.Add("account", "is required: an account id such as acc_...")
	}
	from, to := timeParam(r, "from", &verr), timeParam(r, "to", &verr)
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "jsonl"
	}
	if format != "jsonl" && format != "csv" {
		verr.Add("format", "must be jsonl or csv")
	}
	if err := verr.Err(); err != nil {
		return err
	}
	started := false
	var cw *csv.Writer
	flusher, _ := w.(http.Flusher)
	n := 0
	err := s.cfg.Finance.AccountEvents(r.Context(), acc, func(e eventstore.Event) error {
		if !started {
			started = true
			if format == "csv" {
				w.Header().Set("Content-Type", "text/csv; charset=utf-8")
				w.Header().Set("Content-Disposition", `attachment; filename="`+acc+`-audit.csv"`)
				cw = csv.NewWriter(w)
				_ = cw.Write([]string{"seq", "id", "type", "v", "account_id", "occurred_at", "actor", "causation_id", "correlation_id", "data", "prev_hash", "hash", "stream_seq"})
			} else {
				w.Header().Set("Content-Type", "application/x-ndjson")
			}
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
		}
		if (!from.IsZero() && e.OccurredAt.Before(from)) || (!to.IsZero() && !e.OccurredAt.Before(to)) {
			return nil
		}
		line := auditLine{Seq: e.Seq, ID: e.ID, Type: e.Type, Version: e.Version, AccountID: e.AggregateID,
			OccurredAt: e.OccurredAt.UTC().Format(time.RFC3339Nano), Actor: e.Actor, CausationID: e.CausationID,
			CorrelationID: e.CorrelationID, Data: e.Data, PrevHash: e.PrevHash, Hash: e.Hash, StreamSeq: e.StreamSeq}
		if cw != nil {
			_ = cw.Write([]string{strconv.FormatUint(line.Seq, 10), line.ID, line.Type, strconv.Itoa(line.Version), line.AccountID,
				line.OccurredAt, line.Actor, line.CausationID, line.CorrelationID, string(line.Data), line.PrevHash, line.Hash,
				strconv.FormatUint(line.StreamSeq, 10)})
		} else {
			b, err := json.Marshal(line)
			if err != nil {
				return err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
		}
		if n++; n%500 == 0 {
			if cw != nil {
				cw.Flush()
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		return nil
	})
	if cw != nil {
		cw.Flush()
	}
	if !started {
		if err != nil {
			return err
		}
		return errStatus(http.StatusNotFound, "not_found", "Account not found")
	}
	if err != nil {
		// Headers are gone; the truncated stream and the log say so.
		s.log.Error("audit export interrupted", "account", acc, "err", err)
	}
	return nil
}

func (s *Server) balanceAsOf(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var verr validation.Error
	asOf := timeParam(r, "as_of", &verr)
	if asOf.IsZero() && verr.Err() == nil {
		asOf = time.Now()
	}
	if err := verr.Err(); err != nil {
		return err
	}
	id := r.PathValue("id")
	if !ids.Valid("acc", id) {
		return errStatus(http.StatusNotFound, "not_found", "Account not found")
	}
	b, err := s.cfg.Finance.BalanceAsOf(r.Context(), id, asOf)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"account_id": id, "balance": b.Available.Add(b.Held), "held": b.Held.Add(b.HeldCredits),
		"available": b.Available.Add(b.Credits), "credits": b.Credits.Add(b.HeldCredits),
		"as_of": asOf.UTC().Format(time.RFC3339Nano), "events": b.Events})
	return nil
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request, _ Principal) error {
	acc := r.URL.Query().Get("account")
	if acc != "" && !ids.Valid("acc", acc) {
		return validation.Field("account", "must be an account id such as acc_...")
	}
	rep, err := s.cfg.Finance.Verify(r.Context(), acc)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request, _ Principal) error {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return validation.Field("limit", "must be a whole number from 1 to 1000")
		}
		limit = n
	}
	after := q.Get("cursor")
	rows, err := s.cfg.Finance.Accounts(r.Context(), after, limit+1)
	if err != nil {
		return readErr(err)
	}
	var next any
	if len(rows) > limit {
		rows = rows[:limit]
		next = rows[limit-1].ID
	}
	out := make([]accountOut, len(rows))
	for i, a := range rows {
		out[i] = accountOut{ID: a.ID, Email: a.Email, Plan: a.Plan, Status: a.Status, Currency: a.Currency,
			CreatedAt: a.CreatedAt.UTC().Format(time.RFC3339)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": out, "next_cursor": next})
	return nil
}

// eventStream follows the stream live as Server-Sent Events, optionally
// for one account and/or event types; Last-Event-ID (a stream sequence)
// resumes after an interruption.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request, _ Principal) error {
	q := r.URL.Query()
	acc := q.Get("account")
	types := map[string]bool{}
	for _, t := range strings.Split(q.Get("type"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			types[t] = true
		}
	}
	var after uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return validation.Field("Last-Event-ID", "must be a stream sequence")
		}
		after = n
	} else {
		// "From now" is fixed before the client hears the stream is open:
		// every event stored after this answer is in it.
		head, err := s.cfg.Finance.Head(r.Context())
		if err != nil {
			return err
		}
		after = head
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		return fmt.Errorf("streaming unsupported")
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s.holdOpen(http.NewResponseController(w))
	fmt.Fprint(w, ": following the ledger\n\n")
	flusher.Flush()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel)
	defer stop()
	err := s.cfg.Finance.Follow(ctx, after, func(c eventstore.Commit) error {
		if acc != "" && c.Aggregate.ID != acc {
			return nil
		}
		for _, e := range c.Events {
			if len(types) > 0 && !types[e.Type] {
				continue
			}
			b, err := json.Marshal(auditLine{Seq: e.Seq, ID: e.ID, Type: e.Type, Version: e.Version, AccountID: e.AggregateID,
				OccurredAt: e.OccurredAt.UTC().Format(time.RFC3339Nano), Actor: e.Actor, CausationID: e.CausationID,
				CorrelationID: e.CorrelationID, Data: e.Data, PrevHash: e.PrevHash, Hash: e.Hash, StreamSeq: c.StreamSeq})
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", c.StreamSeq, e.Type, b); err != nil {
				return err
			}
		}
		flusher.Flush()
		return nil
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("event stream ended", "err", err)
		fmt.Fprintf(w, "event: error\ndata: %q\n\n", "the event stream ended; reconnect with Last-Event-ID")
	}
	return nil
}

// replay rebuilds every read model and answers when done (the progress is
// readable meanwhile). The rebuild goes on if the client goes away.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if s.cfg.Replay == nil {
		return errNotFound
	}
	res, err := s.cfg.Replay.Run(context.WithoutCancel(r.Context()))
	if errors.Is(err, projections.ErrReplayRunning) {
		return errStatus(http.StatusConflict, "replay_running", "A replay is already running; follow GET /api/admin/projections/replay")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) replayProgress(w http.ResponseWriter, _ *http.Request, _ Principal) error {
	if s.cfg.Replay == nil {
		return errNotFound
	}
	writeJSON(w, http.StatusOK, s.cfg.Replay.Progress())
	return nil
}

// retryProjection restarts a projection stopped by a poison event.
func (s *Server) retryProjection(w http.ResponseWriter, r *http.Request, _ Principal) error {
	runner := s.cfg.Projections.Runner(r.PathValue("name"))
	if runner == nil {
		return errStatus(http.StatusNotFound, "not_found", "No such projection")
	}
	runner.Retry()
	writeJSON(w, http.StatusAccepted, runner.Status())
	return nil
}
