package projections

import (
	"context"
	"testing"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/pricing"
)

// TestRefusedCallGivesUpItsKey: a call answered 503 whose reservation
// landed after all is released as refused, and the caller's retry with the
// same Idempotency-Key is a new call. The tasks table allows one row per
// key, so the refused row gives the key up before the retry's row is
// written: whether both arrive in one batch or in two, and whether the
// refused call was requested in the same batch or before.
func TestRefusedCallGivesUpItsKey(t *testing.T) {
	tests := []struct {
		name string
		// apply after: 0 every event in one batch; 1 the request first,
		// then the refusal and the retry; 2 each in its own batch.
		split int
	}{
		{"one batch", 0},
		{"refusal and retry in one batch", 1},
		{"a batch each", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t)
			r := NewRunner(e.cfg, NewTasks())
			acc, err := e.l.CreateAccount(ctx, meta, "refused@example.com", "password123", account.PlanAPI)
			if err != nil {
				t.Fatal(err)
			}
			e.topUp(t, acc.ID, "10.00", "fund")
			var stop func()
			step := func(n int) {
				if tt.split == 0 || n > tt.split {
					return
				}
				if stop == nil {
					stop = e.start(t, r)
				}
				waitFor(t, r, e.l.AccountSeq(acc.ID))
			}
			call := account.TaskRequest{Model: pricing.Defaults()[0],
				Input:          account.TaskInput{Prompt: "p", RequestType: "async", CallbackURL: "https://example.com/hook"},
				IdempotencyKey: "idem-1", RequestHash: "h1", HoldTTL: 1e11}
			first, err := e.l.Reserve(ctx, meta, acc.ID, call)
			if err != nil {
				t.Fatal(err)
			}
			step(1)
			if err := e.l.ReleaseRefused(ctx, acc.ID, first.TaskID); err != nil {
				t.Fatal(err)
			}
			step(2)
			retry, err := e.l.Reserve(ctx, meta, acc.ID, call)
			if err != nil || retry.Duplicate || retry.TaskID == first.TaskID {
				t.Fatalf("retry: %+v, %v; want a new call", retry, err)
			}
			if stop == nil {
				stop = e.start(t, r)
			}
			waitFor(t, r, e.l.AccountSeq(acc.ID))
			if st := r.Status(); st.State != "running" {
				t.Fatalf("tasks projection: %+v", st)
			}

			reader := NewReader(e.db)
			row, err := reader.TaskByIdempotencyKey(ctx, acc.ID, "idem-1")
			if err != nil || row.ID != retry.TaskID || row.Status != "pending" {
				t.Fatalf("task by key: %+v, %v; want the retry %s, pending", row, err, retry.TaskID)
			}
			refused, err := reader.Task(ctx, acc.ID, first.TaskID)
			if err != nil || refused.Status != "failed" || refused.ErrorCode != account.CodeUnavailable || !refused.Cost.IsZero() {
				t.Fatalf("refused call: %+v, %v; want failed, unavailable, nothing charged", refused, err)
			}
			// Its caller never learnt its id: no callback is sent for it.
			if refused.CallbackStatus != "" {
				t.Fatalf("refused call's callback: %q, want none", refused.CallbackStatus)
			}
		})
	}
}
