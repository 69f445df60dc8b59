package app

import (
	"context"
	"testing"
	"time"
)

// TestStoppedInstanceTasksAreAdopted: an instance stops in the middle of a
// call (its runner is cut off before the call ends, as a crash would); a
// live instance adopts the task, finishes it, and the customer is charged
// exactly once.
func TestStoppedInstanceTasksAreAdopted(t *testing.T) {
	host := startAppTB(t, testConfigTB(t, testDirTB(t), map[string]string{"LEDGER_JWT_SECRET": sharedJWT, "LEDGER_SWEEP_INTERVAL": "100ms"}))
	t.Cleanup(func() { stopApp(t, host) })
	env := map[string]string{"NATS_URL": host.NATSURL(), "DATABASE_URL": host.pg.DSN("ledgerd"),
		"LEDGER_JWT_SECRET": sharedJWT, "LEDGER_DEMO": "false", "LEDGER_SWEEP_INTERVAL": "100ms"}
	worker := startAppTB(t, testConfigTB(t, testDirTB(t), env))

	admin := client{t: t, base: host.URL()}.login("root@example.com", "root-password")
	cust, acc := customer(t, admin, "crash@example.com", "api")
	if r := admin.do("POST", "/api/admin/accounts/"+acc+"/topups", map[string]string{"amount": "10.00", "reference": "f"}); r.Status != 201 {
		t.Fatal(r.Raw)
	}
	if r := admin.do("PUT", "/api/admin/models/slow-1", map[string]any{"type": "image", "price": "1.00", "provider": "local",
		"options": map[string]any{"latency_ms": 1500}}); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	key, _ := newKey(t, cust, map[string]any{"name": "k"})
	onWorker := withKey(client{t: t, base: worker.URL()}, key)
	// The worker instance has the price change and the new key once the
	// stream brings them.
	waitUntil(t, 5*time.Second, func() bool { _, err := worker.Ledger.Model("slow-1"); return err == nil })
	waitUntil(t, 5*time.Second, func() bool { return onWorker.do("GET", "/api/v1/wallet", nil).Status == 200 })
	r := onWorker.do("POST", "/api/v1/generateTask/slow-1", map[string]any{"request_type": "async", "input": map[string]any{"prompt": "x"}})
	if r.Status != 200 {
		t.Fatalf("async on worker: %d %s", r.Status, r.Raw)
	}
	id := r.Body["data"].(map[string]any)["taskId"].(string)

	// Stop the worker mid-call: its runner gives up at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	_ = worker.Close(ctx)
	cancel()

	onHost := cust // a session: polling with the key would meet its rate limit
	var task response
	waitUntil(t, 20*time.Second, func() bool {
		task = onHost.do("GET", "/api/v1/tasks/"+id, nil)
		return task.Body["status"] == "succeeded" || task.Body["status"] == "failed"
	})
	if task.Body["status"] != "succeeded" || task.Body["cost"] != "1.00" {
		t.Fatalf("task after its instance stopped: %s", task.Raw)
	}
	w := cust.do("GET", "/api/v1/wallet", nil)
	if w.Body["balance"] != "9.00" || w.Body["held"] != "0.00" {
		t.Fatalf("wallet %s, want 9.00 with nothing held", w.Raw)
	}
	if row, err := host.reader.Task(context.Background(), acc, id); err != nil || row.Owner == worker.instance {
		t.Fatalf("task owner %q (err %v), want adopted away from %s", row.Owner, err, worker.instance)
	}
}
