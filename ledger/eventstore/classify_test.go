package eventstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClassify: conflicts are recognised by JetStream error code — 10071,
// and 10164 which replicated streams report for the same check — and
// outages by their sentinel errors, never by message text.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"wrong last sequence (R1)", &jetstream.APIError{Code: 400, ErrorCode: 10071, Description: "wrong last sequence: 4"}, ErrConflict},
		{"wrong last sequence (replicated)", &jetstream.APIError{Code: 400, ErrorCode: 10164, Description: "wrong last sequence"}, ErrConflict},
		{"wrapped 10164", fmt.Errorf("publish: %w", &jetstream.APIError{Code: 400, ErrorCode: 10164}), ErrConflict},
		{"no leader (503)", &jetstream.APIError{Code: 503, ErrorCode: 10008}, ErrUnavailable},
		{"timeout", nats.ErrTimeout, ErrUnavailable},
		{"deadline", context.DeadlineExceeded, ErrUnavailable},
		{"no responders", nats.ErrNoResponders, ErrUnavailable},
	} {
		if got := classify(c.err); !errors.Is(got, c.want) {
			t.Errorf("%s: classify = %v, want %v", c.name, got, c.want)
		}
	}
	if got := classify(&jetstream.APIError{Code: 400, ErrorCode: 10058}); errors.Is(got, ErrConflict) || errors.Is(got, ErrUnavailable) {
		t.Errorf("another 400: classify = %v, want it passed through", got)
	}
}
