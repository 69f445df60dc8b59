package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/eventstore/storetest"
)

func TestJetStreamContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store {
		_, js := natstest.JetStream(t, natstest.Server(t))
		s, err := eventstore.OpenJetStream(context.Background(), js, eventstore.JetStreamConfig{Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestJetStreamContractReplicated runs the same contract on a 3-replica
// stream over a 3-node cluster, where a conflict is reported as 10164.
func TestJetStreamContractReplicated(t *testing.T) {
	cluster := natstest.StartCluster(t, 3)
	n := 0
	storetest.Run(t, func(t *testing.T) eventstore.Store {
		nc, err := nats.Connect(cluster.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		// A stream per subtest: the contract expects an empty store.
		n++
		s, err := eventstore.OpenJetStream(context.Background(), js, eventstore.JetStreamConfig{
			Stream: fmt.Sprintf("R3_%d", n), SubjectPrefix: fmt.Sprintf("r3_%d", n), Replicas: 3, Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
		// A stream just created on a cluster answers only once its replicas
		// have elected a leader (a loaded machine may take a while): the
		// contract is about the store, not about that election.
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := js.Stream(context.Background(), fmt.Sprintf("R3_%d", n))
			if err == nil {
				if info, err := st.Info(context.Background()); err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the replicated stream elected no leader within 20 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		return s
	})
}

// An append with no stream to take it (deleted here; a stream without a
// leader answers the same way for a moment) is retried, then refused as
// unavailable, never as a conflict or an unknown error, and the refused
// commit is not stored once the stream is back.
func TestAppendWithoutAStreamIsUnavailable(t *testing.T) {
	commit := func(id string) eventstore.Append {
		ref := eventstore.Ref{Type: "account", ID: "acc_" + id}
		evs := []eventstore.Event{{ID: "evt_" + id, Type: "account.opened", Version: 1, AggregateType: ref.Type, AggregateID: ref.ID,
			OccurredAt: time.Now(), Data: []byte(`{}`)}}
		eventstore.Chain(0, "", evs)
		return eventstore.Append{Commit: eventstore.Commit{ID: "cmt_" + id, Aggregate: ref, Events: evs}}
	}
	// One commit is one publish; several are an atomic batch. Both retry
	// "no responders" (the stream may be electing a leader) before giving
	// up, and neither leaves anything behind.
	for name, appends := range map[string][]eventstore.Append{
		"one commit":             {commit("1")},
		"an atomic batch of two": {commit("1"), commit("2")},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, js := natstest.JetStream(t, natstest.Server(t))
			s, err := eventstore.OpenJetStream(ctx, js, eventstore.JetStreamConfig{Storage: jetstream.FileStorage})
			if err != nil {
				t.Fatal(err)
			}
			if err := js.DeleteStream(ctx, s.StreamName()); err != nil {
				t.Fatal(err)
			}
			_, err = s.Append(ctx, appends...)
			if !errors.Is(err, eventstore.ErrUnavailable) || errors.Is(err, eventstore.ErrConflict) {
				t.Fatalf("append with no stream: %v, want unavailable", err)
			}
			again, err := eventstore.OpenJetStream(ctx, js, eventstore.JetStreamConfig{Storage: jetstream.FileStorage})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := again.Messages(ctx); err != nil || n != 0 {
				t.Fatalf("the recreated stream holds %d messages (%v), want 0", n, err)
			}
			// The store works again once the stream is back.
			if _, err := again.Append(ctx, appends...); err != nil {
				t.Fatalf("append after the stream is back: %v", err)
			}
		})
	}
}
