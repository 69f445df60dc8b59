package user

import (
	"errors"
	"testing"

	"github.com/ledgerd/ledgerd/domain/validation"
)

func TestNormalizeEmail(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"  Alice@Example.COM ", "alice@example.com", true},
		{"bob@example.com", "bob@example.com", true},
		{"", "", false},
		{"not-an-email", "", false},
		{"Alice <alice@example.com>", "", false},
		{"a@b@c", "", false},
	}
	for _, tt := range tests {
		got, err := NormalizeEmail(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestIDForIsStableAndDistinct(t *testing.T) {
	a, b := IDFor("a@example.com"), IDFor("b@example.com")
	if a == b || a != IDFor("a@example.com") {
		t.Fatalf("IDFor not a stable injective-looking function: %s %s", a, b)
	}
	if len(a) != len("usr_")+24 {
		t.Fatalf("IDFor length = %d, want %d", len(a), len("usr_")+24)
	}
}

func TestRegister(t *testing.T) {
	tests := []struct {
		name      string
		given     []Event
		role      Role
		account   string
		wantErr   error
		wantField string
	}{
		{name: "customer", role: RoleCustomer, account: "acc_1"},
		{name: "staff", role: RoleAdmin},
		{name: "customer without account", role: RoleCustomer, wantField: "account_id"},
		{name: "staff with account", role: RoleFinance, account: "acc_1", wantField: "account_id"},
		{name: "email taken", given: []Event{Registered{UserID: "usr_x", Email: "a@example.com", Role: RoleAdmin}}, role: RoleAdmin, wantErr: ErrEmailTaken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := New("usr_x")
			for _, e := range tt.given {
				u.Apply(e)
			}
			events, err := u.Register("a@example.com", tt.role, tt.account, "$2a$hash")
			switch {
			case tt.wantField != "":
				var verr *validation.Error
				if !errors.As(err, &verr) || verr.Fields[0].Field != tt.wantField {
					t.Fatalf("error = %v, want validation error on %s", err, tt.wantField)
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if len(events) != 1 {
				t.Fatalf("events = %v, want one Registered", events)
			}
			u.Apply(events[0])
			if !u.Exists() || u.Role() != tt.role || u.AccountID() != tt.account {
				t.Fatalf("state after apply = %+v", u)
			}
		})
	}
}

func TestCheckPassword(t *testing.T) {
	for pw, ok := range map[string]bool{"short": false, "long enough": true, string(make([]byte, 73)): false} {
		if err := CheckPassword(pw); (err == nil) != ok {
			t.Errorf("CheckPassword(len %d) = %v, want ok=%v", len(pw), err, ok)
		}
	}
}
