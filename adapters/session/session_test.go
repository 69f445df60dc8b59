package session

import (
	"errors"
	"testing"
	"time"
)

func TestIssueVerify(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	i, err := NewIssuer([]byte("0123456789abcdef0123456789abcdef"), 15*time.Minute, clock)
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := i.Issue(Claims{UserID: "usr_1", Email: "a@example.com", Role: "customer", AccountID: "acc_1"})
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(now.Add(15 * time.Minute)) {
		t.Fatalf("expiry = %v", exp)
	}
	c, err := i.Verify(tok)
	if err != nil || c.UserID != "usr_1" || c.AccountID != "acc_1" || c.Role != "customer" {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
	other, _ := NewIssuer([]byte("another key that is 32 bytes lng"), time.Minute, clock)
	for name, tt := range map[string]struct {
		iss *Issuer
		tok string
		at  time.Time
	}{
		"wrong key": {other, tok, now},
		"expired":   {i, tok, now.Add(16 * time.Minute)},
		"garbage":   {i, "eyJ.x.y", now},
		"alg none":  {i, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c3JfMSJ9.", now},
	} {
		t.Run(name, func(t *testing.T) {
			at := tt.at
			tt.iss.now = func() time.Time { return at }
			if _, err := tt.iss.Verify(tt.tok); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %v, want ErrInvalid", err)
			}
			tt.iss.now = clock
		})
	}
}

func TestLoadOrCreateKeyPersists(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKey("", dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKey("", dir)
	if err != nil || string(k1) != string(k2) || len(k1) != 32 {
		t.Fatalf("second load = %x, %v; want the same 32 bytes", k2, err)
	}
	if _, err := LoadOrCreateKey("short", dir); err == nil {
		t.Fatal("short configured key accepted")
	}
}
