// Package validation holds the error that says which input fields are
// invalid and why, so every layer reports bad input the same way.
package validation

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// FieldError names one invalid field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error lists every invalid field of one input. Collect them all before
// returning, so a client fixes its request in one round trip.
type Error struct {
	Fields []FieldError
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Message
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// Add records an invalid field.
func (e *Error) Add(field, message string) {
	e.Fields = append(e.Fields, FieldError{Field: field, Message: message})
}

// Err returns e when any field was recorded, nil otherwise. It returns the
// error interface so that a nil result compares equal to nil.
func (e *Error) Err() error {
	if e == nil || len(e.Fields) == 0 {
		return nil
	}
	return e
}

// Field is a one-field error.
func Field(field, message string) error {
	return &Error{Fields: []FieldError{{Field: field, Message: message}}}
}

// TextProblem says what is wrong with a short piece of free text that is
// stored and shown (a name, a reference, a reason), or "" if nothing is.
// It must be valid UTF-8 without control characters: NUL cannot be stored
// in a Postgres text or jsonb value at all, so one would stop the read
// model that meets it. Nor may it hold bidirectional embedding, override
// or isolate characters, which make a statement line or an audit export
// display differently from what it says ("Trojan Source"). Other Unicode,
// emoji included, is welcome.
func TextProblem(s string) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	for _, r := range s {
		switch {
		case unicode.IsControl(r):
			return "must not contain control characters"
		case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return "must not contain bidirectional override characters"
		}
	}
	return ""
}
