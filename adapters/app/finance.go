package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/audit"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/ids"
	"github.com/ledgerd/ledgerd/projections"
)

// finance implements httpapi.Finance over the event store and read models.
type finance struct {
	store  *eventstore.JetStream
	js     jetstream.JetStream
	reader *projections.Reader
	states audit.StoredStates
}

func (f finance) AccountEvents(ctx context.Context, accountID string, fn func(eventstore.Event) error) error {
	if !ids.Valid("acc", accountID) {
		return account.ErrNotFound
	}
	return f.store.Scan(ctx, ledger.TypeAccount, accountID, 0, func(c eventstore.Commit) error {
		for _, e := range c.Events {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

func (f finance) BalanceAsOf(ctx context.Context, accountID string, asOf time.Time) (audit.Balance, error) {
	return audit.BalanceAsOf(ctx, f.store, accountID, asOf)
}

func (f finance) Verify(ctx context.Context, accountID string) (audit.Report, error) {
	return audit.Verify(ctx, f.store, f.reader, f.states, accountID)
}

func (f finance) Head(ctx context.Context) (uint64, error) { return f.store.Head(ctx) }

func (f finance) Accounts(ctx context.Context, after string, limit int) ([]projections.AccountRow, error) {
	return f.reader.Accounts(ctx, after, limit)
}

// Follow reads the stream live with an ordered consumer: a gap-free,
// in-order view that needs no cleanup when the client goes away.
func (f finance) Follow(ctx context.Context, after uint64, fn func(eventstore.Commit) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.store.SubjectPrefix() + ".>"},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1}
	cons, err := f.js.OrderedConsumer(ctx, f.store.StreamName(), cfg)
	if err != nil {
		return fmt.Errorf("following the stream: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return err
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		c, err := eventstore.DecodeCommit(m.Data(), m.Headers(), md.Sequence.Stream, md.Timestamp, eventstore.Ref{})
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
	}
}
