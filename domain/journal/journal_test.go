package journal

import (
	"errors"
	"testing"

	"github.com/ledgerd/ledgerd/domain/money"
)

func TestCheck(t *testing.T) {
	m := money.MustParse
	tests := []struct {
		name    string
		tx      Transaction
		wantErr bool
	}{
		{"move", Move(PlatformCash, Available("acc_1"), m("10.00")), false},
		{"empty", Transaction{}, false},
		{"one sided", Transaction{{Account: PlatformCash, Debit: m("1.00")}}, true},
		{"uneven", Transaction{{Account: "a", Debit: m("1.00")}, {Account: "b", Credit: m("0.99")}}, true},
		{"negative", Transaction{{Account: "a", Debit: m("-1.00")}, {Account: "b", Debit: m("1.00")}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tx.Check()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Check() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrUnbalanced) {
				t.Fatalf("Check() = %v, want ErrUnbalanced", err)
			}
		})
	}
}

func TestEffect(t *testing.T) {
	tx := Move(Available("acc_1"), Held("acc_1"), money.MustParse("0.80"))
	if got := tx.Effect(Available("acc_1")).String(); got != "-0.80" {
		t.Fatalf("available effect = %s, want -0.80", got)
	}
	if got := tx.Effect(Held("acc_1")).String(); got != "0.80" {
		t.Fatalf("held effect = %s, want 0.80", got)
	}
}
