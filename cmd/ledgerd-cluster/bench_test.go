package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shopspring/decimal"
)

const (
	benchClients = 32
	benchFunds   = "1000000.00"
	// The default price list's nano-banana-2: 0.80 on the local provider
	// at zero latency, the call BenchmarkChargedCalls (adapters/app)
	// makes in process.
	benchPrice = "0.80"
	benchBody  = `{"prompt":"A cinematic product photo of premium headphones on marble","model":"nano-banana-2","size":"1024x1024"}`
)

// workload is who calls: every client on one account (its commits
// contend, on the cluster across instances), or each on its own; and how
// calls meet the instances. Clients pinned to an instance each is what a
// TCP balancer gives clients that keep their connections alive; round
// robin per call, what an HTTP balancer gives, makes each instance's
// cached account state stale for the next call, which then conflicts and
// reloads. One instance has nothing to route: it runs the pinned
// workloads, with which the cluster's are compared (the name before ",").
type workload struct {
	name     string
	accounts int
	route    routing
}

var workloads = []workload{
	{"hot-account", 1, pinned},
	{fmt.Sprintf("accounts=%d", benchClients), benchClients, pinned},
	{fmt.Sprintf("accounts=%d,round-robin", benchClients), benchClients, roundRobin},
}

// figures is what one load measured.
type figures struct {
	ok       int // calls answered 200
	perSec   float64
	p50, p99 time.Duration
	fails    map[string]int64
	late     int // tasks charged whose client had given up on the answer
}

func (f figures) String() string {
	s := fmt.Sprintf("%.0f calls/s, p50 %.1f ms, p99 %.1f ms, %d answered 200, non-200: %s",
		f.perSec, ms(f.p50), ms(f.p99), f.ok, failText(f.fails))
	if f.late > 0 {
		s += fmt.Sprintf(" (%d of them charged: finished after the client gave up)", f.late)
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func failText(fails map[string]int64) string {
	if len(fails) == 0 {
		return "none"
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(fails)) {
		out = append(out, fmt.Sprintf("%s: %d", k, fails[k]))
	}
	return strings.Join(out, ", ")
}

func total(fails map[string]int64) (n int64) {
	for _, v := range fails {
		n += v
	}
	return n
}

func (f figures) report(b *testing.B) {
	b.ReportMetric(f.perSec, "calls/s")
	b.ReportMetric(ms(f.p50), "p50-ms")
	b.ReportMetric(ms(f.p99), "p99-ms")
	b.ReportMetric(float64(total(f.fails)), "non-200")
	b.ReportMetric(float64(f.late), "charged-unanswered")
	// ns/op would be the whole run, setup and checks included: the
	// figures above are the ones measured.
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCluster is the cluster benchmark of issue 8, with real
// processes: charged calls per second and their latency on one ledgerd on
// its embedded NATS and Postgres, then on two ledgerd instances sharing a
// 3-node JetStream cluster (3 replicas) and one Postgres, and the ratio;
// then, under load, the stream leader's NATS node killed -9 and replaced
// by an empty one. Every figure is of correct work: after each load,
// every 200 was charged exactly once, nothing else was, and the balance
// moved by exactly that.
//
//	go test -run '^$' -bench Cluster -benchtime 1x -timeout 15m ./cmd/ledgerd-cluster
//
// LEDGER_CLUSTER_BENCH_SECONDS sets the length of each load (default 10).
func BenchmarkCluster(b *testing.B) {
	if testing.Short() {
		b.Skip("starts real NATS, Postgres and ledgerd processes for minutes")
	}
	length := 10 * time.Second
	if s := os.Getenv("LEDGER_CLUSTER_BENCH_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("LEDGER_CLUSTER_BENCH_SECONDS %q: want a whole number of seconds", s)
		}
		length = time.Duration(n) * time.Second
	}
	embedded := map[string]figures{}
	var summary []string
	b.Run("embedded", func(b *testing.B) {
		// What `make run` starts: one process with its own NATS server
		// and Postgres, no replication.
		a := startBench(b, 0, []string{"all"})
		for _, w := range workloads {
			if w.route != pinned {
				continue
			}
			b.Run(w.name, func(b *testing.B) {
				a.tb = b
				f := a.measure(b, w, length)
				embedded[w.name] = f
				summary = append(summary, fmt.Sprintf("one instance, embedded server, %s: %s", w.name, f))
			})
		}
		a.tb = b
		a.verify("embedded", "/api/admin/verify")
	})
	b.Run("cluster", func(b *testing.B) {
		// Two instances of role all, as two machines each running a
		// whole ledgerd would (the default of `make cluster`): both
		// take calls; each projection and background loop runs on
		// whichever holds its lock, the other standing by. Splitting
		// api and projector roles needs a third process, which on two
		// shared cores would measure the scheduler more than ledgerd.
		a := startBench(b, 3, []string{"all", "all"})
		for _, w := range workloads {
			b.Run(w.name, func(b *testing.B) {
				a.tb = b
				f := a.measure(b, w, length)
				line := fmt.Sprintf("two instances, 3-node cluster, %s: %s", w.name, f)
				base, _, _ := strings.Cut(w.name, ",")
				if e, ok := embedded[base]; ok && e.perSec > 0 {
					ratio := f.perSec / e.perSec
					b.ReportMetric(ratio, "cluster/embedded")
					line += fmt.Sprintf("; %.2f× the calls/s and %.2f× the p99 of one embedded instance", ratio, ms(f.p99)/ms(e.p99))
				}
				summary = append(summary, line)
			})
		}
		b.Run("replace-nats-node", func(b *testing.B) {
			a.tb = b
			var r replacement
			for b.Loop() {
				r = a.replaceNode(b)
			}
			r.report(b)
			summary = append(summary, r.String())
		})
		a.tb = b
		a.verify("cluster", "/api/admin/verify")
	})
	fmt.Printf("charged calls, %d clients, %v of load each (all on this machine):\n%s", benchClients, length, strings.Join(summary, "\n")+"\n")
}

// startBench starts ledgerd on natsNodes nodes (0: embedded), one
// instance per role, logged in as admin.
func startBench(b *testing.B, natsNodes int, roles []string) *api {
	dir := workDir(b, "ledgerd-cbench-")
	c, err := Start(context.Background(), Spec{
		Dir: dir, NATSNodes: natsNodes, Roles: roles,
		AdminEmail: "admin@bench.test", AdminPassword: "bench-admin-password", Quiet: true,
		Log: slog.New(slog.DiscardHandler),
		// Cheap password hashes make the setup (logins) quick; charged
		// calls check API keys, which bcrypt has no part in.
		Env: []string{"LEDGER_BCRYPT_COST=4", "LEDGER_LOG_LEVEL=warn"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	a := &api{tb: b, c: c}
	for i := range roles {
		a.serving, a.projectors = append(a.serving, i), append(a.projectors, i)
	}
	a.admin = a.login(0, "admin@bench.test", "bench-admin-password")
	return a
}

// customerLoad is a load on fresh accounts.
type customerLoad struct {
	accs, keys []string
	l          *load
}

func (a *api) startRun(accounts int, route routing) *customerLoad {
	r := &customerLoad{}
	for range accounts {
		acc, key := a.newCustomer(benchFunds)
		r.accs, r.keys = append(r.accs, acc), append(r.keys, key)
	}
	urls := make([]string, len(a.serving))
	for i, inst := range a.serving {
		urls[i] = a.c.URL(inst)
	}
	r.l = startLoad(urls, r.keys, benchBody, benchClients, route)
	return r
}

// settleRun checks each account once the load has stopped and returns how
// many tasks were charged and how many calls answered 200.
func (a *api) settleRun(name string, r *customerLoad) (charged, acked int) {
	for i, acc := range r.accs {
		ids := r.l.acked(r.keys[i])
		charged += a.settle(name, acc, r.keys[i], ids, decimal.RequireFromString(benchFunds), decimal.RequireFromString(benchPrice))
		acked += len(ids)
	}
	return charged, acked
}

func (l *load) figures() figures {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := figures{ok: len(l.calls), fails: maps.Clone(l.fails)}
	if len(l.calls) == 0 {
		return f
	}
	lat := make([]time.Duration, len(l.calls))
	for i, c := range l.calls {
		lat[i] = c.end.Sub(c.start)
	}
	slices.Sort(lat)
	f.p50, f.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	f.perSec = float64(len(l.calls)) / l.ended.Sub(l.began).Seconds()
	return f
}

// measure runs the workload for d and checks the money.
func (a *api) measure(b *testing.B, w workload, d time.Duration) figures {
	var f figures
	for b.Loop() {
		r := a.startRun(w.accounts, w.route)
		time.Sleep(d)
		r.l.stop()
		f = r.l.figures()
		if f.ok == 0 {
			b.Fatalf("no call answered 200: %s", failText(f.fails))
		}
		charged, acked := a.settleRun(w.name, r)
		// Nothing fails on purpose here. A call may be charged without
		// its 200 only if the client never got an answer (it gave up,
		// and the call finished after): one answered with an error was
		// money taken for an error.
		if late := charged - acked; int64(late) > r.l.unanswered() {
			b.Errorf("%s: %d tasks charged for %d calls answered 200, more than the %d calls left without an answer",
				w.name, charged, acked, r.l.unanswered())
		}
		price := decimal.RequireFromString(benchPrice)
		b.Logf("%s: %s; balances fell by $%s = %d × $%s (%d calls answered 200, %d more finished after the client gave up)",
			w.name, f, price.Mul(decimal.NewFromInt(int64(charged))).StringFixed(2), charged, benchPrice, acked, charged-acked)
		f.late = charged - acked
	}
	f.report(b)
	return f
}

// replacement is what killing and replacing a NATS node measured.
type replacement struct {
	node          string
	writesResumed time.Duration // kill → first 200 of a call started after it
	replacedAt    time.Duration // kill → replacement started
	ledgerCurrent time.Duration // kill → LEDGER's 3 replicas current
	allCurrent    time.Duration // kill → every stream's and durable consumer's replicas current
	attempted     int64
	ok, charged   int // calls answered 200, tasks charged
	fails         map[string]int64
}

func (r replacement) String() string {
	return fmt.Sprintf("NATS node %s (the LEDGER stream's leader) killed -9 under load and replaced with an empty store: "+
		"charged calls succeeded again %.2f s after the kill; replacement started at %.2f s; LEDGER's 3 replicas current at %.1f s, "+
		"every stream and consumer at %.1f s (%.1f s after the replacement started); "+
		"%d calls, %d answered 200, non-200: %s; %d tasks charged (%d without a 200: calls in flight at the kill whose answer was lost or an error, each charged once)",
		r.node, r.writesResumed.Seconds(), r.replacedAt.Seconds(), r.ledgerCurrent.Seconds(), r.allCurrent.Seconds(),
		(r.allCurrent - r.replacedAt).Seconds(), r.attempted, r.ok, failText(r.fails), r.charged, r.charged-r.ok)
}

func (r replacement) report(b *testing.B) {
	b.ReportMetric(r.writesResumed.Seconds(), "writes-resumed-s")
	b.ReportMetric(r.ledgerCurrent.Seconds(), "ledger-replicas-current-s")
	b.ReportMetric(r.allCurrent.Seconds(), "all-replicas-current-s")
	b.ReportMetric((r.allCurrent - r.replacedAt).Seconds(), "catch-up-s")
	b.ReportMetric(float64(total(r.fails)), "non-200")
	b.ReportMetric(0, "ns/op")
}

// replaceNode kills -9 the node leading the LEDGER stream (the worst
// one to lose: appends wait for a new leader) while every client
// charges, starts an empty replacement once writes have resumed on the
// remaining two (as an operator would replace a dead machine), and
// times how long until the cluster holds three current copies again.
func (a *api) replaceNode(b *testing.B) replacement {
	ctx := context.Background()
	nc, err := nats.Connect(a.c.NATSURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	a.check(err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	a.check(err)
	if _, err := waitCurrent(ctx, js, "", 60*time.Second); err != nil {
		b.Fatalf("before the kill: %v", err)
	}
	info, err := js.Stream(ctx, "LEDGER")
	a.check(err)
	leader := info.CachedInfo().Cluster.Leader
	node, ok := a.c.NATSNode(leader)
	if !ok {
		b.Fatalf("LEDGER's leader %q is none of the nodes", leader)
	}

	r := a.startRun(benchClients, pinned)
	time.Sleep(2 * time.Second)
	killed := time.Now()
	a.check(a.c.KillNATS(node))
	resumed, ok := r.l.firstSuccessStartedAfter(killed, 60*time.Second)
	if !ok {
		b.Fatalf("no charged call started after the kill succeeded within 60 s: %s", failText(r.l.failureCounts()))
	}
	res := replacement{node: leader, writesResumed: resumed.Sub(killed), replacedAt: time.Since(killed)}
	a.check(a.c.ReplaceNATS(node))
	bound := 3 * time.Minute
	ledgerAt, err := waitCurrent(ctx, js, "LEDGER", bound)
	if err != nil {
		b.Errorf("after the replacement: %v", err)
	}
	allAt, err := waitCurrent(ctx, js, "", bound)
	if err != nil {
		b.Errorf("after the replacement: %v", err)
	}
	res.ledgerCurrent, res.allCurrent = ledgerAt.Sub(killed), allAt.Sub(killed)
	time.Sleep(2 * time.Second) // load goes on on the mended cluster
	r.l.stop()

	res.attempted, res.fails = r.l.attempted.Load(), r.l.failureCounts()
	res.charged, res.ok = a.settleRun("replace-nats-node", r)
	b.Logf("%s", res)
	return res
}

// firstSuccessStartedAfter waits up to bound for a call started after t0
// to be answered 200 and returns when it was.
func (l *load) firstSuccessStartedAfter(t0 time.Time, bound time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, c := range l.calls {
			if c.start.After(t0) {
				l.mu.Unlock()
				return c.end, true
			}
		}
		l.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return time.Time{}, false
}

// waitCurrent waits until the stream named (every stream and its durable
// consumers if "") has a leader and every replica current and online,
// and returns when it was first seen so.
func waitCurrent(ctx context.Context, js jetstream.JetStream, stream string, bound time.Duration) (time.Time, error) {
	deadline := time.Now().Add(bound)
	for {
		err := replicasCurrent(ctx, js, stream)
		if err == nil {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("replicas not current within %v: %w", bound, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replicasCurrent says which replica is not current, if any. Each
// request is bounded: a node that is down must not stall the poll.
func replicasCurrent(ctx context.Context, js jetstream.JetStream, stream string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	names := []string{stream}
	if stream == "" {
		names = names[:0]
		lister := js.StreamNames(ctx)
		for n := range lister.Name() {
			names = append(names, n)
		}
		if err := lister.Err(); err != nil {
			return fmt.Errorf("listing streams: %w", err)
		}
	}
	for _, name := range names {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		info := s.CachedInfo()
		if err := groupCurrent(info.Cluster, info.Config.Replicas); err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		if stream != "" {
			continue
		}
		consumers := s.ListConsumers(ctx)
		for ci := range consumers.Info() {
			if ci.Config.Durable == "" {
				continue // ephemeral: recreated by its owner, not replicated
			}
			replicas := ci.Config.Replicas
			if replicas == 0 {
				replicas = info.Config.Replicas
			}
			if err := groupCurrent(ci.Cluster, replicas); err != nil {
				return fmt.Errorf("stream %s consumer %s: %w", name, ci.Name, err)
			}
		}
		if err := consumers.Err(); err != nil {
			return fmt.Errorf("stream %s consumers: %w", name, err)
		}
	}
	return nil
}

func groupCurrent(ci *jetstream.ClusterInfo, replicas int) error {
	if ci == nil || ci.Leader == "" {
		return fmt.Errorf("no leader")
	}
	// Replicas lists the peers other than the leader.
	if len(ci.Replicas) != replicas-1 {
		return fmt.Errorf("%d peers besides leader %s, want %d", len(ci.Replicas), ci.Leader, replicas-1)
	}
	for _, p := range ci.Replicas {
		if !p.Current || p.Offline {
			return fmt.Errorf("replica %s not current (offline %v, lag %d)", p.Name, p.Offline, p.Lag)
		}
	}
	return nil
}
