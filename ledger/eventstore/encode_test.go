package eventstore

import (
	"bytes"
	"encoding/json"
	"reflect"
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

// FuzzDecodeCommitMatchesEncodingJSON holds DecodeCommit's JSON library to
// encoding/json: any input either fails in both or gives the same commit.
// The seeds include a commit as the store writes it.
func FuzzDecodeCommitMatchesEncodingJSON(f *testing.F) {
	e := Event{Seq: 7, ID: "evt_1", Type: "account.task_requested", Version: 1, AggregateType: "account",
		AggregateID: "acc_1", OccurredAt: time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC), Actor: "key_1",
		Data: json.RawMessage(`{"task_id":"gen_1","price":"0.80","input":{"prompt":"a <cat> \u2028"}}`), PrevHash: "ab", Hash: "cd"}
	f.Add(encodeCommit(&Commit{ID: "cmt_1", Events: []Event{e, e}}))
	f.Add([]byte(`{"id":"a\xff","events":[{"seq":1,"data":{"a":1},"occurred_at":"2026-01-01T00:00:00+02:00"}]}`))
	f.Add([]byte(`{"ID":"x","Events":[{"SEQ":1e2,"data":[1,2]}],"events":null}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, gotErr := DecodeCommit(bytes.Clone(in), nil, 9, time.Time{}, Ref{Type: "account", ID: "acc_1"})
		var want Commit
		wantErr := json.Unmarshal(in, &want)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("DecodeCommit error %v, encoding/json error %v", gotErr, wantErr)
		}
		if wantErr != nil {
			return
		}
		want.Aggregate, want.StreamSeq = Ref{Type: "account", ID: "acc_1"}, 9
		for i := range want.Events {
			want.Events[i].StreamSeq = 9
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("DecodeCommit\n got %#v\nwant %#v", got, want)
		}
	})
}
