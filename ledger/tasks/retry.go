package tasks

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// RetryableError marks a provider failure worth asking again: a 5xx, a
// 429 or a broken connection. After is the provider's Retry-After, if it
// gave one.
type RetryableError struct {
	Err   error
	After time.Duration
	// Uncertain: the request may have reached the provider before the
	// connection failed. Repeating a read is harmless; repeating a submit
	// could start (and pay for) the same call twice, so the runner does not.
	Uncertain bool
}

func (e *RetryableError) Error() string { return e.Err.Error() }
func (e *RetryableError) Unwrap() error { return e.Err }

// Retryable wraps err (which should wrap ErrProvider) as retryable.
func Retryable(err error, after time.Duration) error { return &RetryableError{Err: err, After: after} }

// Uncertain wraps a transport failure after which the provider may or may
// not have received the request.
func Uncertain(err error) error { return &RetryableError{Err: err, Uncertain: true} }

// Backoff is capped exponential backoff with full jitter.
type Backoff struct {
	Base, Cap time.Duration
}

// Delay is the wait before retry number attempt (1-based), at least the
// provider's own Retry-After.
func (b Backoff) Delay(attempt int, after time.Duration) time.Duration {
	d := b.Base << min(attempt-1, 16)
	if d <= 0 || d > b.Cap {
		d = b.Cap
	}
	d = time.Duration(rand.Int64N(int64(d)) + 1)
	return max(d, after)
}

// Breaker is a circuit breaker per provider: after Threshold consecutive
// failures it opens, and calls fail fast (nothing is reserved) until
// Cooldown has passed; then one probe call is let through, and its success
// closes the circuit again.
type Breaker struct {
	Threshold int
	Cooldown  time.Duration
	Now       func() time.Time

	mu    sync.Mutex
	state map[string]*circuit
}

type circuit struct {
	failures int
	openedAt time.Time
	open     bool
	probing  bool
}

// BreakerState is one provider's circuit as reported.
type BreakerState struct {
	Provider string `json:"provider"`
	State    string `json:"state"` // closed, open, half_open
	Failures int    `json:"consecutive_failures"`
}

func (b *Breaker) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *Breaker) get(provider string) *circuit {
	if b.state == nil {
		b.state = map[string]*circuit{}
	}
	c := b.state[provider]
	if c == nil {
		c = &circuit{}
		b.state[provider] = c
	}
	return c
}

// Allow reports whether a call to provider may start. When the circuit is
// open past its cooldown, one caller is let through as the probe.
func (b *Breaker) Allow(provider string) bool {
	if b == nil || b.Threshold <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.get(provider)
	switch {
	case !c.open:
		return true
	case c.probing:
		return false
	case b.now().Sub(c.openedAt) >= b.Cooldown:
		c.probing = true
		return true
	}
	return false
}

// Record notes how a call ended. Only provider failures count: invalid
// input is the caller's fault, not the provider's health.
func (b *Breaker) Record(provider string, err error) {
	if b == nil || b.Threshold <= 0 {
		return
	}
	if errors.Is(err, ErrInvalidInput) || errors.Is(err, errStopped) {
		return // says nothing about the provider's health
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.get(provider)
	if err == nil {
		*c = circuit{}
		return
	}
	c.failures++
	if c.probing || c.failures >= b.Threshold {
		c.open, c.probing, c.openedAt = true, false, b.now()
	}
}

// States reports every provider's circuit.
func (b *Breaker) States() []BreakerState {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]BreakerState, 0, len(b.state))
	for name, c := range b.state {
		s := BreakerState{Provider: name, State: "closed", Failures: c.failures}
		switch {
		case c.probing:
			s.State = "half_open"
		case c.open:
			s.State = "open"
		}
		out = append(out, s)
	}
	return out
}
