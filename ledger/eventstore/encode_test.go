package eventstore

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// hashInputJSON is the canonical hash input as encoding/json writes it; the
// hand-written encoder must match it byte for byte.
func hashInputJSON(e Event) []byte {
	b, _ := json.Marshal(hashInput{
		Seq: e.Seq, ID: e.ID, Type: e.Type, Version: e.Version,
		AggregateType: e.AggregateType, AggregateID: e.AggregateID,
		OccurredAt: e.OccurredAt.UTC().Format(time.RFC3339Nano),
		Actor:      e.Actor, CausationID: e.CausationID, CorrelationID: e.CorrelationID,
		Data: e.Data, PrevHash: e.PrevHash,
	})
	return b
}

func FuzzEncodingMatchesEncodingJSON(f *testing.F) {
	f.Add("evt_1", "account.opened", "usr_1", "", "req<&>", `{"a":"b"}`, int64(1700000000123456789), uint64(3), 1)
	f.Add("e\u2028\x00\"\\", "t\xff", "a\u2029", "c\t\n", "r", `[1,2,{"x":null}]`, int64(0), uint64(0), 0)
	f.Fuzz(func(t *testing.T, id, typ, actor, causation, correlation, data string, nanos int64, seq uint64, version int) {
		if !json.Valid([]byte(data)) {
			return
		}
		var compact bytes.Buffer
		_ = json.Compact(&compact, []byte(data))
		e := Event{Seq: seq, ID: id, Type: typ, Version: version, AggregateType: "account", AggregateID: "acc_1",
			OccurredAt: time.Unix(0, nanos).UTC(), Actor: actor, CausationID: causation, CorrelationID: correlation,
			Data: compact.Bytes(), PrevHash: "ab", Hash: "cd"}
		if got, want := appendEvent(nil, &e, true), hashInputJSON(e); !bytes.Equal(got, want) {
			t.Fatalf("hash input\n got %s\nwant %s", got, want)
		}
		c := Commit{ID: "cmt_" + id, Events: []Event{e, e}}
		want, err := json.Marshal(c)
		if err != nil {
			return // times encoding/json refuses (years outside 0-9999)
		}
		if got := encodeCommit(&c); !bytes.Equal(got, want) {
			t.Fatalf("commit\n got %s\nwant %s", got, want)
		}
	})
}
