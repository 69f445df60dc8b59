package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/aggregates"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/eventstore/storetest"
)

type env struct {
	store *eventstore.JetStream
	l     *ledger.Ledger
}

func newEnv(t *testing.T) env {
	t.Helper()
	_, js := natstest.JetStream(t, natstest.Server(t))
	store, err := eventstore.OpenJetStream(context.Background(), js, eventstore.JetStreamConfig{Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	return env{store: store, l: newLedger(t, store)}
}

func newLedger(t testing.TB, store eventstore.Store) *ledger.Ledger {
	t.Helper()
	l, err := ledger.New(store, ledger.Config{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var meta = ledger.Meta{Actor: "usr_admin", CorrelationID: "req_test"}

func createAccount(t *testing.T, l *ledger.Ledger, email string) ledger.AccountView {
	t.Helper()
	acc, err := l.CreateAccount(context.Background(), meta, email, "correct horse", account.PlanStandard)
	if err != nil {
		t.Fatalf("create account %s: %v", email, err)
	}
	return acc
}

func TestCreateAccountAndLogin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	acc := createAccount(t, e.l, "Alice@Example.com")
	if acc.Plan != account.PlanStandard || acc.Status != account.StatusActive || acc.Email != "alice@example.com" {
		t.Fatalf("account = %+v", acc)
	}
	id, err := e.l.Login(ctx, "alice@example.com", "correct horse")
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if id.AccountID != acc.ID || id.Role != user.RoleCustomer {
		t.Fatalf("identity = %+v, want customer of %s", id, acc.ID)
	}
	for _, tc := range []struct{ email, pw string }{
		{"alice@example.com", "wrong password"},
		{"nobody@example.com", "correct horse"},
		{"not an email", "correct horse"},
	} {
		if _, err := e.l.Login(ctx, tc.email, tc.pw); !errors.Is(err, ledger.ErrBadCredentials) {
			t.Errorf("login(%s, %s) = %v, want ErrBadCredentials", tc.email, tc.pw, err)
		}
	}
}

func TestCreateAccountEmailTakenWritesNothing(t *testing.T) {
	e := newEnv(t)
	createAccount(t, e.l, "bob@example.com")
	_, err := e.l.CreateAccount(context.Background(), meta, "BOB@example.com", "another password", account.PlanPro)
	if !errors.Is(err, user.ErrEmailTaken) {
		t.Fatalf("second account with same email: %v, want ErrEmailTaken", err)
	}
	// Staff cannot take a customer's email either.
	if _, err := e.l.RegisterStaff(context.Background(), meta, "bob@example.com", "password123", user.RoleAdmin); !errors.Is(err, user.ErrEmailTaken) {
		t.Fatalf("staff with taken email: %v, want ErrEmailTaken", err)
	}
	info, err := e.store.Messages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info != 2 {
		t.Fatalf("stream holds %d messages, want 2 (one user, one account)", info)
	}
}

func TestConcurrentTopUpsAreAllCreditedExactlyOnce(t *testing.T) {
	e := newEnv(t)
	acc := createAccount(t, e.l, "hot@example.com")
	const workers, each = 16, 20
	var wg sync.WaitGroup
	var replays atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Every top-up is sent twice, concurrently with everything
				// else: the second must be recognised as a retry.
				ref := fmt.Sprintf("ref-%d-%d", w, i)
				for range 2 {
					res, err := e.l.TopUp(context.Background(), meta, acc.ID, money.MustParse("10.00"), ref)
					if err != nil {
						t.Errorf("top-up %s: %v", ref, err)
						return
					}
					if res.Replayed {
						replays.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	if got := replays.Load(); got != workers*each {
		t.Fatalf("replays = %d, want %d", got, workers*each)
	}
	// A fresh ledger folds the stored events from nothing.
	_, w, err := newLedger(t, e.store).Account(context.Background(), acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := money.FromCents(workers * each * 1000)
	if !w.Available.Equal(want) {
		t.Fatalf("available = %s, want %s", w.Available, want)
	}
}

func TestTwoInstancesStayCorrect(t *testing.T) {
	e := newEnv(t)
	acc := createAccount(t, e.l, "shared@example.com")
	other := newLedger(t, e.store)
	ctx := context.Background()
	// Each instance caches the account, then they write alternately: every
	// write after the first on each side meets a stale cache and must
	// reload on conflict rather than lose or double a credit.
	for i := range 10 {
		l := e.l
		if i%2 == 1 {
			l = other
		}
		if _, err := l.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), fmt.Sprintf("r%d", i)); err != nil {
			t.Fatalf("top-up %d: %v", i, err)
		}
	}
	// A retry of r0 on the instance that did not make it is still a replay.
	res, err := other.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), "r0")
	if err != nil || !res.Replayed {
		t.Fatalf("cross-instance retry = %+v, %v; want replay", res, err)
	}
	for _, l := range []*ledger.Ledger{e.l, other, newLedger(t, e.store)} {
		_, w, err := l.Account(ctx, acc.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !w.Available.Equal(money.MustParse("100.00")) {
			t.Fatalf("available = %s, want 100.00", w.Available)
		}
	}
}

// TestTwoInstancesHammerOneAccount: two instances writing one hot account
// at once lose races to each other all the time; every command must still
// land exactly once (none refused as contended), and the balance add up.
func TestTwoInstancesHammerOneAccount(t *testing.T) {
	e := newEnv(t)
	acc := createAccount(t, e.l, "hot@example.com")
	ls := []*ledger.Ledger{e.l, newLedger(t, e.store)}
	ctx := context.Background()
	const writers, each = 24, 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*each)
	for i, l := range ls {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range each {
					if _, err := l.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), fmt.Sprintf("i%d-w%d-%d", i, w, k)); err != nil {
						errs <- err
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("top-up refused: %v", err)
	}
	wantAvailable(t, e.store, acc.ID, money.MustParse("7200.00"))
}

func TestTopUpRejectionsChangeNothing(t *testing.T) {
	e := newEnv(t)
	acc := createAccount(t, e.l, "carol@example.com")
	ctx := context.Background()
	if _, err := e.l.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), "inv-1"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      string
		amount  string
		ref     string
		wantErr error
		field   string
	}{
		{name: "below minimum", id: acc.ID, amount: "9.99", ref: "x", field: "amount"},
		{name: "negative", id: acc.ID, amount: "-10.00", ref: "x", field: "amount"},
		{name: "reference reused", id: acc.ID, amount: "11.00", ref: "inv-1", wantErr: account.ErrReferenceReused},
		{name: "unknown account", id: "acc_00000000000000000000000000", amount: "10.00", ref: "x", wantErr: account.ErrNotFound},
		{name: "malformed account id", id: "acc.x>", amount: "10.00", ref: "x", wantErr: account.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.l.TopUp(ctx, meta, tt.id, money.MustParse(tt.amount), tt.ref)
			if tt.field != "" {
				var verr *validation.Error
				if !errors.As(err, &verr) || verr.Fields[0].Field != tt.field {
					t.Fatalf("err = %v, want validation error on %s", err, tt.field)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	_, w, err := newLedger(t, e.store).Account(ctx, acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Available.Equal(money.MustParse("10.00")) {
		t.Fatalf("available = %s after rejected top-ups, want 10.00", w.Available)
	}
}

// contended is the event store with every append losing its race on
// demand, as when other writers keep appending to the account first:
// nothing of ours is stored and the caller hears "conflict".
type contended struct {
	eventstore.Store
	losing atomic.Bool
	lost   atomic.Int64
}

func (s *contended) Append(ctx context.Context, a ...eventstore.Append) ([]uint64, error) {
	if s.losing.Load() {
		s.lost.Add(1)
		return nil, eventstore.ErrConflict
	}
	return s.Store.Append(ctx, a...)
}

// A reservation that loses every race gives up after a bounded number of
// retries with ErrTooManyConflicts (503 over HTTP), holds nothing, and
// leaves no trace in the cached state: the next reservation holds one
// price, not two.
func TestReserveGivesUpUnderEndlessConflicts(t *testing.T) {
	e := newEnv(t)
	store := &contended{Store: e.store}
	l := newLedger(t, store)
	ctx := context.Background()
	acc := createAccount(t, l, "contended@example.com")
	if _, err := l.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), "fund"); err != nil {
		t.Fatal(err)
	}
	before, err := e.store.Messages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := account.TaskRequest{Model: pricing.Defaults()[0], Input: account.TaskInput{Prompt: "p"}, HoldTTL: 1e11}
	store.losing.Store(true)
	_, err = l.Reserve(ctx, meta, acc.ID, req)
	store.losing.Store(false)
	if !errors.Is(err, aggregates.ErrTooManyConflicts) {
		t.Fatalf("reserve losing every race: %v, want ErrTooManyConflicts", err)
	}
	if n := store.lost.Load(); n < 2 {
		t.Errorf("gave up after %d append(s); a lost race is retried", n)
	}
	if after, err := e.store.Messages(ctx); err != nil || after != before {
		t.Fatalf("stream holds %d messages after the refused reservation, %d before (%v)", after, before, err)
	}
	wallet := func() ledger.Wallet {
		t.Helper()
		_, w, err := l.Account(ctx, acc.ID)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	if w := wallet(); !w.Available.Equal(money.MustParse("10.00")) || !w.Held.IsZero() {
		t.Fatalf("after the refused reservation: available %s, held %s; want 10.00, 0", w.Available, w.Held)
	}
	if _, err := l.Reserve(ctx, meta, acc.ID, req); err != nil {
		t.Fatal(err)
	}
	if w := wallet(); !w.Available.Equal(money.MustParse("9.20")) || !w.Held.Equal(money.MustParse("0.80")) {
		t.Fatalf("after one reservation: available %s, held %s; want 9.20, 0.80", w.Available, w.Held)
	}
}

// TestBusyInstanceYieldsToAStarvedOne: one instance writes an account
// without pause (an append always in flight), another now and then. The
// second loses every race unless the first yields when asked: it did, and
// every one of its top-ups was refused as "too many conflicts" after 12
// reloads of what the first had appended meanwhile. The instances are
// wired as the app wires them over NATS: a lost race asks the other
// instance to yield, and each sees the other's commits (the follower).
func TestBusyInstanceYieldsToAStarvedOne(t *testing.T) {
	e := newEnv(t)
	var busy, starved *ledger.Ledger
	newInstance := func(name string, other **ledger.Ledger) *ledger.Ledger {
		l, err := ledger.New(e.store, ledger.Config{BcryptCost: bcrypt.MinCost,
			Turns:    turns{name, other},
			OnCommit: func(c eventstore.Commit) { (*other).ObserveCommit(c) }})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	busy, starved = newInstance("busy", &starved), newInstance("starved", &busy)
	acc := createAccount(t, busy, "hot@example.com")
	ctx := context.Background()

	var stop atomic.Bool
	var wg sync.WaitGroup
	var busyCount atomic.Int64
	errs := make(chan error, 64)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; !stop.Load(); k++ {
				if _, err := busy.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), fmt.Sprintf("busy-%d-%d", w, k)); err != nil {
					errs <- err
					return
				}
				busyCount.Add(1)
			}
		}()
	}
	for busyCount.Load() < 100 { // the busy instance under way
		time.Sleep(time.Millisecond)
	}
	const calls = 10
	for k := range calls {
		if _, err := starved.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), fmt.Sprintf("starved-%d", k)); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("top-up %d on the starved instance: %v", k, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("top-up on the busy instance: %v", err)
	}
	wantAvailable(t, e.store, acc.ID, money.FromCents(1000*(busyCount.Load()+calls)))
}

// turns passes one instance's requests for a turn straight to another, as
// the app does over NATS.
type turns struct {
	name  string
	other **ledger.Ledger
}

func (t turns) Ask(id string)  { (*t.other).Yield(id, t.name) }
func (t turns) Done(id string) { (*t.other).TurnTaken(id, t.name) }

// TestLostRaceReloadsOnlyWhatIsNew: an account that loses races keeps a
// copy of its last stored state, and each later lost race reads only the
// commits after that copy, not the account's whole history, which for a
// hot account grows by thousands of commits a minute (reloading it all
// made each lost race slower than the last, until calls were refused).
// The state reached that way is the one a full load folds.
func TestLostRaceReloadsOnlyWhatIsNew(t *testing.T) {
	e := newEnv(t)
	log := &storetest.LoadLog{Store: e.store, Type: ledger.TypeAccount}
	loser := newLedger(t, log)
	acc := createAccount(t, e.l, "raced@example.com")
	ctx := context.Background()
	topUp := func(l *ledger.Ledger, ref string) {
		t.Helper()
		if _, err := l.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), ref); err != nil {
			t.Fatal(err)
		}
	}
	topUp(loser, "first")
	const races = 20
	for i := range races {
		topUp(e.l, fmt.Sprintf("other-%d", i)) // moves the account on behind loser's back
		topUp(loser, fmt.Sprintf("loser-%d", i))
	}
	full, incremental := 0, 0
	for _, after := range log.Afters() {
		if after == 0 {
			full++
		} else {
			incremental++
		}
	}
	// The first load, and the reload after the first lost race.
	if full > 2 || incremental < races-1 {
		t.Fatalf("loads from the start: %d, from a snapshot: %d (%v); want at most 2 and at least %d", full, incremental, log.Afters(), races-1)
	}
	_, got, err := loser.Account(ctx, acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := newLedger(t, e.store).Account(ctx, acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || !want.Available.Equal(money.FromCents(1000*(2*races+1))) {
		t.Fatalf("after the races the loser has %+v, a full load %+v", got, want)
	}
}

// slowLoads is a store whose aggregate loads take a while.
type slowLoads struct {
	eventstore.Store
	delay time.Duration
}

func (s slowLoads) Load(ctx context.Context, ref eventstore.Ref, after uint64) ([]eventstore.Commit, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.Load(ctx, ref, after)
}

func (s slowLoads) LoadType(ctx context.Context, typ string) ([]eventstore.Commit, error) {
	return s.Store.(ledger.TypeLoader).LoadType(ctx, typ)
}

// TestLoadOutlastsTheAppendBound: an account whose load takes longer than
// one append may (a long history after a restart) is still written: the
// load has its own bound. Before, the load ran under the append's bound,
// was cut short, and was cut short again on every later call, so such an
// account could never be written again.
func TestLoadOutlastsTheAppendBound(t *testing.T) {
	e := newEnv(t)
	acc := createAccount(t, e.l, "long@example.com")
	l, err := ledger.New(slowLoads{Store: e.store, delay: 300 * time.Millisecond},
		ledger.Config{BcryptCost: bcrypt.MinCost, AppendTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TopUp(context.Background(), meta, acc.ID, money.MustParse("10.00"), "after-restart"); err != nil {
		t.Fatalf("top-up of an account slower to load than an append may take: %v", err)
	}
}

// hungSnapshots is a snapshot store that never answers (a Postgres that
// hangs).
type hungSnapshots struct{}

func (hungSnapshots) Get(ctx context.Context, _ string) (aggregates.Snapshot, bool, error) {
	<-ctx.Done()
	return aggregates.Snapshot{}, false, ctx.Err()
}

func (hungSnapshots) Put(ctx context.Context, _ string, _ aggregates.Snapshot) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestHungSnapshotStoreHoldsNothingUp: with the snapshot store not
// answering, accounts are loaded from their events after a short wait and
// written as ever: charging does not depend on where snapshots live.
func TestHungSnapshotStoreHoldsNothingUp(t *testing.T) {
	e := newEnv(t)
	acc := createAccount(t, e.l, "hung@example.com")
	l, err := ledger.New(e.store, ledger.Config{BcryptCost: bcrypt.MinCost, AccountSnapshots: hungSnapshots{}, SnapshotEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 3 {
		if _, err := l.TopUp(ctx, meta, acc.ID, money.MustParse("10.00"), fmt.Sprintf("hung-%d", i)); err != nil {
			t.Fatalf("top-up with the snapshot store hung: %v", err)
		}
	}
}

// wantAvailable fails unless the account, folded afresh from the store,
// has want available.
func wantAvailable(t *testing.T, store eventstore.Store, accountID string, want money.Amount) {
	t.Helper()
	_, w, err := newLedger(t, store).Account(context.Background(), accountID)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Available.Equal(want) {
		t.Fatalf("available = %s, want %s", w.Available, want)
	}
}
