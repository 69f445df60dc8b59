package account

import (
	"errors"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/apikey"
)

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func spec(t *testing.T) apikey.Spec {
	t.Helper()
	s, err := apikey.NewSpec(apikey.SpecInput{Name: "ci"}, now, 60)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func keyCreated(id string, h byte, expires *time.Time) Event {
	return KeyCreated{KeyID: id, Name: "k", Hash: apikey.Hash{h}, Prefix: "nx_live_", Last4: "abcd",
		Scopes: apikey.DefaultScopes, ExpiresAt: expires, RateLimit: 60}
}

func TestKeyDecisions(t *testing.T) {
	past := now.Add(-time.Hour)
	tests := []struct {
		name    string
		given   []Event
		when    func(a *Account) ([]Event, error)
		check   func(t *testing.T, evs []Event)
		wantErr error
	}{
		{
			name:  "create",
			given: []Event{opened()},
			when: func(a *Account) ([]Event, error) {
				return a.CreateKey(NewKey{ID: "key_1", Hash: apikey.Hash{1}, Prefix: "nx_live_", Last4: "wxyz"}, spec(t), now, 5)
			},
			check: func(t *testing.T, evs []Event) {
				e, ok := evs[0].(KeyCreated)
				if !ok || e.KeyID != "key_1" || e.Hash != (apikey.Hash{1}) || len(e.Scopes) != len(apikey.DefaultScopes) {
					t.Fatalf("events = %#v", evs)
				}
			},
		},
		{
			name:  "sixth key",
			given: []Event{opened(), keyCreated("k1", 1, nil), keyCreated("k2", 2, nil), keyCreated("k3", 3, nil), keyCreated("k4", 4, nil), keyCreated("k5", 5, nil)},
			when: func(a *Account) ([]Event, error) {
				return a.CreateKey(NewKey{ID: "k6", Hash: apikey.Hash{6}}, spec(t), now, 5)
			},
			wantErr: ErrKeyLimit,
		},
		{
			name: "revoked and expired keys do not count towards the cap",
			given: []Event{opened(), keyCreated("k1", 1, nil), keyCreated("k2", 2, nil), keyCreated("k3", 3, nil), keyCreated("k4", 4, &past), keyCreated("k5", 5, nil),
				KeyRevoked{KeyID: "k5", Hash: apikey.Hash{5}}},
			when: func(a *Account) ([]Event, error) {
				return a.CreateKey(NewKey{ID: "k6", Hash: apikey.Hash{6}}, spec(t), now, 5)
			},
			check: func(t *testing.T, evs []Event) {
				if len(evs) != 1 {
					t.Fatalf("events = %v", evs)
				}
			},
		},
		{
			name:  "rotate",
			given: []Event{opened(), keyCreated("k1", 1, nil)},
			when:  func(a *Account) ([]Event, error) { return a.RotateKey("k1", apikey.Hash{9}, "zzzz", now) },
			check: func(t *testing.T, evs []Event) {
				if e := evs[0].(KeyRotated); e.PreviousHash != (apikey.Hash{1}) || e.Hash != (apikey.Hash{9}) {
					t.Fatalf("events = %#v", evs)
				}
			},
		},
		{
			name:    "rotate a revoked key",
			given:   []Event{opened(), keyCreated("k1", 1, nil), KeyRevoked{KeyID: "k1"}},
			when:    func(a *Account) ([]Event, error) { return a.RotateKey("k1", apikey.Hash{9}, "zzzz", now) },
			wantErr: ErrKeyNotFound,
		},
		{
			name:    "revoke twice",
			given:   []Event{opened(), keyCreated("k1", 1, nil), KeyRevoked{KeyID: "k1"}},
			when:    func(a *Account) ([]Event, error) { return a.RevokeKey("k1") },
			wantErr: ErrKeyNotFound,
		},
		{
			name:    "revoke unknown",
			given:   []Event{opened()},
			when:    func(a *Account) ([]Event, error) { return a.RevokeKey("k9") },
			wantErr: ErrKeyNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(accID)
			for _, e := range tt.given {
				a.Apply(e)
			}
			evs, err := tt.when(a)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || evs != nil {
					t.Fatalf("got %v, %v; want %v and no events", evs, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, evs)
		})
	}
}

func TestRotatedHashReplacesOld(t *testing.T) {
	a := New(accID)
	for _, e := range []Event{opened(), keyCreated("k1", 1, nil), KeyRotated{KeyID: "k1", Hash: apikey.Hash{2}, Last4: "new4", PreviousHash: apikey.Hash{1}}} {
		a.Apply(e)
	}
	k, _ := a.Key("k1")
	if k.Hash != (apikey.Hash{2}) || k.Last4 != "new4" || k.Name != "k" {
		t.Fatalf("key after rotate = %+v", k)
	}
}
