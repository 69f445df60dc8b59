// Package user holds people who log in: customers, who act on one account,
// and staff (admin, finance), who act on the platform.
package user

import (
	"crypto/sha256"
	"encoding/base32"
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/validation"
)

// Role decides what a user may do.
type Role string

const (
	RoleCustomer Role = "customer"
	RoleAdmin    Role = "admin"
	RoleFinance  Role = "finance"
)

// ParseStaffRole accepts the roles an admin may grant to staff.
func ParseStaffRole(s string) (Role, bool) {
	switch r := Role(s); r {
	case RoleAdmin, RoleFinance:
		return r, true
	}
	return "", false
}

// IsStaff reports whether the role belongs to platform staff.
func (r Role) IsStaff() bool { return r == RoleAdmin || r == RoleFinance }

// Password rules. bcrypt reads at most 72 bytes; a longer password would be
// silently truncated, so it is refused instead.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 72
	MaxEmailLen    = 254
)

// NormalizeEmail returns the canonical form of an address (trimmed,
// lower-cased) or a validation error.
func NormalizeEmail(email string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	if e == "" {
		return "", validation.Field("email", "is required")
	}
	if len(e) > MaxEmailLen || !utf8.ValidString(e) {
		return "", validation.Field("email", "must be a valid address of at most 254 characters")
	}
	addr, err := mail.ParseAddress(e)
	if err != nil || addr.Address != e || addr.Name != "" {
		return "", validation.Field("email", "must be a valid address")
	}
	return e, nil
}

// CheckPassword applies the password rules.
func CheckPassword(pw string) error {
	switch {
	case len(pw) < MinPasswordLen:
		return validation.Field("password", "must be at least 8 characters")
	case len(pw) > MaxPasswordLen:
		return validation.Field("password", "must be at most 72 bytes")
	case !utf8.ValidString(pw):
		return validation.Field("password", "must be valid UTF-8")
	}
	return nil
}

// IDFor derives a user's id from the normalized email. Making the id a
// function of the email turns "this email is taken" into "this aggregate
// already has events", which the event store checks atomically.
func IDFor(normalizedEmail string) string {
	sum := sha256.Sum256([]byte(normalizedEmail))
	return "usr_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]))
}

// User is the aggregate.
type User struct {
	id           string
	registered   bool
	email        string
	role         Role
	accountID    string
	passwordHash string
	disabled     bool
	version      uint64
}

// New returns the empty aggregate for id.
func New(id string) *User { return &User{id: id} }

func (u *User) ID() string           { return u.id }
func (u *User) Exists() bool         { return u.registered }
func (u *User) Email() string        { return u.email }
func (u *User) Role() Role           { return u.role }
func (u *User) AccountID() string    { return u.accountID }
func (u *User) PasswordHash() string { return u.passwordHash }
func (u *User) Disabled() bool       { return u.disabled }
func (u *User) Version() uint64      { return u.version }

// Register decides a new user. The password arrives already hashed: hashing
// is slow, salted and random, which has no place in a pure decision.
func (u *User) Register(email string, role Role, accountID, passwordHash string) ([]Event, error) {
	if u.registered {
		return nil, ErrEmailTaken
	}
	if role == RoleCustomer && accountID == "" {
		return nil, validation.Field("account_id", "a customer belongs to an account")
	}
	if role.IsStaff() && accountID != "" {
		return nil, validation.Field("account_id", "staff users belong to no account")
	}
	return []Event{Registered{
		UserID:       u.id,
		Email:        email,
		Role:         role,
		AccountID:    accountID,
		PasswordHash: passwordHash,
	}}, nil
}

// Apply folds one event into the state.
func (u *User) Apply(e Event) {
	u.version++
	switch e := e.(type) {
	case Registered:
		u.registered = true
		u.email = e.Email
		u.role = e.Role
		u.accountID = e.AccountID
		u.passwordHash = e.PasswordHash
	}
}
