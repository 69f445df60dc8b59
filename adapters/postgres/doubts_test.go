package postgres_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"
	"golang.org/x/crypto/bcrypt"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/adapters/pgembed/pgtest"
	"github.com/ledgerd/ledgerd/adapters/postgres"
	"github.com/ledgerd/ledgerd/adapters/postgres/postgrestest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/eventstore/storetest"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

var meta = ledger.Meta{Actor: "usr_admin", CorrelationID: "req_test"}

// commandSide is a migrated database and an event store on a real
// JetStream server: what the command side runs on.
func commandSide(t *testing.T) (*bun.DB, eventstore.Store) {
	t.Helper()
	db, _ := postgrestest.Migrated(t, 4)
	_, js := natstest.JetStream(t, natstest.Server(t))
	store, err := eventstore.OpenJetStream(context.Background(), js, eventstore.JetStreamConfig{Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	return db, store
}

// doubtEnv is the command side with an event store whose answers are lost
// on demand, and the ledger instances to put on them.
func doubtEnv(t *testing.T) (*bun.DB, *storetest.LostAnswers, func(owner string, doubts ledger.Doubts) *ledger.Ledger) {
	t.Helper()
	db, real := commandSide(t)
	store := &storetest.LostAnswers{Store: real}
	return db, store, func(owner string, doubts ledger.Doubts) *ledger.Ledger {
		l, err := ledger.New(store, ledger.Config{BcryptCost: bcrypt.MinCost, Owner: owner, Doubts: doubts})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
}

// A reservation answered 503 whose append landed after all is known to be
// in doubt by every instance, and by this one after a restart: the
// sweeper then releases it instead of running (and charging) a call the
// customer was told was refused. Without the Postgres record only the
// instance that answered knew it, until it restarted.
func TestReservationInDoubtOutlivesTheInstance(t *testing.T) {
	ctx := context.Background()
	db, store, newLedger := doubtEnv(t)
	a := newLedger("inst_a", postgres.NewDoubts(db))
	acc, err := a.CreateAccount(ctx, meta, "doubt@example.com", "correct horse", account.PlanAPI)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), "fund"); err != nil {
		t.Fatal(err)
	}
	taskID := ids.Generator{}.New("gen")
	store.Lose.Store(true)
	_, err = a.Reserve(ctx, meta, acc.ID, account.TaskRequest{TaskID: taskID, Model: pricing.Defaults()[0],
		Input: account.TaskInput{Prompt: "p"}, HoldTTL: 1e11})
	store.Lose.Store(false)
	if !errors.Is(err, eventstore.ErrUnavailable) {
		t.Fatalf("reserve with its answer lost: %v, want unavailable", err)
	}

	// The reservation is in the stream: the hold is there.
	b := newLedger("inst_b", postgres.NewDoubts(db))
	if _, open, err := b.OpenTask(ctx, acc.ID, taskID); err != nil || !open {
		t.Fatalf("the reservation did not land: open=%v err=%v", open, err)
	}
	for name, l := range map[string]*ledger.Ledger{"the instance that answered": a, "another instance": b,
		"the first after a restart": newLedger("inst_a", postgres.NewDoubts(db))} {
		if doubt, err := l.InDoubt(ctx, taskID); err != nil || !doubt {
			t.Errorf("%s: in doubt = %v, %v; want true", name, doubt, err)
		}
	}
	if doubt, err := newLedger("inst_a", nil).InDoubt(ctx, taskID); err != nil || doubt {
		t.Errorf("without the record a restarted instance says in doubt = %v, %v (it cannot know)", doubt, err)
	}
	if doubt, err := b.InDoubt(ctx, ids.Generator{}.New("gen")); err != nil || doubt {
		t.Errorf("a task never answered 503: in doubt = %v, %v", doubt, err)
	}

	// Postgres down as well when the 503 is sent: the answering instance
	// still knows (in memory), and the call is still refused.
	down, err := postgres.Open(ctx, pgtest.NewDatabase(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	c := newLedger("inst_c", postgres.NewDoubts(down))
	second := ids.Generator{}.New("gen")
	store.Lose.Store(true)
	_, err = c.Reserve(ctx, meta, acc.ID, account.TaskRequest{TaskID: second, Model: pricing.Defaults()[0],
		Input: account.TaskInput{Prompt: "p"}, HoldTTL: 1e11})
	store.Lose.Store(false)
	if !errors.Is(err, eventstore.ErrUnavailable) {
		t.Fatalf("reserve with its answer lost and Postgres down: %v, want unavailable", err)
	}
	if doubt, err := c.InDoubt(ctx, second); err != nil || !doubt {
		t.Errorf("the answering instance forgot a reservation in doubt it could not record: %v, %v", doubt, err)
	}
}

// A retry with the Idempotency-Key of a call answered 503 is a new call,
// as the 503 promised ("nothing was charged: try again"), even when the
// refused reservation landed after all: the refused one is released, on
// whichever instance the retry comes to, and the account holds one price.
// Before, the retry named the refused call and was answered 503 again, for
// as long as the key was remembered.
func TestRetryOfACallRefusedInDoubtIsANewCall(t *testing.T) {
	ctx := context.Background()
	db, store, newLedger := doubtEnv(t)
	for _, on := range []string{"the instance that answered 503", "another instance"} {
		t.Run(on, func(t *testing.T) {
			a := newLedger("inst_a", postgres.NewDoubts(db))
			acc, err := a.CreateAccount(ctx, meta, ids.Generator{}.New("x")+"@example.com", "correct horse", account.PlanAPI)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), "fund"); err != nil {
				t.Fatal(err)
			}
			call := account.TaskRequest{Model: pricing.Defaults()[0], Input: account.TaskInput{Prompt: "p"},
				IdempotencyKey: "idem-1", RequestHash: "h1", HoldTTL: 1e11}
			refused := call
			refused.TaskID = ids.Generator{}.New("gen")
			store.Lose.Store(true)
			_, err = a.Reserve(ctx, meta, acc.ID, refused)
			store.Lose.Store(false)
			if !errors.Is(err, eventstore.ErrUnavailable) {
				t.Fatalf("reserve with its answer lost: %v, want unavailable", err)
			}
			retrier := a
			if on == "another instance" {
				retrier = newLedger("inst_b", postgres.NewDoubts(db))
			}
			// A retry while the event store is still unreachable is refused
			// in turn and moves nothing: the refused call stays held, alone.
			store.Lose.Store(true)
			_, err = retrier.Reserve(ctx, meta, acc.ID, call)
			store.Lose.Store(false)
			if !errors.Is(err, eventstore.ErrUnavailable) {
				t.Fatalf("retry with the store unreachable: %v, want unavailable", err)
			}
			if _, w, err := retrier.Account(ctx, acc.ID); err != nil || !w.Held.Equal(money.MustParse("0.80")) {
				t.Fatalf("after a refused retry: held %s (%v), want the refused call's 0.80 alone", w.Held, err)
			}
			retry, err := retrier.Reserve(ctx, meta, acc.ID, call)
			if err != nil || retry.Duplicate || retry.TaskID == refused.TaskID {
				t.Fatalf("retry: %+v, %v; want a new call", retry, err)
			}
			_, w, err := retrier.Account(ctx, acc.ID)
			if err != nil {
				t.Fatal(err)
			}
			_, stillOpen, _ := retrier.OpenTask(ctx, acc.ID, refused.TaskID)
			_, retryOpen, _ := retrier.OpenTask(ctx, acc.ID, retry.TaskID)
			if stillOpen || !retryOpen || !w.Held.Equal(money.MustParse("0.80")) || !w.Available.Equal(money.MustParse("9.20")) {
				t.Fatalf("after the retry: refused call open %v, retry open %v, held %s, available %s; want only the retry held",
					stillOpen, retryOpen, w.Held, w.Available)
			}
			// The key now names the retry.
			again, err := a.Reserve(ctx, meta, acc.ID, call)
			if err != nil || !again.Duplicate || again.TaskID != retry.TaskID {
				t.Fatalf("second retry: %+v, %v; want the first retry's call", again, err)
			}
		})
	}
}

// Marks are pruned as new ones come: a mark older than two days is gone
// after the next Mark, a recent one stays, and Has still sees it.
func TestDoubtsArePruned(t *testing.T) {
	ctx := context.Background()
	db, _ := postgrestest.Migrated(t, 4)
	for task, age := range map[string]string{"gen_old": "3 days", "gen_day": "30 hours", "gen_recent": "1 hour"} {
		if _, err := db.ExecContext(ctx, `INSERT INTO reservations_in_doubt (task_id, account_id, marked_at)
			VALUES (?, 'acc_x', now() - ?::interval)`, task, age); err != nil {
			t.Fatal(err)
		}
	}
	d := postgres.NewDoubts(db)
	if err := d.Mark(ctx, "acc_x", "gen_new"); err != nil {
		t.Fatal(err)
	}
	var left []string
	if err := db.NewRaw("SELECT task_id FROM reservations_in_doubt ORDER BY task_id").Scan(ctx, &left); err != nil {
		t.Fatal(err)
	}
	if want := []string{"gen_day", "gen_new", "gen_recent"}; !slices.Equal(left, want) {
		t.Errorf("marks after pruning: %v, want %v", left, want)
	}
	for task, want := range map[string]bool{"gen_new": true, "gen_recent": true, "gen_day": false, "gen_old": false} {
		if got, err := d.Has(ctx, task); err != nil || got != want {
			t.Errorf("Has(%s) = %v, %v; want %v", task, got, err, want)
		}
	}
}
