package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

const (
	// resendDelay spaces the redeliveries of a nacked message on an
	// ordered consumer, which has no server-side redelivery to lean on.
	resendDelay = 100 * time.Millisecond
	// nextRetryDelay spaces retries after an unexpected iterator error.
	nextRetryDelay = time.Second
	// ackTimeout bounds waiting for the server to confirm an ack.
	ackTimeout = 2 * time.Second
	// closeTimeout bounds how long Close waits for subscriptions to end.
	closeTimeout = 5 * time.Second
)

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	JS     jetstream.JetStream
	Stream string // default "LEDGER"

	// Durable names a durable consumer with explicit acks, for work that
	// must survive restarts. Empty means an ephemeral ordered consumer, for
	// in-memory state that is rebuilt on start.
	Durable string

	// StartSeq > 0 starts at that stream sequence. Otherwise an ordered
	// consumer starts at the first message if DeliverAll is set and at new
	// messages if not; a durable consumer starts at the first message. A
	// durable consumer that already exists keeps its position.
	StartSeq   uint64
	DeliverAll bool

	Logger    watermill.LoggerAdapter // default watermill.NopLogger{}
	NackDelay time.Duration           // durable: redelivery delay after Nack, default 1s
	AckWait   time.Duration           // durable: default 30s
}

// Subscriber is a watermill message.Subscriber over the JetStream event
// stream. Each subscription hands out one commit at a time and waits for
// its Ack or Nack before the next, so handlers see commits in stream
// order.
type Subscriber struct {
	cfg SubscriberConfig
	log watermill.LoggerAdapter

	// ctx is the parent of every subscription; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu            sync.Mutex
	closed        bool
	durableActive bool
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber checks the config and fills in defaults. It does not talk
// to the server: consumers are created by Subscribe.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	if cfg.JS == nil {
		return nil, errors.New("natsbus: subscriber needs a JetStream context")
	}
	if cfg.Stream == "" {
		cfg.Stream = "LEDGER"
	}
	if cfg.Logger == nil {
		cfg.Logger = watermill.NopLogger{}
	}
	if cfg.NackDelay <= 0 {
		cfg.NackDelay = time.Second
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Subscriber{
		cfg:    cfg,
		log:    cfg.Logger.With(watermill.LogFields{"stream": cfg.Stream, "durable": cfg.Durable}),
		ctx:    ctx,
		cancel: cancel,
	}, nil
}

// subscription is one running Subscribe.
type subscription struct {
	topic   string
	durable bool
	iter    jetstream.MessagesContext
	out     chan *message.Message
	log     watermill.LoggerAdapter
}

// Subscribe starts consuming commits on topic, a NATS filter subject on
// the stream such as "ledger.>" or "ledger.account.>". The channel is
// closed when ctx is cancelled or the Subscriber is closed.
//
// A durable Subscriber allows one subscription at a time: two would share
// the consumer and split its messages, losing the order.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == "" {
		return nil, errors.New("natsbus: subscribe needs a topic")
	}
	durable := s.cfg.Durable != ""

	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, errors.New("natsbus: subscriber is closed")
	case durable && s.durableActive:
		s.mu.Unlock()
		return nil, fmt.Errorf("natsbus: durable consumer %s already has a subscription", s.cfg.Durable)
	}
	s.durableActive = s.durableActive || durable
	// Added under the lock so Close, which sets closed under it, never
	// waits while a new subscription can still join.
	s.wg.Add(1)
	s.mu.Unlock()

	// The subscription ends with the caller's context or with Close.
	subCtx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.ctx, cancel)
	started := false
	defer func() {
		if !started {
			stopOnClose()
			cancel()
			s.done(durable)
		}
	}()

	iter, err := s.open(subCtx, topic)
	if err != nil {
		return nil, err
	}
	sub := &subscription{
		topic:   topic,
		durable: durable,
		iter:    iter,
		out:     make(chan *message.Message),
		log:     s.log.With(watermill.LogFields{"topic": topic}),
	}
	started = true
	go func() {
		defer s.done(durable)
		defer stopOnClose()
		defer cancel()
		s.run(subCtx, sub)
	}()
	return sub.out, nil
}

func (s *Subscriber) done(durable bool) {
	if durable {
		s.mu.Lock()
		s.durableActive = false
		s.mu.Unlock()
	}
	s.wg.Done()
}

// open creates the consumer and its message iterator.
func (s *Subscriber) open(ctx context.Context, topic string) (jetstream.MessagesContext, error) {
	stream, err := s.cfg.JS.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("natsbus: opening stream %s: %w", s.cfg.Stream, err)
	}
	if s.cfg.Durable == "" {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{topic}, DeliverPolicy: jetstream.DeliverNewPolicy}
		switch {
		case s.cfg.StartSeq > 0:
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, s.cfg.StartSeq
		case s.cfg.DeliverAll:
			cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		}
		cons, err := stream.OrderedConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("natsbus: creating ordered consumer on %s %s: %w", s.cfg.Stream, topic, err)
		}
		iter, err := cons.Messages(jetstream.PullExpiry(pullExpiry))
		if err != nil {
			return nil, fmt.Errorf("natsbus: consuming %s %s: %w", s.cfg.Stream, topic, err)
		}
		return iter, nil
	}

	cfg := jetstream.ConsumerConfig{
		Durable:       s.cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: topic,
		MaxDeliver:    -1, // a commit is never dropped; PoisonQueue decides when to give up
		AckWait:       s.cfg.AckWait,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if s.cfg.StartSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, s.cfg.StartSeq
	}
	// The start position only applies on creation and the server refuses
	// to change it, so an existing durable keeps its own: its acks are
	// where it stands.
	switch existing, err := stream.Consumer(ctx, s.cfg.Durable); {
	case err == nil:
		old := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("natsbus: looking up consumer %s: %w", s.cfg.Durable, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("natsbus: creating consumer %s on %s %s: %w", s.cfg.Durable, s.cfg.Stream, topic, err)
	}
	// Pull one message at a time: a prefetched message's AckWait would run
	// out while it waits behind a slow one, and come back as a duplicate.
	iter, err := cons.Messages(jetstream.PullMaxMessages(1), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return nil, fmt.Errorf("natsbus: consuming %s: %w", s.cfg.Durable, err)
	}
	return iter, nil
}

// pullExpiry bounds each pull request: a request the server no longer
// holds (dropped with a connection, taken by a message for an inbox that
// went away) leaves the subscription waiting until it expires or its
// heartbeats go missing, which the default expiry puts at 30 s.
const pullExpiry = 5 * time.Second

// run feeds the subscription's messages to its channel until ctx ends.
func (s *Subscriber) run(ctx context.Context, sub *subscription) {
	defer close(sub.out)
	defer s.stop(sub.iter)
	for {
		jm, err := sub.iter.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				// Connection closed or consumer deleted under us: nothing
				// will come any more, so end rather than spin.
				sub.log.Error("Subscription ended", err, nil)
				return
			}
			sub.log.Error("Cannot read next message, retrying", err, nil)
			if !sleep(ctx, nextRetryDelay) {
				return
			}
			continue
		}
		if !sub.handle(ctx, jm, s.cfg.NackDelay, s.cfg.AckWait) {
			return
		}
	}
}

// stop ends a subscription's pulling and waits until the server knows:
// Stop only asks for the unsubscribe, and a pull request still open on the
// server takes the next message for an inbox nobody reads, which then
// comes back only after AckWait (a restarted subscriber would wait that
// long for it). The server drops pull requests whose inbox has no
// interest, so once the unsubscribe is flushed, the next message goes to
// whoever subscribes next.
func (s *Subscriber) stop(it jetstream.MessagesContext) {
	it.Stop()
	if s.cfg.Durable == "" {
		return // an ordered consumer is this subscriber's alone
	}
	if c, ok := it.(interface{ Closed() <-chan struct{} }); ok {
		// Normally at once; bounded, as Close promises to be quick.
		select {
		case <-c.Closed():
		case <-time.After(200 * time.Millisecond):
		}
	}
	_ = s.cfg.JS.Conn().FlushTimeout(time.Second)
}

// handle delivers one JetStream message and settles it. It reports false
// when ctx ended first.
func (sub *subscription) handle(ctx context.Context, jm jetstream.Msg, nackDelay, ackWait time.Duration) bool {
	m, err := decode(jm)
	if err != nil {
		// Redelivering cannot fix a malformed message. A durable consumer
		// terminates it so it stops blocking the consumer; an ordered one
		// has nothing to settle.
		fields := watermill.LogFields{"subject": jm.Subject()}
		if sub.durable {
			sub.log.Error("Terminating undecodable message", err, fields)
			if err := jm.Term(); err != nil {
				sub.log.Error("Cannot terminate message", err, fields)
			}
		} else {
			sub.log.Error("Skipping undecodable message", err, fields)
		}
		return true
	}
	// Log fields are built only when something is logged: this runs for
	// every commit on the stream.
	fields := func() watermill.LogFields {
		return watermill.LogFields{"subject": jm.Subject(), "message_uuid": m.UUID, MetaStreamSeq: m.Metadata.Get(MetaStreamSeq)}
	}
	for {
		msgCtx, cancelMsg := context.WithCancel(ctx)
		m.SetContext(msgCtx)
		acked, ok := sub.deliver(ctx, m, jm, ackWait, fields)
		// Per the watermill contract the message context ends once it
		// is settled.
		cancelMsg()
		switch {
		case !ok:
			if sub.durable {
				// Hand it back now rather than after AckWait, so a
				// restart resumes at once.
				_ = jm.Nak()
			}
			return false
		case acked && sub.durable:
			// Wait for the server to confirm, so an acked commit is not
			// redelivered after a restart.
			actx, cancel := context.WithTimeout(context.Background(), ackTimeout)
			if err := jm.DoubleAck(actx); err != nil {
				sub.log.Error("Cannot ack message", err, fields())
			}
			cancel()
			return true
		case acked:
			return true
		case sub.durable:
			// JetStream redelivers after the delay; later commits go on
			// meanwhile.
			if err := jm.NakWithDelay(nackDelay); err != nil {
				sub.log.Error("Cannot nack message", err, fields())
			}
			return true
		default:
			// An ordered consumer has no redelivery and must not skip a
			// commit: resend the same one until it is acked.
			sub.log.Debug("Message nacked, resending", fields())
			if !sleep(ctx, resendDelay) {
				return false
			}
		}
		// A watermill message settles once, and the handler may have
		// changed the one it had: a resend is decoded afresh (it decoded
		// the first time, so it does again).
		if m, err = decode(jm); err != nil {
			sub.log.Error("Skipping undecodable message", err, fields())
			return true
		}
	}
}

// deliver sends m and waits until it is acked or nacked. ok is false when
// ctx ended first. A durable message's AckWait is extended meanwhile:
// handlers (with their retries) may take longer than AckWait, and an
// expiry would bring a duplicate.
func (sub *subscription) deliver(ctx context.Context, m *message.Message, jm jetstream.Msg, ackWait time.Duration, fields func() watermill.LogFields) (acked, ok bool) {
	select {
	case sub.out <- m:
	case <-ctx.Done():
		return false, false
	}
	var tick <-chan time.Time
	if sub.durable {
		t := time.NewTicker(ackWait / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-m.Acked():
			return true, true
		case <-m.Nacked():
			return false, true
		case <-tick:
			if err := jm.InProgress(); err != nil {
				sub.log.Error("Cannot extend ack wait", err, fields())
			}
		case <-ctx.Done():
			// Both may be ready at once; an ack that made it counts.
			select {
			case <-m.Acked():
				return true, true
			default:
				return false, false
			}
		}
	}
}

// decode turns a stored JetStream message into a watermill message.
func decode(jm jetstream.Msg) (*message.Message, error) {
	meta, err := jm.Metadata()
	if err != nil {
		return nil, fmt.Errorf("reading message metadata: %w", err)
	}
	h := jm.Headers()
	id, typ, aggID := h.Get(eventstore.HeaderCommitID), h.Get(eventstore.HeaderAggregateType), h.Get(eventstore.HeaderAggregateID)
	if id == "" || typ == "" || aggID == "" {
		// Written without the routing headers: read the body to be sure.
		c, err := eventstore.DecodeCommit(jm.Data(), h, meta.Sequence.Stream, meta.Timestamp, eventstore.Ref{})
		if err != nil {
			return nil, fmt.Errorf("stream seq %d: %w", meta.Sequence.Stream, err)
		}
		m, err := ToMessage(c)
		if err != nil {
			return nil, fmt.Errorf("stream seq %d: %w", meta.Sequence.Stream, err)
		}
		return m, nil
	}
	// The body is the commit exactly as stored: handed on as is, it is
	// decoded only by handlers that need its events.
	m := message.NewMessage(id, jm.Data())
	m.Metadata.Set(MetaAggregateType, typ)
	m.Metadata.Set(MetaAggregateID, aggID)
	m.Metadata.Set(MetaEventTypes, h.Get(eventstore.HeaderEventTypes))
	m.Metadata.Set(MetaStreamSeq, strconv.FormatUint(meta.Sequence.Stream, 10))
	m.Metadata.Set(MetaStoredAt, meta.Timestamp.UTC().Format(time.RFC3339Nano))
	return m, nil
}

// Close ends every subscription, closing its channel, and waits for them
// (at most 5s). It leaves the NATS connection open: it is shared.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(closeTimeout):
		return fmt.Errorf("natsbus: subscriptions did not stop within %s", closeTimeout)
	}
}

// sleep waits for d and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
