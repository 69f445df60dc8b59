// Package pgtest gives tests real Postgres databases: one embedded server
// per test binary, a fresh database per test.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) { dsn := pgtest.NewDatabase(t); ... }
//
// With LEDGER_TEST_DATABASE_URL set, databases are created on that server
// instead and no embedded server is started.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledgerd/ledgerd/adapters/pgembed"
)

// Set once by Main before any test runs, read-only afterwards.
var (
	server   *pgembed.Server
	external string // LEDGER_TEST_DATABASE_URL
	started  bool
)

// Main starts one embedded Postgres for the whole test binary (temp dir,
// Durable: false), runs m.Run(), stops it, and exits with the code. Call it
// from TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if u := os.Getenv("LEDGER_TEST_DATABASE_URL"); u != "" {
		external, started = u, true
		return m.Run()
	}

	dir, err := os.MkdirTemp("", "ledgerd-pgtest-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := pgembed.PrepareTestDir(dir); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	srv, err := pgembed.Start(ctx, pgembed.Config{Dir: dir, Durable: false})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: starting embedded postgres: %v\n", err)
		return 1
	}
	server, started = srv, true
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}()
	return m.Run()
}

// Server returns the embedded server, for tests that stop or restart it.
// It is nil when LEDGER_TEST_DATABASE_URL is used.
func Server() *pgembed.Server { return server }

// NewDatabase creates a fresh, uniquely named database and returns its DSN.
// The database is dropped (WITH (FORCE)) when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	if !started {
		// Skipping would let a package silently lose its database tests.
		t.Fatal("pgtest: NewDatabase needs the package's TestMain to call pgtest.Main(m)")
	}
	name, err := databaseName(t.Name())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := withAdmin(ctx, func(conn *pgx.Conn) error {
		return createDatabase(ctx, conn, name)
	}); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := withAdmin(ctx, func(conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			return err
		}); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})

	dsn, err := databaseDSN(name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

func withAdmin(ctx context.Context, f func(*pgx.Conn) error) error {
	dsn := external
	if server != nil {
		dsn = server.DSN("postgres")
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return f(conn)
}

func createDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	for {
		_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		// object_in_use: the template was busy (another session in
		// template1, e.g. a concurrent test on a shared external server).
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func databaseDSN(name string) (string, error) {
	if server != nil {
		return server.DSN(name), nil
	}
	if strings.HasPrefix(external, "postgres://") || strings.HasPrefix(external, "postgresql://") {
		u, err := url.Parse(external)
		if err != nil {
			return "", fmt.Errorf("pgtest: LEDGER_TEST_DATABASE_URL: %w", err)
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String(), nil
	}
	// Keyword/value form: a later dbname overrides an earlier one.
	return external + " dbname=" + name, nil
}

// databaseName derives a readable, unique, valid identifier from the test
// name; the random part keeps parallel test binaries on a shared external
// server apart.
func databaseName(testName string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	suffix := make([]byte, 5)
	if _, err := rand.Read(suffix); err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	return "t_" + b.String() + "_" + hex.EncodeToString(suffix), nil
}
