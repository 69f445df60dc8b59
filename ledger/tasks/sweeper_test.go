package tasks

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/pricing"
)

// fakeLedger records what the sweeper and runner ask of the command side.
type fakeLedger struct {
	mu    sync.Mutex
	calls []string
	// holds is what the account aggregates know: the open tasks, their
	// owners and provider handles.
	holds map[string]account.Hold
}

func (f *fakeLedger) note(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeLedger) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeLedger) Owner() string { return "inst_me" }
func (f *fakeLedger) AdoptTask(_ context.Context, _, id, from string) error {
	f.note("adopt " + id + " from " + from)
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.holds[id]
	h.Owner = f.Owner()
	f.holds[id] = h
	return nil
}
func (f *fakeLedger) InDoubt(_ context.Context, id string) (bool, error) {
	if id == "unknowable" { // the record of doubts cannot be read now
		return false, errors.New("postgres unreachable")
	}
	return id == "doubtful", nil
}
func (f *fakeLedger) OpenTask(_ context.Context, _, id string) (account.Hold, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.holds[id]
	return h, ok, nil
}
func (f *fakeLedger) ReleaseExpired(_ context.Context, _, id string) error {
	f.note("release " + id)
	return nil
}
func (f *fakeLedger) Model(string) (pricing.Model, error) {
	return pricing.Model{}, pricing.ErrUnknownModel
}
func (f *fakeLedger) StartTask(context.Context, string, string, string) error { return nil }
func (f *fakeLedger) CompleteTask(_ context.Context, _, id string, _ account.TaskOutput) error {
	f.note("complete " + id)
	return nil
}
func (f *fakeLedger) FailTask(_ context.Context, _, id, code, _ string) error {
	f.note("fail " + id + " " + code)
	return nil
}
func (f *fakeLedger) ReleaseRefused(_ context.Context, _, id string) error {
	f.note("refuse " + id)
	return nil
}

// instant finishes every call at once; block holds a call until released.
type instant struct {
	block chan struct{}
	led   *fakeLedger // notes submits and polls, when set
}

func (instant) Name() string { return "local" }
func (p instant) Submit(ctx context.Context, j Job) (Handle, error) {
	if p.led != nil {
		p.led.note("submit " + j.TaskID)
	}
	if j.TaskID == "busy" && p.block != nil {
		<-p.block
	}
	return Handle{Done: true, Output: Output{ImageURL: "u"}}, nil
}
func (p instant) Poll(_ context.Context, j Job, ref string) (bool, Output, error) {
	if p.led != nil {
		p.led.note("poll " + j.TaskID + " " + ref)
	}
	return true, Output{ImageURL: "u"}, nil
}
func (instant) Cancel(context.Context, Job, string) error { return nil }

func TestSweep(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	led := &fakeLedger{holds: map[string]account.Hold{}}
	for _, id := range []string{"expired", "busy", "mine", "alive", "orphan", "stale", "doubtful", "unknowable"} {
		led.holds[id] = account.Hold{TaskID: id, Owner: "inst_me"}
	}
	led.holds["alive"] = account.Hold{TaskID: "alive", Owner: "inst_alive"}
	led.holds["orphan"] = account.Hold{TaskID: "orphan", Owner: "inst_dead"}
	// The read model lost or has not yet applied what the aggregate knows:
	// "stale" was submitted (its handle recorded), "ended" is over.
	led.holds["stale"] = account.Hold{TaskID: "stale", Owner: "inst_me", Started: true, ProviderRef: "ref-1"}
	block := make(chan struct{})
	r := NewRunner(led, slog.New(slog.DiscardHandler), instant{block: block, led: led})
	defer r.Close(context.Background())
	r.Start(Task{AccountID: "acc", Provider: "local", Timeout: time.Minute, Job: Job{TaskID: "busy"}})

	future, past := now.Add(time.Minute), now.Add(-time.Second)
	open := []OpenTask{
		{ID: "expired", AccountID: "acc", Owner: "inst_other", Provider: "local", HoldExpiresAt: past},
		{ID: "mine", AccountID: "acc", Owner: "inst_me", Provider: "local", HoldExpiresAt: future},
		{ID: "alive", AccountID: "acc", Owner: "inst_alive", Provider: "local", HoldExpiresAt: future},
		{ID: "orphan", AccountID: "acc", Owner: "inst_dead", Provider: "local", HoldExpiresAt: future},
		{ID: "busy", AccountID: "acc", Owner: "inst_me", Provider: "local", HoldExpiresAt: past},
		{ID: "stale", AccountID: "acc", Owner: "inst_me", Provider: "local", HoldExpiresAt: future},
		{ID: "ended", AccountID: "acc", Owner: "inst_me", Provider: "local", HoldExpiresAt: future},
		{ID: "doubtful", AccountID: "acc", Owner: "inst_me", Provider: "local", HoldExpiresAt: future},
		{ID: "unknowable", AccountID: "acc", Owner: "inst_me", Provider: "local", HoldExpiresAt: future},
	}
	s := &Sweeper{
		Ledger: led, Runner: r, Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
		Open:    func(context.Context, int) ([]OpenTask, error) { return open, nil },
		Alive:   func(_ context.Context, owner string) (bool, error) { return owner == "inst_alive", nil },
		Timeout: func(pricing.Model) time.Duration { return time.Minute },
	}
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !(slices.Contains(led.got(), "complete mine") && slices.Contains(led.got(), "complete orphan") && slices.Contains(led.got(), "complete stale")) {
		if time.Now().After(deadline) {
			t.Fatalf("calls = %v", led.got())
		}
		time.Sleep(5 * time.Millisecond)
	}
	calls := led.got()
	for _, want := range []string{"release expired", "adopt orphan from inst_dead", "complete mine", "complete orphan",
		"poll stale ref-1", "complete stale", "refuse doubtful"} {
		if !slices.Contains(calls, want) {
			t.Errorf("missing %q in %v", want, calls)
		}
	}
	for _, never := range []string{"release busy", "complete alive", "adopt alive from inst_alive", "release mine",
		"submit stale", "submit ended", "complete ended", "submit doubtful", "complete doubtful",
		"submit unknowable", "complete unknowable", "refuse unknowable", "fail doubtful unavailable"} {
		if slices.Contains(calls, never) {
			t.Errorf("unexpected %q in %v", never, calls)
		}
	}
	close(block)
}
