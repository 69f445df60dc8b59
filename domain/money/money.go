// Package money holds exact monetary amounts and currencies.
//
// Amounts are decimals with at most two fractional digits (whole cents) and
// a bounded magnitude, so that every value fits the NUMERIC(20,2) columns of
// the read models and no sum of realistic balances overflows them. They are
// never float64: input is parsed from its decimal text, output is a string.
package money

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/shopspring/decimal"
)

// Scale is the number of fractional digits an amount may carry.
const Scale = 2

// maxInputLen bounds the text we hand to the decimal parser, so that a
// 10,000-digit number is rejected before any big-number arithmetic runs.
const maxInputLen = 40

var (
	// Max is the largest magnitude a single amount may have.
	Max = decimal.RequireFromString("999999999999.99")

	// ErrInvalid is returned for text that is not a plain decimal number.
	ErrInvalid = errors.New("not a decimal number")
	// ErrTooPrecise is returned for amounts with fractions of a cent.
	ErrTooPrecise = errors.New("more than 2 decimal places")
	// ErrTooLarge is returned for amounts beyond Max.
	ErrTooLarge = errors.New("amount too large")
)

// Amount is an exact sum of money in some currency's major unit.
// The zero value is 0.00.
type Amount struct {
	d decimal.Decimal
}

// Zero is 0.00.
var Zero = Amount{}

// Parse reads a decimal string such as "12.40". It rejects exponents,
// NaN/Infinity, fractions of a cent and magnitudes beyond Max.
func Parse(s string) (Amount, error) {
	if a, ok := parseCommon(s); ok {
		return a, nil
	}
	return parseGeneral(s)
}

func parseGeneral(s string) (Amount, error) {
	if len(s) == 0 || len(s) > maxInputLen {
		return Amount{}, ErrInvalid
	}
	if !plainDecimal(s) {
		return Amount{}, ErrInvalid
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return Amount{}, ErrInvalid
	}
	return fromDecimal(d)
}

// MustParse is Parse for constants in code and tests.
func MustParse(s string) Amount {
	a, err := Parse(s)
	if err != nil {
		panic(fmt.Sprintf("money.MustParse(%q): %v", s, err))
	}
	return a
}

// ParseJSON reads an amount given either as a JSON string ("0.80") or a
// JSON number (0.8), exactly: the number's text is parsed, never a float64.
func ParseJSON(raw json.RawMessage) (Amount, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return Amount{}, ErrInvalid
	}
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' {
		if a, ok := parseCommon(string(raw[1 : n-1])); ok {
			return a, nil
		}
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Amount{}, ErrInvalid
		}
		return Parse(s)
	}
	return Parse(string(raw))
}

// FromCents builds an amount from an integer number of cents.
func FromCents(c int64) Amount {
	return Amount{d: decimal.New(c, -Scale)}
}

func fromDecimal(d decimal.Decimal) (Amount, error) {
	if !d.Equal(d.Truncate(Scale)) {
		return Amount{}, ErrTooPrecise
	}
	if d.Abs().GreaterThan(Max) {
		return Amount{}, ErrTooLarge
	}
	return Amount{d: d}, nil
}

// parseCommon reads the form nearly every stored amount has, an optional
// minus, at most 12 integer digits and at most 2 fraction digits ("0.80",
// "-12.5", "100"), without the general parser's big-number work: every
// event load and projection reads several amounts. It gives exactly the
// decimal Parse's general path gives (FuzzParse holds it to that), and
// reports false for anything else, which then takes the general path.
func parseCommon(s string) (Amount, bool) {
	i, neg := 0, false
	if len(s) > 0 && s[0] == '-' {
		i, neg = 1, true
	}
	var v int64
	intDigits, fracDigits, dot := 0, 0, false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if dot {
				fracDigits++
			} else {
				intDigits++
			}
			v = v*10 + int64(c-'0')
		case c == '.' && !dot:
			dot = true
		default:
			return Amount{}, false
		}
	}
	if intDigits == 0 || intDigits > 12 || fracDigits > Scale || (dot && fracDigits == 0) {
		return Amount{}, false
	}
	if neg {
		v = -v
	}
	return Amount{d: decimal.New(v, int32(-fracDigits))}, true
}

// plainDecimal accepts an optional sign, digits, and an optional fraction:
// the forms a person writes for money. Exponents are refused because "1e9"
// in a price field is far more likely a mistake than an intent.
func plainDecimal(s string) bool {
	i := 0
	if s[0] == '-' || s[0] == '+' {
		i++
	}
	digits, dot := 0, false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return false
		}
	}
	return digits > 0
}

// Decimal exposes the underlying value for storage adapters.
func (a Amount) Decimal() decimal.Decimal { return a.d }

// FromDecimal converts a stored decimal back into an amount, applying the
// same limits as Parse.
func FromDecimal(d decimal.Decimal) (Amount, error) { return fromDecimal(d) }

func (a Amount) Add(b Amount) Amount { return Amount{d: a.d.Add(b.d)} }
func (a Amount) Sub(b Amount) Amount { return Amount{d: a.d.Sub(b.d)} }
func (a Amount) Neg() Amount         { return Amount{d: a.d.Neg()} }
func (a Amount) Abs() Amount         { return Amount{d: a.d.Abs()} }

// Cmp returns -1, 0 or +1 as a is less than, equal to or greater than b.
func (a Amount) Cmp(b Amount) int    { return a.d.Cmp(b.d) }
func (a Amount) Equal(b Amount) bool { return a.d.Equal(b.d) }
func (a Amount) IsZero() bool        { return a.d.IsZero() }
func (a Amount) IsNegative() bool    { return a.d.IsNegative() }
func (a Amount) IsPositive() bool    { return a.d.IsPositive() }

// Cents returns the amount as an integer number of cents.
func (a Amount) Cents() int64 { return a.d.Shift(Scale).IntPart() }

// String renders the amount with exactly two fractional digits.
func (a Amount) String() string { return a.d.StringFixed(Scale) }

// MarshalJSON writes the amount as a decimal string: JSON numbers are
// floats to most clients, and money must never pass through a float.
func (a Amount) MarshalJSON() ([]byte, error) {
	return []byte(`"` + a.String() + `"`), nil
}

// UnmarshalJSON accepts a decimal string or a JSON number, exactly.
func (a *Amount) UnmarshalJSON(b []byte) error {
	v, err := ParseJSON(b)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Currency is an ISO 4217 code.
type Currency string

// USD is the default currency.
const USD Currency = "USD"

// ParseCurrency accepts a three-letter code in any case.
func ParseCurrency(s string) (Currency, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if len(s) != 3 {
		return "", fmt.Errorf("currency %q: want a three-letter ISO 4217 code", s)
	}
	for _, c := range s {
		if c < 'A' || c > 'Z' {
			return "", fmt.Errorf("currency %q: want a three-letter ISO 4217 code", s)
		}
	}
	return Currency(s), nil
}
