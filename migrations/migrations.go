// Package migrations holds the Postgres schema (the read models, and the
// command side's reservations in doubt and account snapshots) as numbered
// SQL files, embedded in the binary and applied by bun's migrator.
package migrations

import (
	"embed"

	"github.com/uptrace/bun/migrate"
)

//go:embed *.sql
var files embed.FS

// New returns the migration set. Files named *.tx.up.sql run in a
// transaction, so a failed migration leaves nothing half-applied.
func New() (*migrate.Migrations, error) {
	m := migrate.NewMigrations()
	if err := m.Discover(files); err != nil {
		return nil, err
	}
	return m, nil
}
