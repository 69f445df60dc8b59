// Package audit proves the ledger from its events: balances as they stood
// at any time, and verification that the hash chains are intact, every
// transaction balances, no balance ever went below zero, every read
// model equals a fresh fold of the events, and so does every snapshot the
// command side loads accounts from.
package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/aggregates"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Source reads commits in stream order.
type Source interface {
	Scan(ctx context.Context, typ, id string, after uint64, fn func(eventstore.Commit) error) error
}

// Balance is a wallet at a moment.
type Balance struct {
	Available money.Amount // paid money, not held
	Held      money.Amount // paid money, held
	// Grants' money, spendable and held.
	Credits, HeldCredits money.Amount
	Events               int // how many of the account's events it folds
}

// BalanceAsOf folds the account's events committed at or before asOf (by
// the time the stream stored them, which only grows).
func BalanceAsOf(ctx context.Context, src Source, accountID string, asOf time.Time) (Balance, error) {
	var b Balance
	c := ledger.AccountCodec()
	found := false
	errStop := errors.New("stop")
	err := src.Scan(ctx, ledger.TypeAccount, accountID, 0, func(cm eventstore.Commit) error {
		found = true
		if cm.Stored.After(asOf) {
			return errStop
		}
		for _, ev := range cm.Events {
			b.Events++
			d, err := c.Decode(ev.Type, ev.Version, ev.Data)
			if err != nil {
				return fmt.Errorf("seq %d: %w", ev.Seq, err)
			}
			if m, ok := d.(account.Moving); ok {
				tx := m.Postings()
				b.Available = b.Available.Add(tx.Effect(journal.Available(accountID)))
				b.Held = b.Held.Add(tx.Effect(journal.Held(accountID)))
				b.Credits = b.Credits.Add(tx.Effect(journal.Credits(accountID)))
				b.HeldCredits = b.HeldCredits.Add(tx.Effect(journal.HeldCredits(accountID)))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return Balance{}, err
	}
	if !found {
		return Balance{}, account.ErrNotFound
	}
	return b, nil
}

// Check is one verification result.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Report is what Verify found.
type Report struct {
	OK       bool    `json:"ok"`
	Checks   []Check `json:"checks"`
	Events   int     `json:"events"`
	Accounts int     `json:"accounts"`
}

// AccountModel is what the read models say of one account.
type AccountModel struct {
	Available, Held   money.Amount
	Credits, HeldCred money.Amount
	Owed              money.Amount  // the receivable left by refunds of spent top-ups
	StatementBalance  *money.Amount // nil: no statement line yet
	StatementCredits  money.Amount
	Calls, Failures   int64
	Spend             money.Amount
	Succeeded, Failed int64
	Open              int64
	Cost              money.Amount
}

// Snapshot is the read models at one instant, with each projection's
// position, so each can be compared with the fold at exactly that point.
type Snapshot struct {
	Positions map[string]uint64 // accounts, statement, usage, tasks
	Accounts  map[string]AccountModel
}

// ReadModels takes a consistent snapshot of the read models.
type ReadModels interface {
	Snapshot(ctx context.Context, accountID string) (Snapshot, error)
}

// StoredStates are the command side's snapshots of accounts' states
// (aggregates.Snapshots), which it loads accounts from.
type StoredStates interface {
	// Positions is the stream position of each account's snapshot (of one
	// account if accountID is set).
	Positions(ctx context.Context, accountID string) (map[string]uint64, error)
	Get(ctx context.Context, id string) (aggregates.Snapshot, bool, error)
}

// fold is one account's state folded from its events.
type fold struct {
	seq  uint64
	hash string
	m    AccountModel
	open map[string]bool
}

func (f *fold) copyModel() AccountModel {
	m := f.m
	if f.m.StatementBalance != nil {
		b := *f.m.StatementBalance
		m.StatementBalance = &b
	}
	return m
}

// problems collects a check's failures, keeping the first few in full.
type problems struct {
	n    int
	list []string
}

func (p *problems) add(format string, args ...any) {
	p.n++
	if len(p.list) < 10 {
		p.list = append(p.list, fmt.Sprintf(format, args...))
	}
}

func (p *problems) check(name, okDetail string) Check {
	if p.n == 0 {
		return Check{Name: name, OK: true, Detail: okDetail}
	}
	d := fmt.Sprintf("%d problem(s): %s", p.n, joinTrunc(p.list))
	return Check{Name: name, OK: false, Detail: d}
}

func joinTrunc(xs []string) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += "; "
		}
		out += x
	}
	return out
}

// Verify checks every aggregate's events (or one account's, if accountID
// is set) and compares the read models with a fresh fold of them.
func Verify(ctx context.Context, src Source, rm ReadModels, stored StoredStates, accountID string) (Report, error) {
	var chains, balanced, negative problems
	rep := Report{}
	codecs := ledger.AccountCodec()
	heads := map[eventstore.Ref]*fold{}
	var snap Snapshot
	var err error
	if rm != nil {
		// The snapshot is taken first: the fold below then covers every
		// event the read models can have applied.
		if snap, err = rm.Snapshot(ctx, accountID); err != nil {
			return Report{}, fmt.Errorf("reading the read models: %w", err)
		}
	}
	// Fold snapshots at each projection's position.
	type mark struct {
		name string
		pos  uint64
	}
	var marks []mark
	for name, pos := range snap.Positions {
		marks = append(marks, mark{name, pos})
	}
	sort.Slice(marks, func(i, j int) bool { return marks[i].pos < marks[j].pos })
	at := map[string]map[string]AccountModel{}
	takeMarks := func(upTo uint64) {
		for len(marks) > 0 && marks[0].pos < upTo {
			models := map[string]AccountModel{}
			for ref, f := range heads {
				if ref.Type == ledger.TypeAccount {
					models[ref.ID] = f.copyModel()
				}
			}
			at[marks[0].name] = models
			marks = marks[1:]
		}
	}
	states, err := newStateCheck(ctx, stored, accountID)
	if err != nil {
		return Report{}, err
	}
	typ, id := "", ""
	if accountID != "" {
		typ, id = ledger.TypeAccount, accountID
	}
	err = src.Scan(ctx, typ, id, 0, func(c eventstore.Commit) error {
		takeMarks(c.StreamSeq)
		f := heads[c.Aggregate]
		if f == nil {
			f = &fold{open: map[string]bool{}}
			heads[c.Aggregate] = f
		}
		if err := eventstore.VerifyChain(f.seq, f.hash, c.Events); err != nil {
			chains.add("%s stream seq %d: %v", c.Aggregate, c.StreamSeq, err)
		}
		if n := len(c.Events); n > 0 {
			f.seq, f.hash = c.Events[n-1].Seq, c.Events[n-1].Hash
		}
		if c.Aggregate.Type != ledger.TypeAccount {
			rep.Events += len(c.Events)
			return nil
		}
		for _, ev := range c.Events {
			rep.Events++
			d, err := codecs.Decode(ev.Type, ev.Version, ev.Data)
			if err != nil {
				chains.add("%s seq %d: undecodable: %v", c.Aggregate, ev.Seq, err)
				continue
			}
			foldEvent(f, c.Aggregate.ID, ev, d, &balanced, &negative)
			states.apply(c.Aggregate.ID, d)
		}
		states.reached(c)
		return nil
	})
	if err != nil {
		return Report{}, err
	}
	takeMarks(^uint64(0))
	for ref := range heads {
		if ref.Type == ledger.TypeAccount {
			rep.Accounts++
		}
	}
	rep.Checks = []Check{
		chains.check("hash_chains", fmt.Sprintf("%d aggregates, every event links to the one before", len(heads))),
		balanced.check("transactions_balanced", "every posting's debits equal its credits"),
		negative.check("no_negative_balance", "available, held and owed never below zero"),
	}
	if rm != nil {
		rep.Checks = append(rep.Checks, compare(snap, at)...)
	}
	if stored != nil {
		rep.Checks = append(rep.Checks, states.check(ctx))
	}
	rep.OK = true
	for _, c := range rep.Checks {
		rep.OK = rep.OK && c.OK
	}
	return rep, nil
}

func foldEvent(f *fold, accountID string, ev eventstore.Event, d account.Event, balanced, negative *problems) {
	if mv, ok := d.(account.Moving); ok {
		tx := mv.Postings()
		if err := tx.Check(); err != nil {
			balanced.add("account %s seq %d (%s): %v", accountID, ev.Seq, ev.Type, err)
		}
		paid := tx.Effect(journal.Available(accountID)).Add(tx.Effect(journal.Held(accountID)))
		granted := tx.Effect(journal.Credits(accountID)).Add(tx.Effect(journal.HeldCredits(accountID)))
		f.m.Available = f.m.Available.Add(tx.Effect(journal.Available(accountID)))
		f.m.Held = f.m.Held.Add(tx.Effect(journal.Held(accountID)))
		f.m.Credits = f.m.Credits.Add(tx.Effect(journal.Credits(accountID)))
		f.m.HeldCred = f.m.HeldCred.Add(tx.Effect(journal.HeldCredits(accountID)))
		f.m.Owed = f.m.Owed.Sub(tx.Effect(journal.Receivable(accountID)))
		if f.m.Available.IsNegative() || f.m.Held.IsNegative() || f.m.Credits.IsNegative() || f.m.HeldCred.IsNegative() || f.m.Owed.IsNegative() {
			negative.add("account %s seq %d (%s): available %s, held %s, credits %s, held credits %s, owed %s",
				accountID, ev.Seq, ev.Type, f.m.Available, f.m.Held, f.m.Credits, f.m.HeldCred, f.m.Owed)
		}
		// The statement has a line for every movement of paid money or
		// of grants (and for every charge).
		line := false
		switch d.(type) {
		case account.TaskSucceeded, account.Refunded:
			line = true
		case account.ToppedUp, account.Adjusted, account.CreditsGranted, account.GrantExpired, account.TaskFailed, account.Subscribed:
			line = !paid.IsZero() || !granted.IsZero()
		}
		if line {
			b := f.m.Available.Add(f.m.Held)
			f.m.StatementBalance = &b
			f.m.StatementCredits = f.m.Credits.Add(f.m.HeldCred)
		}
	}
	switch e := d.(type) {
	case account.TaskRequested:
		f.open[e.TaskID] = true
		f.m.Open++
	case account.TaskSucceeded:
		delete(f.open, e.TaskID)
		f.m.Open--
		f.m.Succeeded++
		f.m.Calls++
		f.m.Spend = f.m.Spend.Add(e.Amount)
		f.m.Cost = f.m.Cost.Add(e.Amount)
	case account.TaskFailed:
		delete(f.open, e.TaskID)
		f.m.Open--
		f.m.Failed++
		f.m.Failures++
	}
}

// compare checks each read model against the fold at its position.
func compare(snap Snapshot, at map[string]map[string]AccountModel) []Check {
	type field struct {
		projection, name string
		get              func(AccountModel) string
	}
	fields := []field{
		{"accounts", "wallets", func(m AccountModel) string {
			s := m.Available.String() + "/" + m.Held.String() + " credits " + m.Credits.String() + "/" + m.HeldCred.String()
			if !m.Owed.IsZero() {
				s += " owing " + m.Owed.String()
			}
			return s
		}},
		{"statement", "statement", func(m AccountModel) string {
			if m.StatementBalance == nil {
				return "none"
			}
			return m.StatementBalance.String() + " credits " + m.StatementCredits.String()
		}},
		{"usage", "usage", func(m AccountModel) string {
			return fmt.Sprintf("%d calls, %s spend, %d failures", m.Calls, m.Spend, m.Failures)
		}},
		{"tasks", "tasks", func(m AccountModel) string {
			return fmt.Sprintf("%d open, %d succeeded, %d failed, %s captured", m.Open, m.Succeeded, m.Failed, m.Cost)
		}},
	}
	var checks []Check
	for _, f := range fields {
		var p problems
		folded := at[f.projection]
		ids := map[string]bool{}
		for id := range folded {
			ids[id] = true
		}
		for id := range snap.Accounts {
			ids[id] = true
		}
		sorted := make([]string, 0, len(ids))
		for id := range ids {
			sorted = append(sorted, id)
		}
		slices.Sort(sorted)
		for _, id := range sorted {
			want, inFold := folded[id]
			got, inModel := snap.Accounts[id]
			if !inFold && !inModel {
				continue
			}
			if g, w := f.get(got), f.get(want); g != w {
				p.add("account %s: read model has %s, the events say %s", id, g, w)
			}
		}
		checks = append(checks, p.check("read_model:"+f.name,
			fmt.Sprintf("equal to the events at stream seq %d", snap.Positions[f.projection])))
	}
	return checks
}
