package fal

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

// runLedger records what the runner reports.
type runLedger struct {
	mu     sync.Mutex
	refs   []string
	output *account.TaskOutput
	failed string
}

func (l *runLedger) StartTask(_ context.Context, _, _, ref string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refs = append(l.refs, ref)
	return nil
}

func (l *runLedger) CompleteTask(_ context.Context, _, _ string, out account.TaskOutput) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.output = &out
	return nil
}

func (l *runLedger) FailTask(_ context.Context, _, _, code, reason string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed = code + ": " + reason
	return nil
}

// The adapter as the runner drives it: a 503 on submit is retried by the
// runner (not the adapter), the handle is recorded, and polling ends with
// the output.
func TestWithRunner(t *testing.T) {
	f := newFake(t, imageResult)
	var submits atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && submits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"detail":"No runner available","error_type":"runner_scheduling_failure"}`)
			return
		}
		f.serve(w, r)
	}))
	defer front.Close()
	f.srv.URL = front.URL // the URLs fal hands out point at the front

	p := newProvider(t, front.URL)
	led := &runLedger{}
	r := tasks.NewRunner(led, slog.New(slog.NewTextHandler(io.Discard, nil)), p)
	r.Backoff = tasks.Backoff{Base: 10 * time.Millisecond, Cap: 20 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	res, err := r.Run(ctx, tasks.Task{AccountID: "acct_1", Provider: "fal", Job: imageJob(), Timeout: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != "" || res.Output.ImageURL != "https://v3.fal.media/files/a.png" || !res.Recorded {
		t.Fatalf("result %+v", res)
	}
	if submits.Load() != 2 {
		t.Fatalf("%d submits, want 2 (one retry by the runner)", submits.Load())
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if len(led.refs) != 1 || led.output == nil {
		t.Fatalf("ledger: refs %v output %v failed %q", led.refs, led.output, led.failed)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
