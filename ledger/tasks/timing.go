package tasks

import (
	"time"

	"github.com/ledgerd/ledgerd/domain/pricing"
)

// Timing bounds calls: how long a provider may take (per type, unless the
// model's options say otherwise) and how long a hold lasts.
type Timing struct {
	Timeout map[pricing.Type]time.Duration
	HoldTTL map[pricing.Type]time.Duration
}

// HoldMargin is how much longer than its call a hold lives, so the sweeper
// never releases a hold whose call may still succeed.
const HoldMargin = time.Minute

// For returns a model's call timeout and hold lifetime.
func (t Timing) For(m pricing.Model) (timeout, hold time.Duration) {
	timeout = t.Timeout[m.Type]
	if m.Options.TimeoutMS > 0 {
		timeout = time.Duration(m.Options.TimeoutMS) * time.Millisecond
	}
	if timeout <= 0 {
		timeout = time.Minute
	}
	return timeout, max(t.HoldTTL[m.Type], timeout+HoldMargin)
}
