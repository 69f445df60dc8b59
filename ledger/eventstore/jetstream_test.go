package eventstore_test

import (
	"context"
	"testing"

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
