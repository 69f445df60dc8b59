package natsbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/adapters/natsbus"
	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// ledger is a fresh event store with helpers to append chained commits.
type ledger struct {
	t     *testing.T
	js    jetstream.JetStream
	store *eventstore.JetStream
	heads map[eventstore.Ref]head
}

type head struct {
	streamSeq, seq uint64
	hash           string
}

func newLedger(t *testing.T) *ledger {
	t.Helper()
	_, js := natstest.JetStream(t, natstest.Server(t))
	store, err := eventstore.OpenJetStream(context.Background(), js, eventstore.JetStreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &ledger{t: t, js: js, store: store, heads: map[eventstore.Ref]head{}}
}

var clock = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// commit builds a commit of n chained events after the aggregate's head.
func (l *ledger) commit(ref eventstore.Ref, id string, n int) eventstore.Commit {
	h := l.heads[ref]
	events := make([]eventstore.Event, n)
	for i := range events {
		data, _ := json.Marshal(map[string]any{"n": i, "commit": id})
		events[i] = eventstore.Event{
			ID: fmt.Sprintf("%s-e%d", id, i), Type: fmt.Sprintf("test.happened%d", i), Version: 1,
			AggregateType: ref.Type, AggregateID: ref.ID,
			OccurredAt: clock, Actor: "usr_test", CorrelationID: "req_" + id,
			Data: data,
		}
	}
	eventstore.Chain(h.seq, h.hash, events)
	return eventstore.Commit{ID: id, Aggregate: ref, Events: events}
}

// append stores a commit of n events and returns its stream sequence.
func (l *ledger) append(ref eventstore.Ref, id string, n int) uint64 {
	l.t.Helper()
	c := l.commit(ref, id, n)
	seqs, err := l.store.Append(context.Background(), eventstore.Append{Expected: l.heads[ref].streamSeq, Commit: c})
	if err != nil {
		l.t.Fatalf("append %s: %v", id, err)
	}
	l.heads[ref] = head{streamSeq: seqs[0], seq: c.LastSeq(), hash: c.Events[len(c.Events)-1].Hash}
	return seqs[0]
}

var (
	accA = eventstore.Ref{Type: "account", ID: "acc_a"}
	accB = eventstore.Ref{Type: "account", ID: "acc_b"}
)

func newSubscriber(t *testing.T, cfg natsbus.SubscriberConfig) *natsbus.Subscriber {
	t.Helper()
	s, err := natsbus.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func subscribe(t *testing.T, s *natsbus.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ch, err := s.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed, want a message")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

func expectNothing(t *testing.T, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s", m.UUID)
		}
	case <-time.After(d):
	}
}

func expectClosed(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("got message %s, want a closed channel", m.UUID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("channel not closed within 3s")
	}
}

func TestMessageRoundTrip(t *testing.T) {
	l := newLedger(t)
	l.append(accA, "c1", 1)
	l.append(accA, "c2", 3)
	stored, err := l.store.Load(context.Background(), accA, 0)
	if err != nil {
		t.Fatal(err)
	}
	unstored := l.commit(accB, "c3", 2)

	for _, c := range []eventstore.Commit{stored[1], unstored} {
		m, err := natsbus.ToMessage(c)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(c)
		if m.UUID != c.ID || string(m.Payload) != string(body) {
			t.Fatalf("message %s payload %s, want uuid %s payload %s", m.UUID, m.Payload, c.ID, body)
		}
		wantMeta := map[string]string{
			"aggregate_type": c.Aggregate.Type,
			"aggregate_id":   c.Aggregate.ID,
			"event_types":    strings.Join(eventTypes(c), ","),
			"stream_seq":     fmt.Sprint(c.StreamSeq),
		}
		if !c.Stored.IsZero() {
			wantMeta["stored_at"] = c.Stored.UTC().Format(time.RFC3339Nano)
		}
		if !reflect.DeepEqual(map[string]string(m.Metadata), wantMeta) {
			t.Fatalf("metadata %v, want %v", m.Metadata, wantMeta)
		}

		got, err := natsbus.FromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		// Time zones may differ after the trip; the instant may not.
		if !got.Stored.Equal(c.Stored) {
			t.Fatalf("stored %v, want %v", got.Stored, c.Stored)
		}
		got.Stored = c.Stored
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
		}
	}
	if stored[1].StreamSeq == 0 || stored[1].Events[2].StreamSeq != stored[1].StreamSeq || stored[1].Stored.IsZero() {
		t.Fatalf("test needs a read-back commit, got %+v", stored[1])
	}

	if _, err := natsbus.FromMessage(message.NewMessage("x", []byte("{}"))); err == nil {
		t.Fatal("FromMessage without aggregate metadata: want an error")
	}
	if _, err := natsbus.ToMessage(eventstore.Commit{ID: "x"}); err == nil {
		t.Fatal("ToMessage without aggregate: want an error")
	}
}

func eventTypes(c eventstore.Commit) []string {
	var ts []string
	for _, e := range c.Events {
		ts = append(ts, e.Type)
	}
	return ts
}

func TestOrderedDeliverAllInStreamOrder(t *testing.T) {
	l := newLedger(t)
	want := []string{"c1", "c2", "c3"}
	l.append(accA, "c1", 1)
	l.append(accB, "c2", 2)
	l.append(accA, "c3", 1)
	s := newSubscriber(t, natsbus.SubscriberConfig{JS: l.js, DeliverAll: true})
	ch := subscribe(t, s, "ledger.>")
	l.append(accB, "c4", 1)
	l.append(accA, "c5", 1)
	want = append(want, "c4", "c5")

	var last uint64
	for _, id := range want {
		m := receive(t, ch)
		c, err := natsbus.FromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if c.ID != id || c.StreamSeq <= last {
			t.Fatalf("got %s at stream seq %d after %d, want %s in stream order", c.ID, c.StreamSeq, last, id)
		}
		last = c.StreamSeq
		m.Ack()
	}
	expectNothing(t, ch, 200*time.Millisecond)
}

func TestOrderedStartPosition(t *testing.T) {
	l := newLedger(t)
	l.append(accA, "c1", 1)
	seq2 := l.append(accA, "c2", 1)

	fromNew := subscribe(t, newSubscriber(t, natsbus.SubscriberConfig{JS: l.js}), "ledger.>")
	fromSeq := subscribe(t, newSubscriber(t, natsbus.SubscriberConfig{JS: l.js, StartSeq: seq2}), "ledger.account.>")
	l.append(accA, "c3", 1)

	for _, tc := range []struct {
		ch   <-chan *message.Message
		want []string
	}{{fromNew, []string{"c3"}}, {fromSeq, []string{"c2", "c3"}}} {
		for _, id := range tc.want {
			m := receive(t, tc.ch)
			if m.UUID != id {
				t.Fatalf("got %s, want %s", m.UUID, id)
			}
			m.Ack()
		}
	}
}

func TestOrderedNackResendsBeforeLaterMessages(t *testing.T) {
	l := newLedger(t)
	l.append(accA, "c1", 1)
	l.append(accA, "c2", 1)
	ch := subscribe(t, newSubscriber(t, natsbus.SubscriberConfig{JS: l.js, DeliverAll: true}), "ledger.>")

	// Nacked twice, c1 keeps coming back, and only then does c2 follow.
	for i, settle := range []func(*message.Message) bool{(*message.Message).Nack, (*message.Message).Nack, (*message.Message).Ack} {
		m := receive(t, ch)
		if m.UUID != "c1" {
			t.Fatalf("delivery %d: got %s, want c1", i, m.UUID)
		}
		if c, err := natsbus.FromMessage(m); err != nil || len(c.Events) != 1 {
			t.Fatalf("delivery %d: %+v, %v", i, c, err)
		}
		settle(m)
		waitFor(t, func() bool { return m.Context().Err() != nil })
	}
	m := receive(t, ch)
	if m.UUID != "c2" {
		t.Fatalf("got %s, want c2", m.UUID)
	}
	m.Ack()
}
func TestDurableNackRedeliversAndAcksSurviveRestart(t *testing.T) {
	l := newLedger(t)
	l.append(accA, "c1", 1)
	l.append(accA, "c2", 1)
	l.append(accB, "c3", 1)
	cfg := natsbus.SubscriberConfig{JS: l.js, Durable: "tasks", NackDelay: 50 * time.Millisecond}
	s1 := newSubscriber(t, cfg)
	ch := subscribe(t, s1, "ledger.>")
	if _, err := s1.Subscribe(context.Background(), "ledger.>"); err == nil {
		t.Fatal("second subscription on one durable: want an error")
	}

	m := receive(t, ch)
	if m.UUID != "c1" {
		t.Fatalf("got %s, want c1", m.UUID)
	}
	m.Ack()
	m = receive(t, ch)
	if m.UUID != "c2" {
		t.Fatalf("got %s, want c2", m.UUID)
	}
	m.Nack()
	// c2 comes back after NackDelay; c3 may overtake it meanwhile.
	seen := map[string]int{}
	for len(seen) < 2 {
		m = receive(t, ch)
		seen[m.UUID]++
		m.Ack()
	}
	if seen["c2"] != 1 || seen["c3"] != 1 {
		t.Fatalf("after nack got %v, want c2 and c3 once each", seen)
	}
	expectNothing(t, ch, 150*time.Millisecond)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, ch)

	// A restart resumes after the acked commits.
	l.append(accA, "c4", 1)
	s2 := newSubscriber(t, cfg)
	ch = subscribe(t, s2, "ledger.>")
	if m = receive(t, ch); m.UUID != "c4" {
		t.Fatalf("after restart got %s, want c4", m.UUID)
	}
	m.Ack()
	expectNothing(t, ch, 150*time.Millisecond)
}

func TestUndecodableMessagesAreSkipped(t *testing.T) {
	l := newLedger(t)
	if _, err := l.js.Publish(context.Background(), "ledger.account.junk", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	l.append(accA, "c1", 1)

	ordered := subscribe(t, newSubscriber(t, natsbus.SubscriberConfig{JS: l.js, DeliverAll: true}), "ledger.>")
	durable := subscribe(t, newSubscriber(t, natsbus.SubscriberConfig{JS: l.js, Durable: "junk", NackDelay: 10 * time.Millisecond}), "ledger.>")
	for _, ch := range []<-chan *message.Message{ordered, durable} {
		if m := receive(t, ch); m.UUID != "c1" {
			t.Fatalf("got %s, want c1 after the junk", m.UUID)
		} else {
			m.Ack()
		}
	}
	// The durable consumer terminated the junk: nothing is left pending.
	waitFor(t, func() bool {
		info := consumerInfo(t, l.js, "LEDGER", "junk")
		return info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
	})
	expectNothing(t, durable, 100*time.Millisecond)
}

func TestRouterPoisonQueue(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	if err := natsbus.EnsurePoisonStream(ctx, l.js, "LEDGER_POISON", "ledger_poison.>", 1); err != nil {
		t.Fatal(err)
	}
	l.append(accA, "good1", 1)
	l.append(accB, "bad", 2)
	l.append(accA, "good2", 1)

	sub := newSubscriber(t, natsbus.SubscriberConfig{JS: l.js, Durable: "router", NackDelay: 10 * time.Millisecond})
	pub, err := natsbus.NewPublisher(natsbus.PublisherConfig{JS: l.js})
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 3 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	poison, err := middleware.PoisonQueue(pub, "ledger_poison.x")
	if err != nil {
		t.Fatal(err)
	}
	// PoisonQueue outermost: it sees the error only once Retry gives up.
	router.AddMiddleware(poison, middleware.Retry{MaxRetries: 2, InitialInterval: time.Millisecond}.Middleware)

	var (
		mu       sync.Mutex
		handled  []string
		attempts int
	)
	router.AddConsumerHandler("commits", "ledger.>", sub, func(m *message.Message) error {
		c, err := natsbus.FromMessage(m)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if c.ID == "bad" {
			attempts++
			return errors.New("cannot handle\nthis commit")
		}
		handled = append(handled, c.ID)
		return nil
	})
	runDone := make(chan error, 1)
	go func() { runDone <- router.Run(ctx) }()
	t.Cleanup(func() {
		_ = router.Close()
		<-runDone
	})

	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 2
	})
	poisonStream, err := l.js.Stream(ctx, "LEDGER_POISON")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		info, err := poisonStream.Info(ctx)
		return err == nil && info.State.Msgs == 1
	})
	raw, err := poisonStream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var c eventstore.Commit
	if err := json.Unmarshal(raw.Data, &c); err != nil || c.ID != "bad" || len(c.Events) != 2 {
		t.Fatalf("poisoned commit %+v, %v; want bad with 2 events", c, err)
	}
	for k, want := range map[string]string{
		"Nats-Msg-Id":                   "bad",
		"aggregate_id":                  accB.ID,
		"event_types":                   "test.happened0,test.happened1",
		middleware.ReasonForPoisonedKey: "cannot handle this commit",
		middleware.PoisonedTopicKey:     "ledger.>",
		middleware.PoisonedHandlerKey:   "commits",
	} {
		if got := raw.Header.Get(k); got != want {
			t.Fatalf("poison header %s = %q, want %q", k, got, want)
		}
	}

	// Poisoned means settled: the consumer has nothing left to redeliver.
	waitFor(t, func() bool {
		info := consumerInfo(t, l.js, "LEDGER", "router")
		return info.NumAckPending == 0 && info.NumPending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if attempts != 3 || !reflect.DeepEqual(handled, []string{"good1", "good2"}) {
		t.Fatalf("attempts %d handled %v, want 3 attempts and good1, good2", attempts, handled)
	}
}

func TestPublisherRejectsServerHeaders(t *testing.T) {
	l := newLedger(t)
	pub, err := natsbus.NewPublisher(natsbus.PublisherConfig{JS: l.js})
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage("x", []byte("{}"))
	m.Metadata.Set("Nats-Expected-Stream", "OTHER")
	if err := pub.Publish("ledger_poison.x", m); err == nil || !strings.Contains(err.Error(), "metadata key") {
		t.Fatalf("publish with a Nats- metadata key: got %v, want a rejection", err)
	}
	_ = pub.Close()
	if err := pub.Publish("ledger_poison.x", message.NewMessage("y", nil)); err == nil {
		t.Fatal("publish after Close: want an error")
	}
}

func TestCloseEndsSubscriptions(t *testing.T) {
	l := newLedger(t)
	l.append(accA, "c1", 1)

	for _, durable := range []string{"", "closing"} {
		s, err := natsbus.NewSubscriber(natsbus.SubscriberConfig{JS: l.js, Durable: durable, DeliverAll: true})
		if err != nil {
			t.Fatal(err)
		}
		held := subscribe(t, s, "ledger.>") // a message is out, never settled
		var idle <-chan *message.Message    // nothing ever arrives
		if durable == "" {
			idle = subscribe(t, s, "ledger.x.>")
		}
		m := receive(t, held)

		// Cancelling a subscription's context ends just that one.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		byCtx, err := s.Subscribe(ctx, "ledger.y.>")
		switch {
		case durable != "" && err == nil:
			t.Fatal("second durable subscription: want an error")
		case durable == "" && err != nil:
			t.Fatal(err)
		case durable == "":
			cancel()
			expectClosed(t, byCtx)
		}

		start := time.Now()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Close took %s", d)
		}
		if m.Context().Err() == nil { // Close waited for the subscription to end
			t.Fatal("unsettled message context still live after Close")
		}
		expectClosed(t, held)
		if idle != nil {
			expectClosed(t, idle)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := s.Subscribe(context.Background(), "ledger.>"); err == nil {
			t.Fatal("Subscribe after Close: want an error")
		}
	}

	// The durable handed its unsettled message back: a restart gets it
	// now, not after AckWait.
	s := newSubscriber(t, natsbus.SubscriberConfig{JS: l.js, Durable: "closing"})
	m := receive(t, subscribe(t, s, "ledger.>"))
	if m.UUID != "c1" {
		t.Fatalf("got %s, want c1 again", m.UUID)
	}
	m.Ack()
}

func consumerInfo(t *testing.T, js jetstream.JetStream, stream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	cons, err := js.Consumer(context.Background(), stream, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDurableSlowHandlerKeepsItsMessage(t *testing.T) {
	l := newLedger(t)
	l.append(accA, "c1", 1)
	s := newSubscriber(t, natsbus.SubscriberConfig{JS: l.js, Durable: "slow", AckWait: 200 * time.Millisecond})
	ch := subscribe(t, s, "ledger.>")
	m := receive(t, ch)

	// Held for several AckWaits, the message is kept from expiring: another
	// puller on the same consumer (a second instance) does not get it.
	cons, err := l.js.Consumer(context.Background(), "LEDGER", "slow")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(700*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for other := range batch.Messages() {
		t.Fatalf("another puller got %s while the handler held it", other.Subject())
	}
	m.Ack()
	l.append(accA, "c2", 1)
	if m = receive(t, ch); m.UUID != "c2" {
		t.Fatalf("got %s, want c2", m.UUID)
	}
	m.Ack()
	if info := consumerInfo(t, l.js, "LEDGER", "slow"); info.NumRedelivered != 0 {
		t.Fatalf("%d redelivered, want 0", info.NumRedelivered)
	}
}
