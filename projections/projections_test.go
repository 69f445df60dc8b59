package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"
	"golang.org/x/crypto/bcrypt"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/adapters/pgembed/pgtest"
	"github.com/ledgerd/ledgerd/adapters/postgres"
	"github.com/ledgerd/ledgerd/adapters/postgres/postgrestest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type env struct {
	db    *bun.DB
	js    jetstream.JetStream
	store *eventstore.JetStream
	l     *ledger.Ledger
	cfg   RunnerConfig
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	db, _ := postgrestest.Migrated(t, 10)
	_, js := natstest.JetStream(t, natstest.Server(t))
	store, err := eventstore.OpenJetStream(ctx, js, eventstore.JetStreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(store, ledger.Config{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	return &env{db: db, js: js, store: store, l: l, cfg: RunnerConfig{
		DB: db, JS: js, Stream: store.StreamName(), SubjectPrefix: store.SubjectPrefix(),
		Logger: slog.New(slog.DiscardHandler), IsTransient: postgres.IsTransient, Lock: pgLock(db),
	}}
}

// pgLock is the runner's lock as ledgerd wires it: a Postgres advisory
// lock on its own session.
func pgLock(db *bun.DB) func(context.Context, string) (Lease, bool, error) {
	return func(ctx context.Context, name string) (Lease, bool, error) {
		l, ok, err := postgres.TryLock(ctx, db, name)
		if !ok {
			return nil, false, err
		}
		return l, true, nil
	}
}

// start runs a runner until the test ends (or stop is called).
func (e *env) start(t *testing.T, r *Runner) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, r *Runner, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.WaitFor(ctx, seq); err != nil {
		t.Fatalf("%s did not reach %d (at %d, %+v): %v", r.Name(), seq, r.Position(), r.Status(), err)
	}
}

var meta = ledger.Meta{Actor: "usr_admin"}

func (e *env) account(t *testing.T, email string) ledger.AccountView {
	t.Helper()
	a, err := e.l.CreateAccount(context.Background(), meta, email, "password123", account.PlanStandard)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (e *env) topUp(t *testing.T, id, amount, ref string) uint64 {
	t.Helper()
	res, err := e.l.TopUp(context.Background(), meta, id, money.MustParse(amount), ref)
	if err != nil {
		t.Fatal(err)
	}
	return res.StreamSeq
}

func TestAccountsProjection(t *testing.T) {
	e := newEnv(t)
	r := NewRunner(e.cfg, NewAccounts())
	e.start(t, r)
	a := e.account(t, "a@example.com")
	b := e.account(t, "b@example.com")
	e.topUp(t, a.ID, "10.00", "r1")
	e.topUp(t, a.ID, "15.50", "r2")
	e.topUp(t, a.ID, "15.50", "r2") // retry: credited once
	plan := account.PlanPro
	if _, err := e.l.UpdateAccount(context.Background(), meta, b.ID, &plan, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, e.l.AccountSeq(a.ID))
	waitFor(t, r, e.l.AccountSeq(b.ID))

	reader := NewReader(e.db)
	w, err := reader.Wallet(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Available.StringFixed(2); got != "25.50" {
		t.Fatalf("wallet available = %s, want 25.50", got)
	}
	acc, err := reader.Account(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if acc.Plan != "pro" || acc.Status != "active" {
		t.Fatalf("account b = %+v, want plan pro, active", acc)
	}
	var n int
	if err := e.db.NewSelect().Table("topups").ColumnExpr("count(*)").Where("account_id = ?", a.ID).Scan(context.Background(), &n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("top-up rows = %d, want 2", n)
	}
	if st := r.Status(); st.State != "running" || st.LagEvents != 0 {
		t.Fatalf("status = %+v, want running with no lag", st)
	}
}

// TestExactlyOnceAcrossCrashBeforeAck kills the runner after its
// transaction commits and before the ack, many times over: each batch is
// then redelivered to the next runner, which must skip it. A set of
// projections, whose deliveries are acknowledged once every projection has
// applied them, is killed the same way.
func TestExactlyOnceAcrossCrashBeforeAck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(e *env, cfg RunnerConfig) (run func(context.Context), wait func(t *testing.T, seq uint64))
	}{
		{"one projection", func(e *env, cfg RunnerConfig) (func(context.Context), func(*testing.T, uint64)) {
			r := NewRunner(cfg, NewAccounts())
			return r.Run, func(t *testing.T, seq uint64) { waitFor(t, r, seq) }
		}},
		{"a set", func(e *env, cfg RunnerConfig) (func(context.Context), func(*testing.T, uint64)) {
			set := NewSet(cfg, NewAccounts(), NewStatement(), NewUsers())
			return set.Run, func(t *testing.T, seq uint64) {
				for _, name := range []string{"accounts", "statement", "users"} {
					waitFor(t, set.Runner(name), seq)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.account(t, "crash@example.com")
			var last uint64
			for i := range 20 {
				last = e.topUp(t, a.ID, "10.00", fmt.Sprintf("r%d", i))
			}
			errCrash := errors.New("crash")
			for range 5 {
				cfg := e.cfg
				cfg.MaxBatch = 3
				crashed := make(chan struct{})
				cfg.beforeAck = func() error {
					select {
					case <-crashed:
					default:
						close(crashed)
					}
					return errCrash
				}
				run, _ := tc.start(e, cfg)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); run(ctx) }()
				select {
				case <-crashed:
				case <-time.After(10 * time.Second):
					t.Fatal("runner never committed a batch")
				}
				cancel()
				<-done
			}
			run, wait := tc.start(e, e.cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); run(ctx) }()
			defer func() { cancel(); <-done }()
			wait(t, last)
			w, err := NewReader(e.db).Wallet(context.Background(), a.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := w.Available.StringFixed(2); got != "200.00" {
				t.Fatalf("available = %s after crashes before ack, want 200.00", got)
			}
			var lines int
			var balance string
			if err := e.db.NewRaw("SELECT count(*), max(balance_after)::text FROM wallet_entries WHERE account_id = ?", a.ID).
				Scan(context.Background(), &lines, &balance); err != nil {
				t.Fatal(err)
			}
			if tc.name == "a set" && (lines != 20 || balance != "200.00") {
				t.Fatalf("statement: %d lines ending at %s, want 20 ending at 200.00", lines, balance)
			}
		})
	}
}

// poisonable wraps a projection and fails on one stream sequence until
// fixed, like a bug that a later deploy repairs.
type poisonable struct {
	Projection
	poisonSeq uint64
	fixed     bool
}

func (p *poisonable) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
	for _, c := range commits {
		if c.StreamSeq == p.poisonSeq && !p.fixed {
			return fmt.Errorf("cannot apply seq %d", c.StreamSeq)
		}
	}
	return p.Projection.Apply(ctx, tx, commits)
}

func TestPoisonEventStopsOnlyItsProjection(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "poison@example.com")
	e.topUp(t, a.ID, "10.00", "r1")
	bad := e.topUp(t, a.ID, "20.00", "r2")
	last := e.topUp(t, a.ID, "30.00", "r3")

	proj := &poisonable{Projection: NewAccounts(), poisonSeq: bad}
	set := NewSet(e.cfg, proj, NewUsers())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go set.Run(ctx)

	accounts := set.Runner("accounts")
	waitFor(t, accounts, bad-1) // everything before the poison is applied
	deadline := time.Now().Add(10 * time.Second)
	for accounts.Status().State != "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("status = %+v, want failed", accounts.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := accounts.Status()
	if st.ErrorSeq != bad || st.Position != bad-1 {
		t.Fatalf("status = %+v, want failed at %d, position %d", st, bad, bad-1)
	}
	// The other projection is unaffected.
	waitFor(t, set.Runner("users"), 1)
	if st := set.Runner("users").Status(); st.State != "running" {
		t.Fatalf("users status = %+v, want running", st)
	}
	w, _ := NewReader(e.db).Wallet(context.Background(), a.ID)
	if got := w.Available.StringFixed(2); got != "10.00" {
		t.Fatalf("available before fix = %s, want 10.00", got)
	}
	// Fix and retry: the projection resumes and catches up.
	proj.fixed = true
	accounts.Retry()
	waitFor(t, accounts, last)
	w, _ = NewReader(e.db).Wallet(context.Background(), a.ID)
	if got := w.Available.StringFixed(2); got != "60.00" {
		t.Fatalf("available after retry = %s, want 60.00", got)
	}
}

// A projection parked by a poison event stops the reading of the stream
// when it was the only one applying: reading on would hold every later
// commit in memory, unacknowledged, until a retry.
func TestParkedProjectionStopsReading(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "parked@example.com")
	bad := e.topUp(t, a.ID, "10.00", "r0")
	cfg := e.cfg
	cfg.MaxBatch = 2 // pulls a few messages at a time
	r := NewRunner(cfg, &poisonable{Projection: NewAccounts(), poisonSeq: bad})
	e.start(t, r)
	deadline := time.Now().Add(10 * time.Second)
	for r.Status().State != "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("status = %+v, want failed", r.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var last uint64
	for i := range 40 {
		last = e.topUp(t, a.ID, "10.00", fmt.Sprintf("r%d", i+1))
	}
	time.Sleep(300 * time.Millisecond)
	cons, err := e.js.Consumer(context.Background(), e.cfg.Stream, "proj_accounts")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// What one pull brought in may have been read; the rest must not be.
	if info.Delivered.Stream > bad+2*uint64(cfg.MaxBatch)+2 {
		t.Fatalf("delivered to stream seq %d of %d while the only projection was parked at %d", info.Delivered.Stream, last, bad)
	}
}

// A standby reports lag even when it cannot read the leader's consumer
// (here no leader ever made one, as when the projector stopped before its
// first session or the consumer's replicas are still electing): the lag is
// then judged from the stream, never left at 0 while nothing is applied.
func TestStandbyLagWithoutTheLeadersConsumer(t *testing.T) {
	t.Run("consumer missing", func(t *testing.T) { standbyLag(t, nil) })
	// A consumer read that hangs until its bound must leave the stream
	// read a bound of its own (sharing one, the standby kept a lag of 0
	// through a paused leader).
	t.Run("consumer read hangs", func(t *testing.T) {
		standbyLag(t, func(js jetstream.JetStream) jetstream.JetStream { return hangingConsumer{js} })
	})
}

// hangingConsumer is JetStream with consumer lookups that never answer.
type hangingConsumer struct{ jetstream.JetStream }

func (hangingConsumer) Consumer(ctx context.Context, _, _ string) (jetstream.Consumer, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func standbyLag(t *testing.T, wrap func(jetstream.JetStream) jetstream.JetStream) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.Follow = true // never leads
	if wrap != nil {
		cfg.JS = wrap(cfg.JS)
	}
	set := NewSet(cfg, NewAccounts(), NewUsers())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go set.Run(ctx)
	a := e.account(t, "standby@example.com")
	e.topUp(t, a.ID, "10.00", "r1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := set.Runner("accounts").Status()
		if st.State == "standby" && st.LagEvents > 0 && st.LagMillis > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby status = %+v, want lag in events and time", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A leader whose lock session dies stops applying (another instance may
// lead now), takes the lock again and goes on from its stored position:
// nothing is lost or counted twice.
func TestLeaderStopsWhenItsLockIsLost(t *testing.T) {
	e := newEnv(t)
	var logs lockedBuffer
	e.cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r := NewRunner(e.cfg, NewAccounts())
	e.start(t, r)
	a := e.account(t, "lease@example.com")
	waitFor(t, r, e.topUp(t, a.ID, "10.00", "r1"))

	ctx := context.Background()
	if _, err := e.db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'
		AND granted AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = ?`, postgres.LockKey("projection:accounts")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), errLockLost.Error()) {
		if time.Now().After(deadline) {
			t.Fatalf("the runner did not notice its lock was lost; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, r, e.topUp(t, a.ID, "12.00", "r2"))
	var available string
	if err := e.db.NewRaw("SELECT available::text FROM wallets WHERE account_id = ?", a.ID).Scan(ctx, &available); err != nil {
		t.Fatal(err)
	}
	if available != "22.00" {
		t.Fatalf("available = %s after the lock was lost and taken again, want 22.00", available)
	}
}

// lockedBuffer is a log sink safe for the runner's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A Set reads the stream once for all its projections: one durable
// consumer (the per-projection consumers of earlier versions are
// removed), every commit delivered to it once, and every projection's
// position at the head afterwards, including the one that reads none of
// the commits.
func TestSetReadsTheStreamOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	stream, err := e.js.Stream(ctx, e.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	// A consumer left by a version that read once per projection.
	if _, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "proj_accounts", AckPolicy: jetstream.AckAllPolicy}); err != nil {
		t.Fatal(err)
	}
	set := NewSet(e.cfg, NewAccounts(), NewTasks(), NewUsers())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go set.Run(ctx)

	a := e.account(t, "once@example.com")
	var last uint64
	for i := range 30 {
		last = e.topUp(t, a.ID, "10.00", fmt.Sprintf("r%d", i))
	}
	for _, name := range []string{"accounts", "tasks", "users"} {
		waitFor(t, set.Runner(name), last)
	}
	w, err := NewReader(e.db).Wallet(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Available.StringFixed(2); got != "300.00" {
		t.Fatalf("available = %s, want 300.00", got)
	}
	var names []string
	for n := range stream.ConsumerNames(ctx).Name() {
		names = append(names, n)
	}
	if len(names) != 1 || names[0] != "proj_accounts-tasks-users" {
		t.Fatalf("consumers = %v, want only proj_accounts-tasks-users", names)
	}
	cons, err := stream.Consumer(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	// Every commit of the stream is an account's or a user's: each was
	// delivered once, and all get acknowledged (just after they are
	// applied).
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Delivered.Stream != last || info.Delivered.Consumer != last {
			t.Fatalf("consumer delivered %d (to stream seq %d); want each of the %d commits once", info.Delivered.Consumer, info.Delivered.Stream, last)
		}
		if info.AckFloor.Stream == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acknowledged to %d, want %d", info.AckFloor.Stream, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gated holds every batch until it is let through.
type gated struct {
	Projection
	entered chan struct{}
	release chan struct{}
}

func (g *gated) Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Projection.Apply(ctx, tx, commits)
}

// A leading session that has not applied anything yet reports the
// backlog it starts with as lag, not the 0 it may have been left with:
// after a Postgres restart, a session whose first pull went unanswered
// looked caught up for 30 s while applying nothing.
func TestSessionStartsWithItsBacklogAsLag(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "backlog@example.com")
	var last uint64
	for i := range 5 {
		last = e.topUp(t, a.ID, "10.00", fmt.Sprintf("r%d", i))
	}
	proj := &gated{Projection: NewAccounts(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	r := NewRunner(e.cfg, proj)
	e.start(t, r)
	select {
	case <-proj.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first batch never reached the projection")
	}
	if st := r.Status(); st.State != "running" || st.LagEvents == 0 {
		t.Errorf("with its first batch not yet applied: %+v, want running with the backlog as lag", st)
	}
	close(proj.release)
	waitFor(t, r, last)
	deadline := time.Now().Add(5 * time.Second)
	for r.Status().LagEvents != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("caught up, yet %+v", r.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
