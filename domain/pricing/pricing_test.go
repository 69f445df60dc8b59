package pricing

import (
	"errors"
	"testing"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

func TestDefaultsAreValid(t *testing.T) {
	want := map[string]string{"nano-banana-2": "0.80", "recraft-v3": "1.00", "dall-e-3": "1.50", "google-veo-3": "2.50",
		"kling-3": "2.50", "seedance-2": "2.50", "sora-2": "2.50", "dop-lite": "2.50", "dop-preview": "3.00", "dop-turbo": "3.50"}
	for _, m := range Defaults() {
		if err := m.Check(); err != nil {
			t.Errorf("%s: %v", m.Name, err)
		}
		if want[m.Name] != m.Price.String() || m.Provider != "local" {
			t.Errorf("%s: price %s provider %s", m.Name, m.Price, m.Provider)
		}
		delete(want, m.Name)
	}
	if len(want) != 0 {
		t.Fatalf("missing defaults: %v", want)
	}
}

func TestSet(t *testing.T) {
	e := NewEntry("x-1")
	m := Model{Type: TypeImage, Price: money.MustParse("1.00"), Currency: money.USD, Provider: "local"}
	evs, err := e.Set(m)
	if err != nil || len(evs) != 1 || evs[0].(ModelSet).PreviousPrice != nil {
		t.Fatalf("first set: %v %v", evs, err)
	}
	e.Apply(evs[0])
	if evs, _ := e.Set(m); len(evs) != 0 {
		t.Fatalf("unchanged set recorded %v", evs)
	}
	m.Price = money.MustParse("1.20")
	evs, _ = e.Set(m)
	if p := evs[0].(ModelSet).PreviousPrice; p == nil || p.String() != "1.00" {
		t.Fatalf("price change: %+v", evs)
	}
	bad := Model{Type: "audio", Price: money.MustParse("0"), Provider: "acme", Options: Options{FailureRate: 2}}
	_, err = NewEntry("Bad Name").Set(bad)
	var verr *validation.Error
	if !errors.As(err, &verr) || len(verr.Fields) != 5 {
		t.Fatalf("invalid model: %v", err)
	}
}

func TestCheckInput(t *testing.T) {
	m := Defaults()[0]
	if err := m.CheckInput("1024x1024", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := m.CheckInput("999x999", 0, ""); err == nil {
		t.Fatal("size outside the options accepted")
	}
	v := Defaults()[3]
	if err := v.CheckInput("", 7, "4k"); err == nil {
		t.Fatal("duration/resolution outside the options accepted")
	}
}
