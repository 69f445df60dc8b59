package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// BenchmarkTopUpHTTP measures admin top-up commands per second through the
// HTTP API, each one appended to JetStream and applied to the read model,
// for top-ups spread over 100 accounts and for one hot account.
func BenchmarkTopUpHTTP(b *testing.B) {
	a := startAppTB(b, testConfigTB(b, testDirTB(b), map[string]string{"LEDGER_DEMO": "false"}))
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = a.Close(ctx)
	})
	tok := loginToken(b, a.URL())
	var accounts []string
	for i := range 100 {
		id, err := a.Ledger.CreateAccount(context.Background(), metaFor(a), fmt.Sprintf("b%d@example.com", i), "bench-password", "api")
		if err != nil {
			b.Fatal(err)
		}
		accounts = append(accounts, id.ID)
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	for _, tc := range []struct {
		name     string
		accounts []string
	}{{"accounts=100", accounts}, {"accounts=1", accounts[:1]}} {
		b.Run(tc.name, func(b *testing.B) {
			var n atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(16) // 32 concurrent clients on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					i := n.Add(1)
					acc := tc.accounts[int(i)%len(tc.accounts)]
					body := fmt.Sprintf(`{"amount":"10.00","reference":"%s-%d"}`, tc.name, i)
					req, _ := http.NewRequest("POST", a.URL()+"/api/admin/accounts/"+acc+"/topups", bytes.NewBufferString(body))
					req.Header.Set("Authorization", "Bearer "+tok)
					req.Header.Set("Content-Type", "application/json")
					start := time.Now()
					res, err := httpc.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusCreated {
						b.Errorf("status %d", res.StatusCode)
						return
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			reportLatency(b, lat)
			b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "topups/s")
		})
	}
}

func metaFor(a *App) ledger.Meta {
	return ledger.Meta{Actor: "bench", CausationID: a.Ledger.NewID("cmd")}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

func loginToken(b *testing.B, base string) string {
	b.Helper()
	res, err := http.Post(base+"/api/auth/login", "application/json",
		bytes.NewBufferString(`{"email":"root@example.com","password":"root-password"}`))
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	i := bytes.Index(raw, []byte(`"access_token":"`))
	if i < 0 {
		b.Fatalf("login: %s", raw)
	}
	rest := raw[i+len(`"access_token":"`):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

// BenchmarkStartup measures how long ledgerd takes to become ready: on an
// empty data dir (creating the Postgres cluster and the stream) and on one
// that already holds data.
func BenchmarkStartup(b *testing.B) {
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			cfg := testConfigTB(b, testDirTB(b), nil)
			cfg.Durable = true
			b.StartTimer()
			a := startAppTB(b, cfg)
			b.StopTimer()
			b.ReportMetric(float64(a.StartedIn.Milliseconds()), "ms/start")
			closeApp(b, a)
			b.StartTimer()
		}
	})
	b.Run("restart", func(b *testing.B) {
		cfg := testConfigTB(b, testDirTB(b), nil)
		cfg.Durable = true
		closeApp(b, startAppTB(b, cfg))
		for b.Loop() {
			a := startAppTB(b, cfg)
			b.StopTimer()
			b.ReportMetric(float64(a.StartedIn.Milliseconds()), "ms/start")
			closeApp(b, a)
			b.StartTimer()
		}
	})
}

func closeApp(b *testing.B, a *App) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		b.Fatal(err)
	}
}
