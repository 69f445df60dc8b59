package aggregates

import (
	"context"
	"fmt"
	"time"
)

// Snapshots of aggregates kept apart from the stream. Loading an aggregate
// folds its whole history, about 6 µs an event, so an account with
// millions of calls would take minutes to load after a restart. A
// repository with a Snapshots store writes a snapshot of an aggregate
// every SnapshotEvery events and loads from the latest one, folding only
// the events after it. A snapshot is checked against the stream when read
// (the commit it names must be there, with its hash) and ignored if it
// does not fit or cannot be decoded: it is a cache, never the truth.

// Snapshot is an aggregate's encoded state as stored up to a commit.
type Snapshot struct {
	StreamSeq uint64 // of the commit it includes last
	Seq       uint64 // the aggregate's last event in it
	Hash      string // that event's hash
	State     []byte
}

// Snapshots stores one aggregate type's snapshots.
type Snapshots interface {
	Get(ctx context.Context, id string) (Snapshot, bool, error)
	Put(ctx context.Context, id string, s Snapshot) error
}

// stateMarshaler is a state that encodes itself for a snapshot.
type stateMarshaler interface {
	MarshalState() ([]byte, error)
}

// stateSizer is a state that tells about how many entries it holds.
type stateSizer interface {
	StateSize() int
}

// snapshotReadTimeout bounds reading a snapshot; past it the aggregate is
// folded from the start.
const snapshotReadTimeout = time.Second

// snapshotEvery is the default number of events between snapshots: a load
// then folds at most about 60 ms of events on top of its snapshot.
const snapshotEvery = 10_000

// stored returns id's stored snapshot, decoded, if there is one that can
// be read.
func (r *Repo[S, E]) stored(ctx context.Context, e *entry[S, E]) (snapshot[S], bool) {
	if r.cfg.Snapshots == nil || r.cfg.DecodeState == nil {
		return snapshot[S]{}, false
	}
	// Snapshots live apart from the stream (in Postgres): a store that
	// hangs must not hold loads, and so charging, up with it.
	gctx, cancel := context.WithTimeout(ctx, snapshotReadTimeout)
	s, ok, err := r.cfg.Snapshots.Get(gctx, e.id)
	cancel()
	if err != nil {
		r.cfg.Logger.Warn("reading an aggregate snapshot; folding from the start", "type", r.cfg.Type, "id", e.id, "err", err)
		return snapshot[S]{}, false
	}
	if !ok {
		return snapshot[S]{}, false
	}
	state, err := r.cfg.DecodeState(e.id, s.State)
	if err != nil {
		r.cfg.Logger.Warn("undecodable aggregate snapshot; folding from the start", "type", r.cfg.Type, "id", e.id, "err", err)
		return snapshot[S]{}, false
	}
	e.persistedSeq = s.Seq
	return snapshot[S]{state: state, streamSeq: s.StreamSeq, seq: s.Seq, hash: s.Hash}, true
}

// persist writes a snapshot of e's state when SnapshotEvery events have
// come since the last one. e.mu is held and the state is as stored at
// e.streamSeq; the copy is encoded and written in the background.
func (r *Repo[S, E]) persist(e *entry[S, E]) {
	if r.cfg.Snapshots == nil {
		return
	}
	every := r.cfg.SnapshotEvery
	if sz, ok := any(e.state).(stateSizer); ok {
		// Encoding a state costs about as much as folding a few events per
		// entry it holds: snapshots of a big state come further apart.
		every = max(every, 4*uint64(sz.StateSize()))
	}
	if e.seq < e.persistedSeq+every {
		return
	}
	cl, ok := any(e.state).(cloner[S])
	if !ok {
		return
	}
	e.persistedSeq = e.seq
	state, id := cl.Clone(), e.id
	at := Snapshot{StreamSeq: e.streamSeq, Seq: e.seq, Hash: e.hash}
	go func() {
		m, ok := any(state).(stateMarshaler)
		if !ok {
			return
		}
		b, err := m.MarshalState()
		if err == nil {
			at.State = b
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = r.cfg.Snapshots.Put(ctx, id, at)
			cancel()
		}
		if err != nil {
			r.cfg.Logger.Warn("writing an aggregate snapshot", "type", r.cfg.Type, "id", id, "err", fmt.Errorf("at seq %d: %w", at.Seq, err))
		}
	}()
}
