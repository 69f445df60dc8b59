package user

import "errors"

// Event names are part of the stored history and never change.
const (
	EventRegistered = "user.registered"
)

// Event is a fact about one user.
type Event interface {
	EventName() string
}

// Registered creates a user. PasswordHash is a bcrypt hash, never the
// password.
type Registered struct {
	UserID       string `json:"user_id"`
	Email        string `json:"email"`
	Role         Role   `json:"role"`
	AccountID    string `json:"account_id,omitempty"`
	PasswordHash string `json:"password_hash"`
}

func (Registered) EventName() string { return EventRegistered }

var (
	// ErrEmailTaken: a user with this email exists.
	ErrEmailTaken = errors.New("a user with this email already exists")
	// ErrNotFound: no such user.
	ErrNotFound = errors.New("user not found")
)
