// Package natstest starts real in-process NATS servers for tests.
package natstest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/adapters/natsembed"
)

// Server starts a JetStream server on a random loopback port with storage
// in a temp dir, shut down when the test ends.
func Server(t testing.TB) *server.Server {
	t.Helper()
	return ServerAt(t, t.TempDir())
}

// ServerAt starts a server on the given storage dir (for restart tests).
func ServerAt(t testing.TB, dir string) *server.Server {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Config{Dir: dir, Addr: "127.0.0.1:-1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("starting nats: %v", err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// JetStream connects to srv over TCP (as a second process would) and
// returns a JetStream context, closed when the test ends.
func JetStream(t testing.TB, srv *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := natsembed.Connect(context.Background(), nil, srv.ClientURL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
