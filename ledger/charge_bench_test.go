package ledger_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/adapters/natsembed"
	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// BenchmarkReserveCapture measures the command side alone: reserve then
// capture through JetStream (in-process connection), over 1,000 accounts
// and over one hot account.
func BenchmarkReserveCapture(b *testing.B) {
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
	l := newLedger(b, store)
	ctx := context.Background()
	model := pricing.Defaults()[0]
	var accounts []string
	for i := range 1000 {
		a, err := l.CreateAccount(ctx, meta, fmt.Sprintf("b%d@example.com", i), "bench-password", account.PlanAPI)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := l.TopUp(ctx, meta, a.ID, money.MustParse("900000000.00"), "f"); err != nil {
			b.Fatal(err)
		}
		accounts = append(accounts, a.ID)
	}
	for _, tc := range []struct {
		name string
		accs []string
	}{{"accounts=1000", accounts}, {"hot", accounts[:1]}} {
		b.Run(tc.name, func(b *testing.B) {
			var n atomic.Int64
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					acc := tc.accs[int(n.Add(1))%len(tc.accs)]
					r, err := l.Reserve(ctx, meta, acc, account.TaskRequest{Model: model, Input: account.TaskInput{Prompt: "p"}, HoldTTL: 1e11})
					if err != nil {
						b.Error(err)
						return
					}
					if err := l.CompleteTask(ctx, acc, r.TaskID, account.TaskOutput{ImageURL: "u"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}
