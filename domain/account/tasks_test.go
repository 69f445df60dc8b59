package account

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
)

var nanoBanana = pricing.Model{Name: "nano-banana-2", Type: pricing.TypeImage, Price: m("0.80"), Currency: money.USD, Provider: "local"}
var veo = pricing.Model{Name: "google-veo-3", Type: pricing.TypeVideo, Price: m("2.50"), Currency: money.USD, Provider: "local"}

func req(task string, model pricing.Model, key string) TaskRequest {
	return TaskRequest{TaskID: task, KeyID: key, Model: model, Input: TaskInput{Prompt: "p", RequestType: "sync"},
		Owner: "inst_a", HoldTTL: 2 * time.Minute}
}

func funded(amount string, extra ...Event) *Account {
	a := New(accID)
	a.Apply(opened())
	a.Apply(toppedUp("t1", amount, "r1"))
	for _, e := range extra {
		a.Apply(e)
	}
	return a
}

func decideApply(t *testing.T, a *Account, evs []Event, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		a.Apply(e)
	}
}

func TestReserveCaptureRelease(t *testing.T) {
	a := funded("10.00")
	evs, err := a.RequestTask(req("gen_1", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	if !a.Available().Equal(m("9.20")) || !a.Held().Equal(m("0.80")) || !a.Balance().Equal(m("10.00")) {
		t.Fatalf("after reserve: available %s held %s", a.Available(), a.Held())
	}
	evs, err = a.CompleteTask("gen_1", "inst_a", TaskOutput{ImageURL: "u"})
	decideApply(t, a, evs, err)
	if !a.Available().Equal(m("9.20")) || !a.Held().IsZero() || !a.Balance().Equal(m("9.20")) {
		t.Fatalf("after capture: available %s held %s", a.Available(), a.Held())
	}
	// A captured task cannot be released or captured again.
	if _, err := a.FailTask("gen_1", "inst_a", "provider_error", "x", now); !errors.Is(err, ErrTaskNotOpen) {
		t.Fatalf("release after capture: %v", err)
	}
	if _, err := a.CompleteTask("gen_1", "inst_a", TaskOutput{}); !errors.Is(err, ErrTaskNotOpen) {
		t.Fatalf("capture twice: %v", err)
	}
	evs, err = a.RequestTask(req("gen_2", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	evs, err = a.FailTask("gen_2", "inst_a", "provider_error", "boom", now)
	decideApply(t, a, evs, err)
	if !a.Available().Equal(m("9.20")) || !a.Held().IsZero() {
		t.Fatalf("after release: available %s held %s", a.Available(), a.Held())
	}
}

func TestRequestTaskChecks(t *testing.T) {
	key := func(id string, scopes apikey.Scopes, q apikey.Quota) Event {
		return KeyCreated{KeyID: id, Hash: apikey.Hash{byte(len(id))}, Scopes: scopes, Quota: q, RateLimit: 60}
	}
	two := m("1.60")
	tests := []struct {
		name    string
		acc     func() *Account
		req     TaskRequest
		wantErr error
	}{
		{"ok with key", func() *Account { return funded("10.00", key("k", apikey.DefaultScopes, apikey.Quota{})) }, req("g", nanoBanana, "k"), nil},
		{"exactly enough", func() *Account {
			return funded("10.00", Adjusted{Amount: m("-9.20"), Transaction: journal.Move(journal.Available(accID), journal.PlatformAdjustments, m("9.20"))})
		}, req("g", nanoBanana, ""), nil},
		{"insufficient", func() *Account {
			return funded("10.00", Adjusted{Amount: m("-9.21"), Transaction: journal.Move(journal.Available(accID), journal.PlatformAdjustments, m("9.21"))})
		}, req("g", nanoBanana, ""), ErrInsufficientFunds},
		{"free plan", func() *Account { return funded("10.00", PlanChanged{Plan: PlanFree}) }, req("g", nanoBanana, ""), ErrPlanRequired},
		{"suspended", func() *Account { return funded("10.00", StatusChanged{Status: StatusSuspended}) }, req("g", nanoBanana, ""), ErrInactive},
		{"revoked key", func() *Account {
			return funded("10.00", key("k", apikey.DefaultScopes, apikey.Quota{}), KeyRevoked{KeyID: "k"})
		}, req("g", nanoBanana, "k"), ErrKeyInactive},
		{"unknown key", func() *Account { return funded("10.00") }, req("g", nanoBanana, "k"), ErrKeyInactive},
		{"wrong type scope", func() *Account { return funded("10.00", key("k", apikey.Scopes{apikey.ScopeVideo}, apikey.Quota{})) }, req("g", nanoBanana, "k"), ErrScope},
		{"model pin", func() *Account {
			return funded("10.00", key("k", apikey.Scopes{apikey.ScopeVideo, "model:kling-3"}, apikey.Quota{}))
		}, req("g", veo, "k"), ErrScope},
		{"calls quota", func() *Account {
			a := funded("10.00", key("k", apikey.DefaultScopes, apikey.Quota{Calls: 1}))
			evs, _ := a.RequestTask(req("g0", nanoBanana, "k"), now)
			a.Apply(evs[0])
			return a
		}, req("g", nanoBanana, "k"), &QuotaError{}},
		{"spend quota counts held", func() *Account {
			a := funded("10.00", key("k", apikey.DefaultScopes, apikey.Quota{Spend: &two}))
			for _, id := range []string{"g0", "g1"} {
				evs, _ := a.RequestTask(req(id, nanoBanana, "k"), now)
				a.Apply(evs[0])
			}
			return a
		}, req("g", nanoBanana, "k"), &QuotaError{}},
		{"released calls free their quota", func() *Account {
			a := funded("10.00", key("k", apikey.DefaultScopes, apikey.Quota{Calls: 1}))
			evs, _ := a.RequestTask(req("g0", nanoBanana, "k"), now)
			a.Apply(evs[0])
			evs, _ = a.FailTask("g0", "inst_a", "provider_error", "x", now)
			a.Apply(evs[0])
			return a
		}, req("g", nanoBanana, "k"), nil},
		{"quota resets next month", func() *Account {
			a := funded("10.00", key("k", apikey.DefaultScopes, apikey.Quota{Calls: 1}))
			evs, _ := a.RequestTask(req("g0", nanoBanana, "k"), now.AddDate(0, -1, 0))
			a.Apply(evs[0])
			return a
		}, req("g", nanoBanana, "k"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.acc()
			before := fmt.Sprint(a.Available(), a.Held(), len(a.holds), a.version)
			evs, err := a.RequestTask(tt.req, now)
			var qe *QuotaError
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("err = %v", err)
			case tt.wantErr == nil:
				if len(evs) != 1 {
					t.Fatalf("events = %v", evs)
				}
				if e := evs[0].(TaskRequested); e.Transaction.Check() != nil || !e.Price.Equal(tt.req.Model.Price) {
					t.Fatalf("event = %+v", e)
				}
			case errors.As(tt.wantErr, &qe):
				if !errors.As(err, &qe) || !qe.RetryAt.After(now) {
					t.Fatalf("err = %v, want a quota error with a retry time", err)
				}
			case !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil && fmt.Sprint(a.Available(), a.Held(), len(a.holds), a.version) != before {
				t.Fatal("a rejected request changed state")
			}
		})
	}
}

func TestIdempotencyKeys(t *testing.T) {
	a := funded("10.00")
	r := req("g1", nanoBanana, "")
	r.IdempotencyKey, r.RequestHash = "idem-1", "h1"
	evs, err := a.RequestTask(r, now)
	decideApply(t, a, evs, err)
	r2 := r
	r2.TaskID = "g2"
	var dup *DuplicateError
	if _, err := a.RequestTask(r2, now.Add(time.Minute)); !errors.As(err, &dup) || dup.TaskID != "g1" {
		t.Fatalf("retry: %v, want duplicate of g1", err)
	}
	r2.RequestHash = "h2"
	if _, err := a.RequestTask(r2, now.Add(time.Minute)); !errors.Is(err, ErrIdempotencyMismatch) {
		t.Fatalf("different body: %v", err)
	}
	// After the window the aggregate forgets (the read model answers).
	later := now.Add(IdempotencyWindow + time.Second)
	r3 := req("g3", nanoBanana, "")
	evs, err = a.RequestTask(r3, later)
	decideApply(t, a, evs, err)
	if _, _, ok := a.RecentTask("idem-1"); ok {
		t.Fatal("idempotency key kept beyond the window")
	}
	// A call still open keeps its key beyond the window, however long
	// its hold: a retry must not make it twice.
	long := req("g4", veo, "")
	long.IdempotencyKey, long.RequestHash, long.HoldTTL = "idem-long", "h1", time.Hour
	evs, err = a.RequestTask(long, later)
	decideApply(t, a, evs, err)
	retry := long
	retry.TaskID = "g5"
	if _, err := a.RequestTask(retry, later.Add(IdempotencyWindow+time.Minute)); !errors.As(err, &dup) || dup.TaskID != "g4" {
		t.Fatalf("retry of an open call past the window: %v, want duplicate of g4", err)
	}
	retry.RequestHash = "h2"
	if _, err := a.RequestTask(retry, later.Add(IdempotencyWindow+time.Minute)); !errors.Is(err, ErrIdempotencyMismatch) {
		t.Fatalf("other body for an open call's key past the window: %v", err)
	}
}

// TestRefusedCallFreesItsKey: a call whose caller was answered 503 while
// its reservation was in doubt, and which landed after all, is released by
// whoever finds it; its key is then free, so the caller's retry with it is
// a new call. Any other ending keeps the key: a retry gets that call.
func TestRefusedCallFreesItsKey(t *testing.T) {
	keyed := func(task string) TaskRequest {
		r := req(task, nanoBanana, "")
		r.IdempotencyKey, r.RequestHash = "idem-1", "h1"
		return r
	}
	tests := []struct {
		name    string
		end     func(a *Account) ([]Event, error)
		freesIt bool
	}{
		{"refused", func(a *Account) ([]Event, error) { return a.ReleaseRefused("g1", now) }, true},
		{"failed at the provider", func(a *Account) ([]Event, error) {
			return a.FailTask("g1", "inst_a", "provider_error", "boom", now)
		}, false},
		{"failed as unavailable by its runner", func(a *Account) ([]Event, error) {
			return a.FailTask("g1", "inst_a", CodeUnavailable, "provider down", now)
		}, false},
		{"captured", func(a *Account) ([]Event, error) { return a.CompleteTask("g1", "inst_a", TaskOutput{}) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := funded("10.00")
			evs, err := a.RequestTask(keyed("g1"), now)
			decideApply(t, a, evs, err)
			evs, err = tt.end(a)
			decideApply(t, a, evs, err)
			evs, err = a.RequestTask(keyed("g2"), now.Add(time.Second))
			var dup *DuplicateError
			if tt.freesIt {
				decideApply(t, a, evs, err)
				if _, open := a.Hold("g2"); !open || !a.Held().Equal(m("0.80")) || !a.Available().Equal(m("9.20")) {
					t.Fatalf("retry after the refusal: held %s available %s, want one call held", a.Held(), a.Available())
				}
				if _, err := a.RequestTask(keyed("g3"), now.Add(2*time.Second)); !errors.As(err, &dup) || dup.TaskID != "g2" {
					t.Fatalf("second retry: %v, want duplicate of the new call g2", err)
				}
				return
			}
			if !errors.As(err, &dup) || dup.TaskID != "g1" {
				t.Fatalf("retry: %v, want duplicate of g1", err)
			}
		})
	}
}

func TestReleaseRefused(t *testing.T) {
	a := funded("10.00")
	evs, err := a.RequestTask(req("g1", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	evs, err = a.RequestTask(req("g2", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	evs, err = a.StartTask("g2", "inst_a", "ref")
	decideApply(t, a, evs, err)
	// Whoever owns it, before its expiry.
	evs, err = a.ReleaseRefused("g1", now)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := evs[len(evs)-1].(TaskFailed)
	if !ok || !f.Refused || f.Code != CodeUnavailable || !f.Amount.Equal(m("0.80")) || f.Transaction.Check() != nil {
		t.Fatalf("events %+v", evs)
	}
	decideApply(t, a, evs, nil)
	if !a.Held().Equal(m("0.80")) || !a.Available().Equal(m("9.20")) {
		t.Fatalf("after the refusal: held %s available %s", a.Held(), a.Available())
	}
	for name, c := range map[string]struct {
		id   string
		want error
	}{
		"a call already ended":  {"g1", ErrTaskNotOpen},
		"a call a provider has": {"g2", ErrTaskStarted},
		"an unknown call":       {"g9", ErrTaskNotOpen},
	} {
		if evs, err := a.ReleaseRefused(c.id, now); !errors.Is(err, c.want) || evs != nil {
			t.Errorf("%s: %v, %v; want %v and nothing", name, evs, err, c.want)
		}
	}
}

func TestSweeperAndAdoption(t *testing.T) {
	a := funded("10.00")
	evs, err := a.RequestTask(req("g1", nanoBanana, ""), now)
	decideApply(t, a, evs, err)
	if _, err := a.FailTask("g1", "", "abandoned", "expired", now.Add(time.Minute)); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("sweeper before expiry: %v", err)
	}
	if _, err := a.CompleteTask("g1", "inst_b", TaskOutput{}); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("capture by a non-owner: %v", err)
	}
	if _, err := a.AdoptTask("g1", "inst_x", "inst_b"); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("adopt naming the wrong owner: %v", err)
	}
	evs, err = a.AdoptTask("g1", "inst_a", "inst_b")
	decideApply(t, a, evs, err)
	if _, err := a.AdoptTask("g1", "inst_a", "inst_c"); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("second adopter: %v", err)
	}
	evs, err = a.FailTask("g1", "", "abandoned", "expired", now.Add(3*time.Minute))
	decideApply(t, a, evs, err)
	if !a.Available().Equal(m("10.00")) || !a.Held().IsZero() {
		t.Fatalf("after expiry release: %s %s", a.Available(), a.Held())
	}
}

func TestAdjust(t *testing.T) {
	a := funded("10.00")
	evs, err := a.RequestTask(req("g1", nanoBanana, ""), now) // 0.80 held
	decideApply(t, a, evs, err)
	if _, err := a.Adjust("adj_1", m("-9.21"), "refund error"); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("debit beyond available: %v", err)
	}
	if _, err := a.Adjust("adj_1", m("5.00"), " "); err == nil {
		t.Fatal("adjustment without reason accepted")
	}
	evs, err = a.Adjust("adj_1", m("-9.20"), "goodwill reversal")
	decideApply(t, a, evs, err)
	if !a.Available().IsZero() || !a.Held().Equal(m("0.80")) {
		t.Fatalf("after adjustment: %s %s", a.Available(), a.Held())
	}
}
