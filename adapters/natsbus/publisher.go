package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	JS     jetstream.JetStream
	Logger watermill.LoggerAdapter // default watermill.NopLogger{}
}

// Publisher is a watermill message.Publisher onto JetStream subjects. It is
// for auxiliary topics such as the poison queue; the event store appends
// commits itself. A stream must cover every subject published to.
type Publisher struct {
	js     jetstream.JetStream
	log    watermill.LoggerAdapter
	closed atomic.Bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher checks the config and fills in defaults.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.JS == nil {
		return nil, errors.New("natsbus: publisher needs a JetStream context")
	}
	if cfg.Logger == nil {
		cfg.Logger = watermill.NopLogger{}
	}
	return &Publisher{js: cfg.JS, log: cfg.Logger}, nil
}

// Publish stores each message on subject topic and waits for the stream's
// ack, stopping at the first failure. The payload is the data, the
// metadata become headers, and the UUID becomes Nats-Msg-Id so a retried
// publish within the stream's dedup window is stored once.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return errors.New("natsbus: publisher is closed")
	}
	for _, m := range msgs {
		nm, err := toNATS(topic, m)
		if err != nil {
			return err
		}
		ack, err := p.js.PublishMsg(m.Context(), nm)
		if err != nil {
			return fmt.Errorf("natsbus: publishing message %s to %s: %w", m.UUID, topic, err)
		}
		p.log.Trace("Message published", watermill.LogFields{
			"message_uuid": m.UUID, "topic": topic, "stream": ack.Stream, MetaStreamSeq: ack.Sequence,
		})
	}
	return nil
}

// headerValues drops the line breaks a NATS header value cannot hold;
// error texts (such as the poison queue's reason) often contain them.
var headerValues = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

func toNATS(topic string, m *message.Message) (*nats.Msg, error) {
	nm := nats.NewMsg(topic)
	nm.Data = m.Payload
	for k, v := range m.Metadata {
		// "Nats-" headers steer the server (expected stream, sequence,
		// TTL...); metadata must never do that by accident.
		if k == "" || strings.ContainsAny(k, ": \t\r\n") || strings.HasPrefix(strings.ToLower(k), "nats-") {
			return nil, fmt.Errorf("natsbus: message %s: metadata key %q cannot be a NATS header", m.UUID, k)
		}
		nm.Header.Set(k, headerValues.Replace(v))
	}
	if m.UUID != "" {
		nm.Header.Set(nats.MsgIdHdr, m.UUID)
	}
	return nm, nil
}

// Close stops further publishing. Publish is synchronous, so there is
// nothing to flush, and the shared connection stays open.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}

// EnsurePoisonStream creates or updates the stream that keeps messages
// handlers gave up on, e.g. name "LEDGER_POISON", subject "ledger_poison.>".
// They are kept on disk for 30 days, long enough to inspect and replay.
func EnsurePoisonStream(ctx context.Context, js jetstream.JetStream, name, subject string, replicas int) error {
	if replicas <= 0 {
		replicas = 1
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "ledgerd poison queue: messages handlers gave up on",
		Subjects:    []string{subject},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
	})
	if err != nil {
		return fmt.Errorf("natsbus: creating poison stream %s on %s: %w", name, subject, err)
	}
	return nil
}
