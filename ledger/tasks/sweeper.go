package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/pricing"
)

// OpenTask is a task the read model shows as pending or running.
type OpenTask struct {
	ID            string
	AccountID     string
	Owner         string
	Model         string
	Type          pricing.Type
	Provider      string
	ProviderModel string
	ProviderRef   string
	Input         account.TaskInput
	HoldExpiresAt time.Time
}

// SweepLedger is what the sweeper asks of the command side.
type SweepLedger interface {
	Owner() string
	AdoptTask(ctx context.Context, accountID, taskID, from string) error
	ReleaseExpired(ctx context.Context, accountID, taskID string) error
	Model(name string) (pricing.Model, error)
	// OpenTask is the task as its account aggregate knows it now. The
	// read model the sweep starts from may be behind (or, after a crash,
	// have lost its last commits): the provider handle and whether the
	// task is still open are taken from here, so a call the provider
	// already has is polled, never submitted again.
	OpenTask(ctx context.Context, accountID, taskID string) (account.Hold, bool, error)
	// InDoubt: the caller was answered 503 while the reservation's append
	// had an unknown outcome; if it landed, it is released, not run.
	InDoubt(ctx context.Context, taskID string) (bool, error)
	// ReleaseRefused releases a call answered 503 whose reservation
	// landed after all: it is not run, and its idempotency key is free.
	ReleaseRefused(ctx context.Context, accountID, taskID string) error
}

// Sweeper makes sure no hold leaks. Every interval it looks at the open
// tasks and, for each one not running here:
//   - a hold past its expiry is released (its call's timeout is shorter
//     than the hold, so the call cannot still succeed);
//   - a task of this instance is resumed (after a restart);
//   - a task of an instance that is gone is adopted and resumed.
//
// What the customer pays if ledgerd dies mid-call: nothing until the call
// is resumed and succeeds (then its price, once), or its hold is released.
type Sweeper struct {
	Ledger   SweepLedger
	Runner   *Runner
	Open     func(ctx context.Context, limit int) ([]OpenTask, error)
	Alive    func(ctx context.Context, owner string) (bool, error)
	Timeout  func(m pricing.Model) time.Duration
	Interval time.Duration
	Log      *slog.Logger
	Now      func() time.Time
	// OwnOnly limits the sweep to this instance's own tasks (resume after
	// a restart, release when expired): an API-only instance drives the
	// calls it accepted and leaves adopting other instances' calls to the
	// workers.
	OwnOnly bool
}

// Run sweeps until ctx ends.
func (s *Sweeper) Run(ctx context.Context) {
	interval := s.Interval
	if interval == 0 {
		interval = time.Second
	}
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn("sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// Sweep looks at the open tasks once.
func (s *Sweeper) Sweep(ctx context.Context) error {
	open, err := s.Open(ctx, 1000)
	if err != nil {
		return err
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	me := s.Ledger.Owner()
	alive := map[string]bool{}
	for _, t := range open {
		if s.Runner.Busy(t.ID) || (s.OwnOnly && t.Owner != me) {
			continue
		}
		switch {
		case !now.Before(t.HoldExpiresAt):
			err = s.Ledger.ReleaseExpired(ctx, t.AccountID, t.ID)
			if err == nil {
				s.Log.Warn("released an expired hold", "task", t.ID, "account", t.AccountID, "owner", t.Owner)
			}
		case t.Owner == me:
			err = s.resume(ctx, t)
		default:
			up, ok := alive[t.Owner]
			if !ok {
				if up, err = s.Alive(ctx, t.Owner); err != nil {
					return err
				}
				alive[t.Owner] = up
			}
			if up {
				continue
			}
			err = s.Ledger.AdoptTask(ctx, t.AccountID, t.ID, t.Owner)
			if err == nil {
				s.Log.Info("adopted a task from a stopped instance", "task", t.ID, "from", t.Owner)
				err = s.resume(ctx, t)
			}
		}
		// Another instance may have ended or adopted it first: fine.
		if err != nil && !errors.Is(err, account.ErrTaskNotOpen) && !errors.Is(err, account.ErrNotOwner) {
			s.Log.Warn("sweeping task", "task", t.ID, "err", err)
		}
	}
	return nil
}

func (s *Sweeper) resume(ctx context.Context, t OpenTask) error {
	h, open, err := s.Ledger.OpenTask(ctx, t.AccountID, t.ID)
	if err != nil {
		return err
	}
	if !open || h.Owner != s.Ledger.Owner() {
		return nil // ended or adopted elsewhere since the read model saw it
	}
	doubt, err := s.Ledger.InDoubt(ctx, t.ID)
	if err != nil {
		return fmt.Errorf("is the reservation in doubt: %w", err)
	}
	if doubt {
		s.Log.Warn("releasing a call answered 503 whose reservation landed after all", "task", t.ID, "account", t.AccountID)
		return s.Ledger.ReleaseRefused(ctx, t.AccountID, t.ID)
	}
	t.ProviderRef = h.ProviderRef
	m, err := s.Ledger.Model(t.Model)
	if err != nil {
		// The model left the price list: drive the call as recorded.
		m = pricing.Model{Name: t.Model, Type: t.Type, Provider: t.Provider, ProviderModel: t.ProviderModel}
	}
	s.Runner.Start(Task{
		AccountID: t.AccountID, Provider: t.Provider, ProviderRef: t.ProviderRef, Timeout: s.Timeout(m),
		Job: Job{TaskID: t.ID, Model: t.Model, Type: t.Type, ProviderModel: t.ProviderModel,
			Prompt: t.Input.Prompt, Size: t.Input.Size, Duration: t.Input.Duration, Resolution: t.Input.Resolution,
			Input: t.Input.Extra, Options: m.Options},
	})
	return nil
}
