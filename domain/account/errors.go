package account

import "errors"

var (
	// ErrNotFound: no account has this id.
	ErrNotFound = errors.New("account not found")
	// ErrExists: the account was already opened.
	ErrExists = errors.New("account already exists")
	// ErrClosed: a closed account takes no further money movements.
	ErrClosed = errors.New("account is closed")
	// ErrReferenceReused: a top-up reference was used before for a
	// different amount, so the request is not a retry of that top-up.
	ErrReferenceReused = errors.New("reference already used for a different top-up")
)
