package projections

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/adapters/natsembed"
	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/adapters/postgres"
	"github.com/ledgerd/ledgerd/adapters/postgres/postgrestest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// seedHistory writes a history of about n events: 1,000 accounts, each
// opened, funded and then making calls, recorded as request+success
// pairs in commits of 100 events (the shape group commit produces).
func seedHistory(b *testing.B, store *eventstore.JetStream, n int) int {
	b.Helper()
	const accounts, perCommit = 1000, 100
	commits := max(1, n/accounts/perCommit)
	c := ledger.AccountCodec()
	m := money.MustParse
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var total int
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for a := range accounts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			id := fmt.Sprintf("acc_bench%04d", a)
			var seq, stream uint64
			var hash string
			write := func(evs []account.Event, at time.Time) {
				out := make([]eventstore.Event, len(evs))
				for i, e := range evs {
					name, v, data, err := c.Encode(e)
					if err != nil {
						panic(err)
					}
					out[i] = eventstore.Event{ID: fmt.Sprintf("evt_%s_%d", id, seq+uint64(i)), Type: name, Version: v,
						AggregateType: "account", AggregateID: id, OccurredAt: at, Actor: "key_bench", Data: data}
				}
				hash = eventstore.Chain(seq, hash, out)
				seq += uint64(len(out))
				seqs, err := store.Append(context.Background(), eventstore.Append{Expected: stream,
					Commit: eventstore.Commit{ID: fmt.Sprintf("cmt_%s_%d", id, seq), Aggregate: eventstore.Ref{Type: "account", ID: id}, Events: out}})
				if err != nil {
					panic(err)
				}
				stream = seqs[0]
				mu.Lock()
				total += len(out)
				mu.Unlock()
			}
			write([]account.Event{
				account.Opened{AccountID: id, Email: id + "@example.com", OwnerUserID: "usr_" + id, Plan: account.PlanAPI, Currency: money.USD},
				account.ToppedUp{TopUpID: "top_" + id, Amount: m("100000.00"), Reference: "seed", Transaction: journal.Move(journal.PlatformCash, journal.Available(id), m("100000.00"))},
			}, t0)
			for k := range commits {
				evs := make([]account.Event, 0, perCommit)
				at := t0.Add(time.Duration(k) * time.Minute)
				for j := range perCommit / 2 {
					task := fmt.Sprintf("gen_%s_%d_%d", id, k, j)
					evs = append(evs,
						account.TaskRequested{TaskID: task, KeyID: "key_" + id, Model: "nano-banana-2", Type: pricing.TypeImage, Price: m("0.80"),
							Currency: money.USD, Provider: "local", Input: account.TaskInput{Prompt: "A cinematic product photo", Size: "1024x1024", RequestType: "sync"},
							Owner: "inst_bench", RequestedAt: at, HoldExpiresAt: at.Add(5 * time.Minute),
							Transaction: journal.Move(journal.Available(id), journal.Held(id), m("0.80"))},
						account.TaskSucceeded{TaskID: task, Output: account.TaskOutput{ImageURL: "http://h/files/x.png", URLs: []string{"http://h/files/x.png"}},
							Amount: m("0.80"), Transaction: journal.Move(journal.Held(id), journal.PlatformRevenue, m("0.80"))})
				}
				write(evs, at)
			}
		}()
	}
	wg.Wait()
	return total
}

// BenchmarkReplay rebuilds every read model from a history of
// LEDGER_BENCH_EVENTS events (default 1,000,000) into a fresh database,
// all projections in parallel, as POST /api/admin/projections/replay does.
func BenchmarkReplay(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("LEDGER_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	srv := natstest.Server(b)
	nc, err := natsembed.Connect(context.Background(), srv, "", "bench", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	store, err := eventstore.OpenJetStream(context.Background(), js, eventstore.JetStreamConfig{Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	seeded := time.Now()
	total := seedHistory(b, store, n)
	b.Logf("seeded %d events in %v", total, time.Since(seeded).Round(time.Millisecond))
	head, _ := store.Head(context.Background())
	for b.Loop() {
		b.StopTimer()
		db, _ := postgrestest.Migrated(b, 20)
		cfg := RunnerConfig{DB: db, JS: js, Stream: store.StreamName(), SubjectPrefix: store.SubjectPrefix(),
			Logger: slog.New(slog.DiscardHandler), IsTransient: postgres.IsTransient}
		cfg.MaxBatch, cfg.MaxEvents = RebuildBatch()
		b.StartTimer()
		start := time.Now()
		var runners []*Runner
		targets := map[string]uint64{}
		for _, p := range []Projection{NewAccounts(), NewTasks(), NewUsage(), NewStatement(), NewUsers()} {
			runners = append(runners, NewRunner(cfg, p))
			targets[p.Name()] = head
		}
		var doneMu sync.Mutex
		finished := map[string]time.Duration{}
		progress := func(name string, pos, _ uint64) {
			if pos >= head {
				doneMu.Lock()
				finished[name] = time.Since(start).Round(100 * time.Millisecond)
				doneMu.Unlock()
			}
		}
		if err := CatchUpAll(context.Background(), runners, targets, progress); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.Logf("each projection done after: %v", finished)
		b.ReportMetric(elapsed.Seconds(), "replay-s")
		b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
		db.Close()
		b.StartTimer()
	}
}
