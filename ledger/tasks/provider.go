// Package tasks drives generation tasks: it hands an accepted (and paid-for,
// reserved) call to its provider, waits or polls until the provider is done,
// and reports success or failure so the hold is captured or released.
package tasks

import (
	"context"
	"errors"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/pricing"
)

// Job is one call as a provider sees it.
type Job struct {
	TaskID        string
	Model         string // the price-list name
	Type          pricing.Type
	ProviderModel string
	Prompt        string
	Size          string // images: "1024x1024"
	Duration      int    // videos: seconds
	Resolution    string // videos: "720p"
	// Input holds the caller's other input fields (generateTask's input
	// object), for providers that pass them through.
	Input   map[string]any
	Options pricing.Options
}

// Output is what a finished call produced (recorded as is on the task).
type Output = account.TaskOutput

// Handle is what Submit returns: a reference to poll, or the finished
// output when the provider answered synchronously.
type Handle struct {
	Ref    string
	Done   bool
	Output Output
}

// Provider is a generation backend. Implementations must be safe for
// concurrent use and must honour ctx (a call past its timeout is
// cancelled).
type Provider interface {
	Name() string
	// Submit starts a call. It may finish it at once (Handle.Done).
	Submit(ctx context.Context, job Job) (Handle, error)
	// Poll checks a submitted call; done with output when finished.
	Poll(ctx context.Context, job Job, ref string) (done bool, out Output, err error)
	// Cancel asks the provider to stop a call (best effort).
	Cancel(ctx context.Context, job Job, ref string) error
}

// Errors providers return (wrapped with detail). Anything else is treated
// as ErrProvider.
var (
	// ErrInvalidInput: the provider refused the input (its 4xx); not
	// retried, the caller gets 422.
	ErrInvalidInput = errors.New("provider rejected the input")
	// ErrProvider: the provider failed (its 5xx, a broken response); the
	// caller gets 502.
	ErrProvider = errors.New("provider failed")
	// ErrTimeout: the call did not finish within the model's timeout; the
	// caller gets 504.
	ErrTimeout = errors.New("provider timed out")
	// ErrUnavailable: the provider is known to be down (circuit open);
	// nothing is reserved and the caller gets 503.
	ErrUnavailable = errors.New("provider unavailable")
)
