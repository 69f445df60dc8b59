package account

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
)

// checkClone fails unless c equals a and shares no map, slice or pointer
// with it: a change to either must never show in the other. Amounts and
// times are values whose insides (big.Int, Location) are never changed in
// place, so they may share.
func checkClone(t *testing.T, a, c *Account) {
	t.Helper()
	if !reflect.DeepEqual(a, c) {
		t.Fatalf("clone differs from the original:\n%+v\n%+v", a, c)
	}
	if path := shared(reflect.ValueOf(a).Elem(), reflect.ValueOf(c).Elem(), "Account"); path != "" {
		t.Fatalf("clone shares %s with the original", path)
	}
}

var (
	amountType = reflect.TypeFor[money.Amount]()
	timeType   = reflect.TypeFor[time.Time]()
)

// shared walks a and b (equal values) in step and names the first map,
// slice or pointer they have in common.
func shared(a, b reflect.Value, path string) string {
	if a.Type() == amountType || a.Type() == timeType {
		return ""
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return ""
		}
		if a.Pointer() == b.Pointer() {
			return path
		}
		return shared(a.Elem(), b.Elem(), "*"+path)
	case reflect.Map:
		if a.IsNil() {
			return ""
		}
		if a.Pointer() == b.Pointer() {
			return path
		}
		for _, k := range a.MapKeys() {
			if p := shared(a.MapIndex(k), b.MapIndex(k), path+"["+k.String()+"]"); p != "" {
				return p
			}
		}
	case reflect.Slice:
		if a.Cap() == 0 {
			return ""
		}
		if a.Pointer() == b.Pointer() {
			return path
		}
		for i := range a.Len() {
			if p := shared(a.Index(i), b.Index(i), path+"[i]"); p != "" {
				return p
			}
		}
	case reflect.Struct:
		for i := range a.NumField() {
			if p := shared(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); p != "" {
				return p
			}
		}
	case reflect.Interface:
		if !a.IsNil() {
			return shared(a.Elem(), b.Elem(), path)
		}
	}
	return ""
}

// rich is an account with every part of its state in use.
func rich(t *testing.T) *Account {
	t.Helper()
	a := New(accID)
	apply := func(evs []Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			a.Apply(e)
		}
	}
	a.Apply(opened())
	a.Apply(toppedUp("top_1", "100.00", "wire-1"))
	spend := m("50.00")
	a.Apply(KeyCreated{KeyID: "k", Name: "main", Hash: apikey.Hash{1}, Prefix: "nx_live_", Last4: "abcd",
		Scopes: apikey.DefaultScopes, Quota: apikey.Quota{Calls: 100, Spend: &spend},
		Allowlist: []string{"10.0.0.0/8"}, ExpiresAt: ptr(now.Add(time.Hour)), RateLimit: 60})
	a.Apply(KeyCreated{KeyID: "k2", Hash: apikey.Hash{2}, Scopes: apikey.Scopes{"image:generate"}})
	apply(a.RotateKey("k2", apikey.Hash{3}, "wxyz", now))
	apply(a.GrantCredits("grt_1", m("5.00"), now.Add(24*time.Hour), "welcome", "admin", now))
	apply(a.Subscribe(plan.Plan{Name: "pro", APIAccess: true, MonthlyFee: m("10.00"), IncludedCredits: m("2.00")}, "grt_s", now))
	apply(a.SetNotifications(ptr(m("20.00")), "https://example.com/hook"))
	for i, key := range []string{"idem-1", "idem-2", ""} {
		r := req("gen_"+strings.Repeat("x", i+1), nanoBanana, "k")
		r.IdempotencyKey, r.RequestHash = key, "h"
		apply(a.RequestTask(r, now))
	}
	apply(a.CompleteTask("gen_x", "inst_a", TaskOutput{ImageURL: "u"}))
	return a
}

func TestCloneSharesNothing(t *testing.T) {
	a := rich(t)
	if len(a.openKeys) == 0 || len(a.holds) == 0 || len(a.grants) == 0 || a.sub == nil || a.alerts.threshold == nil || len(a.idem) == 0 || len(a.usage) == 0 {
		t.Fatalf("the account does not use every part of its state: %+v", a)
	}
	c := a.Clone()
	checkClone(t, a, c)
	if c.openKeys["idem-2"] != c.holds["gen_xx"] {
		t.Fatal("the clone's open key does not name the clone's hold")
	}

	// Commands on the clone leave the original as it was.
	before := a.Clone()
	for _, evs := range [][]Event{
		must(c.CompleteTask("gen_xx", "inst_a", TaskOutput{ImageURL: "v"})),
		must(c.RevokeKey("k")),
		must(c.TopUp("top_2", m("10.00"), "wire-2")),
		must(c.ExpireGrants(now.Add(48 * time.Hour))),
	} {
		for _, e := range evs {
			c.Apply(e)
		}
	}
	if !reflect.DeepEqual(a, before) {
		t.Fatal("commands on the clone changed the original")
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("the commands changed nothing on the clone")
	}
}

func must(evs []Event, err error) []Event {
	if err != nil {
		panic(err)
	}
	return evs
}
