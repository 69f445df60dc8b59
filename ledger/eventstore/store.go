package eventstore

import (
	"context"
	"errors"
)

// Store is the event store port: load an aggregate, append to it.
type Store interface {
	// Load returns the aggregate's commits stored after stream sequence
	// after (0 for all), in order.
	Load(ctx context.Context, ref Ref, after uint64) ([]Commit, error)
	// Append writes each commit to its aggregate if that aggregate's last
	// stored stream sequence is still the expected one (0: no events yet).
	// Several appends go in atomically: all are stored or none. It returns
	// the stream sequence of each stored commit.
	Append(ctx context.Context, appends ...Append) ([]uint64, error)
}

// Append is one aggregate's part of an atomic append.
type Append struct {
	Expected uint64 // the aggregate's last stream sequence, 0 for a new one
	Commit   Commit
}

var (
	// ErrConflict: another writer appended to the aggregate since it was
	// loaded. Reload and decide again.
	ErrConflict = errors.New("eventstore: concurrent append to aggregate")
	// ErrUnavailable: the store cannot be reached; nothing was appended,
	// or (for a timeout) the outcome is unknown until the aggregate is
	// reloaded.
	ErrUnavailable = errors.New("eventstore: unavailable")
)
