package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
)

// Ledger records a task's progress; implemented by the command side.
type Ledger interface {
	StartTask(ctx context.Context, accountID, taskID, ref string) error
	CompleteTask(ctx context.Context, accountID, taskID string, out account.TaskOutput) error
	FailTask(ctx context.Context, accountID, taskID, code, reason string) error
}

// Task is an accepted call to drive.
type Task struct {
	AccountID   string
	Provider    string
	Job         Job
	Timeout     time.Duration
	ProviderRef string // set when resuming a call the provider already has
}

// Result is how a task ended.
type Result struct {
	TaskID string
	Output Output
	// Code is "" on success, else provider_error, provider_timeout,
	// invalid_input or unavailable; Err says why.
	Code string
	Err  error
	// Recorded is false if the outcome could not be written to the ledger
	// before the runner stopped; the task then stays open and is resumed.
	Recorded bool
}

// Failure codes recorded on failed tasks.
const (
	CodeProvider    = "provider_error"
	CodeTimeout     = "provider_timeout"
	CodeInvalid     = "invalid_input"
	CodeUnavailable = account.CodeUnavailable
)

// Runner drives tasks in this process. Each task runs once here at a time;
// its outcome is recorded (capture or release) before waiters hear of it.
type Runner struct {
	providers map[string]Provider
	ledger    Ledger
	log       *slog.Logger

	// Breaker fails calls fast while a provider is down; Backoff spaces
	// retries of retryable failures.
	Breaker *Breaker
	Backoff Backoff
	// Keep, if set, copies a successful call's outputs into ledgerd's own
	// storage before the task is captured.
	Keep func(ctx context.Context, out Output) (Output, error)

	ctx    context.Context // ends when the runner closes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	running map[string]*run
	nudges  map[string]chan struct{} // wake a task's poll loop early
	// finished remembers tasks that ended recently, so a sweep that reads
	// a read model a moment behind does not start them again. Two
	// generations, swapped every minute, bound it without a scan per task.
	finished, finishedOld map[string]struct{}
	swappedAt             time.Time
}

type run struct {
	done   chan struct{}
	result Result
}

// NewRunner returns a runner over the given providers.
func NewRunner(ledger Ledger, log *slog.Logger, providers ...Provider) *Runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{providers: map[string]Provider{}, ledger: ledger, log: log, ctx: ctx, cancel: cancel,
		Backoff: Backoff{Base: 200 * time.Millisecond, Cap: 5 * time.Second},
		running: map[string]*run{}, nudges: map[string]chan struct{}{}, finished: map[string]struct{}{}, finishedOld: map[string]struct{}{}, swappedAt: time.Now()}
	for _, p := range providers {
		r.providers[p.Name()] = p
	}
	return r
}

// Provider returns the named provider.
func (r *Runner) Provider(name string) (Provider, bool) {
	p, ok := r.providers[name]
	return p, ok
}

// Nudge wakes a polling task at once (a provider's webhook says it may be
// done); the poll still asks the provider, so a forged nudge changes
// nothing.
func (r *Runner) Nudge(taskID string) bool {
	r.mu.Lock()
	ch := r.nudges[taskID]
	r.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- struct{}{}:
	default:
	}
	return true
}

// Available reports whether calls to the provider may start now (its
// circuit is not open). A caller that is refused reserves nothing.
func (r *Runner) Available(provider string) bool {
	_, ok := r.providers[provider]
	return ok && r.Breaker.Allow(provider)
}

// BreakerStates reports each provider's circuit.
func (r *Runner) BreakerStates() []BreakerState {
	states := r.Breaker.States()
	for name := range r.providers {
		found := false
		for _, s := range states {
			found = found || s.Provider == name
		}
		if !found {
			states = append(states, BreakerState{Provider: name, State: "closed"})
		}
	}
	return states
}

// Busy reports whether the task is running here or ended here moments ago.
func (r *Runner) Busy(taskID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[taskID]; ok {
		return true
	}
	_, recent := r.finished[taskID]
	_, older := r.finishedOld[taskID]
	return recent || older
}

// Start drives t in the background, once however often it is asked (a
// second Start of a running task joins the first).
func (r *Runner) Start(t Task) { r.start(t) }

func (r *Runner) start(t Task) *run {
	r.mu.Lock()
	defer r.mu.Unlock()
	if existing, ok := r.running[t.Job.TaskID]; ok {
		return existing
	}
	x := &run{done: make(chan struct{})}
	if r.ctx.Err() != nil {
		x.result = Result{TaskID: t.Job.TaskID, Code: CodeUnavailable, Err: errStopped}
		close(x.done)
		return x
	}
	r.running[t.Job.TaskID] = x
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		res := r.execute(t)
		r.mu.Lock()
		x.result = res
		delete(r.running, t.Job.TaskID)
		r.finished[t.Job.TaskID] = struct{}{}
		if now := time.Now(); now.Sub(r.swappedAt) > time.Minute {
			r.finishedOld, r.finished, r.swappedAt = r.finished, map[string]struct{}{}, now
		}
		r.mu.Unlock()
		close(x.done)
	}()
	return x
}

// Run drives t and waits for its result, or for ctx. If ctx ends first the
// task goes on; its outcome is recorded all the same.
func (r *Runner) Run(ctx context.Context, t Task) (Result, error) {
	x := r.start(t)
	select {
	case <-x.done:
		return x.result, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// Close stops taking tasks and waits (bounded by ctx) for running ones.
// A task cut short stays open in the ledger and is resumed at the next
// start.
func (r *Runner) Close(ctx context.Context) error {
	r.mu.Lock()
	n := len(r.running)
	r.mu.Unlock()
	finished := make(chan struct{})
	go func() { r.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		r.cancel()
		return nil
	case <-ctx.Done():
		r.cancel()
		<-finished
		return fmt.Errorf("tasks: %d task(s) still running at shutdown; they will be resumed", n)
	}
}

func (r *Runner) execute(t Task) Result {
	res := Result{TaskID: t.Job.TaskID}
	out, err := r.call(t)
	// One verdict per call on the provider's health: a timeout counts, a
	// refused input does not (Record ignores it).
	if _, ok := r.providers[t.Provider]; ok {
		r.Breaker.Record(t.Provider, err)
	}
	if err == nil && r.Keep != nil {
		ctx, cancel := context.WithTimeout(r.ctx, t.Timeout)
		out, err = r.Keep(ctx, out)
		cancel()
		if err != nil {
			err = fmt.Errorf("%w: keeping the outputs: %v", ErrProvider, err)
		}
	}
	switch {
	case err == nil:
		res.Output = out
	case errors.Is(err, ErrInvalidInput):
		res.Code, res.Err = CodeInvalid, err
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		res.Code, res.Err = CodeTimeout, err
	case errors.Is(err, ErrUnavailable):
		res.Code, res.Err = CodeUnavailable, err
	case errors.Is(err, errStopped):
		// Shutting down: leave the task open to be resumed.
		return res
	default:
		res.Code, res.Err = CodeProvider, err
	}
	res.Recorded = r.record(t, res)
	return res
}

var errStopped = errors.New("runner stopped")

// call runs the provider within the task's timeout: submit (or resume),
// then poll until done.
func (r *Runner) call(t Task) (Output, error) {
	p, ok := r.providers[t.Provider]
	if !ok {
		return Output{}, fmt.Errorf("%w: no provider %q configured", ErrProvider, t.Provider)
	}
	ctx, cancel := context.WithTimeout(r.ctx, t.Timeout)
	defer cancel()
	ref := t.ProviderRef
	if ref == "" {
		var h Handle
		err := r.retry(ctx, t, true, func() error {
			var err error
			h, err = p.Submit(ctx, t.Job)
			return err
		})
		if err != nil {
			return Output{}, r.stopped(err)
		}
		if h.Done {
			return h.Output, nil
		}
		ref = h.Ref
		// The handle is recorded so a restarted instance polls the same
		// call instead of paying for a second one.
		if err := r.ledger.StartTask(ctx, t.AccountID, t.Job.TaskID, ref); err != nil {
			r.log.Warn("recording provider handle", "task", t.Job.TaskID, "err", err)
		}
	}
	nudge := make(chan struct{}, 1)
	r.mu.Lock()
	r.nudges[t.Job.TaskID] = nudge
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.nudges, t.Job.TaskID)
		r.mu.Unlock()
	}()
	wait := 200 * time.Millisecond
	for {
		var done bool
		var out Output
		err := r.retry(ctx, t, false, func() error {
			var err error
			done, out, err = p.Poll(ctx, t.Job, ref)
			return err
		})
		if err != nil {
			// A call cut short by shutdown is left running at the
			// provider: the next start resumes it from its handle.
			if ctx.Err() != nil && r.ctx.Err() == nil {
				r.cancelCall(p, t, ref)
			}
			return Output{}, r.stopped(err)
		}
		if done {
			return out, nil
		}
		select {
		case <-ctx.Done():
			if r.ctx.Err() != nil {
				return Output{}, errStopped
			}
			r.cancelCall(p, t, ref)
			return Output{}, fmt.Errorf("%w after %v", ErrTimeout, t.Timeout)
		case <-time.After(wait):
		case <-nudge:
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// retry runs op, retrying retryable failures with backoff until it
// succeeds, fails for good, or the task's deadline leaves no time to wait.
func (r *Runner) retry(ctx context.Context, t Task, submit bool, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		var re *RetryableError
		if err == nil || !errors.As(err, &re) || ctx.Err() != nil || (submit && re.Uncertain) {
			return err
		}
		if max := t.Job.Options.Retries; max > 0 && attempt > max {
			return err
		}
		wait := r.Backoff.Delay(attempt, re.After)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return err // no time left to try again within the timeout
		}
		r.log.Debug("provider call failed; retrying", "task", t.Job.TaskID, "attempt", attempt, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

func (r *Runner) stopped(err error) error {
	if r.ctx.Err() != nil {
		return errStopped
	}
	return err
}

func (r *Runner) cancelCall(p Provider, t Task, ref string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Cancel(ctx, t.Job, ref); err != nil {
		r.log.Warn("cancelling provider call", "task", t.Job.TaskID, "err", err)
	}
}

// record writes the outcome, retrying while the event store is
// unreachable; it gives up only when the task is no longer open (someone
// else ended it) or the runner stops (the task is then resumed later).
func (r *Runner) record(t Task, res Result) bool {
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		if res.Code == "" {
			err = r.ledger.CompleteTask(ctx, t.AccountID, t.Job.TaskID, res.Output)
		} else {
			err = r.ledger.FailTask(ctx, t.AccountID, t.Job.TaskID, res.Code, res.Err.Error())
		}
		cancel()
		switch {
		case err == nil:
			return true
		case errors.Is(err, account.ErrTaskNotOpen), errors.Is(err, account.ErrNotOwner):
			r.log.Info("task already ended elsewhere", "task", t.Job.TaskID, "err", err)
			return false
		}
		r.log.Warn("recording task outcome; retrying", "task", t.Job.TaskID, "err", err)
		select {
		case <-r.ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}
