package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKill9UnderLoad kills ledgerd while clients are making calls, starts
// it again, and checks the promises: every call answered 200 is charged
// exactly once; every call in flight is charged or released, none left
// held; the statement matches the wallet; verify passes.
func TestKill9UnderLoad(t *testing.T) {
	bin, dir := ledgerdBinary(t), dataDir(t, "ledgerd-load-")
	httpAddr, natsAddr := freeAddr(t), freeAddr(t)
	base := "http://" + httpAddr
	start := func() *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "LEDGER_DATA_DIR="+dir, "LEDGER_HTTP_ADDR="+httpAddr,
			"LEDGER_NATS_ADDR="+natsAddr, "LEDGER_BCRYPT_COST=4", "LEDGER_SWEEP_INTERVAL=200ms")
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		readBanner(t, stdout)
		return cmd
	}
	cmd := start()
	creds, err := os.ReadFile(filepath.Join(dir, "dev-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	field := func(name string) string {
		return regexp.MustCompile(`"` + name + `": "([^"]+)"`).FindStringSubmatch(string(creds))[1]
	}
	admin := login(t, base, field("admin_email"), field("admin_password"))
	acc := field("demo_account_id")
	customer := login(t, base, field("demo_email"), field("demo_password"))
	call(t, "PUT", base+"/api/admin/models/load", admin, `{"type":"image","price":"0.10","provider":"local","options":{"latency_ms":20}}`, 200)
	call(t, "POST", base+"/api/admin/accounts/"+acc+"/topups", admin, `{"amount":"975.00","reference":"load"}`, 201)
	key := call(t, "POST", base+"/api/users/me/api-keys", customer, `{"name":"load","rate_limit_per_minute":1000000}`, 201)["key"].(string)

	// Load: 16 clients, each call with its own Idempotency-Key.
	var mu sync.Mutex
	ok := map[string]string{} // idempotency key → task id of a 200
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				idem := fmt.Sprintf("load-%d-%d", w, i)
				req, _ := http.NewRequest("POST", base+"/api/v1/image/generate", strings.NewReader(`{"prompt":"load","model":"load"}`))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", idem)
				res, err := client.Do(req)
				if err != nil {
					continue // the server died under this call
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == 200 {
					id := regexp.MustCompile(`"taskId":"(gen_[a-z0-9]+)"`).FindStringSubmatch(string(b))[1]
					mu.Lock()
					ok[idem] = id
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	stop()
	wg.Wait()
	if len(ok) < 20 {
		t.Fatalf("only %d calls succeeded before the kill; the load did not run", len(ok))
	}

	cmd = start()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	admin = login(t, base, field("admin_email"), field("admin_password"))
	customer = login(t, base, field("demo_email"), field("demo_password"))
	deadline := time.Now().Add(60 * time.Second)
	for call(t, "GET", base+"/api/v1/wallet", customer, "", 200)["held"] != "0.00" {
		if time.Now().After(deadline) {
			t.Fatal("holds never ended after the restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The statement: one charge line per charged task, never two.
	charged := map[string]int{}
	cursor := ""
	for {
		url := base + "/api/v1/wallet/entries?limit=500"
		if cursor != "" {
			url += "&cursor=" + cursor
		}
		page := call(t, "GET", url, customer, "", 200)
		for _, x := range page["entries"].([]any) {
			e := x.(map[string]any)
			if e["type"] == "charge" {
				charged[e["task_id"].(string)]++
				if e["amount"] != "-0.10" {
					t.Fatalf("charge line %v", e)
				}
			}
		}
		next, _ := page["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	for idem, id := range ok {
		if charged[id] != 1 {
			t.Fatalf("call %s (task %s) answered 200 but charged %d times", idem, id, charged[id])
		}
	}
	for id, n := range charged {
		if n != 1 {
			t.Fatalf("task %s charged %d times", id, n)
		}
	}
	// A retry of an acknowledged call after the restart is not charged again.
	for idem := range ok {
		req, _ := http.NewRequest("POST", base+"/api/v1/image/generate", strings.NewReader(`{"prompt":"load","model":"load"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", idem)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("retry of %s after restart: %v %v", idem, err, res.Status)
		}
		res.Body.Close()
		break
	}
	w := call(t, "GET", base+"/api/v1/wallet", customer, "", 200)
	want := fmt.Sprintf("%.2f", 1000.00-0.10*float64(len(charged)))
	if w["balance"] != want {
		t.Fatalf("balance %v, want %s (1000.00 - %d charges of 0.10)", w["balance"], want, len(charged))
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		v := call(t, "GET", base+"/api/admin/verify", admin, "", 200)
		if v["ok"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify after crash under load: %v", v)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d calls acknowledged before the kill, %d charged in all", len(ok), len(charged))
}
