// Package natsembed runs the NATS server with JetStream inside the ledgerd
// process, and connects clients to it or to an external cluster.
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config for the embedded server.
type Config struct {
	Dir    string // JetStream file storage
	Addr   string // host:port to listen on; port -1 picks a free one
	Name   string // server name, stable across restarts so JetStream finds its data
	Logger *slog.Logger
}

// Start runs an in-process NATS server with JetStream and waits until it
// accepts connections.
func Start(cfg Config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("natsembed: address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("natsembed: port %q: %w", portStr, err)
	}
	if cfg.Name == "" {
		cfg.Name = "ledgerd"
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		// The embedded server is for one machine: loopback only, and
		// refuse to start rather than expose it when asked otherwise.
		NoSigs:                true,
		MaxPayload:            8 << 20,
		DisableShortFirstPing: true,
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("natsembed: the embedded server listens on loopback only, not %q; use NATS_URL for a cluster", host)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(logger{cfg.Logger}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("natsembed: server not ready within 30s")
	}
	return ns, nil
}

// Connect opens a client connection: in-process to srv when it is not nil
// (no TCP on the hot path), otherwise to url (one server or a comma
// separated cluster list). It keeps reconnecting forever, since ledgerd
// reports unavailability per request rather than dying.
func Connect(ctx context.Context, srv *server.Server, url, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		// While disconnected, fail publishes at once instead of buffering
		// them: a command then answers 503 promptly, and nothing is left
		// half-sent to land later.
		nats.ReconnectBufSize(-1),
		// The only synchronous subscriptions here are the event store's
		// direct-get batch reads (512 replies and an end marker at most):
		// nats.go's default channel of 65,536 slots allocated 512 KB for
		// every aggregate load (cold caches, reloads after a conflict).
		nats.SyncQueueLen(1024),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}
	if srv != nil {
		opts = append(opts, nats.InProcessServer(srv))
		url = srv.ClientURL()
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsembed: connecting to %s: %w", url, err)
	}
	return nc, nil
}

// logger adapts the server's logger to slog.
type logger struct{ l *slog.Logger }

func (l logger) Noticef(format string, v ...any) {
	l.l.Debug(fmt.Sprintf(format, v...), "component", "nats")
}
func (l logger) Warnf(format string, v ...any) {
	l.l.Warn(fmt.Sprintf(format, v...), "component", "nats")
}
func (l logger) Fatalf(format string, v ...any) {
	l.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}
func (l logger) Errorf(format string, v ...any) {
	l.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}
func (l logger) Debugf(format string, v ...any) {}
func (l logger) Tracef(format string, v ...any) {}
