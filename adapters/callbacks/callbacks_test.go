package callbacks

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
)

type fakeBook struct {
	mu      sync.Mutex
	due     []Due
	records []account.CallbackAttempted
}

func (b *fakeBook) Due(context.Context, time.Time, int) ([]Due, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.due
	b.due = nil
	return out, nil
}

func (b *fakeBook) Record(_ context.Context, _ string, c account.CallbackAttempted) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.records = append(b.records, c)
	return nil
}

func TestDeliverSignedAndRecorded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, body = r, must(io.ReadAll(r.Body))
	}))
	defer srv.Close()
	book := &fakeBook{}
	d := &Dispatcher{Due: book.Due, Record: book.Record, Secret: func(string) string { return "whsec" },
		AllowPrivate: true, Now: func() time.Time { return now }, Log: slog.New(slog.DiscardHandler)}
	d.init()
	payload := []byte(`{"taskId":"gen_1","status":"succeeded"}`)
	d.deliver(context.Background(), Due{TaskID: "gen_1", AccountID: "acc_1", URL: srv.URL, Body: payload})
	if got == nil || string(body) != string(payload) {
		t.Fatalf("delivered %q", body)
	}
	if sig := got.Header.Get("X-Ledger-Signature"); sig != Sign("whsec", now, payload) || !strings.HasPrefix(sig, "t=1800000000,v1=") {
		t.Fatalf("signature %q", sig)
	}
	if len(book.records) != 1 || !book.records[0].Delivered || book.records[0].Attempt != 1 || book.records[0].Status != 200 {
		t.Fatalf("records %+v", book.records)
	}
}

func TestFailedDeliveryIsRetriedThenGivenUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	book := &fakeBook{}
	now := time.Unix(1_800_000_000, 0)
	d := &Dispatcher{Due: book.Due, Record: book.Record, Secret: func(string) string { return "s" },
		AllowPrivate: true, MaxAttempts: 3, BaseDelay: time.Second, Now: func() time.Time { return now }, Log: slog.New(slog.DiscardHandler)}
	d.init()
	for attempt := range 3 {
		d.deliver(context.Background(), Due{TaskID: "gen_1", AccountID: "a", URL: srv.URL, Attempts: attempt, Body: []byte("{}")})
	}
	r := book.records
	if len(r) != 3 || r[0].Delivered || r[0].Status != 500 {
		t.Fatalf("records %+v", r)
	}
	if !r[0].NextAttemptAt.Equal(now.Add(time.Second)) || !r[1].NextAttemptAt.Equal(now.Add(2*time.Second)) || r[2].NextAttemptAt != nil {
		t.Fatalf("backoff: %v %v %v", r[0].NextAttemptAt, r[1].NextAttemptAt, r[2].NextAttemptAt)
	}
}

func TestPrivateAddressesRefusedByDefault(t *testing.T) {
	hit := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit = true }))
	defer srv.Close()
	book := &fakeBook{}
	d := &Dispatcher{Due: book.Due, Record: book.Record, Secret: func(string) string { return "s" }, Log: slog.New(slog.DiscardHandler)}
	d.init()
	d.deliver(context.Background(), Due{TaskID: "gen_1", AccountID: "a", URL: srv.URL, Body: []byte("{}")})
	if hit || len(book.records) != 1 || book.records[0].Delivered || !strings.Contains(book.records[0].Error, "private") {
		t.Fatalf("hit=%v records=%+v", hit, book.records)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
