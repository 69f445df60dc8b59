// Command ledgerd runs the billing ledger: with no configuration it starts
// an embedded NATS JetStream server and an embedded Postgres under the data
// dir, and serves the HTTP API.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/adapters/app"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ledgerd:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ledgerd", flag.ContinueOnError)
	role := fs.String("role", "", "what this instance runs: all, api, projector, worker, or a comma-separated list (default $LEDGER_ROLE, else all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := app.EnvFromOS()
	if err != nil {
		return err
	}
	if *role != "" {
		if cfg.Role, err = app.ParseRoles(*role); err != nil {
			return fmt.Errorf("--role: %w", err)
		}
	}
	log := newLogger(cfg)
	app.TuneRuntime()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	a, err := app.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info("ledgerd ready", "url", a.URL(), "nats", a.NATSURL(), "started_in_ms", a.StartedIn.Milliseconds())
	printBanner(out, a)

	<-ctx.Done()
	log.Info("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Close(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

func newLogger(cfg app.Config) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func printBanner(out io.Writer, a *app.App) {
	b := a.Bootstrap
	fmt.Fprintf(out, "\nledgerd is running (started in %d ms)\n\n", a.StartedIn.Milliseconds())
	fmt.Fprintf(out, "  API        %s\n", a.URL())
	fmt.Fprintf(out, "  Dashboard  %s/dashboard\n", a.URL())
	fmt.Fprintf(out, "  NATS       %s\n", a.NATSURL())
	fmt.Fprintf(out, "  Role       %s\n\n", a.Role())
	if b.AdminPassword != "" {
		fmt.Fprintf(out, "  Admin login     %s / %s\n", b.AdminEmail, b.AdminPassword)
	} else {
		fmt.Fprintf(out, "  Admin login     %s (password from LEDGER_ADMIN_PASSWORD)\n", b.AdminEmail)
	}
	if b.DemoAccountID != "" {
		fmt.Fprintf(out, "  Demo customer   %s / %s  (account %s, balance $%s)\n", b.DemoEmail, b.DemoPassword, b.DemoAccountID, b.DemoBalance)
		fmt.Fprintf(out, "  Demo API key    %s  (shown once; a new one is issued at every start)\n", b.DemoKey)
	}
	fmt.Fprintf(out, "\n  Try it:\n")
	fmt.Fprintf(out, "    TOKEN=$(curl -s %s/api/auth/login -H 'Content-Type: application/json' \\\n", a.URL())
	fmt.Fprintf(out, "      -d '{\"email\":\"%s\",\"password\":\"%s\"}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')\n", b.AdminEmail, b.AdminPassword)
	if b.DemoAccountID != "" {
		fmt.Fprintf(out, "    curl -s %s/api/admin/accounts/%s/topups -H \"Authorization: Bearer $TOKEN\" \\\n", a.URL(), b.DemoAccountID)
		fmt.Fprintf(out, "      -H 'Content-Type: application/json' -d '{\"amount\":\"10.00\",\"reference\":\"my-first-topup\"}'\n")
		fmt.Fprintf(out, "    curl -s %s/api/admin/accounts/%s -H \"Authorization: Bearer $TOKEN\"\n", a.URL(), b.DemoAccountID)
		fmt.Fprintf(out, "    curl -s %s/api/v1/wallet -H \"Authorization: Bearer %s\"\n", a.URL(), b.DemoKey)
	}
	fmt.Fprintln(out)
}
