// Package ledger is the command side: it turns requests into domain
// decisions and appends the resulting events to the event store.
package ledger

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/ledger/aggregates"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/ids"
)

// Config of the command side.
type Config struct {
	Currency   money.Currency
	BcryptCost int // default bcrypt.DefaultCost; tests use bcrypt.MinCost
	Now        func() time.Time
	Logger     *slog.Logger
	CacheMax   int
	Keys       KeyConfig
	// OnCommit is given every account commit this instance appends, before
	// the command is answered.
	OnCommit func(eventstore.Commit)
	// Owner is this instance's id, recorded on the tasks it drives.
	Owner string
	// Doubts, if set, keeps the reservations answered 503 while their
	// append's outcome was unknown where every instance, and this one
	// after a restart, can see them (see InDoubt).
	Doubts Doubts
	// Turns, if set, carries this instance's requests for a turn at a hot
	// account to the other instances, which pass them to Yield and
	// TurnTaken.
	Turns aggregates.Turns
	// AppendTimeout bounds one append of an account's commit (default
	// 10 s); loading the account has its own, longer bound.
	AppendTimeout time.Duration
	// AccountSnapshots, if set, keeps a snapshot of each account every
	// SnapshotEvery events (default 10,000), so that loading an account
	// folds only the events after its latest snapshot.
	AccountSnapshots aggregates.Snapshots
	SnapshotEvery    uint64
}

// Doubts records reservations in doubt outside this process.
type Doubts interface {
	Mark(ctx context.Context, accountID, taskID string) error
	Has(ctx context.Context, taskID string) (bool, error)
}

// Ledger executes commands.
type Ledger struct {
	cfg      Config
	store    eventstore.Store
	ids      ids.Generator
	accounts *aggregates.Repo[*account.Account, account.Event]
	users    *aggregates.Repo[*user.User, user.Event]
	models   *aggregates.Repo[*pricing.Entry, pricing.Event]
	prices   *priceList
	// inDoubt holds tasks answered 503 while their reservation's append
	// had an unknown outcome (task id → when).
	inDoubt  sync.Map
	planRepo *aggregates.Repo[*plan.Entry, plan.Event]
	plans    *planList
	// dummyHash is compared against when a login names no user, so that
	// an unknown email costs as long as a wrong password.
	dummyHash []byte
}

// New returns the command side over store.
func New(store eventstore.Store, cfg Config) (*Ledger, error) {
	if cfg.Currency == "" {
		cfg.Currency = money.USD
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = bcrypt.DefaultCost
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Owner == "" {
		cfg.Owner = defaultOwner
	}
	if cfg.Keys.Prefix == "" {
		cfg.Keys.Prefix = "nx_live_"
	}
	if cfg.Keys.MaxPerAccount == 0 {
		cfg.Keys.MaxPerAccount = 5
	}
	if cfg.Keys.DefaultRateLimit == 0 {
		cfg.Keys.DefaultRateLimit = 600
	}
	l := &Ledger{cfg: cfg, store: store, ids: ids.Generator{Now: cfg.Now}}
	l.accounts = aggregates.New(aggregates.Config[*account.Account, account.Event]{
		Type: TypeAccount, Store: store, Codec: AccountCodec(), New: account.New,
		NewID: l.ids.New, Now: cfg.Now, Logger: cfg.Logger, CacheMax: cfg.CacheMax,
		OnCommit: cfg.OnCommit, Turns: cfg.Turns, AppendTimeout: cfg.AppendTimeout,
		Snapshots: cfg.AccountSnapshots, DecodeState: account.UnmarshalState, SnapshotEvery: cfg.SnapshotEvery,
		Then: func(a *account.Account, evs []account.Event) []account.Event {
			return a.LowBalanceEvents(evs, l.ids.New)
		},
	})
	l.users = aggregates.New(aggregates.Config[*user.User, user.Event]{
		Type: TypeUser, Store: store, Codec: UserCodec(), New: user.New,
		NewID: l.ids.New, Now: cfg.Now, Logger: cfg.Logger, CacheMax: cfg.CacheMax,
	})
	l.prices = newPriceList()
	l.models = aggregates.New(aggregates.Config[*pricing.Entry, pricing.Event]{
		Type: TypeModel, Store: store, Codec: ModelCodec(), New: pricing.NewEntry,
		NewID: l.ids.New, Now: cfg.Now, Logger: cfg.Logger,
		OnCommit: func(c eventstore.Commit) { _ = l.prices.applyCommit(c) },
	})
	l.plans = newPlanList()
	l.planRepo = aggregates.New(aggregates.Config[*plan.Entry, plan.Event]{
		Type: TypePlan, Store: store, Codec: PlanCodec(), New: plan.NewEntry,
		NewID: l.ids.New, Now: cfg.Now, Logger: cfg.Logger,
		OnCommit: func(c eventstore.Commit) { _ = l.plans.applyCommit(c) },
	})
	h, err := bcrypt.GenerateFromPassword([]byte("not a password anyone has"), cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	l.dummyHash = h
	return l, nil
}

// NewID makes an id with the given type prefix.
func (l *Ledger) NewID(prefix string) string { return l.ids.New(prefix) }

// Observe is fed every commit seen on the stream, so cached aggregates
// learn that another instance moved them.
func (l *Ledger) Observe(ref eventstore.Ref, streamSeq uint64) {
	switch ref.Type {
	case TypeAccount:
		l.accounts.Observe(ref.ID, streamSeq)
	case TypeUser:
		l.users.Observe(ref.ID, streamSeq)
	case TypeModel:
		l.models.Observe(ref.ID, streamSeq)
	case TypePlan:
		l.planRepo.Observe(ref.ID, streamSeq)
	}
}

// Yield holds this instance's next append to an account back until
// instance asker has had its turn (TurnTaken), another writer's commit is
// seen, or a fraction of a second has passed: asker lost a race for the
// account (see Config.Turns). Only accounts are written hard enough for
// one instance to starve another.
func (l *Ledger) Yield(accountID, asker string) { l.accounts.Yield(accountID, asker) }

// TurnTaken ends asker's request for a turn at an account (see Yield).
func (l *Ledger) TurnTaken(accountID, asker string) { l.accounts.TurnTaken(accountID, asker) }

// ObserveCommit is fed every commit seen on the stream: it keeps cached
// aggregates honest and the price list current with other instances'
// changes.
func (l *Ledger) ObserveCommit(c eventstore.Commit) {
	l.Observe(c.Aggregate, c.StreamSeq)
	switch c.Aggregate.Type {
	case TypeModel:
		if err := l.prices.applyCommit(c); err != nil {
			l.cfg.Logger.Warn("price list", "err", err)
		}
	case TypePlan:
		if err := l.plans.applyCommit(c); err != nil {
			l.cfg.Logger.Warn("plans", "err", err)
		}
	}
}

// AccountCommitStats reports account commits appended and the commands
// they carried (group commit).
func (l *Ledger) AccountCommitStats() (commits, commands uint64) { return l.accounts.Stats() }

// AccountSeq is the stream position a read of account id must reach to
// show every write this instance made to it.
func (l *Ledger) AccountSeq(id string) uint64 { return l.accounts.LastStreamSeq(id) }

// Errors of the command side that are not domain decisions.
var (
	// ErrBadCredentials: unknown email or wrong password (never which).
	ErrBadCredentials = errors.New("invalid email or password")
)

// Meta identifies the caller of a command.
type Meta = aggregates.Meta

// AccountView is an account as a command returns it.
type AccountView struct {
	ID       string
	Email    string
	Plan     account.Plan
	Status   account.Status
	Currency money.Currency
	OwnerID  string
}

func viewOf(a *account.Account) AccountView {
	return AccountView{ID: a.ID(), Email: a.Email(), Plan: a.Plan(), Status: a.Status(), Currency: a.Currency(), OwnerID: a.OwnerUserID()}
}

// CreateAccount opens an account and its customer user in one atomic
// append: both exist or neither does, and the email is unique because the
// user's id is derived from it.
func (l *Ledger) CreateAccount(ctx context.Context, meta Meta, email, password string, plan account.Plan) (AccountView, error) {
	email, err := user.NormalizeEmail(email)
	if err != nil {
		return AccountView{}, err
	}
	if err := user.CheckPassword(password); err != nil {
		return AccountView{}, err
	}
	if _, ok := account.ParsePlan(string(plan)); ok {
		if err := l.checkPlan(plan); err != nil {
			return AccountView{}, err
		}
	}
	hash, err := l.hash(password)
	if err != nil {
		return AccountView{}, err
	}
	accID, userID := l.ids.New("acc"), user.IDFor(email)
	acc, usr := account.New(accID), user.New(userID)
	accEvents, err := acc.Open(email, userID, plan, l.cfg.Currency)
	if err != nil {
		return AccountView{}, err
	}
	userEvents, err := usr.Register(email, user.RoleCustomer, accID, hash)
	if err != nil {
		return AccountView{}, err
	}
	uc, err := l.users.NewCommit(userID, meta, userEvents)
	if err != nil {
		return AccountView{}, err
	}
	ac, err := l.accounts.NewCommit(accID, meta, accEvents)
	if err != nil {
		return AccountView{}, err
	}
	seqs, err := l.store.Append(ctx, eventstore.Append{Commit: uc}, eventstore.Append{Commit: ac})
	if errors.Is(err, eventstore.ErrConflict) {
		return AccountView{}, user.ErrEmailTaken
	}
	if err != nil {
		return AccountView{}, err
	}
	l.users.Created(userID, seqs[0])
	l.accounts.Created(accID, seqs[1])
	if l.cfg.OnCommit != nil {
		ac.StreamSeq = seqs[1]
		l.cfg.OnCommit(ac)
	}
	for _, e := range accEvents {
		acc.Apply(e)
	}
	return viewOf(acc), nil
}

// UpdateAccount changes plan and/or status.
func (l *Ledger) UpdateAccount(ctx context.Context, meta Meta, id string, plan *account.Plan, status *account.Status) (AccountView, error) {
	if !ids.Valid("acc", id) {
		return AccountView{}, account.ErrNotFound
	}
	if plan != nil {
		if _, ok := account.ParsePlan(string(*plan)); ok {
			if err := l.checkPlan(*plan); err != nil {
				return AccountView{}, err
			}
		}
	}
	var view AccountView
	_, err := l.accounts.Execute(ctx, id, meta, func(a *account.Account) ([]account.Event, error) {
		evs, err := a.Update(plan, status)
		if err != nil {
			return nil, err
		}
		view = viewOf(a)
		if plan != nil {
			view.Plan = *plan
		}
		if status != nil {
			view.Status = *status
		}
		return evs, nil
	})
	return view, err
}

// TopUpResult is a recorded top-up.
type TopUpResult struct {
	ID        string
	AccountID string
	Amount    money.Amount
	Reference string
	Replayed  bool // the reference was seen before: nothing new was credited
	StreamSeq uint64
}

// TopUp credits an account, once per reference.
func (l *Ledger) TopUp(ctx context.Context, meta Meta, accountID string, amount money.Amount, reference string) (TopUpResult, error) {
	if !ids.Valid("acc", accountID) {
		return TopUpResult{}, account.ErrNotFound
	}
	return l.credit(ctx, meta, accountID, amount, reference, func(a *account.Account, id string) ([]account.Event, error) {
		return a.TopUp(id, amount, reference)
	})
}

// credit runs a top-up decision (staff or card) under a new top-up id; a
// reference already credited is a replay answered with the first top-up.
func (l *Ledger) credit(ctx context.Context, meta Meta, accountID string, amount money.Amount, reference string,
	decide func(a *account.Account, id string) ([]account.Event, error)) (TopUpResult, error) {
	res := TopUpResult{AccountID: accountID, Amount: amount, Reference: reference}
	topUpID := l.ids.New("top")
	out, err := l.accounts.Execute(ctx, accountID, meta, func(a *account.Account) ([]account.Event, error) {
		evs, err := decide(a, topUpID)
		if err != nil {
			return nil, err
		}
		res.ID, res.Replayed = topUpID, len(evs) == 0
		if res.Replayed {
			prev, _ := a.TopUpByReference(reference)
			res.ID = prev.ID
		}
		return evs, nil
	})
	if err != nil {
		return TopUpResult{}, err
	}
	res.StreamSeq = out.StreamSeq
	return res, nil
}

// Wallet is an account's money as the command side knows it.
type Wallet struct {
	Currency  money.Currency
	Available money.Amount // paid money and credits, less held
	Held      money.Amount
	Credits   money.Amount // unexpired grants, held part included
	Owed      money.Amount // after refunds of spent top-ups; calls are refused while positive
}

// RegisterStaff creates an admin or finance user.
func (l *Ledger) RegisterStaff(ctx context.Context, meta Meta, email, password string, role user.Role) (string, error) {
	email, err := user.NormalizeEmail(email)
	if err != nil {
		return "", err
	}
	if !role.IsStaff() {
		return "", fmt.Errorf("ledger: %q is not a staff role", role)
	}
	if err := user.CheckPassword(password); err != nil {
		return "", err
	}
	hash, err := l.hash(password)
	if err != nil {
		return "", err
	}
	id := user.IDFor(email)
	_, err = l.users.Execute(ctx, id, meta, func(u *user.User) ([]user.Event, error) {
		return u.Register(email, role, "", hash)
	})
	return id, err
}

// EnsureAdmin creates the bootstrap admin unless a user with that email
// exists. It reports whether it created one.
func (l *Ledger) EnsureAdmin(ctx context.Context, email, password string) (bool, error) {
	_, err := l.RegisterStaff(ctx, Meta{Actor: "system:bootstrap", CausationID: l.ids.New("cmd")}, email, password, user.RoleAdmin)
	if errors.Is(err, user.ErrEmailTaken) {
		return false, nil
	}
	return err == nil, err
}

// Identity is who a successful login is.
type Identity struct {
	UserID    string
	Email     string
	Role      user.Role
	AccountID string
}

// Login checks an email and password against the user's own events (not a
// read model, so a user created a moment ago can log in at once).
func (l *Ledger) Login(ctx context.Context, email, password string) (Identity, error) {
	norm, err := user.NormalizeEmail(email)
	if err != nil {
		_ = bcrypt.CompareHashAndPassword(l.dummyHash, []byte(password))
		return Identity{}, ErrBadCredentials
	}
	var id Identity
	var hash []byte
	if err := l.users.Read(ctx, user.IDFor(norm), func(u *user.User) {
		if u.Exists() && !u.Disabled() {
			id = Identity{UserID: u.ID(), Email: u.Email(), Role: u.Role(), AccountID: u.AccountID()}
			hash = []byte(u.PasswordHash())
		}
	}); err != nil {
		return Identity{}, err
	}
	if hash == nil {
		_ = bcrypt.CompareHashAndPassword(l.dummyHash, []byte(password))
		return Identity{}, ErrBadCredentials
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return Identity{}, ErrBadCredentials
	}
	// Identities must match the email exactly, not just by hash prefix.
	if subtle.ConstantTimeCompare([]byte(id.Email), []byte(norm)) != 1 {
		return Identity{}, ErrBadCredentials
	}
	return id, nil
}

// Account returns the account's current state from the store (one round
// trip for what this instance has not seen yet).
func (l *Ledger) Account(ctx context.Context, id string) (AccountView, Wallet, error) {
	if !ids.Valid("acc", id) {
		return AccountView{}, Wallet{}, account.ErrNotFound
	}
	var view AccountView
	var w Wallet
	var found bool
	err := l.accounts.Read(ctx, id, func(a *account.Account) {
		if found = a.Exists(); found {
			view = viewOf(a)
			w = Wallet{Currency: a.Currency(), Available: a.Available(), Held: a.Held(), Credits: a.Credits(), Owed: a.Owed()}
		}
	})
	if err != nil {
		return AccountView{}, Wallet{}, err
	}
	if !found {
		return AccountView{}, Wallet{}, account.ErrNotFound
	}
	return view, w, nil
}

func (l *Ledger) hash(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), l.cfg.BcryptCost)
	if err != nil {
		return "", fmt.Errorf("ledger: hashing password: %w", err)
	}
	return string(h), nil
}
