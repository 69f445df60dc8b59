package app

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestReplay(t *testing.T) {
	e := newChargingEnv(t, nil)
	e.topUp("5000.00", "fund")
	key, _ := newKey(t, e.cust, map[string]any{"name": "k"})
	c := withKey(e.anon, key)
	for range 5 {
		if r := c.do("POST", "/api/v1/image/generate", image("x")); r.Status != 200 {
			t.Fatal(r.Raw)
		}
	}
	// Calls keep being made during the replays.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var during atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		cc := c
		cc.t = t
		for ctx.Err() == nil {
			if r := cc.do("POST", "/api/v1/image/generate", image("during")); r.Status == 200 {
				during.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	r := e.admin.do("POST", "/api/admin/projections/replay", nil)
	if r.Status != 200 || r.Body["identical"] != true || r.Body["swapped"] != false || r.Body["events"].(float64) < 10 {
		t.Fatalf("replay: %d %s", r.Status, r.Raw)
	}
	// A read model that drifted is reported and replaced by the rebuild.
	if _, err := e.a.db.ExecContext(context.Background(), "UPDATE wallets SET held = held + 5 WHERE account_id = ?", e.acc); err != nil {
		t.Fatal(err)
	}
	r = e.admin.do("POST", "/api/admin/projections/replay", nil)
	if r.Body["identical"] != false || r.Body["swapped"] != true || !strings.Contains(r.Raw, "wallets") {
		t.Fatalf("replay over a drifted read model: %s", r.Raw)
	}
	stop()
	wg.Wait()
	if during.Load() == 0 {
		t.Fatal("no call succeeded while replaying")
	}
	// Projections go on after the replay, and everything verifies.
	if r := c.do("POST", "/api/v1/image/generate", image("after")); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	waitUntil(t, 10*time.Second, func() bool { return e.admin.do("GET", "/api/admin/verify", nil).Body["ok"] == true })
	p := e.admin.do("GET", "/api/admin/projections/replay", nil)
	if p.Body["phase"] != "done" || p.Body["running"] != false {
		t.Fatalf("replay progress after: %s", p.Raw)
	}
	if r := e.cust.do("POST", "/api/admin/projections/replay", nil); r.Status != 403 {
		t.Fatalf("customer starting a replay: %d", r.Status)
	}
}
