package plan

import (
	"errors"
	"testing"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

func TestCheck(t *testing.T) {
	m := money.MustParse
	tests := []struct {
		name  string
		p     Plan
		field string // "" when valid
	}{
		{"default", Plan{Name: "pro", APIAccess: true}, ""},
		{"with fee and credits", Plan{Name: "gold-2", APIAccess: true, MonthlyFee: m("20.00"), IncludedCredits: m("5.00"), MaxKeys: 10}, ""},
		{"bad name", Plan{Name: "Gold"}, "plan"},
		{"empty name", Plan{}, "plan"},
		{"negative fee", Plan{Name: "x", MonthlyFee: m("-1.00")}, "monthly_fee"},
		{"negative credits", Plan{Name: "x", IncludedCredits: m("-1.00")}, "included_credits"},
		{"too many keys", Plan{Name: "x", MaxKeys: 1001}, "max_keys"},
		{"negative rate", Plan{Name: "x", DefaultRateLimit: -1}, "default_rate_limit"},
		{"free with a fee", Plan{Name: Free, MonthlyFee: m("1.00")}, "plan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Check()
			var verr *validation.Error
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("Check() = %v, want valid", err)
			case tt.field != "" && (!errors.As(err, &verr) || verr.Fields[0].Field != tt.field):
				t.Fatalf("Check() = %v, want an error on %s", err, tt.field)
			}
		})
	}
}

func TestSetRecordsChangesOnly(t *testing.T) {
	e := NewEntry("pro")
	p := Plan{APIAccess: true, MonthlyFee: money.MustParse("20.00"), Currency: money.USD}
	evs, err := e.Set(p)
	if err != nil || len(evs) != 1 || evs[0].(Set).Previous != nil || evs[0].(Set).Plan.Name != "pro" {
		t.Fatalf("first set = %v, %v", evs, err)
	}
	e.Apply(evs[0])
	if evs, _ := e.Set(Plan{APIAccess: true, MonthlyFee: money.MustParse("20.0"), Currency: money.USD}); len(evs) != 0 {
		t.Fatalf("an equal definition recorded %v", evs)
	}
	evs, _ = e.Set(Plan{APIAccess: true, MonthlyFee: money.MustParse("22.00"), Currency: money.USD})
	if len(evs) != 1 || evs[0].(Set).Previous.MonthlyFee.String() != "20.00" {
		t.Fatalf("a fee change = %v", evs)
	}
}
