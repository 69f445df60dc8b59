package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/adapters/pgembed/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestDatabasesAreFreshAndIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	if a == b {
		t.Fatalf("same DSN twice: %s", a)
	}
	ca, cb := connect(t, a), connect(t, b)
	if _, err := ca.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := cb.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 't'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("table created in one database is visible in another")
	}
}

func TestDatabaseIsDroppedAfterTest(t *testing.T) {
	t.Parallel()
	var name string
	ctx := context.Background()
	t.Run("user", func(sub *testing.T) {
		// Still connected when the drop runs, as a leaked pool would be:
		// closed by the parent, after the subtest's cleanups.
		leaked, err := pgx.Connect(ctx, pgtest.NewDatabase(sub))
		if err != nil {
			sub.Fatal(err)
		}
		t.Cleanup(func() { leaked.Close(ctx) })
		if err := leaked.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			sub.Fatal(err)
		}
	})
	conn := connect(t, pgtest.NewDatabase(t))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestServer(t *testing.T) {
	s := pgtest.Server()
	if os.Getenv("LEDGER_TEST_DATABASE_URL") != "" {
		if s != nil {
			t.Error("embedded server started although LEDGER_TEST_DATABASE_URL is set")
		}
		return
	}
	if s == nil || s.Port() == 0 {
		t.Fatalf("Server() = %v", s)
	}
}
