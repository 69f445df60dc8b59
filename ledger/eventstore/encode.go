package eventstore

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// The commit body and the hash input are written by hand rather than by
// encoding/json: that package re-validates and re-compacts every event's
// already-encoded data on each marshal, which was a large share of the
// charge path. The output is byte for byte what encoding/json produces
// (a fuzz test holds it to that), so hashes never depend on which encoder
// wrote them.

const hexDigits = "0123456789abcdef"

// appendString writes s as encoding/json does: HTML-safe escapes, invalid
// UTF-8 replaced, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func appendKey(b []byte, key string) []byte {
	b = append(b, '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

// appendEvent writes e in the field order of Event's JSON tags; omitempty
// fields are left out when empty, as encoding/json does. With forHash it
// writes the canonical hash input instead (hashInput's fields: no hash,
// every string field present, time as RFC 3339 with nanoseconds).
func appendEvent(b []byte, e *Event, forHash bool) []byte {
	b = append(b, '{')
	b = appendKey(b, "seq")
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, ',')
	b = appendKey(b, "id")
	b = appendString(b, e.ID)
	b = append(b, ',')
	b = appendKey(b, "type")
	b = appendString(b, e.Type)
	b = append(b, ',')
	b = appendKey(b, "v")
	b = strconv.AppendInt(b, int64(e.Version), 10)
	b = append(b, ',')
	b = appendKey(b, "aggregate_type")
	b = appendString(b, e.AggregateType)
	b = append(b, ',')
	b = appendKey(b, "aggregate_id")
	b = appendString(b, e.AggregateID)
	b = append(b, ',')
	b = appendKey(b, "occurred_at")
	at := e.OccurredAt
	if forHash {
		at = at.UTC() // the hash does not depend on the writer's zone
	}
	// An RFC 3339 time has nothing a JSON string escapes.
	b = append(b, '"')
	b = at.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	for _, f := range [...]struct{ key, val string }{{"actor", e.Actor}, {"causation_id", e.CausationID}, {"correlation_id", e.CorrelationID}} {
		if f.val == "" && !forHash {
			continue
		}
		b = append(b, ',')
		b = appendKey(b, f.key)
		b = appendString(b, f.val)
	}
	b = append(b, ',')
	b = appendKey(b, "data")
	switch {
	case len(e.Data) == 0:
		b = append(b, "null"...)
	case needsHTMLEscape(e.Data):
		// encoding/json escapes these even inside raw JSON values.
		var buf bytes.Buffer
		json.HTMLEscape(&buf, e.Data)
		b = append(b, buf.Bytes()...)
	default:
		b = append(b, e.Data...)
	}
	b = append(b, ',')
	b = appendKey(b, "prev_hash")
	b = appendString(b, e.PrevHash)
	if !forHash {
		b = append(b, ',')
		b = appendKey(b, "hash")
		b = appendString(b, e.Hash)
	}
	return append(b, '}')
}

// needsHTMLEscape reports whether data holds <, >, & or U+2028/U+2029
// (whose UTF-8 encodings start with 0xE2), in one pass over the bytes.
func needsHTMLEscape(data []byte) bool {
	for i, c := range data {
		switch c {
		case '<', '>', '&':
			return true
		case 0xE2:
			if i+2 < len(data) && data[i+1] == 0x80 && (data[i+2] == 0xA8 || data[i+2] == 0xA9) {
				return true
			}
		}
	}
	return false
}

// eventEnvelope is room for an event's encoding besides its data: keys,
// ids, times and two hashes come to about 420 bytes, and a buffer that
// runs out is copied whole into one twice its size.
const eventEnvelope = 512

// encodeCommit writes the commit body as json.Marshal(c) would.
func encodeCommit(c *Commit) []byte {
	n := 64
	for i := range c.Events {
		n += eventEnvelope + len(c.Events[i].Data)
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	b = appendKey(b, "id")
	b = appendString(b, c.ID)
	b = append(b, ',')
	b = appendKey(b, "events")
	b = append(b, '[')
	for i := range c.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendEvent(b, &c.Events[i], false)
	}
	return append(b, ']', '}')
}
