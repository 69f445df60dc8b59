// Package eventstore is the source of truth: an append-only log of events,
// one subject per aggregate, with optimistic concurrency on each aggregate
// and a hash chain that makes any later edit or gap detectable.
package eventstore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Ref names one aggregate: its type ("account", "user", ...) and id. Both
// become parts of a NATS subject, so they may not hold '.', '*', '>' or
// whitespace.
type Ref struct {
	Type string
	ID   string
}

func (r Ref) String() string { return r.Type + "/" + r.ID }

// Event is one recorded fact with its envelope. Seq, PrevHash and Hash are
// set by Chain before appending; StreamSeq is read back from the stream and
// never written.
type Event struct {
	Seq           uint64          `json:"seq"` // 1-based position within the aggregate
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Version       int             `json:"v"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   string          `json:"aggregate_id"`
	OccurredAt    time.Time       `json:"occurred_at"`
	Actor         string          `json:"actor,omitempty"`
	CausationID   string          `json:"causation_id,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Data          json.RawMessage `json:"data"`
	PrevHash      string          `json:"prev_hash"`
	Hash          string          `json:"hash"`

	StreamSeq uint64 `json:"-"`
}

// Commit is what one append writes: the events of one or more commands on
// one aggregate, stored as a single message so they land atomically.
type Commit struct {
	ID        string  `json:"id"` // also the Nats-Msg-Id, for dedup of retried publishes
	Aggregate Ref     `json:"-"`
	Events    []Event `json:"events"`

	StreamSeq uint64    `json:"-"` // read back: the message's stream sequence
	Stored    time.Time `json:"-"` // read back: when the stream stored it

	// Decoded, when set by a reader that decodes once for many consumers,
	// holds each event's domain value (same order as Events).
	Decoded []any `json:"-"`
}

// LastSeq is the aggregate position of the commit's last event.
func (c Commit) LastSeq() uint64 {
	if len(c.Events) == 0 {
		return 0
	}
	return c.Events[len(c.Events)-1].Seq
}

// hashInput is the canonical form an event's hash covers: every envelope
// field and the data, in a fixed order, but not the hash itself. JSON of a
// struct is deterministic, and Data is kept byte for byte as written.
type hashInput struct {
	Seq           uint64          `json:"seq"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Version       int             `json:"v"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   string          `json:"aggregate_id"`
	OccurredAt    string          `json:"occurred_at"`
	Actor         string          `json:"actor"`
	CausationID   string          `json:"causation_id"`
	CorrelationID string          `json:"correlation_id"`
	Data          json.RawMessage `json:"data"`
	PrevHash      string          `json:"prev_hash"`
}

// Hash computes SHA-256 over the event's canonical form, which includes the
// previous event's hash: changing or removing any event breaks every hash
// after it.
func Hash(e Event) string {
	// Most events fit the stack buffer; the hash runs for every event
	// appended and every event verified, so it should not allocate.
	var buf [1536]byte
	sum := sha256.Sum256(appendEvent(buf[:0], &e, true))
	return hex.EncodeToString(sum[:])
}

// Chain numbers events after (lastSeq, lastHash), the aggregate's current
// head, and links each to the one before. It returns the new head hash.
func Chain(lastSeq uint64, lastHash string, events []Event) string {
	for i := range events {
		lastSeq++
		events[i].Seq = lastSeq
		events[i].PrevHash = lastHash
		events[i].Hash = Hash(events[i])
		lastHash = events[i].Hash
	}
	return lastHash
}

// ErrBrokenChain reports an event whose position or hashes do not follow.
var ErrBrokenChain = errors.New("hash chain broken")

// VerifyChain checks that events continue the chain after (lastSeq,
// lastHash) with no gap, reordering or edit.
func VerifyChain(lastSeq uint64, lastHash string, events []Event) error {
	for _, e := range events {
		switch {
		case e.Seq != lastSeq+1:
			return fmt.Errorf("%w at %s seq %d: want seq %d", ErrBrokenChain, e.ID, e.Seq, lastSeq+1)
		case e.PrevHash != lastHash:
			return fmt.Errorf("%w at seq %d: prev_hash %.12s, want %.12s", ErrBrokenChain, e.Seq, e.PrevHash, lastHash)
		case Hash(e) != e.Hash:
			return fmt.Errorf("%w at seq %d: content does not match its hash", ErrBrokenChain, e.Seq)
		}
		lastSeq, lastHash = e.Seq, e.Hash
	}
	return nil
}
