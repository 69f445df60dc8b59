//go:build faults

// TestQuorumLoss stops NATS nodes under a running ledgerd: it runs with the
// fault scenarios (make faults, make faults-short), not in make test, where
// a loaded machine makes cluster re-election times unpredictable.

package app

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/adapters/natsembed/natstest"
)

// TestQuorumLoss: on a 3-node cluster with a 3-replica stream, losing two
// nodes makes /readyz fail and calls answer 503 unavailable promptly,
// reserving nothing; when the nodes return, the instance recovers by
// itself. Losing one node changes nothing.
func TestQuorumLoss(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	// No sweeps: if the refused call's reservation lands when the quorum
	// returns, nothing releases it before its retry comes, which must.
	e := newChargingEnv(t, map[string]string{"NATS_URL": nc.URL(), "LEDGER_STREAM_REPLICAS": "3", "LEDGER_SWEEP_INTERVAL": "1h"})
	e.topUp("10.00", "fund")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)
	if r := c.do("POST", "/api/v1/image/generate", image("before")); r.Status != 200 {
		t.Fatalf("before: %d %s", r.Status, r.Raw)
	}
	ready := func() response { return e.anon.do("GET", "/readyz", nil) }
	if r := ready(); r.Status != 200 {
		t.Fatalf("/readyz with every node up: %d %s", r.Status, r.Raw)
	}

	// One node down: a quorum remains; calls go on.
	nc.Stop(2)
	waitUntil(t, 20*time.Second, func() bool { return c.do("POST", "/api/v1/image/generate", image("one down")).Status == 200 })

	// Two down: no quorum.
	nc.Stop(1)
	took := waitUntil(t, 60*time.Second, func() bool { return ready().Status == http.StatusServiceUnavailable })
	t.Logf("/readyz failed %v after the quorum was lost: %s", took, ready().Raw)
	began := time.Now()
	r := c.do("POST", "/api/v1/image/generate", image("no quorum"), "Idempotency-Key", "refused-1")
	refused := time.Since(began)
	if r.Status != http.StatusServiceUnavailable || errCode(r) != "unavailable" {
		t.Fatalf("call without quorum: %d %s, want 503 unavailable", r.Status, r.Raw)
	}
	// A bound against hanging, not a performance figure: the append and
	// its retries are bounded to a few seconds.
	if refused > 10*time.Second {
		t.Fatalf("call without quorum took %v to be refused", refused)
	}
	t.Logf("call refused with 503 in %v without quorum", refused)

	// Back: the instance recovers without a restart.
	nc.Start(1)
	nc.Start(2)
	took = waitUntil(t, 60*time.Second, func() bool { return ready().Status == 200 })
	t.Logf("/readyz ok %v after the nodes returned", took)
	waitUntil(t, 30*time.Second, func() bool { return c.do("POST", "/api/v1/image/generate", image("after")).Status == 200 })
	// The refused call retried with its Idempotency-Key runs, whether or
	// not its reservation landed when the quorum returned (if it did, the
	// retry releases it, and it is never run).
	if r := c.do("POST", "/api/v1/image/generate", image("no quorum"), "Idempotency-Key", "refused-1"); r.Status != 200 {
		t.Fatalf("retry of the refused call with its key: %d %s, want 200", r.Status, r.Raw)
	}
	landed := strings.Count(c.do("GET", "/api/v1/tasks?limit=100", nil).Raw, `"code":"unavailable"`)
	t.Logf("the refused call's reservation landed when the quorum returned (and was released): %v", landed > 0)
	// Charged: before, one down, after, the retry (0.80 each, and any
	// retries of "one down" that succeeded are not possible: the wait
	// stops at the first 200). The refused call was not charged.
	var w string
	deadline := time.Now().Add(15 * time.Second)
	for w = e.wallet(); w != "6.80/0.00/6.80" && time.Now().Before(deadline); w = e.wallet() {
		time.Sleep(50 * time.Millisecond)
	}
	if w != "6.80/0.00/6.80" {
		t.Fatalf("wallet %s, want 6.80/0.00/6.80 (four calls charged; the refused one not)", w)
	}
}
