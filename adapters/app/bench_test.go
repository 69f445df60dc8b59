package app

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
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

// cpuUse is the CPU time this process (ledgerd, its embedded NATS server
// and the benchmark's clients) and the Postgres server processes have
// used: per call, a cost that scheduling noise on a shared machine does
// not blur as it blurs calls per second.
func cpuUse() (self, pg time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		raw, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil || !bytes.Contains(raw, []byte("(postgres)")) {
			continue
		}
		// Fields after the command's closing parenthesis: utime and stime
		// are the 12th and 13th (clock ticks, 100 a second on Linux).
		_, rest, _ := bytes.Cut(raw, []byte(") "))
		f := strings.Fields(string(rest))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		pg += time.Duration(u+st) * 10 * time.Millisecond
	}
	return self, pg
}

// gcCPU is the runtime's estimate of the CPU seconds spent collecting
// garbage so far (mark assists, background marking, pauses): part of
// go-cpu-us/call, the part GOGC trades against memory.
func gcCPU() float64 {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return s[0].Value.Float64()
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

// BenchmarkChargedCalls measures charged generation calls per second over
// HTTP (reserve, the local provider at zero latency, capture), for one hot
// account hammered through several keys and for 1,000 accounts, and beside
// it raw JetStream publish-with-ack on the same server.
func BenchmarkChargedCalls(b *testing.B) {
	TuneRuntime() // as ledgerd's main does
	cfg := testConfigTB(b, testDirTB(b), map[string]string{"LEDGER_DEMO": "false", "LEDGER_ROLE": os.Getenv("BENCH_ROLE")})
	cfg.Durable = true
	a := startAppTB(b, cfg)
	b.Cleanup(func() { closeApp(b, a) })
	ctx := context.Background()
	rate := 1_000_000
	fund := func(n int, keysPer int) [][]string {
		out := make([][]string, n)
		for i := range n {
			acc, err := a.Ledger.CreateAccount(ctx, metaFor(a), fmt.Sprintf("c%d-%d@example.com", n, i), "bench-password", "api")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := a.Ledger.TopUp(ctx, metaFor(a), acc.ID, money.MustParse("900000000.00"), "fund"); err != nil {
				b.Fatal(err)
			}
			for k := range keysPer {
				key, err := a.Ledger.CreateKey(ctx, metaFor(a), acc.ID, apikey.SpecInput{Name: fmt.Sprintf("k%d", k), RateLimit: &rate})
				if err != nil {
					b.Fatal(err)
				}
				out[i] = append(out[i], key.Secret)
			}
		}
		return out
	}
	hot := fund(1, 5)
	many := fund(1000, 1)
	body := `{"prompt":"A cinematic product photo of premium headphones on marble","model":"nano-banana-2","size":"1024x1024"}`
	u, err := url.Parse(a.URL())
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		keys [][]string
	}{{"hot-account", hot}, {"accounts=1000", many}} {
		b.Run(tc.name, func(b *testing.B) {
			// Every request, prepared once: the clients only write bytes.
			var reqs [][]byte
			for _, ks := range tc.keys {
				for _, key := range ks {
					reqs = append(reqs, []byte("POST /api/v1/image/generate HTTP/1.1\r\nHost: "+u.Host+
						"\r\nAuthorization: Bearer "+key+"\r\nContent-Type: application/json\r\nContent-Length: "+
						strconv.Itoa(len(body))+"\r\n\r\n"+body))
				}
			}
			var n atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			commits0, commands0 := a.Ledger.AccountCommitStats()
			b.SetParallelism(16) // 32 concurrent clients: SetParallelism multiplies by GOMAXPROCS (2)
			stop := profileCPU(b, tc.name)
			self0, pg0 := cpuUse()
			gc0 := gcCPU()
			var mem0 runtime.MemStats
			runtime.ReadMemStats(&mem0)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				// A lean load generator, as wrk is: one keep-alive
				// connection per client, prepared requests written as
				// bytes, answers read by net/http's own parser. Go's
				// http.Client (a Request built per call, handed between
				// the Transport's goroutines) cost about a tenth of the
				// CPU these shared cores had, taken from ledgerd.
				conn, err := net.Dial("tcp", u.Host)
				if err != nil {
					b.Error(err)
					return
				}
				defer conn.Close()
				br := bufio.NewReader(conn)
				var mine []time.Duration
				for pb.Next() {
					req := reqs[int(n.Add(1))%len(reqs)]
					start := time.Now()
					if _, err := conn.Write(req); err != nil {
						b.Error(err)
						return
					}
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
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
			self1, pg1 := cpuUse()
			gc1 := gcCPU()
			var mem1 runtime.MemStats
			runtime.ReadMemStats(&mem1)
			stop()
			commits, commands := a.Ledger.AccountCommitStats()
			reportLatency(b, lat)
			b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "calls/s")
			if len(lat) > 0 {
				b.ReportMetric(float64((self1-self0).Microseconds())/float64(len(lat)), "go-cpu-us/call")
				b.ReportMetric(float64((pg1-pg0).Microseconds())/float64(len(lat)), "pg-cpu-us/call")
				b.ReportMetric((gc1-gc0)*1e6/float64(len(lat)), "gc-cpu-us/call")
				// Allocation drives garbage collection, whose cost the CPU
				// profile spreads thin; this figure is steady between runs.
				b.ReportMetric(float64(mem1.TotalAlloc-mem0.TotalAlloc)/1024/float64(len(lat)), "alloc-KB/call")
			}
			if commits > commits0 {
				b.ReportMetric(float64(commands-commands0)/float64(commits-commits0), "commands/commit")
			}
			// How far the read models trailed the calls: the statement and
			// tasks projections, over their last few thousand events.
			for _, name := range []string{"tasks", "accounts"} {
				st := a.Projs.Runner(name).Status()
				b.ReportMetric(st.ApplyP50MS, name+"-lag-p50-ms")
				b.ReportMetric(st.ApplyP99MS, name+"-lag-p99-ms")
			}
		})
	}
	b.Run("raw-jetstream-publish", func(b *testing.B) {
		js, err := jetstream.New(a.nc)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCH_RAW", Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
		var n atomic.Int64
		round := a.Ledger.NewID("r") // each benchmark round publishes to fresh subjects
		payload := make([]byte, 600) // about the size of a charge commit
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			subject := fmt.Sprintf("bench.%s.%d", round, n.Add(1))
			var last uint64
			for pb.Next() {
				ack, err := js.Publish(ctx, subject, payload, jetstream.WithExpectLastSequencePerSubject(last))
				if err != nil {
					b.Error(err)
					return
				}
				last = ack.Sequence
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
	})
}

// profileCPU writes a CPU profile of the timed part of a benchmark (not
// its set-up) when LEDGER_BENCH_CPUPROFILE names a directory.
func profileCPU(b *testing.B, name string) (stop func()) {
	dir := os.Getenv("LEDGER_BENCH_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, strings.NewReplacer("/", "_", "=", "_").Replace(name)+".prof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
