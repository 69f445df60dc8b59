package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/shopspring/decimal"
	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Tasks projects generation tasks: status, cost, outputs, timings.
type Tasks struct {
	accountEvents
}

// NewTasks returns the projection.
func NewTasks() *Tasks { return &Tasks{accountEvents: newAccountEvents()} }

func (*Tasks) Name() string { return "tasks" }

// TaskRow is the tasks read model.
type TaskRow struct {
	bun.BaseModel    `bun:"table:tasks"`
	ID               string          `bun:"id,pk"`
	AccountID        string          `bun:"account_id"`
	KeyID            string          `bun:"key_id,nullzero"`
	Model            string          `bun:"model"`
	Type             string          `bun:"type"`
	Status           string          `bun:"status"`
	Price            decimal.Decimal `bun:"price,type:numeric(20,2)"`
	Cost             decimal.Decimal `bun:"cost,type:numeric(20,2)"`
	Currency         string          `bun:"currency"`
	Provider         string          `bun:"provider"`
	ProviderModel    string          `bun:"provider_model,nullzero"`
	ProviderRef      string          `bun:"provider_ref,nullzero"`
	Input            json.RawMessage `bun:"input,type:jsonb"`
	Output           json.RawMessage `bun:"output,type:jsonb,nullzero"`
	ErrorCode        string          `bun:"error_code,nullzero"`
	ErrorMessage     string          `bun:"error_message,nullzero"`
	Owner            string          `bun:"owner"`
	IdempotencyKey   string          `bun:"idempotency_key,nullzero"`
	RequestHash      string          `bun:"request_hash,nullzero"`
	CallbackURL      string          `bun:"callback_url,nullzero"`
	CallbackStatus   string          `bun:"callback_status,nullzero"`
	CallbackAttempts int             `bun:"callback_attempts"`
	CallbackNextAt   *time.Time      `bun:"callback_next_at"`
	RequestedAt      time.Time       `bun:"requested_at"`
	StartedAt        *time.Time      `bun:"started_at"`
	CompletedAt      *time.Time      `bun:"completed_at"`
	HoldExpiresAt    time.Time       `bun:"hold_expires_at"`
	Version          uint64          `bun:"version"`
}

// taskPatch is what a batch changes on a task row already in the table;
// nil fields stay as they are.
type taskPatch struct {
	status, providerRef, owner, errorCode, errorMessage *string
	output                                              []byte
	cost                                                *decimal.Decimal
	startedAt, completedAt                              *time.Time
	callbackStatus                                      *string
	callbackAttempts                                    *int
	callbackNextAt                                      *time.Time
	clearNextAt                                         bool
	freeKey                                             bool // refused: the retry takes the idempotency key
	version                                             uint64
}

// Apply implements Projection. New tasks are inserted in bulk; changes to
// tasks already in the table are folded per task and written in one bulk
// UPDATE, without reading the rows first.
func (p *Tasks) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
	return p.ApplyLive(ctx, tx, commits, nil)
}

// ApplyLive implements LiveProjection: each task whose status the batch
// changed, as it stands after the batch.
func (p *Tasks) ApplyLive(ctx context.Context, tx bun.Tx, commits []eventstore.Commit, out *Changes) error {
	// statusSeq: the commit that last changed each task's status.
	statusSeq := map[string]uint64{}
	fresh := map[string]*TaskRow{}
	var order []string
	patches := map[string]*taskPatch{}
	var patchOrder []string
	patch := func(id string) *taskPatch {
		pt := patches[id]
		if pt == nil {
			pt = &taskPatch{}
			patches[id] = pt
			patchOrder = append(patchOrder, id)
		}
		return pt
	}
	str := func(s string) *string { return &s }
	for ci := range commits {
		c := &commits[ci]
		for i, ev := range c.Events {
			if !isTaskEvent(ev.Type) {
				continue
			}
			d, err := p.event(c, i)
			if err != nil {
				return err
			}
			at := ev.OccurredAt
			switch d.(type) {
			case account.TaskRequested, account.TaskStarted, account.TaskSucceeded, account.TaskFailed:
				if out != nil {
					id := taskIDOf(d)
					if r, ok := d.(account.TaskRequested); ok {
						id = r.TaskID
					}
					statusSeq[id] = c.StreamSeq
				}
			}
			if e, ok := d.(account.TaskRequested); ok {
				// goccy/go-json for speed: the column is jsonb, which keeps
				// the value, not the bytes.
				input, _ := gojson.Marshal(e.Input)
				fresh[e.TaskID] = &TaskRow{ID: e.TaskID, AccountID: c.Aggregate.ID, KeyID: e.KeyID, Model: e.Model, Type: string(e.Type),
					Status: "pending", Price: e.Price.Decimal(), Currency: string(e.Currency), Provider: e.Provider,
					ProviderModel: e.ProviderModel, Input: input, Owner: e.Owner, IdempotencyKey: e.IdempotencyKey,
					RequestHash: e.RequestHash, CallbackURL: e.Input.CallbackURL, RequestedAt: e.RequestedAt,
					HoldExpiresAt: e.HoldExpiresAt, Version: ev.Seq}
				order = append(order, e.TaskID)
				continue
			}
			id := taskIDOf(d)
			if r := fresh[id]; r != nil { // requested in this same batch: change the row to insert
				r.apply(d, at, ev.Seq)
				continue
			}
			patch(id).apply(d, at, ev.Seq, str)
		}
	}
	// Changes to rows already written go first: a call refused with a
	// 503 frees its idempotency key there, and its retry, inserted
	// below, takes the key (the index allows one row per key).
	if len(patchOrder) > 0 {
		after, err := writePatches(ctx, tx, patchOrder, patches, out != nil)
		if err != nil {
			return err
		}
		for _, r := range after {
			if seq, ok := statusSeq[r.ID]; ok {
				out.Tasks = append(out.Tasks, TaskChange{Seq: seq, AccountID: r.AccountID, TaskID: r.ID, Model: r.Model,
					KeyID: r.KeyID, Status: r.Status, Cost: r.Cost, CreatedAt: r.RequestedAt, CompletedAt: r.CompletedAt})
			}
		}
	}
	if len(order) == 0 {
		return nil
	}
	if err := insertTasks(ctx, tx, order, fresh); err != nil {
		return err
	}
	if out != nil {
		for _, id := range order {
			r := fresh[id]
			out.Tasks = append(out.Tasks, TaskChange{Seq: statusSeq[id], AccountID: r.AccountID, TaskID: id, Model: r.Model,
				KeyID: r.KeyID, Status: r.Status, Cost: r.Cost, CreatedAt: r.RequestedAt, CompletedAt: r.CompletedAt})
		}
	}
	return nil
}

// Wants implements Filter: only task events change tasks.
func (*Tasks) Wants(eventType string) bool { return isTaskEvent(eventType) }

// insertTasks writes new rows column-wise through unnest: one short
// statement with an array per column, which Postgres takes far faster than
// a statement with a VALUES tuple per row, the arrays sent in binary
// (columnQuery).
func insertTasks(ctx context.Context, tx bun.Tx, order []string, rows map[string]*TaskRow) error {
	n := len(order)
	var (
		ids, accounts, keys, models, types, statuses, prices, costs, currencies, providers    = make([]string, n), make([]string, n), make([]*string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		pmodels, prefs, inputs, outputs, ecodes, emsgs, owners, ikeys, hashes, cbURLs, cbStat = make([]*string, n), make([]*string, n), make([]string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		attempts                                                                              = make([]int, n)
		cbNext, started, completed                                                            = make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
		requested, holds                                                                      = make([]time.Time, n), make([]time.Time, n)
		versions                                                                              = make([]int64, n)
	)
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	for i, id := range order {
		r := rows[id]
		ids[i], accounts[i], keys[i], models[i], types[i], statuses[i] = r.ID, r.AccountID, opt(r.KeyID), r.Model, r.Type, r.Status
		prices[i], costs[i], currencies[i], providers[i] = r.Price.String(), r.Cost.String(), r.Currency, r.Provider
		pmodels[i], prefs[i], inputs[i], outputs[i] = opt(r.ProviderModel), opt(r.ProviderRef), string(r.Input), opt(string(r.Output))
		ecodes[i], emsgs[i], owners[i], ikeys[i], hashes[i] = opt(r.ErrorCode), opt(r.ErrorMessage), r.Owner, opt(r.IdempotencyKey), opt(r.RequestHash)
		cbURLs[i], cbStat[i], attempts[i], cbNext[i] = opt(r.CallbackURL), opt(r.CallbackStatus), r.CallbackAttempts, r.CallbackNextAt
		requested[i], started[i], completed[i], holds[i], versions[i] = r.RequestedAt, r.StartedAt, r.CompletedAt, r.HoldExpiresAt, int64(r.Version)
	}
	_, err := columns(tx, `INSERT INTO tasks (id, account_id, key_id, model, type, status, price, cost, currency, provider,
			provider_model, provider_ref, input, output, error_code, error_message, owner, idempotency_key, request_hash,
			callback_url, callback_status, callback_attempts, callback_next_at, requested_at, started_at, completed_at,
			hold_expires_at, version)
		SELECT id, account_id, key_id, model, type, status, price, cost, currency, provider,
			provider_model, provider_ref, input::jsonb, output::jsonb, error_code, error_message, owner, idempotency_key, request_hash,
			callback_url, callback_status, callback_attempts, callback_next_at, requested_at, started_at, completed_at,
			hold_expires_at, version
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[], $9::text[], $10::text[],
			$11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
			$20::text[], $21::text[], $22::int[], $23::timestamptz[], $24::timestamptz[], $25::timestamptz[], $26::timestamptz[],
			$27::timestamptz[], $28::bigint[])
		AS t(id, account_id, key_id, model, type, status, price, cost, currency, provider,
			provider_model, provider_ref, input, output, error_code, error_message, owner, idempotency_key, request_hash,
			callback_url, callback_status, callback_attempts, callback_next_at, requested_at, started_at, completed_at,
			hold_expires_at, version)`,
		ids, accounts, keys, models, types, statuses, prices, costs, currencies, providers,
		pmodels, prefs, inputs, outputs, ecodes, emsgs, owners, ikeys, hashes,
		cbURLs, cbStat, attempts, cbNext, requested, started, completed, holds, versions).Exec(ctx)
	if err != nil {
		return fmt.Errorf("inserting tasks: %w", err)
	}
	return nil
}

func isTaskEvent(t string) bool {
	switch t {
	case account.EventTaskRequested, account.EventTaskStarted, account.EventTaskAdopted,
		account.EventTaskSucceeded, account.EventTaskFailed, account.EventCallbackAttempted:
		return true
	}
	return false
}

func taskIDOf(e account.Event) string {
	switch e := e.(type) {
	case account.TaskStarted:
		return e.TaskID
	case account.TaskAdopted:
		return e.TaskID
	case account.TaskSucceeded:
		return e.TaskID
	case account.TaskFailed:
		return e.TaskID
	case account.CallbackAttempted:
		return e.TaskID
	}
	return ""
}

// apply changes a row not yet written.
func (r *TaskRow) apply(e account.Event, at time.Time, seq uint64) {
	r.Version = seq
	switch e := e.(type) {
	case account.TaskStarted:
		r.Status, r.ProviderRef, r.StartedAt = "running", e.ProviderRef, &at
	case account.TaskAdopted:
		r.Owner = e.To
	case account.TaskSucceeded:
		out, _ := gojson.Marshal(e.Output)
		r.Status, r.Output, r.Cost, r.CompletedAt = "succeeded", out, e.Amount.Decimal(), &at
		r.queueCallback(at)
	case account.TaskFailed:
		r.Status, r.ErrorCode, r.ErrorMessage, r.CompletedAt, r.Cost = "failed", e.Code, e.Reason, &at, decimal.Zero
		if e.Refused {
			// Its caller was answered 503 and never learnt its id: no
			// callback, and its key is free for the retry.
			r.IdempotencyKey = ""
			break
		}
		r.queueCallback(at)
	case account.CallbackAttempted:
		r.CallbackAttempts = max(r.CallbackAttempts, e.Attempt)
		r.CallbackNextAt = e.NextAttemptAt
		if e.Delivered {
			r.CallbackStatus = "delivered"
		} else if e.NextAttemptAt == nil {
			r.CallbackStatus = "failed"
		}
	}
}

// apply records a change to a row already written.
func (pt *taskPatch) apply(e account.Event, at time.Time, seq uint64, str func(string) *string) {
	pt.version = seq
	switch e := e.(type) {
	case account.TaskStarted:
		pt.status, pt.providerRef, pt.startedAt = str("running"), str(e.ProviderRef), &at
	case account.TaskAdopted:
		pt.owner = str(e.To)
	case account.TaskSucceeded:
		out, _ := gojson.Marshal(e.Output)
		cost := e.Amount.Decimal()
		pt.status, pt.output, pt.cost, pt.completedAt = str("succeeded"), out, &cost, &at
		// The callback, if the task has one, becomes due now; the UPDATE
		// applies this only where a callback_url is set.
		pt.callbackStatus, pt.callbackNextAt = str("pending"), &at
	case account.TaskFailed:
		zero := decimal.Zero
		pt.status, pt.errorCode, pt.errorMessage, pt.completedAt, pt.cost = str("failed"), str(e.Code), str(e.Reason), &at, &zero
		if e.Refused {
			// As for a row not yet written: no callback, the key freed.
			pt.freeKey = true
			break
		}
		pt.callbackStatus, pt.callbackNextAt = str("pending"), &at
	case account.CallbackAttempted:
		n := e.Attempt
		pt.callbackAttempts = &n
		pt.callbackNextAt, pt.clearNextAt = e.NextAttemptAt, e.NextAttemptAt == nil
		// A retry keeps whatever status the row (or this patch) has.
		switch {
		case e.Delivered:
			pt.callbackStatus = str("delivered")
		case e.NextAttemptAt == nil:
			pt.callbackStatus = str("failed")
		}
	}
}

// writePatches applies every patch in one statement: each column takes
// the patch's value where given, and keeps its own where not.
// With returning set it also returns the rows as they stand after.
func writePatches(ctx context.Context, tx bun.Tx, ids []string, patches map[string]*taskPatch, returning bool) ([]TaskRow, error) {
	n := len(ids)
	status, ref, owner, ecode, emsg, output, cstatus := make([]*string, n), make([]*string, n), make([]*string, n),
		make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
	cost := make([]*string, n)
	started, completed, nextAt := make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
	attempts := make([]*int, n)
	clearNext, freeKey := make([]bool, n), make([]bool, n)
	versions := make([]int64, n)
	for i, id := range ids {
		pt := patches[id]
		status[i], ref[i], owner[i], ecode[i], emsg[i], cstatus[i] = pt.status, pt.providerRef, pt.owner, pt.errorCode, pt.errorMessage, pt.callbackStatus
		if pt.output != nil {
			o := string(pt.output)
			output[i] = &o
		}
		if pt.cost != nil {
			c := pt.cost.String()
			cost[i] = &c
		}
		started[i], completed[i], nextAt[i], attempts[i], clearNext[i] = pt.startedAt, pt.completedAt, pt.callbackNextAt, pt.callbackAttempts, pt.clearNextAt
		freeKey[i] = pt.freeKey
		versions[i] = int64(pt.version)
	}
	ret := ""
	if returning {
		ret = " RETURNING t.id, t.account_id, t.key_id, t.model, t.status, t.cost, t.requested_at, t.completed_at"
	}
	q := columns(tx, `UPDATE tasks t SET
		status = COALESCE(d.status, t.status),
		provider_ref = COALESCE(d.provider_ref, t.provider_ref),
		owner = COALESCE(d.owner, t.owner),
		error_code = COALESCE(d.error_code, t.error_code),
		error_message = COALESCE(d.error_message, t.error_message),
		output = COALESCE(d.output::jsonb, t.output),
		cost = COALESCE(d.cost, t.cost),
		started_at = COALESCE(d.started_at, t.started_at),
		completed_at = COALESCE(d.completed_at, t.completed_at),
		callback_status = CASE
			WHEN t.callback_url IS NULL THEN NULL
			WHEN d.callback_status = 'pending' AND t.callback_status IS NOT NULL THEN t.callback_status
			ELSE COALESCE(d.callback_status, t.callback_status) END,
		callback_attempts = GREATEST(t.callback_attempts, COALESCE(d.attempts, 0)),
		callback_next_at = CASE
			WHEN t.callback_url IS NULL THEN NULL
			WHEN d.callback_status = 'pending' AND t.callback_status IS NOT NULL THEN t.callback_next_at
			WHEN d.clear_next THEN NULL
			ELSE COALESCE(d.next_at, t.callback_next_at) END,
		idempotency_key = CASE WHEN d.free_key THEN NULL ELSE t.idempotency_key END,
		version = d.version
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::numeric[],
			$9::timestamptz[], $10::timestamptz[], $11::text[], $12::int[], $13::timestamptz[], $14::bool[], $15::bigint[],
			$16::bool[])
		AS d(id, status, provider_ref, owner, error_code, error_message, output, cost,
			started_at, completed_at, callback_status, attempts, next_at, clear_next, version, free_key)
		WHERE t.id = d.id`+ret,
		ids, status, ref, owner, ecode,
		emsg, output, cost, started, completed,
		cstatus, attempts, nextAt, clearNext, versions, freeKey)
	var after []TaskRow
	var err error
	if returning {
		err = q.Scan(ctx, &after)
	} else {
		_, err = q.Exec(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("updating tasks: %w", err)
	}
	return after, nil
}

// queueCallback marks a finished task's callback for delivery.
func (r *TaskRow) queueCallback(at time.Time) {
	if r.CallbackURL != "" && r.CallbackStatus == "" {
		r.CallbackStatus, r.CallbackNextAt = "pending", &at
	}
}
