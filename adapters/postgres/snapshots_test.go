package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ledgerd/ledgerd/adapters/pgembed/pgtest"
	"github.com/ledgerd/ledgerd/adapters/postgres"
	"github.com/ledgerd/ledgerd/adapters/postgres/postgrestest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/aggregates"
	"github.com/ledgerd/ledgerd/ledger/audit"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/eventstore/storetest"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

// An account is loaded from its latest snapshot, folding only the events
// after it, into the state a fold from its first event gives; a snapshot
// that does not fit the stream, or cannot be decoded, is ignored and the
// account is folded from the start.
func TestAccountLoadsFromItsSnapshot(t *testing.T) {
	ctx := context.Background()
	db, store := commandSide(t)
	snaps := postgres.NewSnapshots(db, ledger.TypeAccount)
	newLedger := func(s eventstore.Store, snapshots aggregates.Snapshots) *ledger.Ledger {
		l, err := ledger.New(s, ledger.Config{BcryptCost: bcrypt.MinCost, AccountSnapshots: snapshots, SnapshotEvery: 20})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	writer := newLedger(store, snaps)
	acc, err := writer.CreateAccount(ctx, meta, "snap@example.com", "correct horse", account.PlanAPI)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := writer.TopUp(ctx, meta, acc.ID, money.MustParse("30.00"), fmt.Sprintf("wire-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Enough events for snapshots: a state of about 16 entries is
	// snapshotted every 64 events.
	chargeCalls(t, writer, acc.ID, 40)
	// Calls in flight and done, so that holds and keys are in the state.
	var tasks []string
	for i := range 3 {
		task := ids.Generator{}.New("gen")
		tasks = append(tasks, task)
		if _, err := writer.Reserve(ctx, meta, acc.ID, account.TaskRequest{TaskID: task, Model: pricing.Defaults()[0],
			Input: account.TaskInput{Prompt: "p"}, IdempotencyKey: fmt.Sprintf("idem-%d", i), RequestHash: "h", HoldTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := writer.CompleteTask(ctx, acc.ID, task, account.TaskOutput{ImageURL: "u"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	snap := snapshotPast(t, snaps, acc.ID, 20)
	// What a fold from the start shows.
	view := func(l *ledger.Ledger) string {
		v, w, err := l.Account(ctx, acc.ID)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%+v %+v", v, w)
	}
	want := view(newLedger(store, nil))

	for _, tc := range []struct {
		name     string
		damage   string // SQL run on the snapshot first
		fromSnap bool
	}{
		{"from the snapshot", "", true},
		{"a snapshot naming another commit", `UPDATE aggregate_snapshots SET hash = 'not-the-hash'`, false},
		{"a snapshot beyond the stream", `UPDATE aggregate_snapshots SET stream_seq = stream_seq + 1000000`, false},
		{"an undecodable snapshot", `UPDATE aggregate_snapshots SET state = 'garbage'`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.damage != "" {
				if _, err := db.ExecContext(ctx, `UPDATE aggregate_snapshots SET stream_seq = ?, seq = ?, hash = ?, state = ?`,
					snap.StreamSeq, snap.Seq, snap.Hash, snap.State); err != nil {
					t.Fatal(err)
				}
				if _, err := db.ExecContext(ctx, tc.damage); err != nil {
					t.Fatal(err)
				}
			}
			log := &lossyLog{LostAnswers: storetest.LostAnswers{Store: store}}
			log.LoadLog = storetest.LoadLog{Store: &log.LostAnswers, Type: ledger.TypeAccount}
			reader := newLedger(&log.LoadLog, snaps)
			if got := view(reader); got != want {
				t.Fatalf("loaded %s, want %s", got, want)
			}
			afters := log.Afters()
			if fromSnap := len(afters) == 1 && afters[0] > 0; fromSnap != tc.fromSnap {
				t.Fatalf("loads read after %v; from the snapshot: %v, want %v", afters, fromSnap, tc.fromSnap)
			}
			// It knows the open calls by their keys, as the writer did.
			again, err := reader.Reserve(ctx, meta, acc.ID, account.TaskRequest{TaskID: ids.Generator{}.New("gen"),
				Model: pricing.Defaults()[0], Input: account.TaskInput{Prompt: "p"}, IdempotencyKey: "idem-2", RequestHash: "h", HoldTTL: time.Hour})
			if err != nil || !again.Duplicate || again.TaskID != tasks[2] {
				t.Fatalf("retry of an open call: %+v, %v; want the call %s", again, err, tasks[2])
			}
			// The instance writes on from there: its next commit lands,
			// also when its answer is lost and the commit must be looked
			// for (from the snapshot, which is from before it).
			log.LoseNextAppend(account.EventToppedUp)
			if _, err := reader.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), "after-"+tc.name); err != nil {
				t.Fatal(err)
			}
			if log.Lost() != 1 {
				t.Fatalf("%d answers lost, want the top-up's", log.Lost())
			}
			if all := log.Afters(); tc.fromSnap && (len(all) != 2 || all[1] == 0) {
				t.Fatalf("loads read after %v; want the look for the top-up from the snapshot", all)
			}
			want = view(newLedger(store, nil))
		})
	}
}

// A snapshot never replaces a later one: two instances may write them.
func TestSnapshotsKeepTheLatest(t *testing.T) {
	ctx := context.Background()
	db, _ := postgrestest.Migrated(t, 2)
	snaps := postgres.NewSnapshots(db, ledger.TypeAccount)
	for _, s := range []aggregates.Snapshot{
		{StreamSeq: 10, Seq: 5, Hash: "h5", State: []byte("five")},
		{StreamSeq: 20, Seq: 9, Hash: "h9", State: []byte("nine")},
		{StreamSeq: 15, Seq: 7, Hash: "h7", State: []byte("seven")},
	} {
		if err := snaps.Put(ctx, "acc_x", s); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := snaps.Get(ctx, "acc_x")
	if err != nil || !ok || got.Seq != 9 || string(got.State) != "nine" {
		t.Fatalf("stored %+v (%v, %v), want the snapshot at seq 9", got, ok, err)
	}
	if _, ok, err := snaps.Get(ctx, "acc_none"); ok || err != nil {
		t.Fatalf("an account without a snapshot: %v, %v", ok, err)
	}
}

// lossyLog is a store that loses answers on cue and logs its loads.
type lossyLog struct {
	storetest.LostAnswers
	storetest.LoadLog
}

// With Postgres down, accounts are folded from their first event and
// written as ever: snapshots are a cache.
func TestSnapshotsDownChangeNothing(t *testing.T) {
	ctx := context.Background()
	_, store := commandSide(t)
	down, err := postgres.Open(ctx, pgtest.NewDatabase(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	l, err := ledger.New(store, ledger.Config{BcryptCost: bcrypt.MinCost,
		AccountSnapshots: postgres.NewSnapshots(down, ledger.TypeAccount), SnapshotEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := l.CreateAccount(ctx, meta, "down@example.com", "correct horse", account.PlanAPI)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := l.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), fmt.Sprintf("wire-%d", i)); err != nil {
			t.Fatalf("top-up with the snapshot store down: %v", err)
		}
	}
	fresh, err := ledger.New(store, ledger.Config{BcryptCost: bcrypt.MinCost, AccountSnapshots: postgres.NewSnapshots(down, ledger.TypeAccount)})
	if err != nil {
		t.Fatal(err)
	}
	if _, w, err := fresh.Account(ctx, acc.ID); err != nil || !w.Available.Equal(money.MustParse("50.00")) {
		t.Fatalf("loaded with the snapshot store down: %+v, %v; want 50.00 available", w, err)
	}
}

// The audit compares every account snapshot with a fresh fold of the
// account's events at the snapshot's position, and tells a snapshot that
// differs from it.
func TestAuditComparesSnapshotsWithTheFold(t *testing.T) {
	ctx := context.Background()
	db, store := commandSide(t)
	snaps := postgres.NewSnapshots(db, ledger.TypeAccount)
	l, err := ledger.New(store, ledger.Config{BcryptCost: bcrypt.MinCost, AccountSnapshots: snaps, SnapshotEvery: 5})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := l.CreateAccount(ctx, meta, "audited@example.com", "correct horse", account.PlanAPI)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), "wire"); err != nil {
		t.Fatal(err)
	}
	chargeCalls(t, l, acc.ID, 8)
	snap := snapshotPast(t, snaps, acc.ID, 10)
	verify := func() audit.Check {
		t.Helper()
		rep, err := audit.Verify(ctx, store.(audit.Source), nil, snaps, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range rep.Checks {
			if c.Name == "account_snapshots" {
				return c
			}
		}
		t.Fatalf("no account_snapshots check in %+v", rep.Checks)
		return audit.Check{}
	}
	if c := verify(); !c.OK || !strings.HasPrefix(c.Detail, "1 account snapshot") {
		t.Fatalf("a true snapshot: %+v", c)
	}
	for name, damage := range map[string]string{
		"another balance":   `UPDATE aggregate_snapshots SET state = convert_to(replace(convert_from(state, 'UTF8'), '"available":"', '"available":"1'), 'UTF8')`,
		"another hash":      `UPDATE aggregate_snapshots SET hash = 'not-the-hash'`,
		"beyond the stream": `UPDATE aggregate_snapshots SET stream_seq = stream_seq + 1000000`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := db.ExecContext(ctx, `UPDATE aggregate_snapshots SET stream_seq = ?, seq = ?, hash = ?, state = ?`,
				snap.StreamSeq, snap.Seq, snap.Hash, snap.State); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, damage); err != nil {
				t.Fatal(err)
			}
			if c := verify(); c.OK {
				t.Fatalf("a damaged snapshot passed: %+v", c)
			}
		})
	}
}

// chargeCalls makes n calls on accountID, each reserved and captured.
func chargeCalls(t *testing.T, l *ledger.Ledger, accountID string, n int) {
	t.Helper()
	ctx := context.Background()
	for range n {
		task := ids.Generator{}.New("gen")
		if _, err := l.Reserve(ctx, meta, accountID, account.TaskRequest{TaskID: task, Model: pricing.Defaults()[0],
			Input: account.TaskInput{Prompt: "p"}, HoldTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if err := l.CompleteTask(ctx, accountID, task, account.TaskOutput{ImageURL: "u"}); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotPast waits for accountID's stored snapshot to reach event seq
// (snapshots are written in the background) and returns it.
func snapshotPast(t *testing.T, snaps *postgres.Snapshots, accountID string, seq uint64) aggregates.Snapshot {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, ok, err := snaps.Get(context.Background(), accountID)
		if err != nil {
			t.Fatal(err)
		}
		if ok && s.Seq >= seq {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot past event %d: %+v %v", seq, s, ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
