// Package natsbus is the watermill Pub/Sub over the NATS JetStream event
// store: it feeds each stored commit to watermill handlers (caches,
// tasks) one at a time, in stream order, and publishes auxiliary messages
// such as the poison queue.
package natsbus

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Metadata keys of a commit message. They carry what the JSON body does
// not: the aggregate and the read-back position in the stream.
const (
	MetaAggregateType = "aggregate_type"
	MetaAggregateID   = "aggregate_id"
	MetaEventTypes    = "event_types" // comma separated, in order
	MetaStreamSeq     = "stream_seq"
	MetaStoredAt      = "stored_at" // RFC 3339 with nanoseconds, UTC
)

// ToMessage is the one mapping from a commit to a watermill message. The
// UUID is the commit ID, so a redelivered commit keeps its identity, and
// the payload is the commit's JSON body as the store writes it.
func ToMessage(c eventstore.Commit) (*message.Message, error) {
	if c.ID == "" {
		return nil, fmt.Errorf("natsbus: commit at stream seq %d has no id", c.StreamSeq)
	}
	if c.Aggregate.Type == "" || c.Aggregate.ID == "" {
		return nil, fmt.Errorf("natsbus: commit %s has no aggregate", c.ID)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("natsbus: encoding commit %s: %w", c.ID, err)
	}
	types := make([]string, len(c.Events))
	for i, e := range c.Events {
		types[i] = e.Type
	}
	m := message.NewMessage(c.ID, body)
	m.Metadata.Set(MetaAggregateType, c.Aggregate.Type)
	m.Metadata.Set(MetaAggregateID, c.Aggregate.ID)
	m.Metadata.Set(MetaEventTypes, strings.Join(types, ","))
	m.Metadata.Set(MetaStreamSeq, strconv.FormatUint(c.StreamSeq, 10))
	// A commit that was never stored has no time; leaving the key out
	// keeps FromMessage from inventing year 1.
	if !c.Stored.IsZero() {
		m.Metadata.Set(MetaStoredAt, c.Stored.UTC().Format(time.RFC3339Nano))
	}
	return m, nil
}

// FromMessage is the inverse of ToMessage. It decodes through
// eventstore.DecodeCommit so handlers see exactly what a store Load
// returns, including each event's StreamSeq.
func FromMessage(m *message.Message) (eventstore.Commit, error) {
	ref := eventstore.Ref{Type: m.Metadata.Get(MetaAggregateType), ID: m.Metadata.Get(MetaAggregateID)}
	if ref.Type == "" || ref.ID == "" {
		return eventstore.Commit{}, fmt.Errorf("natsbus: message %s has no aggregate metadata", m.UUID)
	}
	var seq uint64
	if s := m.Metadata.Get(MetaStreamSeq); s != "" {
		var err error
		if seq, err = strconv.ParseUint(s, 10, 64); err != nil {
			return eventstore.Commit{}, fmt.Errorf("natsbus: message %s: %s %q: %w", m.UUID, MetaStreamSeq, s, err)
		}
	}
	var stored time.Time
	if s := m.Metadata.Get(MetaStoredAt); s != "" {
		var err error
		if stored, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return eventstore.Commit{}, fmt.Errorf("natsbus: message %s: %s %q: %w", m.UUID, MetaStoredAt, s, err)
		}
	}
	c, err := eventstore.DecodeCommit(m.Payload, nil, seq, stored, ref)
	if err != nil {
		return eventstore.Commit{}, fmt.Errorf("natsbus: message %s: %w", m.UUID, err)
	}
	return c, nil
}
