package account

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
)

func paid(id, amount, ref, pi string) Event {
	return ToppedUp{TopUpID: id, Amount: m(amount), Reference: ref, PaymentIntent: pi,
		Transaction: journal.Move(journal.PlatformCash, journal.Available(accID), m(amount))}
}

func refundTx(covered, owed string) journal.Transaction {
	tx := journal.Transaction{{Account: journal.PlatformCash, Credit: m(covered).Add(m(owed))}}
	if m(covered).IsPositive() {
		tx = append(tx, journal.Line{Account: journal.Available(accID), Debit: m(covered)})
	}
	if m(owed).IsPositive() {
		tx = append(tx, journal.Line{Account: journal.Receivable(accID), Debit: m(owed)})
	}
	return tx
}

func refunded(id, amount, total, covered, owed string) Event {
	return Refunded{RefundID: id, TopUpID: "top_1", Reference: "cs_1", ChargeID: "ch_1", Amount: m(amount),
		RefundedTotal: m(total), Covered: m(covered), Owed: m(owed), Transaction: refundTx(covered, owed)}
}

// spent moves amount out of available as a captured call would.
func spent(task, amount string) []Event {
	return []Event{
		TaskRequested{TaskID: task, Model: "nano-banana-2", Price: m(amount), Owner: "inst_a",
			Transaction: journal.Move(journal.Available(accID), journal.Held(accID), m(amount))},
		TaskSucceeded{TaskID: task, Amount: m(amount), Transaction: journal.Move(journal.Held(accID), journal.PlatformRevenue, m(amount))},
	}
}

// jsonOf compares events as they are stored (decimals compare by value
// there, not by their internal representation).
func jsonOf(evs []Event) string {
	b, _ := json.Marshal(evs)
	return string(b)
}

func TestRefundDecisions(t *testing.T) {
	base := []Event{opened(), paid("top_1", "20.00", "cs_1", "pi_1")}
	runDecisions(t, []decision{
		{
			name:  "full refund of unspent money",
			given: base,
			when:  func(a *Account) ([]Event, error) { return a.Refund("rfd_1", "cs_1", "ch_1", m("20.00")) },
			then:  []Event{refunded("rfd_1", "20.00", "20.00", "20.00", "0.00")},
		},
		{
			name:  "second partial refund takes only the increment",
			given: append(append([]Event{}, base...), refunded("rfd_1", "5.00", "5.00", "5.00", "0.00")),
			when:  func(a *Account) ([]Event, error) { return a.Refund("rfd_2", "cs_1", "ch_1", m("12.00")) },
			then:  []Event{refunded("rfd_2", "7.00", "12.00", "7.00", "0.00")},
		},
		{
			name:  "a repeated or older refund total records nothing",
			given: append(append([]Event{}, base...), refunded("rfd_1", "12.00", "12.00", "12.00", "0.00")),
			when:  func(a *Account) ([]Event, error) { return a.Refund("rfd_2", "cs_1", "ch_1", m("5.00")) },
		},
		{
			name:  "refund of money already spent leaves a receivable",
			given: append(append([]Event{}, base...), spent("gen_1", "15.00")...),
			when:  func(a *Account) ([]Event, error) { return a.Refund("rfd_1", "cs_1", "ch_1", m("20.00")) },
			then:  []Event{refunded("rfd_1", "20.00", "20.00", "5.00", "15.00")},
		},
		{
			name:    "refund beyond the top-up",
			given:   base,
			when:    func(a *Account) ([]Event, error) { return a.Refund("rfd_1", "cs_1", "ch_1", m("20.01")) },
			wantErr: ErrRefundTooLarge,
		},
		{
			name:    "refund of an unknown top-up",
			given:   base,
			when:    func(a *Account) ([]Event, error) { return a.Refund("rfd_1", "cs_x", "ch_1", m("1.00")) },
			wantErr: ErrTopUpNotFound,
		},
		{
			name:      "refund of nothing",
			given:     base,
			when:      func(a *Account) ([]Event, error) { return a.Refund("rfd_1", "cs_1", "ch_1", m("0.00")) },
			wantField: "amount_refunded",
		},
		{
			name:  "paid top-up below the staff minimum is still credited",
			given: []Event{opened()},
			when:  func(a *Account) ([]Event, error) { return a.TopUpPaid("top_2", m("5.00"), "cs_2", "pi_2") },
			then:  []Event{paid("top_2", "5.00", "cs_2", "pi_2")},
		},
		{
			name:  "paid top-up delivered again credits nothing",
			given: base,
			when:  func(a *Account) ([]Event, error) { return a.TopUpPaid("top_2", m("20.00"), "cs_1", "pi_1") },
		},
		{
			name: "top-up settles what is owed first",
			given: append(append(append([]Event{}, base...), spent("gen_1", "15.00")...),
				refunded("rfd_1", "20.00", "20.00", "5.00", "15.00")),
			when: func(a *Account) ([]Event, error) { return a.TopUpPaid("top_2", m("25.00"), "cs_2", "pi_2") },
			then: []Event{ToppedUp{TopUpID: "top_2", Amount: m("25.00"), Reference: "cs_2", PaymentIntent: "pi_2",
				Transaction: journal.Transaction{{Account: journal.PlatformCash, Debit: m("25.00")},
					{Account: journal.Receivable(accID), Credit: m("15.00")}, {Account: journal.Available(accID), Credit: m("10.00")}}}},
		},
		{
			name: "a top-up smaller than the debt settles part of it",
			given: append(append(append([]Event{}, base...), spent("gen_1", "15.00")...),
				refunded("rfd_1", "20.00", "20.00", "5.00", "15.00")),
			when: func(a *Account) ([]Event, error) { return a.TopUp("top_2", m("10.00"), "inv-2") },
			then: []Event{ToppedUp{TopUpID: "top_2", Amount: m("10.00"), Reference: "inv-2",
				Transaction: journal.Transaction{{Account: journal.PlatformCash, Debit: m("10.00")},
					{Account: journal.Receivable(accID), Credit: m("10.00")}}}},
		},
	})
}

// TestDebtRefusesCallsUntilSettled: a refund of spent money leaves the
// account owing; calls are refused (with what is owed) until a top-up
// settles it, and available and held never go below zero.
func TestDebtRefusesCallsUntilSettled(t *testing.T) {
	a := New(accID)
	for _, e := range append([]Event{opened(), paid("top_1", "20.00", "cs_1", "pi_1")}, spent("gen_1", "15.00")...) {
		a.Apply(e)
	}
	evs, err := a.Refund("rfd_1", "cs_1", "ch_1", m("20.00"))
	decideApply(t, a, evs, err)
	if !a.Available().IsZero() || !a.Owed().Equal(m("15.00")) {
		t.Fatalf("after refund: available %s owed %s, want 0.00 and 15.00", a.Available(), a.Owed())
	}
	_, err = a.RequestTask(req("gen_2", nanoBanana, ""), time.Now())
	var de *DebtError
	if !errors.As(err, &de) || !de.Owed.Equal(m("15.00")) {
		t.Fatalf("request in debt: %v, want DebtError owing 15.00", err)
	}
	evs, err = a.TopUp("top_2", m("10.00"), "inv-2")
	decideApply(t, a, evs, err)
	if _, err := a.RequestTask(req("gen_3", nanoBanana, ""), time.Now()); !errors.As(err, &de) || !de.Owed.Equal(m("5.00")) {
		t.Fatalf("request still in debt: %v, want DebtError owing 5.00", err)
	}
	evs, err = a.TopUp("top_3", m("10.00"), "inv-3")
	decideApply(t, a, evs, err)
	if !a.Owed().IsZero() || !a.Available().Equal(m("5.00")) {
		t.Fatalf("after settling: available %s owed %s, want 5.00 and 0.00", a.Available(), a.Owed())
	}
	if _, err := a.RequestTask(req("gen_4", nanoBanana, ""), time.Now()); err != nil {
		t.Fatalf("request after settling: %v", err)
	}
}

func TestLowBalanceCrossings(t *testing.T) {
	ids := 0
	newID := func(p string) string { ids++; return p + "_" + string(rune('0'+ids)) }
	a := New(accID)
	a.Apply(opened())
	a.Apply(toppedUp("t1", "10.00", "r1"))
	evs, err := a.SetNotifications(ptr(m("5.00")), "https://example.com/hook")
	decideApply(t, a, evs, err)
	if !a.Notifications().Armed {
		t.Fatal("not armed with available above the threshold")
	}
	step := func(name string, decided []Event, want []Event) {
		t.Helper()
		got := a.LowBalanceEvents(decided, newID)
		if g, w := jsonOf(got), jsonOf(want); g != w {
			t.Fatalf("%s: got %s, want %s", name, g, w)
		}
		for _, e := range append(decided, got...) {
			a.Apply(e)
		}
	}
	reserve := func(task, amount string) Event {
		return TaskRequested{TaskID: task, Price: m(amount), Owner: "inst_a",
			Transaction: journal.Move(journal.Available(accID), journal.Held(accID), m(amount))}
	}
	release := func(task, amount string) Event {
		return TaskFailed{TaskID: task, Amount: m(amount), Transaction: journal.Move(journal.Held(accID), journal.Available(accID), m(amount))}
	}
	step("above the threshold", []Event{reserve("g1", "4.00")}, nil)
	step("at the threshold is not below", []Event{reserve("g2", "1.00")}, nil)
	step("falls below", []Event{reserve("g3", "0.80")}, []Event{LowBalanceCrossed{AlertID: "lba_1", Threshold: m("5.00"),
		Available: m("4.20"), Currency: money.USD, WebhookURL: "https://example.com/hook"}})
	step("further down, disarmed", []Event{reserve("g4", "0.80")}, nil)
	step("release not enough to re-arm", []Event{release("g4", "0.80")}, nil)
	step("release back to the threshold re-arms", []Event{release("g3", "0.80")}, []Event{LowBalanceRearmed{Threshold: m("5.00"), Available: m("5.00")}})
	step("keys and other events move nothing", []Event{KeyRevoked{KeyID: "k"}}, nil)
	step("falls below again", []Event{reserve("g5", "0.01")}, []Event{LowBalanceCrossed{AlertID: "lba_2", Threshold: m("5.00"),
		Available: m("4.99"), Currency: money.USD, WebhookURL: "https://example.com/hook"}})

	evs, err = a.SetNotifications(nil, "")
	decideApply(t, a, evs, err)
	step("alert off", []Event{reserve("g6", "1.00")}, nil)
	if _, err := a.SetNotifications(ptr(m("-1.00")), "https://example.com/hook"); err == nil {
		t.Fatal("negative threshold accepted")
	}
}
