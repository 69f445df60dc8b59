package audit

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// memSource serves fixed commits, so a test can tamper with history in a
// way the real stream (which denies edits) never allows.
type memSource []eventstore.Commit

func (m memSource) Scan(_ context.Context, _, _ string, _ uint64, fn func(eventstore.Commit) error) error {
	for _, c := range m {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

const acc = "acc_01"

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// history is a fixed account history: opened, two top-ups, a charge.
func history(t *testing.T) memSource {
	t.Helper()
	c := ledger.AccountCodec()
	m := money.MustParse
	evs := []account.Event{
		account.Opened{AccountID: acc, Email: "a@example.com", Plan: account.PlanAPI, Currency: money.USD},
		account.ToppedUp{TopUpID: "top_1", Amount: m("10.00"), Reference: "r1", Transaction: journal.Move(journal.PlatformCash, journal.Available(acc), m("10.00"))},
		account.ToppedUp{TopUpID: "top_2", Amount: m("5.00"), Reference: "r2", Transaction: journal.Move(journal.PlatformCash, journal.Available(acc), m("5.00"))},
		account.TaskRequested{TaskID: "gen_1", Model: "m", Price: m("0.80"), Transaction: journal.Move(journal.Available(acc), journal.Held(acc), m("0.80"))},
		account.TaskSucceeded{TaskID: "gen_1", Amount: m("0.80"), Transaction: journal.Move(journal.Held(acc), journal.PlatformRevenue, m("0.80"))},
	}
	var src memSource
	var seq uint64
	hash := ""
	for i, e := range evs {
		name, v, data, err := c.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		ev := []eventstore.Event{{ID: "evt_" + string(rune('a'+i)), Type: name, Version: v, AggregateType: "account",
			AggregateID: acc, OccurredAt: t0.Add(time.Duration(i) * time.Minute), Data: data}}
		hash = eventstore.Chain(seq, hash, ev)
		seq++
		src = append(src, eventstore.Commit{ID: "cmt", Aggregate: eventstore.Ref{Type: "account", ID: acc}, Events: ev,
			StreamSeq: uint64(i + 1), Stored: t0.Add(time.Duration(i) * time.Minute)})
	}
	return src
}

func check(r Report, name string) Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{}
}

func TestVerifyIntactHistory(t *testing.T) {
	r, err := Verify(context.Background(), history(t), nil, nil, "")
	if err != nil || !r.OK || r.Events != 5 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
}

func TestVerifyFindsAnEditedAmount(t *testing.T) {
	src := history(t)
	// Someone changes the second top-up from 5.00 to 50.00 after the fact.
	src[2].Events[0].Data = json.RawMessage(strings.Replace(string(src[2].Events[0].Data), `"5.00"`, `"50.00"`, -1))
	r, err := Verify(context.Background(), src, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	c := check(r, "hash_chains")
	if r.OK || c.OK || !strings.Contains(c.Detail, "stream seq 3") {
		t.Fatalf("verify after editing seq 3: %+v", r)
	}
}

func TestVerifyFindsAForgedChainThatDoesNotBalance(t *testing.T) {
	src := history(t)
	// A forger who also recomputes every hash: the chain holds, but the
	// posting they edited no longer balances.
	src[2].Events[0].Data = json.RawMessage(strings.Replace(string(src[2].Events[0].Data), `"credit":"5.00"`, `"credit":"50.00"`, 1))
	var seq uint64
	hash := ""
	for i := range src {
		hash = eventstore.Chain(seq, hash, src[i].Events)
		seq++
	}
	r, _ := Verify(context.Background(), src, nil, nil, "")
	if c := check(r, "hash_chains"); !c.OK {
		t.Fatalf("rehashed chain reported broken: %+v", c)
	}
	if c := check(r, "transactions_balanced"); c.OK || !strings.Contains(c.Detail, "seq 3") {
		t.Fatalf("unbalanced forgery not found: %+v", r)
	}
}

func TestBalanceAsOf(t *testing.T) {
	src := history(t)
	for _, tt := range []struct {
		at   time.Time
		want string
	}{
		{t0.Add(30 * time.Second), "0.00/0.00"},
		{t0.Add(time.Minute), "10.00/0.00"},
		{t0.Add(3 * time.Minute), "14.20/0.80"},
		{t0.Add(time.Hour), "14.20/0.00"},
	} {
		b, err := BalanceAsOf(context.Background(), src, acc, tt.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Available.String() + "/" + b.Held.String(); got != tt.want {
			t.Errorf("as of %s: %s, want %s", tt.at.Format(time.TimeOnly), got, tt.want)
		}
	}
}
