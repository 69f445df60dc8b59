package eventstore

import (
	"encoding/json"
	"testing"
	"time"
)

// Stored events carry hashes computed when they were written: a change to
// what the hash covers, or how it is encoded, would make every verify of
// existing data fail. The figure is what the code that wrote the data so
// far computes (the time in another zone, HTML characters in the data).
func TestHashIsStable(t *testing.T) {
	e := Event{
		Seq: 7, ID: "evt_01JD0000000000000000000000", Type: "task.succeeded", Version: 1,
		AggregateType: "account", AggregateID: "acc_01JD0000000000000000000001",
		OccurredAt: time.Date(2026, 11, 24, 5, 6, 7, 891011000, time.FixedZone("CET", 3600)),
		Actor:      "key_01JD0000000000000000000002", CorrelationID: "req_1",
		Data:     json.RawMessage(`{"task_id":"tsk_1","amount":"0.80","note":"<b>&"}`),
		PrevHash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	}
	const want = "ca5b74183df8d0bf9623ab9653217e1ea604a7a6955ef6abd55e7265e32084de"
	if got := Hash(e); got != want {
		t.Fatalf("Hash = %s, want %s", got, want)
	}
}
