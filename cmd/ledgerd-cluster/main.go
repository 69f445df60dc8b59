// Command ledgerd-cluster starts a local cluster for a person to try: a
// 3-node NATS JetStream cluster (real nats-server processes built from the
// module ledgerd requires), Postgres (embedded), and two ledgerd instances
// sharing them, all on loopback. Ctrl-C stops everything.
//
//	go run ./cmd/ledgerd-cluster            (make cluster)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ledgerd-cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "./.cluster", "where binaries, NATS stores, Postgres and ledgerd data live (kept across runs)")
	roles := flag.String("roles", "all,all", "one ledgerd per comma-separated role (all, api, projector, worker; + joins roles: projector+worker)")
	port := flag.Int("port", 8081, "HTTP port of the first ledgerd; the others follow")
	quiet := flag.Bool("quiet", false, "write process output to the log files only")
	flag.Parse()
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	spec := Spec{Dir: abs, NATSNodes: 3, AdminEmail: "admin@ledgerd.local", AdminPassword: "cluster-admin-password",
		Log: log, Quiet: *quiet}
	for i, r := range strings.Split(*roles, ",") {
		spec.Roles = append(spec.Roles, strings.ReplaceAll(r, "+", ","))
		spec.HTTPPorts = append(spec.HTTPPorts, *port+i)
	}
	fmt.Println("building nats-server and ledgerd, starting 3 NATS nodes, Postgres and", len(spec.Roles), "ledgerd instances...")
	c, err := Start(ctx, spec)
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("\nlocal ledgerd cluster is running (data in %s)\n\n", abs)
	for i, r := range spec.Roles {
		fmt.Printf("  ledgerd-%d  %s  (role %s; log %s)\n", i+1, c.URL(i), r, c.ledgerd[i].log)
	}
	fmt.Printf("  NATS       %s  (stream LEDGER, 3 replicas)\n", c.NATSURL())
	fmt.Printf("  Postgres   %s\n", c.DatabaseURL())
	fmt.Printf("  Admin      %s / %s\n\n", spec.AdminEmail, spec.AdminPassword)
	fmt.Printf("  Try: curl -s %s/readyz; kill -9 a nats-server (ps aux | grep nats-server) and watch /readyz stay 200.\n", c.URL(0))
	fmt.Printf("  Ctrl-C stops everything.\n\n")
	<-ctx.Done()
	fmt.Println("stopping...")
	return nil
}
