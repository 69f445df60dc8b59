package app

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/adapters/natsembed"
)

// TestEventStoreOutage: with NATS down, a call is refused with 503 and
// nothing is reserved; a call whose provider finished while NATS was down
// is captured once NATS is back; after recovery calls work again.
func TestEventStoreOutage(t *testing.T) {
	// NATS runs apart from ledgerd here (as with NATS_URL in production),
	// so it can be stopped and started again on the same port and data.
	natsDir := t.TempDir()
	port := freePort(t)
	natsAddr := "127.0.0.1:" + strconv.Itoa(port)
	ns, err := natsembed.Start(natsembed.Config{Dir: natsDir, Addr: natsAddr, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown() }) // after the app has closed (cleanups run last-first)
	e := newChargingEnv(t, map[string]string{"NATS_URL": ns.ClientURL()})
	e.topUp("10.00", "fund")
	e.model("slow-half", map[string]any{"type": "image", "price": "1.00", "provider": "local", "options": map[string]any{"latency_ms": 700}})
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)
	if r := c.do("POST", "/api/v1/image/generate", image("warm")); r.Status != 200 {
		t.Fatalf("before outage: %d %s", r.Status, r.Raw)
	}

	// A call in flight when the event store goes away.
	inflight := make(chan response, 1)
	go func() {
		cc := c
		cc.t = t
		inflight <- cc.do("POST", "/api/v1/image/generate", map[string]string{"prompt": "in flight", "model": "slow-half"})
	}()
	time.Sleep(200 * time.Millisecond) // reserved, provider still working

	ns.Shutdown()
	ns.WaitForShutdown()

	start := time.Now()
	r := c.do("POST", "/api/v1/image/generate", image("during outage"))
	if r.Status != http.StatusServiceUnavailable || errCode(r) != "unavailable" {
		t.Fatalf("during outage: %d %s, want 503 unavailable", r.Status, r.Raw)
	}
	t.Logf("refused in %v while NATS was down", time.Since(start))

	time.Sleep(time.Second) // the in-flight call's provider has finished; its capture is waiting
	ns, err = natsembed.Start(natsembed.Config{Dir: natsDir, Addr: natsAddr, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}

	select {
	case r := <-inflight:
		if r.Status != 200 || r.Body["cost"] != "1.00" {
			t.Fatalf("call in flight during the outage: %d %s", r.Status, r.Raw)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the in-flight call never finished")
	}
	waitUntil(t, 10*time.Second, func() bool { return c.do("POST", "/api/v1/image/generate", image("after")).Status == 200 })
	// Charged: warm 0.80 + in flight 1.00 + after 0.80; the refused call nothing.
	waitUntil(t, 10*time.Second, func() bool { return e.wallet() == "7.40/0.00/7.40" })
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
