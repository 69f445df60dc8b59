package httpapi

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

// accountOrStaff wraps a read for the caller's own account, or, for staff,
// for the account named by ?account=.
func (s *Server) accountOrStaff(scope apikey.Scope, h handlerFunc) http.Handler {
	own := s.account(scope, h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.session(r)
		if err != nil || !p.Role.IsStaff() {
			own.ServeHTTP(w, r)
			return
		}
		acc := r.URL.Query().Get("account")
		if !ids.Valid("acc", acc) {
			s.writeError(w, r, validation.Field("account", "staff name the account: ?account=acc_..."))
			return
		}
		p.AccountID = acc
		s.serve(w, r, p, h)
	})
}

type entryOut struct {
	ID           string       `json:"id"`
	Type         string       `json:"type"`
	Amount       money.Amount `json:"amount"`
	BalanceAfter money.Amount `json:"balance_after"`
	// Grants' movements, apart from paid money: the line's effect on the
	// credits and the credits after it.
	Credits      money.Amount `json:"credits"`
	CreditsAfter money.Amount `json:"credits_after"`
	TaskID       string       `json:"task_id,omitempty"`
	Reference    string       `json:"reference,omitempty"`
	CreatedAt    string       `json:"created_at"`
}

// entries serves the statement, newest first, with an opaque cursor.
func (s *Server) entries(w http.ResponseWriter, r *http.Request, p Principal) error {
	q := r.URL.Query()
	var verr validation.Error
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			verr.Add("limit", "must be a whole number from 1 to 500")
		}
		limit = n
	}
	var before int64
	if c := q.Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		n, perr := strconv.ParseInt(string(b), 10, 64)
		if err != nil || perr != nil || n < 1 {
			verr.Add("cursor", "is not a cursor this API returned")
		}
		before = n
	}
	if err := verr.Err(); err != nil {
		return err
	}
	s.awaitOwnWrites(r.Context(), w, "statement", s.cfg.Commands.AccountSeq(p.AccountID))
	rows, err := s.cfg.Reads.Entries(r.Context(), p.AccountID, before, limit+1)
	if err != nil {
		return readErr(err)
	}
	var next any
	if len(rows) > limit {
		rows = rows[:limit]
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(rows[limit-1].Seq, 10)))
	}
	out := make([]entryOut, len(rows))
	for i, row := range rows {
		amt, _ := money.FromDecimal(row.Amount)
		bal, _ := money.FromDecimal(row.BalanceAfter)
		cr, _ := money.FromDecimal(row.Credits)
		crAfter, _ := money.FromDecimal(row.CreditsAfter)
		out[i] = entryOut{ID: row.ID, Type: row.Type, Amount: amt, BalanceAfter: bal, Credits: cr, CreditsAfter: crAfter, TaskID: row.TaskID,
			Reference: row.Reference, CreatedAt: row.CreatedAt.UTC().Format(time.RFC3339Nano)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out, "next_cursor": next})
	return nil
}

type usageOutPoint struct {
	Bucket   string       `json:"bucket"`
	Model    string       `json:"model,omitempty"`
	KeyID    *string      `json:"key_id,omitempty"`
	Calls    int64        `json:"calls"`
	Spend    money.Amount `json:"spend"`
	Failures int64        `json:"failures"`
}

// maxBuckets bounds a usage query's size.
const maxBuckets = 10_000

func (s *Server) usage(w http.ResponseWriter, r *http.Request, p Principal) error {
	q := r.URL.Query()
	var verr validation.Error
	gran := q.Get("granularity")
	if gran == "" {
		gran = "hour"
	}
	step := map[string]time.Duration{"minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}[gran]
	if step == 0 {
		verr.Add("granularity", "must be minute, hour or day")
	}
	group := q.Get("group_by")
	if group != "" && group != "model" && group != "key" {
		verr.Add("group_by", "must be model or key")
	}
	now := time.Now().UTC()
	to, from := now, now.Add(-24*time.Hour)
	parse := func(field string, def time.Time) time.Time {
		v := q.Get(field)
		if v == "" {
			return def
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			verr.Add(field, "must be an RFC 3339 time such as 2026-11-23T00:00:00Z")
			return def
		}
		return t.UTC()
	}
	from, to = parse("from", from), parse("to", to)
	if verr.Err() == nil && !from.Before(to) {
		verr.Add("from", "must be before to")
	}
	if step > 0 && to.Sub(from)/step > maxBuckets {
		verr.Add("granularity", "the range holds more than 10000 buckets of this size; use a coarser granularity")
	}
	if err := verr.Err(); err != nil {
		return err
	}
	// Every bucket that overlaps the range is in it: from moves back to the
	// start of its bucket.
	from = from.Truncate(step)
	s.awaitOwnWrites(r.Context(), w, "usage", s.cfg.Commands.AccountSeq(p.AccountID))
	points, err := s.cfg.Reads.Usage(r.Context(), p.AccountID, gran, group, from, to)
	if err != nil {
		return readErr(err)
	}
	out := make([]usageOutPoint, len(points))
	for i, pt := range points {
		spend, _ := money.FromDecimal(pt.Spend)
		out[i] = usageOutPoint{Bucket: pt.Bucket.UTC().Format(time.RFC3339), Model: pt.Model, Calls: pt.Calls, Spend: spend, Failures: pt.Failures}
		if group == "key" {
			k := pt.KeyID
			out[i].KeyID = &k
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"series": out, "from": from.Format(time.RFC3339), "to": to.Format(time.RFC3339),
		"granularity": gran})
	return nil
}

// usageThisMonth reads each key's charged use this month.
func (s *Server) usageThisMonth(r *http.Request, accountID string) map[string]usageOut {
	month := account.Month(time.Now())
	used, err := s.cfg.Reads.KeysUsage(r.Context(), accountID, month)
	if err != nil {
		s.log.Warn("key usage", "err", err)
	}
	out := map[string]usageOut{}
	for id, u := range used {
		spend, _ := money.FromDecimal(u.Spend)
		out[id] = usageOut{Calls: u.Calls, Spend: spend}
	}
	return out
}
