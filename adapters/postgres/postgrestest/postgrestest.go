// Package postgrestest gives tests a database of their own with ledgerd's
// schema, on the Postgres that pgtest runs for the test binary. It is apart
// from pgtest because it needs the postgres adapter, whose own tests use
// pgtest.
package postgrestest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/adapters/pgembed/pgtest"
	"github.com/ledgerd/ledgerd/adapters/postgres"
)

// Migrated is a new database for the test with every migration applied,
// opened with up to conns connections and closed after the test; dsn
// reopens it.
func Migrated(t testing.TB, conns int) (db *bun.DB, dsn string) {
	t.Helper()
	dsn = pgtest.NewDatabase(t)
	db = Open(t, dsn, conns)
	if err := postgres.Migrate(context.Background(), db, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return db, dsn
}

// Open opens the database at dsn with up to conns connections, closed
// after the test.
func Open(t testing.TB, dsn string, conns int) *bun.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), dsn, conns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
