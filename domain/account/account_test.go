package account

import (
	"errors"
	"reflect"
	"testing"

	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

const accID = "acc_1"

var m = money.MustParse

func opened() Event {
	return Opened{AccountID: accID, Email: "a@example.com", OwnerUserID: "usr_1", Plan: PlanStandard, Currency: money.USD}
}

func toppedUp(id, amount, ref string) Event {
	return ToppedUp{TopUpID: id, Amount: m(amount), Reference: ref,
		Transaction: journal.Move(journal.PlatformCash, journal.Available(accID), m(amount))}
}

func ptr[T any](v T) *T { return &v }

// TestDecisions reads as: given these events, when this command, then these
// events or this error.
func TestDecisions(t *testing.T) {
	runDecisions(t, []decision{
		{
			name: "open a new account",
			when: func(a *Account) ([]Event, error) {
				return a.Open("a@example.com", "usr_1", PlanStandard, money.USD)
			},
			then: []Event{opened()},
		},
		{
			name:    "open twice",
			given:   []Event{opened()},
			when:    func(a *Account) ([]Event, error) { return a.Open("a@example.com", "usr_1", PlanPro, money.USD) },
			wantErr: ErrExists,
		},
		{
			name:      "open with unknown plan",
			when:      func(a *Account) ([]Event, error) { return a.Open("a@example.com", "usr_1", "Gold Plan!", money.USD) },
			wantField: "plan",
		},
		{
			name:  "top up",
			given: []Event{opened()},
			when:  func(a *Account) ([]Event, error) { return a.TopUp("top_1", m("10.00"), "inv-1") },
			then:  []Event{toppedUp("top_1", "10.00", "inv-1")},
		},
		{
			name:      "top up below minimum",
			given:     []Event{opened()},
			when:      func(a *Account) ([]Event, error) { return a.TopUp("top_1", m("9.99"), "inv-1") },
			wantField: "amount",
		},
		{
			name:      "top up negative",
			given:     []Event{opened()},
			when:      func(a *Account) ([]Event, error) { return a.TopUp("top_1", m("-10.00"), "inv-1") },
			wantField: "amount",
		},
		{
			name:      "top up without reference",
			given:     []Event{opened()},
			when:      func(a *Account) ([]Event, error) { return a.TopUp("top_1", m("10.00"), "  ") },
			wantField: "reference",
		},
		{
			name:      "top up with control characters in reference",
			given:     []Event{opened()},
			when:      func(a *Account) ([]Event, error) { return a.TopUp("top_1", m("10.00"), "a\x00b") },
			wantField: "reference",
		},
		{
			name:  "top up retried with the same reference credits once",
			given: []Event{opened(), toppedUp("top_1", "10.00", "inv-1")},
			when:  func(a *Account) ([]Event, error) { return a.TopUp("top_2", m("10.00"), "inv-1") },
			then:  nil,
		},
		{
			name:    "reference reused for another amount",
			given:   []Event{opened(), toppedUp("top_1", "10.00", "inv-1")},
			when:    func(a *Account) ([]Event, error) { return a.TopUp("top_2", m("20.00"), "inv-1") },
			wantErr: ErrReferenceReused,
		},
		{
			name:    "top up an account that does not exist",
			when:    func(a *Account) ([]Event, error) { return a.TopUp("top_1", m("10.00"), "inv-1") },
			wantErr: ErrNotFound,
		},
		{
			name:    "top up a closed account",
			given:   []Event{opened(), StatusChanged{Status: StatusClosed, Previous: StatusActive}},
			when:    func(a *Account) ([]Event, error) { return a.TopUp("top_1", m("10.00"), "inv-1") },
			wantErr: ErrClosed,
		},
		{
			name:  "change plan and status",
			given: []Event{opened()},
			when:  func(a *Account) ([]Event, error) { return a.Update(ptr(PlanFree), ptr(StatusSuspended)) },
			then: []Event{
				PlanChanged{Plan: PlanFree, Previous: PlanStandard},
				StatusChanged{Status: StatusSuspended, Previous: StatusActive},
			},
		},
		{
			name:  "update to the current values changes nothing",
			given: []Event{opened()},
			when:  func(a *Account) ([]Event, error) { return a.Update(ptr(PlanStandard), ptr(StatusActive)) },
			then:  nil,
		},
		{
			name:      "update with unknown status",
			given:     []Event{opened()},
			when:      func(a *Account) ([]Event, error) { return a.Update(nil, ptr(Status("gone"))) },
			wantField: "status",
		},
		{
			name:    "a closed account stays closed",
			given:   []Event{opened(), StatusChanged{Status: StatusClosed, Previous: StatusActive}},
			when:    func(a *Account) ([]Event, error) { return a.Update(nil, ptr(StatusActive)) },
			wantErr: ErrClosed,
		},
	})
}

// decision is a case of a given/when/then table: given these events, when
// this command, then these events or this error.
type decision struct {
	name      string
	given     []Event
	when      func(a *Account) ([]Event, error)
	then      []Event
	wantErr   error
	wantField string // for validation errors
}

// runDecisions runs each case; deciding must never change state (only
// Apply does), and every posting it makes must balance.
func runDecisions(t *testing.T, tests []decision) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(accID)
			for _, e := range tt.given {
				a.Apply(e)
			}
			before := snapshot(a)
			got, err := tt.when(a)
			switch {
			case tt.wantField != "":
				var verr *validation.Error
				if !errors.As(err, &verr) || verr.Fields[0].Field != tt.wantField {
					t.Fatalf("error = %v, want validation error on %q", err, tt.wantField)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
			case err != nil:
				t.Fatalf("unexpected error %v", err)
			}
			if g, w := jsonOf(got), jsonOf(tt.then); g != w {
				t.Fatalf("events = %s, want %s", g, w)
			}
			if after := snapshot(a); !reflect.DeepEqual(before, after) {
				t.Fatalf("deciding changed state: %+v, want %+v", after, before)
			}
			for _, e := range got {
				if mv, ok := e.(Moving); ok {
					if err := mv.Postings().Check(); err != nil {
						t.Fatalf("unbalanced: %v", err)
					}
				}
			}
		})
	}
}

func snapshot(a *Account) Account {
	c := *a
	c.topUps = make(map[string]TopUp, len(a.topUps))
	for k, v := range a.topUps {
		c.topUps[k] = v
	}
	return c
}

func TestWalletIsTheFoldOfPostings(t *testing.T) {
	a := New(accID)
	for _, e := range []Event{opened(), toppedUp("t1", "10.00", "r1"), toppedUp("t2", "15.50", "r2")} {
		a.Apply(e)
	}
	if got, want := a.Balance(), m("25.50"); !got.Equal(want) {
		t.Fatalf("balance = %s, want %s", got, want)
	}
	if got := a.Held(); !got.IsZero() {
		t.Fatalf("held = %s, want 0.00", got)
	}
	if tu, ok := a.TopUpByReference("r2"); !ok || tu.ID != "t2" || tu.Seq != 3 {
		t.Fatalf("TopUpByReference(r2) = %+v %v, want t2 at seq 3", tu, ok)
	}
}
