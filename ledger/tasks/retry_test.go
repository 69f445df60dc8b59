package tasks

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// flaky fails its first n submissions with the given error.
type flaky struct {
	n     int32
	err   error
	calls atomic.Int32
}

func (f *flaky) Name() string { return "flaky" }
func (f *flaky) Submit(context.Context, Job) (Handle, error) {
	if f.calls.Add(1) <= f.n {
		return Handle{}, f.err
	}
	return Handle{Done: true, Output: Output{ImageURL: "u"}}, nil
}
func (f *flaky) Poll(context.Context, Job, string) (bool, Output, error) { return true, Output{}, nil }
func (f *flaky) Cancel(context.Context, Job, string) error               { return nil }

func runOnce(t *testing.T, r *Runner, timeout time.Duration) Result {
	t.Helper()
	res, err := r.Run(context.Background(), Task{AccountID: "acc", Provider: "flaky", Timeout: timeout, Job: Job{TaskID: fmt.Sprint(time.Now().UnixNano())}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestRetries(t *testing.T) {
	five := fmt.Errorf("%w: HTTP 503", ErrProvider)
	tests := []struct {
		name      string
		fails     int32
		err       error
		timeout   time.Duration
		wantCode  string
		wantCalls int32
	}{
		{"5xx retried until success", 3, Retryable(five, 0), time.Second, "", 4},
		{"429 honours Retry-After", 1, Retryable(fmt.Errorf("%w: HTTP 429", ErrProvider), 30*time.Millisecond), time.Second, "", 2},
		{"4xx not retried", 5, fmt.Errorf("%w: HTTP 400", ErrInvalidInput), time.Second, CodeInvalid, 1},
		{"plain failure not retried", 5, five, time.Second, CodeProvider, 1},
		{"uncertain submit not repeated (could pay twice)", 5, Uncertain(five), time.Second, CodeProvider, 1},
		{"no time left to retry", 1000, Retryable(five, 0), 50 * time.Millisecond, CodeProvider, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			led := &fakeLedger{}
			p := &flaky{n: tt.fails, err: tt.err}
			r := NewRunner(led, slog.New(slog.DiscardHandler), p)
			r.Backoff = Backoff{Base: time.Millisecond, Cap: 10 * time.Millisecond}
			defer r.Close(context.Background())
			res := runOnce(t, r, tt.timeout)
			if res.Code != tt.wantCode {
				t.Fatalf("code %q (%v), want %q", res.Code, res.Err, tt.wantCode)
			}
			if tt.wantCalls > 0 && p.calls.Load() != tt.wantCalls {
				t.Fatalf("calls %d, want %d", p.calls.Load(), tt.wantCalls)
			}
			if !res.Recorded {
				t.Fatal("outcome not recorded")
			}
		})
	}
}

func TestBreaker(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := &Breaker{Threshold: 3, Cooldown: 30 * time.Second, Now: func() time.Time { return now }}
	fail := fmt.Errorf("%w: boom", ErrProvider)
	for range 2 {
		b.Record("fal", fail)
	}
	if !b.Allow("fal") {
		t.Fatal("opened before the threshold")
	}
	b.Record("fal", fmt.Errorf("%w: bad prompt", ErrInvalidInput)) // the caller's fault: not counted
	b.Record("fal", fail)
	if b.Allow("fal") || !b.Allow("openai") {
		t.Fatal("circuit not open for fal only")
	}
	now = now.Add(31 * time.Second)
	if !b.Allow("fal") || b.Allow("fal") {
		t.Fatal("after cooldown exactly one probe may pass")
	}
	b.Record("fal", fail) // the probe failed: open again
	if b.Allow("fal") {
		t.Fatal("failed probe did not reopen")
	}
	now = now.Add(31 * time.Second)
	b.Allow("fal")
	b.Record("fal", nil)
	if !b.Allow("fal") || b.States()[0].State != "closed" {
		t.Fatalf("successful probe did not close: %+v", b.States())
	}
}
