package ledger

import (
	"context"
	"errors"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

// Reservation is an accepted call: its price is held.
type Reservation struct {
	TaskID    string
	AccountID string
	Duplicate bool // the idempotency key named an earlier call: nothing new was reserved
	Price     money.Amount
	StreamSeq uint64
}

// Reserve accepts a call: every check on the account aggregate, then the
// request and its hold appended as one event. Concurrent calls on one
// account are group-committed.
func (l *Ledger) Reserve(ctx context.Context, meta Meta, accountID string, req account.TaskRequest) (Reservation, error) {
	if !ids.Valid("acc", accountID) {
		return Reservation{}, account.ErrNotFound
	}
	if req.TaskID == "" {
		req.TaskID = l.ids.New("gen")
	}
	req.Owner = l.cfg.Owner
	req.APIAccess = l.PlanAPIAccess
	now := l.cfg.Now()
	request := func(a *account.Account) ([]account.Event, error) { return a.RequestTask(req, now) }
	out, err := l.accounts.Execute(ctx, accountID, meta, request)
	var dup *account.DuplicateError
	if errors.As(err, &dup) && l.releaseIfRefused(ctx, accountID, dup.TaskID) {
		// The key names a call its caller was answered 503 for: that call
		// is released, and this retry is a new one, as the 503 promised.
		out, err = l.accounts.Execute(ctx, accountID, meta, request)
	}
	if errors.As(err, &dup) {
		return Reservation{TaskID: dup.TaskID, AccountID: accountID, Duplicate: true}, nil
	}
	if errors.Is(err, eventstore.ErrUnavailable) {
		// The caller is told 503, nothing charged, but the append may yet
		// land (a stream without quorum keeps it and stores it when the
		// quorum returns). Such a task is released, not run: see InDoubt.
		l.inDoubt.Store(req.TaskID, now)
		if l.cfg.Doubts != nil {
			mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), doubtTimeout)
			if merr := l.cfg.Doubts.Mark(mctx, accountID, req.TaskID); merr != nil {
				l.cfg.Logger.Warn("recording a reservation in doubt; only this instance knows it until it restarts",
					"task", req.TaskID, "account", accountID, "err", merr)
			}
			cancel()
		}
	}
	if err != nil {
		return Reservation{}, err
	}
	return Reservation{TaskID: req.TaskID, AccountID: accountID, Price: req.Model.Price, StreamSeq: out.StreamSeq}, nil
}

// releaseIfRefused tells whether taskID, named by a retry's idempotency key,
// is a call answered 503 whose reservation landed after all, and if so
// releases it (unless it ended already). When that cannot be told now,
// the retry is answered as a duplicate, as before the 503 was known.
func (l *Ledger) releaseIfRefused(ctx context.Context, accountID, taskID string) bool {
	doubt, err := l.InDoubt(ctx, taskID)
	if err != nil || !doubt {
		return false
	}
	err = l.ReleaseRefused(ctx, accountID, taskID)
	if err != nil && !errors.Is(err, account.ErrTaskNotOpen) {
		l.cfg.Logger.Warn("releasing a call answered 503 for a retry with its idempotency key", "task", taskID, "err", err)
		return false
	}
	return true
}

// ReleaseRefused releases a call answered 503 whose reservation landed
// after all, whichever instance owns it: it is never run, and its
// idempotency key is free for the caller's retry.
func (l *Ledger) ReleaseRefused(ctx context.Context, accountID, taskID string) error {
	meta := Meta{Actor: "system:doubts:" + l.cfg.Owner, CausationID: l.ids.New("cmd"), CorrelationID: taskID}
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		return a.ReleaseRefused(taskID, l.cfg.Now())
	})
	return err
}

// Owner is this instance's id: the owner recorded on the tasks it drives.
func (l *Ledger) Owner() string { return l.cfg.Owner }

func (l *Ledger) workerMeta(taskID string) Meta {
	return Meta{Actor: "system:worker:" + l.cfg.Owner, CausationID: l.ids.New("cmd"), CorrelationID: taskID}
}

// StartTask records the provider's handle.
func (l *Ledger) StartTask(ctx context.Context, accountID, taskID, ref string) error {
	_, err := l.accounts.Execute(ctx, accountID, l.workerMeta(taskID), func(a *account.Account) ([]account.Event, error) {
		return a.StartTask(taskID, l.cfg.Owner, ref)
	})
	return err
}

// CompleteTask captures a finished call.
func (l *Ledger) CompleteTask(ctx context.Context, accountID, taskID string, out account.TaskOutput) error {
	_, err := l.accounts.Execute(ctx, accountID, l.workerMeta(taskID), func(a *account.Account) ([]account.Event, error) {
		return a.CompleteTask(taskID, l.cfg.Owner, out)
	})
	return err
}

// FailTask releases a failed call.
func (l *Ledger) FailTask(ctx context.Context, accountID, taskID, code, reason string) error {
	_, err := l.accounts.Execute(ctx, accountID, l.workerMeta(taskID), func(a *account.Account) ([]account.Event, error) {
		return a.FailTask(taskID, l.cfg.Owner, code, reason, l.cfg.Now())
	})
	return err
}

// ReleaseExpired releases a hold past its expiry, whoever owns it.
func (l *Ledger) ReleaseExpired(ctx context.Context, accountID, taskID string) error {
	meta := Meta{Actor: "system:sweeper:" + l.cfg.Owner, CausationID: l.ids.New("cmd"), CorrelationID: taskID}
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		return a.FailTask(taskID, "", "abandoned", "hold expired before the call finished", l.cfg.Now())
	})
	return err
}

// AdoptTask takes over a task whose owner is gone.
func (l *Ledger) AdoptTask(ctx context.Context, accountID, taskID, from string) error {
	meta := Meta{Actor: "system:sweeper:" + l.cfg.Owner, CausationID: l.ids.New("cmd"), CorrelationID: taskID}
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		return a.AdoptTask(taskID, from, l.cfg.Owner)
	})
	return err
}

// RecordCallback records a callback delivery attempt.
func (l *Ledger) RecordCallback(ctx context.Context, accountID string, c account.CallbackAttempted) error {
	meta := Meta{Actor: "system:callbacks:" + l.cfg.Owner, CausationID: l.ids.New("cmd"), CorrelationID: c.TaskID}
	_, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		return a.RecordCallback(c)
	})
	return err
}

// Adjust applies a staff correction.
func (l *Ledger) Adjust(ctx context.Context, meta Meta, accountID string, amount money.Amount, reason string) (string, uint64, error) {
	if !ids.Valid("acc", accountID) {
		return "", 0, account.ErrNotFound
	}
	id := l.ids.New("adj")
	out, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		return a.Adjust(id, amount, reason)
	})
	return id, out.StreamSeq, err
}

// OpenTask is a task as its account aggregate knows it, if still open.
func (l *Ledger) OpenTask(ctx context.Context, accountID, taskID string) (account.Hold, bool, error) {
	var h account.Hold
	var ok bool
	err := l.accounts.Read(ctx, accountID, func(a *account.Account) { h, ok = a.Hold(taskID) })
	return h, ok, err
}

// defaultOwner is used when no instance id is configured (tests).
const defaultOwner = "inst_local"

// InDoubt reports whether the task's reservation was answered 503 while
// its append's outcome was unknown. If the append landed after all, the
// sweeper releases the hold instead of running the call: the customer was
// told it was refused. This instance remembers its own for a day; with
// Doubts set, every instance sees them, also after a restart. An error
// means it cannot tell now (the sweeper then leaves the task for a later
// round rather than run a call that may have been refused).
func (l *Ledger) InDoubt(ctx context.Context, taskID string) (bool, error) {
	if v, ok := l.inDoubt.Load(taskID); ok {
		if l.cfg.Now().Sub(v.(time.Time)) <= 24*time.Hour {
			return true, nil
		}
		l.inDoubt.Delete(taskID)
	}
	if l.cfg.Doubts == nil {
		return false, nil
	}
	hctx, cancel := context.WithTimeout(ctx, doubtTimeout)
	defer cancel()
	return l.cfg.Doubts.Has(hctx, taskID)
}

// doubtTimeout bounds each use of Doubts: a 503 answer waits for it.
const doubtTimeout = time.Second
