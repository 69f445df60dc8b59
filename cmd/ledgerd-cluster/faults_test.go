//go:build faults

// The fault scenarios start real nats-server, Postgres and ledgerd
// processes and take minutes: they run with `make faults` (full lengths)
// or `make faults-short`, not in `make test`, whose timing they would make
// depend on how fast a NATS cluster re-elects on a loaded machine.

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// The fault tests run real processes: three nats-server nodes, Postgres,
// two API-only ledgerd instances taking the load and one projector+worker
// instance. Each scenario charges through both API instances while one
// part is broken and mended, then checks the promises: every 200 charged
// exactly once, nothing charged twice, nothing left held, the balance
// equal to the charges, verify ok (hash chains, balanced transactions,
// read models equal to a fresh fold of the events).
//
// make faults-short runs a short version (shorter load and outages);
// LEDGER_FAULTS_FULL=1 (make faults) runs the lengths the issue names.

const (
	apiA, apiB, projector = 0, 1, 2
	price                 = "0.10"
)

type faultEnv struct {
	*api
	full bool
}

func TestFaults(t *testing.T) {
	full := os.Getenv("LEDGER_FAULTS_FULL") != ""
	dir := workDir(t, "ledgerd-faults-")
	ctx := context.Background()
	c, err := Start(ctx, Spec{
		Dir: dir, NATSNodes: 3, Roles: []string{"api", "api", "projector,worker"},
		AdminEmail: "admin@faults.test", AdminPassword: "faults-admin-password", Quiet: true,
		Log: slog.New(slog.DiscardHandler),
		Env: []string{"LEDGER_BCRYPT_COST=4", "LEDGER_SWEEP_INTERVAL=200ms", "LEDGER_READY_MAX_LAG=2s",
			"LEDGER_LOG_LEVEL=warn"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	e := &faultEnv{api: &api{tb: t, c: c, serving: []int{apiA, apiB}, projectors: []int{projector}}, full: full}
	e.admin = e.login(apiA, "admin@faults.test", "faults-admin-password")
	e.must(apiA, "PUT", "/api/admin/models/fault", e.admin,
		`{"type":"image","price":"`+price+`","provider":"local","options":{"latency_ms":20}}`, 200)

	outage := func(short, long time.Duration) time.Duration {
		if full {
			return long
		}
		return short
	}
	var reports []report
	run := func(name string, fault func() (restored time.Time)) {
		t.Run(name, func(t *testing.T) {
			e.tb = t
			r := e.scenario(name, fault)
			reports = append(reports, r)
		})
	}
	run("kill -9 one NATS node", func() time.Time {
		e.check(c.KillNATS(0))
		time.Sleep(outage(2*time.Second, 5*time.Second))
		e.check(c.StartNATS(0))
		return time.Now()
	})
	run("kill -9 one ledgerd", func() time.Time {
		e.check(c.KillLedgerd(apiA))
		time.Sleep(outage(time.Second, 3*time.Second))
		e.check(c.StartLedgerd(context.Background(), apiA))
		return time.Now()
	})
	run("restart Postgres", func() time.Time {
		e.check(c.RestartPostgres(context.Background()))
		return time.Now()
	})
	run("kill -9 the whole NATS cluster for 5 s", func() time.Time {
		for i := range 3 {
			e.check(c.KillNATS(i))
		}
		time.Sleep(outage(2*time.Second, 5*time.Second))
		for i := range 3 {
			e.check(c.StartNATS(i))
		}
		return time.Now()
	})
	run("SIGSTOP the projector for 10 s", func() time.Time {
		e.check(c.PauseLedgerd(projector))
		paused := time.Now()
		// Lag rises, and the API instances' /readyz says so once the
		// projections are LEDGER_READY_MAX_LAG behind.
		sawUnready := false
		var last string
		for time.Since(paused) < outage(4*time.Second, 10*time.Second) {
			st, body := e.readyz(apiB)
			if st == http.StatusServiceUnavailable && strings.Contains(body, "lagging") {
				sawUnready = true
			}
			last = fmt.Sprintf("%d %s", st, body)
			time.Sleep(200 * time.Millisecond)
		}
		if !sawUnready {
			e.tb.Errorf("/readyz on an API instance never reported the paused projector's lag; last: %s", last)
		}
		e.check(c.ResumeLedgerd(projector))
		return time.Now()
	})
	t.Logf("\n%s", table(reports))
}

// report is one scenario's figures.
type report struct {
	name                  string
	attempted, succeeded  int64
	failures              map[string]int64
	charged, acknowledged decimal.Decimal
	chargedUnacked        int
	recovery              time.Duration
}

func table(rs []report) string {
	var b strings.Builder
	b.WriteString("| fault | attempted | 200 | failed (code: n) | charged | acknowledged | recovery |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		var fails []string
		for k, v := range r.failures {
			fails = append(fails, fmt.Sprintf("%s: %d", k, v))
		}
		slices.Sort(fails)
		if len(fails) == 0 {
			fails = []string{"none"}
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | $%s | $%s | %.1f s |\n", r.name, r.attempted, r.succeeded,
			strings.Join(fails, ", "), r.charged.StringFixed(2), r.acknowledged.StringFixed(2), r.recovery.Seconds())
	}
	return b.String()
}

// scenario runs load through both API instances, applies the fault, waits
// for recovery, stops the load and checks the invariants.
func (e *faultEnv) scenario(name string, fault func() time.Time) report {
	t := e.tb
	acc, key := e.newCustomer("1000.00")
	l := startLoad([]string{e.c.URL(apiA), e.c.URL(apiB)}, []string{key}, `{"prompt":"fault load","model":"fault"}`, 8, roundRobin)
	warm := 1500 * time.Millisecond
	if e.full {
		warm = 3 * time.Second
	}
	time.Sleep(warm)
	restored := fault()
	// Recovered: every instance ready and a charge through each API
	// instance succeeded after the fault was mended.
	for i := range 3 {
		if err := e.c.WaitReady(context.Background(), i, 90*time.Second); err != nil {
			t.Fatalf("after %s: %v", name, err)
		}
	}
	l.waitSuccessAfter(t, restored, 60*time.Second)
	recovery := time.Since(restored)
	time.Sleep(warm) // load goes on after recovery
	l.stop()

	r := report{name: name, attempted: l.attempted.Load(), failures: l.failureCounts(), recovery: recovery}
	acked := l.acked(key)
	r.succeeded = int64(len(acked))
	r.acknowledged = decimal.RequireFromString(price).Mul(decimal.NewFromInt(r.succeeded))
	if r.succeeded == 0 {
		t.Fatalf("%s: no call succeeded; the load did not run", name)
	}
	charged := e.settle(name, acc, key, acked, decimal.RequireFromString("1000.00"), decimal.RequireFromString(price))
	e.verify(name, "/api/admin/verify")
	r.charged = decimal.RequireFromString(price).Mul(decimal.NewFromInt(int64(charged)))
	r.chargedUnacked = charged - len(acked)
	t.Logf("%s: attempted %d, 200 %d, failed %v; charged $%s for %d tasks vs acknowledged $%s (%d charged without a 200: calls in flight at the fault, finished after); recovered %.1f s after the fault was mended",
		name, r.attempted, r.succeeded, r.failures, r.charged.StringFixed(2), charged, r.acknowledged.StringFixed(2),
		r.chargedUnacked, recovery.Seconds())
	return r
}
