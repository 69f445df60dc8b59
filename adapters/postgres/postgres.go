// Package postgres connects to the read-model database with bun and brings
// its schema up to date.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/migrate"

	"github.com/ledgerd/ledgerd/ledger/aggregates"
	"github.com/ledgerd/ledgerd/migrations"
)

// Open connects to dsn and checks the connection.
func Open(ctx context.Context, dsn string, maxConns int) (*bun.DB, error) {
	return OpenSchema(ctx, dsn, "", maxConns)
}

// OpenSchema is Open with every connection's search_path set to schema
// (the replay writes the same table names into its own schema).
func OpenSchema(ctx context.Context, dsn, schema string, maxConns int) (*bun.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: parsing DATABASE_URL: %w", err)
	}
	if schema != "" {
		cfg.RuntimeParams["search_path"] = schema
	}
	cfg.ConnectTimeout = 2 * time.Second
	sqldb := stdlib.OpenDB(*cfg)
	if maxConns <= 0 {
		maxConns = 20
	}
	sqldb.SetMaxOpenConns(maxConns)
	sqldb.SetMaxIdleConns(maxConns)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	db := bun.NewDB(sqldb, pgdialect.New())
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("postgres: connecting: %w", err)
	}
	return db, nil
}

// Migrate applies every pending migration. An advisory lock serializes
// instances starting at once; unlike a lock row it is released by Postgres
// if the holder dies. Each migration is marked applied only once it has
// succeeded.
func Migrate(ctx context.Context, db *bun.DB, log *slog.Logger) error {
	ms, err := migrations.New()
	if err != nil {
		return fmt.Errorf("postgres: loading migrations: %w", err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer conn.Close()
	key := LockKey("ledgerd-migrations")
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(?)", key); err != nil {
		return fmt.Errorf("postgres: migration lock: %w", err)
	}
	defer func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?)", key)
	}()
	m := migrate.NewMigrator(db, ms, migrate.WithMarkAppliedOnSuccess(true))
	if err := m.Init(ctx); err != nil {
		return fmt.Errorf("postgres: migrate init: %w", err)
	}
	group, err := m.Migrate(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if !group.IsZero() {
		log.Info("migrations applied", "group", group.ID, "migrations", group.Migrations.String())
	}
	return nil
}

// LockKey is the advisory lock key TryLock takes for name (pg_locks shows
// it as classid, the high 32 bits, and objid, the low ones).
func LockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64() >> 1)
}

// IsTransient reports whether err is the database being unreachable or
// briefly unable to serve (restart, failover, deadlock), as opposed to a
// statement that will fail the same way every time.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) >= 2 && pgErr.Code[:2] == "08": // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // shutdown, crash, cannot connect now
			return true
		case pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return true
		case pgErr.Code == "53300": // too many connections
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, context.DeadlineExceeded) || pgconn.SafeToRetry(err) ||
		errors.Is(err, driverBadConn)
}

// Lease is a session-level advisory lock held on a dedicated connection.
// Postgres keeps it for as long as that session lives, and no longer: a
// Postgres restart or a cut connection hands it to whoever asks next, so
// the holder watches its session and says when the lock is gone.
type Lease struct {
	conn   bun.Conn
	key    int64
	lost   chan struct{}
	stop   chan struct{}
	closed chan struct{}
}

// leaseCheck is how often a lease checks that its session still lives.
const leaseCheck = 500 * time.Millisecond

// TryLock takes the named advisory lock if nobody holds it. ok is false
// when another session does.
func TryLock(ctx context.Context, db *bun.DB, name string) (lease *Lease, ok bool, err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	key := LockKey(name)
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock(?)", key).Scan(&ok); err != nil || !ok {
		conn.Close()
		return nil, false, err
	}
	l := &Lease{conn: conn, key: key, lost: make(chan struct{}), stop: make(chan struct{}), closed: make(chan struct{})}
	go l.watch()
	return l, true, nil
}

// watch closes lost once the session holding the lock stops answering.
func (l *Lease) watch() {
	defer close(l.closed)
	t := time.NewTicker(leaseCheck)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*leaseCheck)
		err := l.conn.PingContext(ctx)
		cancel()
		if err != nil {
			close(l.lost)
			return
		}
	}
}

// Lost is closed when the lock may be held by someone else now.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release gives the lock back and closes its connection.
func (l *Lease) Release() {
	close(l.stop)
	<-l.closed
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.conn.ExecContext(ctx, "SELECT pg_advisory_unlock(?)", l.key)
	l.conn.Close()
}

// Doubts keeps reservations in doubt (ledger.Doubts) in Postgres, where
// every instance sees them and a restart keeps them.
type Doubts struct{ db *bun.DB }

// NewDoubts returns the store of reservations in doubt over db.
func NewDoubts(db *bun.DB) *Doubts { return &Doubts{db: db} }

// Mark records a reservation answered 503 with an unknown outcome, and
// forgets those older than doubtsKept. Marks come only with 503s, so
// pruning as they come keeps the table to the last few days' outages
// without a loop of its own.
func (d *Doubts) Mark(ctx context.Context, accountID, taskID string) error {
	_, err := d.db.ExecContext(ctx, `WITH pruned AS (
			DELETE FROM reservations_in_doubt WHERE marked_at < now() - ?::interval)
		INSERT INTO reservations_in_doubt (task_id, account_id) VALUES (?, ?)
		ON CONFLICT (task_id) DO NOTHING`, doubtsKept, taskID, accountID)
	return err
}

// doubtsKept is how long a mark is kept: twice the day Has looks back.
const doubtsKept = "2 days"

// Has reports whether a reservation was marked in doubt in the last day
// (after that its hold has long expired and been released anyway).
func (d *Doubts) Has(ctx context.Context, taskID string) (bool, error) {
	var n int
	err := d.db.NewRaw(`SELECT count(*) FROM reservations_in_doubt
		WHERE task_id = ? AND marked_at > now() - interval '1 day'`, taskID).Scan(ctx, &n)
	return n > 0, err
}

// Snapshots keeps one aggregate type's snapshots (aggregates.Snapshots) in
// Postgres.
type Snapshots struct {
	db  *bun.DB
	typ string
}

// NewSnapshots returns the snapshot store of aggregates of type typ.
func NewSnapshots(db *bun.DB, typ string) *Snapshots { return &Snapshots{db: db, typ: typ} }

// Get returns id's snapshot; false if it has none.
func (s *Snapshots) Get(ctx context.Context, id string) (aggregates.Snapshot, bool, error) {
	var snap aggregates.Snapshot
	err := s.db.QueryRowContext(ctx, `SELECT stream_seq, seq, hash, state FROM aggregate_snapshots
		WHERE aggregate_type = ? AND aggregate_id = ?`, s.typ, id).Scan(&snap.StreamSeq, &snap.Seq, &snap.Hash, &snap.State)
	if errors.Is(err, sql.ErrNoRows) {
		return aggregates.Snapshot{}, false, nil
	}
	return snap, err == nil, err
}

// Put stores id's snapshot unless a later one is stored already (two
// instances may take snapshots of one aggregate).
func (s *Snapshots) Put(ctx context.Context, id string, snap aggregates.Snapshot) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO aggregate_snapshots
			(aggregate_type, aggregate_id, stream_seq, seq, hash, state) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET stream_seq = excluded.stream_seq,
			seq = excluded.seq, hash = excluded.hash, state = excluded.state, taken_at = now()
		WHERE aggregate_snapshots.stream_seq < excluded.stream_seq`,
		s.typ, id, snap.StreamSeq, snap.Seq, snap.Hash, snap.State)
	return err
}

// Positions is the stream position of each snapshot (of one aggregate if
// id is set): what an audit folds to, to compare.
func (s *Snapshots) Positions(ctx context.Context, id string) (map[string]uint64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT aggregate_id, stream_seq FROM aggregate_snapshots
		WHERE aggregate_type = ? AND (? = '' OR aggregate_id = ?)`, s.typ, id, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var aid string
		var seq uint64
		if err := rows.Scan(&aid, &seq); err != nil {
			return nil, err
		}
		out[aid] = seq
	}
	return out, rows.Err()
}
