package app

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/adapters/natsbus"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/projections/keyindex"
)

// follower keeps this instance's in-memory state current from the event
// stream: the API-key index, and which cached aggregates another instance
// has moved. It is the same code whether a commit was made here (applied
// before the command is answered) or elsewhere (applied as it arrives).
type follower struct {
	index   *keyindex.Index
	ledger  *ledger.Ledger
	codec   *codec.Codec[account.Event]
	log     *slog.Logger
	applied atomic.Uint64 // last stream seq handled from the stream
}

func newFollower(index *keyindex.Index, log *slog.Logger) *follower {
	return &follower{index: index, codec: ledger.AccountCodec(), log: log}
}

// apply folds a commit into the in-memory state.
func (f *follower) apply(c eventstore.Commit) {
	if c.Aggregate.Type != ledger.TypeAccount {
		return
	}
	for _, ev := range c.Events {
		if !slices.Contains(indexed, ev.Type) {
			continue
		}
		d, err := f.codec.Decode(ev.Type, ev.Version, ev.Data)
		if err != nil {
			// An event this build does not know cannot change what it
			// knows about keys; say so and go on.
			f.log.Warn("follower: undecodable event", "aggregate", c.Aggregate, "seq", ev.Seq, "err", err)
			continue
		}
		f.index.Apply(c.Aggregate.ID, ev.Seq, d)
	}
}

// indexed are the events that change what the key index or the price list
// holds; commits with none of them (task traffic) are not decoded here.
var indexed = []string{account.EventOpened, account.EventPlanChanged, account.EventStatusChanged,
	account.EventKeyCreated, account.EventKeyRotated, account.EventKeyRevoked, pricing.EventModelSet}

func needsDecoding(types string) bool {
	for types != "" {
		var t string
		t, types, _ = strings.Cut(types, ",")
		if slices.Contains(indexed, t) {
			return true
		}
	}
	return false
}

// handle is the router handler for commits from the stream.
func (f *follower) handle(m *message.Message) error {
	if !needsDecoding(m.Metadata.Get(natsbus.MetaEventTypes)) {
		seq, err := strconv.ParseUint(m.Metadata.Get(natsbus.MetaStreamSeq), 10, 64)
		if err == nil {
			ref := eventstore.Ref{Type: m.Metadata.Get(natsbus.MetaAggregateType), ID: m.Metadata.Get(natsbus.MetaAggregateID)}
			if f.ledger != nil {
				f.ledger.Observe(ref, seq)
			}
			f.applied.Store(seq)
			return nil
		}
	}
	c, err := natsbus.FromMessage(m)
	if err != nil {
		f.log.Warn("follower: undecodable commit", "uuid", m.UUID, "err", err)
		return nil
	}
	f.apply(c)
	if f.ledger != nil {
		f.ledger.ObserveCommit(c)
	}
	f.applied.Store(c.StreamSeq)
	return nil
}

// run follows the stream from startSeq until ctx ends, through a watermill
// router (recovery from panics, bounded retries, logging).
func (f *follower) run(ctx context.Context, js jetstream.JetStream, stream, prefix string, startSeq uint64) (*message.Router, error) {
	wlog := watermill.NewSlogLogger(f.log.With("component", "follower"))
	sub, err := natsbus.NewSubscriber(natsbus.SubscriberConfig{
		JS: js, Stream: stream, StartSeq: startSeq, DeliverAll: startSeq <= 1, Logger: wlog,
	})
	if err != nil {
		return nil, err
	}
	// Closing waits for the subscriber, which may still be reconnecting to
	// a cluster that has just come back.
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 15 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	router.AddMiddleware(middleware.Recoverer, middleware.Retry{MaxRetries: 3, InitialInterval: 10 * time.Millisecond, Logger: wlog}.Middleware)
	router.AddConsumerHandler("follower", prefix+".>", sub, f.handle)
	go func() {
		if err := router.Run(ctx); err != nil {
			f.log.Error("follower stopped", "err", err)
		}
	}()
	select {
	case <-router.Running():
	case <-time.After(10 * time.Second):
		return router, fmt.Errorf("follower did not start")
	}
	return router, nil
}

// catchUp waits until the follower has handled the stream's head as it was
// when called, so a key created just before start is known at once.
func (f *follower) catchUp(ctx context.Context, js jetstream.JetStream, stream string, after uint64) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	head := info.State.LastSeq
	for head > after && f.applied.Load() < head {
		select {
		case <-ctx.Done():
			return fmt.Errorf("follower catching up to %d (at %d): %w", head, f.applied.Load(), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// poisonSink publishes a projection's poison commit to the poison stream,
// where staff can inspect it, through watermill's publisher.
type poisonSink struct {
	pub *natsbus.Publisher
	log *slog.Logger
}

func (p poisonSink) Poisoned(_ context.Context, projection string, c eventstore.Commit, cause error) {
	msg, err := natsbus.ToMessage(c)
	if err == nil {
		msg.Metadata.Set("projection", projection)
		msg.Metadata.Set("reason", cause.Error())
		err = p.pub.Publish(poisonSubject+"."+projection, msg)
	}
	if err != nil {
		p.log.Error("publishing poison commit", "projection", projection, "stream_seq", c.StreamSeq, "err", err)
	}
}

const (
	poisonStream  = "LEDGER_POISON"
	poisonSubject = "ledger_poison"
)
