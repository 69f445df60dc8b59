// Package storetest is the conformance suite every eventstore.Store
// implementation must pass.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// NewStore returns a fresh, empty store for one test.
type NewStore func(t *testing.T) eventstore.Store

// Run runs every contract test against stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s eventstore.Store)
	}{
		{"AppendThenLoad", testAppendThenLoad},
		{"LoadUnknownAggregateIsEmpty", testLoadUnknown},
		{"LoadAfterSequence", testLoadAfter},
		{"StaleExpectedSequenceConflicts", testConflict},
		{"RetriedCommitIsStoredOnce", testDedup},
		{"AtomicMultiAggregateAppend", testAtomic},
		{"AtomicAppendAllOrNothing", testAtomicAllOrNothing},
		{"HashChainDetectsTampering", testHashChain},
		{"ConcurrentAppendersNeverLoseOrReorder", testConcurrentAppenders},
		{"AggregatesAreIsolated", testIsolation},
		{"ScanSeesEveryAcknowledgedAppend", testScanSeesAcknowledged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

var clock = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// commit builds a chained commit of n events continuing after (seq, hash).
func commit(ref eventstore.Ref, id string, seq uint64, hash string, n int) eventstore.Commit {
	events := make([]eventstore.Event, n)
	for i := range events {
		data, _ := json.Marshal(map[string]any{"n": i, "commit": id})
		events[i] = eventstore.Event{
			ID: fmt.Sprintf("%s-e%d", id, i), Type: "test.happened", Version: 1,
			AggregateType: ref.Type, AggregateID: ref.ID,
			OccurredAt: clock, Actor: "usr_test", CorrelationID: "req_" + id,
			Data: data,
		}
	}
	eventstore.Chain(seq, hash, events)
	return eventstore.Commit{ID: id, Aggregate: ref, Events: events}
}

func mustAppend(t *testing.T, s eventstore.Store, expected uint64, c eventstore.Commit) uint64 {
	t.Helper()
	seqs, err := s.Append(context.Background(), eventstore.Append{Expected: expected, Commit: c})
	if err != nil {
		t.Fatalf("append %s: %v", c.ID, err)
	}
	return seqs[0]
}

func load(t *testing.T, s eventstore.Store, ref eventstore.Ref, after uint64) []eventstore.Commit {
	t.Helper()
	cs, err := s.Load(context.Background(), ref, after)
	if err != nil {
		t.Fatalf("load %s: %v", ref, err)
	}
	return cs
}

func events(cs []eventstore.Commit) []eventstore.Event {
	var out []eventstore.Event
	for _, c := range cs {
		out = append(out, c.Events...)
	}
	return out
}

func testAppendThenLoad(t *testing.T, s eventstore.Store) {
	ref := eventstore.Ref{Type: "account", ID: "acc_a"}
	c1 := commit(ref, "c1", 0, "", 2)
	seq1 := mustAppend(t, s, 0, c1)
	c2 := commit(ref, "c2", 2, c1.Events[1].Hash, 1)
	seq2 := mustAppend(t, s, seq1, c2)
	if seq2 <= seq1 {
		t.Fatalf("stream seq %d after %d, want increasing", seq2, seq1)
	}
	got := load(t, s, ref, 0)
	if len(got) != 2 || got[0].ID != "c1" || got[1].ID != "c2" {
		t.Fatalf("loaded %+v, want commits c1, c2", got)
	}
	if got[0].StreamSeq != seq1 || got[1].StreamSeq != seq2 {
		t.Fatalf("stream seqs %d,%d, want %d,%d", got[0].StreamSeq, got[1].StreamSeq, seq1, seq2)
	}
	evs := events(got)
	if len(evs) != 3 {
		t.Fatalf("got %d events, want 3", len(evs))
	}
	want := c1.Events[0]
	g := evs[0]
	if g.ID != want.ID || g.Type != want.Type || g.Version != 1 || g.Actor != "usr_test" ||
		!g.OccurredAt.Equal(want.OccurredAt) || string(g.Data) != string(want.Data) || g.Hash != want.Hash {
		t.Fatalf("event round trip: got %+v, want %+v", g, want)
	}
	if err := eventstore.VerifyChain(0, "", evs); err != nil {
		t.Fatalf("chain of stored events: %v", err)
	}
}

func testLoadUnknown(t *testing.T, s eventstore.Store) {
	if got := load(t, s, eventstore.Ref{Type: "account", ID: "acc_none"}, 0); len(got) != 0 {
		t.Fatalf("loaded %d commits for an unknown aggregate, want 0", len(got))
	}
}

func testLoadAfter(t *testing.T, s eventstore.Store) {
	ref := eventstore.Ref{Type: "account", ID: "acc_after"}
	var seq uint64
	var hash string
	var pos uint64
	// More commits than one load batch, to cover paging.
	for i := range 600 {
		c := commit(ref, fmt.Sprintf("c%d", i), pos, hash, 1)
		seq = mustAppend(t, s, seq, c)
		pos, hash = c.LastSeq(), c.Events[0].Hash
	}
	all := load(t, s, ref, 0)
	if len(all) != 600 {
		t.Fatalf("loaded %d commits, want 600", len(all))
	}
	tail := load(t, s, ref, all[597].StreamSeq)
	if len(tail) != 2 || tail[0].ID != "c598" || tail[1].ID != "c599" {
		t.Fatalf("load after seq: got %d commits, want c598, c599", len(tail))
	}
}

func testConflict(t *testing.T, s eventstore.Store) {
	ref := eventstore.Ref{Type: "account", ID: "acc_conflict"}
	c1 := commit(ref, "c1", 0, "", 1)
	seq := mustAppend(t, s, 0, c1)
	// A writer that still believes the aggregate is empty must lose.
	_, err := s.Append(context.Background(), eventstore.Append{Expected: 0, Commit: commit(ref, "c-stale", 0, "", 1)})
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("append with stale expected seq: err = %v, want ErrConflict", err)
	}
	_, err = s.Append(context.Background(), eventstore.Append{Expected: seq + 100, Commit: commit(ref, "c-future", 1, c1.Events[0].Hash, 1)})
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("append with future expected seq: err = %v, want ErrConflict", err)
	}
	if got := load(t, s, ref, 0); len(got) != 1 {
		t.Fatalf("after conflicts: %d commits stored, want 1", len(got))
	}
}

func testDedup(t *testing.T, s eventstore.Store) {
	ref := eventstore.Ref{Type: "account", ID: "acc_dedup"}
	c1 := commit(ref, "c1", 0, "", 1)
	seq := mustAppend(t, s, 0, c1)
	// The same commit sent again (a retry after a lost ack) is not stored
	// twice and reports where it was stored.
	again := mustAppend(t, s, 0, c1)
	if again != seq {
		t.Fatalf("retried commit stored at %d, want original %d", again, seq)
	}
	if got := load(t, s, ref, 0); len(got) != 1 {
		t.Fatalf("%d commits stored after a retry, want 1", len(got))
	}
}

func testAtomic(t *testing.T, s eventstore.Store) {
	a := eventstore.Ref{Type: "account", ID: "acc_atomic"}
	u := eventstore.Ref{Type: "user", ID: "usr_atomic"}
	seqs, err := s.Append(context.Background(),
		eventstore.Append{Expected: 0, Commit: commit(u, "cu", 0, "", 1)},
		eventstore.Append{Expected: 0, Commit: commit(a, "ca", 0, "", 3)},
	)
	if err != nil {
		t.Fatalf("atomic append: %v", err)
	}
	if len(seqs) != 2 || seqs[1] != seqs[0]+1 {
		t.Fatalf("atomic seqs = %v, want two consecutive", seqs)
	}
	if got := load(t, s, u, 0); len(got) != 1 || got[0].StreamSeq != seqs[0] {
		t.Fatalf("user commits %+v, want one at %d", got, seqs[0])
	}
	if got := events(load(t, s, a, 0)); len(got) != 3 {
		t.Fatalf("account events %d, want 3", len(got))
	}
}

func testAtomicAllOrNothing(t *testing.T, s eventstore.Store) {
	a := eventstore.Ref{Type: "account", ID: "acc_aon"}
	u := eventstore.Ref{Type: "user", ID: "usr_aon"}
	mustAppend(t, s, 0, commit(u, "taken", 0, "", 1))
	// The user part conflicts (it exists), so the account part must not land.
	_, err := s.Append(context.Background(),
		eventstore.Append{Expected: 0, Commit: commit(a, "ca", 0, "", 1)},
		eventstore.Append{Expected: 0, Commit: commit(u, "cu", 0, "", 1)},
	)
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("atomic append over a conflict: err = %v, want ErrConflict", err)
	}
	if got := load(t, s, a, 0); len(got) != 0 {
		t.Fatalf("account got %d commits from a failed atomic append, want 0", len(got))
	}
}

func testHashChain(t *testing.T, s eventstore.Store) {
	ref := eventstore.Ref{Type: "account", ID: "acc_chain"}
	c1 := commit(ref, "c1", 0, "", 3)
	mustAppend(t, s, 0, c1)
	evs := events(load(t, s, ref, 0))
	if err := eventstore.VerifyChain(0, "", evs); err != nil {
		t.Fatalf("intact chain: %v", err)
	}
	tampered := append([]eventstore.Event(nil), evs...)
	tampered[1].Data = json.RawMessage(`{"n":1,"commit":"forged"}`)
	if err := eventstore.VerifyChain(0, "", tampered); !errors.Is(err, eventstore.ErrBrokenChain) {
		t.Fatalf("edited event: err = %v, want ErrBrokenChain", err)
	}
	dropped := []eventstore.Event{evs[0], evs[2]}
	if err := eventstore.VerifyChain(0, "", dropped); !errors.Is(err, eventstore.ErrBrokenChain) {
		t.Fatalf("dropped event: err = %v, want ErrBrokenChain", err)
	}
}

// testConcurrentAppenders has writers race on one aggregate with the
// load-decide-append-retry loop every command handler uses. Every event
// that a writer was told is stored must be there, once, in chain order.
func testConcurrentAppenders(t *testing.T, s eventstore.Store) {
	ref := eventstore.Ref{Type: "account", ID: "acc_race"}
	const writers, perWriter = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := appendWithRetry(s, ref, id); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	cs := load(t, s, ref, 0)
	if len(cs) != writers*perWriter {
		t.Fatalf("stored %d commits, want %d", len(cs), writers*perWriter)
	}
	seen := map[string]bool{}
	for _, c := range cs {
		if seen[c.ID] {
			t.Fatalf("commit %s stored twice", c.ID)
		}
		seen[c.ID] = true
	}
	if err := eventstore.VerifyChain(0, "", events(cs)); err != nil {
		t.Fatalf("chain after concurrent appends: %v", err)
	}
}

func appendWithRetry(s eventstore.Store, ref eventstore.Ref, id string) error {
	ctx := context.Background()
	for range 500 {
		cs, err := s.Load(ctx, ref, 0)
		if err != nil {
			return err
		}
		var seq, pos uint64
		var hash string
		if n := len(cs); n > 0 {
			last := cs[n-1]
			seq, pos, hash = last.StreamSeq, last.LastSeq(), last.Events[len(last.Events)-1].Hash
		}
		_, err = s.Append(ctx, eventstore.Append{Expected: seq, Commit: commit(ref, id, pos, hash, 1)})
		if errors.Is(err, eventstore.ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("commit %s: too many conflicts", id)
}

func testIsolation(t *testing.T, s eventstore.Store) {
	a := eventstore.Ref{Type: "account", ID: "acc_iso1"}
	b := eventstore.Ref{Type: "account", ID: "acc_iso10"} // a prefix of each other's subject must not leak
	mustAppend(t, s, 0, commit(a, "ca", 0, "", 1))
	mustAppend(t, s, 0, commit(b, "cb", 0, "", 1))
	if got := load(t, s, a, 0); len(got) != 1 || got[0].ID != "ca" {
		t.Fatalf("aggregate a loaded %+v, want only ca", got)
	}
	if _, err := s.Append(context.Background(), eventstore.Append{Expected: 0, Commit: commit(eventstore.Ref{Type: "account", ID: "bad.id"}, "x", 0, "", 1)}); err == nil {
		t.Fatal("append to an id with '.' succeeded, want an error")
	}
}

// Scanner is what stores that read across aggregates (audit, as-of
// balances, verify) implement.
type Scanner interface {
	Scan(ctx context.Context, typ, id string, after uint64, fn func(eventstore.Commit) error) error
}

// testScanSeesAcknowledged: a scan begun after an append was acknowledged
// includes it, for one aggregate and across a type; on a replicated store
// that holds even when a replica that has not applied it yet answers.
func testScanSeesAcknowledged(t *testing.T, s eventstore.Store) {
	sc, ok := s.(Scanner)
	if !ok {
		t.Skip("the store does not scan")
	}
	ctx := context.Background()
	count := func(typ, id string) int {
		n := 0
		if err := sc.Scan(ctx, typ, id, 0, func(eventstore.Commit) error { n++; return nil }); err != nil {
			t.Fatalf("scan %s/%s: %v", typ, id, err)
		}
		return n
	}
	heads := map[string]uint64{}
	seqs := map[string]uint64{}
	hashes := map[string]string{}
	for i := range 60 {
		ref := eventstore.Ref{Type: "account", ID: fmt.Sprintf("acc_%d", i%3)}
		c := commit(ref, fmt.Sprintf("c%d", i), seqs[ref.ID], hashes[ref.ID], 1)
		heads[ref.ID] = mustAppend(t, s, heads[ref.ID], c)
		seqs[ref.ID], hashes[ref.ID] = c.LastSeq(), c.Events[0].Hash
		if got := count("account", ""); got != i+1 {
			t.Fatalf("after %d acknowledged appends a scan of the type saw %d", i+1, got)
		}
		if got := count("account", ref.ID); got != i/3+1 {
			t.Fatalf("after %d acknowledged appends to %s a scan of it saw %d", i/3+1, ref.ID, got)
		}
	}
}
