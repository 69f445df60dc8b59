// Package ids makes the opaque, type-prefixed identifiers of the contract
// (acc_, key_, gen_, top_, ...). They sort by creation time, which keeps
// keyset pagination and index locality cheap, and carry 80 random bits.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"time"
)

// crockford is Crockford's base32 alphabet in lower case: no i, l, o, u.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// Generator makes ids; the clock is injected so tests are reproducible.
type Generator struct {
	Now func() time.Time
}

// New returns prefix + "_" + 26 characters: 48 bits of milliseconds then
// 80 random bits, in base32.
func (g Generator) New(prefix string) string {
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now().UnixMilli())<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails on Linux (Go ≥1.24 panics rather than return an error)
	out := make([]byte, 0, len(prefix)+1+26)
	out = append(out, prefix...)
	out = append(out, '_')
	// 128 bits as 26 base32 digits, most significant first.
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var digits [26]byte
	for i := 25; i >= 0; i-- {
		digits[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(append(out, digits[:]...))
}

// Valid reports whether id has the given prefix and the shape New makes,
// so that a malformed id from a URL is refused before it reaches the store.
func Valid(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"_")
	if !ok || len(rest) != 26 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(crockford, rest[i]) < 0 {
			return false
		}
	}
	return true
}
