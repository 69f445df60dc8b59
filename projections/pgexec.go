package projections

import (
	"context"
	"database/sql"

	"github.com/uptrace/bun"
)

// columnQuery is a statement that takes its rows column-wise, one array
// parameter per column ($1, $2, ... in its text), run through the driver's
// extended protocol: pgx sends the arrays in binary and the statement is
// prepared once per connection. Formatting the arrays into the query text
// instead (bun's ? placeholders) cost more Go time than building the rows,
// and Postgres as much again to parse them back, on every batch.
type columnQuery struct {
	tx      bun.Tx
	query   string
	columns []any
}

func columns(tx bun.Tx, query string, cols ...any) columnQuery {
	return columnQuery{tx: tx, query: query, columns: cols}
}

// Exec runs the statement.
func (q columnQuery) Exec(ctx context.Context) (sql.Result, error) {
	return q.tx.Tx.ExecContext(ctx, q.query, q.columns...)
}

// Scan runs the statement and scans what it returns into dest, a bun
// model, as bun's own Scan would.
func (q columnQuery) Scan(ctx context.Context, dest any) error {
	rows, err := q.tx.Tx.QueryContext(ctx, q.query, q.columns...)
	if err != nil {
		return err
	}
	// Any query of the transaction leads to its *bun.DB (the model
	// scanner); the query itself is never run.
	return q.tx.NewRaw("").DB().ScanRows(ctx, rows, dest)
}
