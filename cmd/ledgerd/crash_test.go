package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKill9BetweenReserveAndCapture kills ledgerd (SIGKILL: no shutdown
// code runs) while two calls are reserved and not yet captured, starts it
// again on the same data, and checks that each hold ended exactly once:
// the calls were resumed and charged once, nothing is left held.
func TestKill9BetweenReserveAndCapture(t *testing.T) {
	bin, dir := ledgerdBinary(t), dataDir(t, "ledgerd-crash-")
	httpAddr, natsAddr := freeAddr(t), freeAddr(t)
	base := "http://" + httpAddr
	start := func() (*exec.Cmd, string) {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "LEDGER_DATA_DIR="+dir, "LEDGER_HTTP_ADDR="+httpAddr,
			"LEDGER_NATS_ADDR="+natsAddr, "LEDGER_BCRYPT_COST=4", "LEDGER_SWEEP_INTERVAL=200ms")
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, readBanner(t, stdout)
	}
	cmd, banner := start()
	adminPW := regexp.MustCompile(`Admin login\s+\S+ / (\S+)`).FindStringSubmatch(banner)[1]
	demo := regexp.MustCompile(`Demo customer\s+(\S+) / (\S+)`).FindStringSubmatch(banner)
	key := regexp.MustCompile(`nx_live_[A-Za-z0-9_-]{32}`).FindString(banner)
	admin := login(t, base, "admin@ledgerd.local", adminPW)
	call(t, "PUT", base+"/api/admin/models/slow-crash", admin,
		`{"type":"image","price":"1.00","provider":"local","options":{"latency_ms":1500}}`, 200)

	// One async call, one sync call whose client will see the connection
	// die: both are reserved, neither captured, when the process is killed.
	res := call(t, "POST", base+"/api/v1/generateTask/slow-crash", key, `{"request_type":"async","input":{"prompt":"crash a"}}`, 200)
	asyncID := res["data"].(map[string]any)["taskId"].(string)
	go func() {
		req, _ := http.NewRequest("POST", base+"/api/v1/image/generate", strings.NewReader(`{"prompt":"crash b","model":"slow-crash"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	customer := login(t, base, demo[1], demo[2])
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := call(t, "GET", base+"/api/v1/wallet", customer, "", 200)
		if w["held"] == "2.00" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls never reserved: %v", w)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	cmd, banner = start()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	customer = login(t, base, demo[1], demo[2])
	deadline = time.Now().Add(30 * time.Second)
	var w map[string]any
	for {
		w = call(t, "GET", base+"/api/v1/wallet", customer, "", 200)
		if w["held"] == "0.00" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("holds never ended after restart: %v", w)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Both calls were resumed and succeeded: charged once each.
	if w["balance"] != "23.00" || w["available"] != "23.00" {
		t.Fatalf("wallet after crash and restart: %v, want 23.00 (25.00 - 2 × 1.00)", w)
	}
	task := call(t, "GET", base+"/api/v1/tasks/"+asyncID, customer, "", 200)
	if task["status"] != "succeeded" || task["cost"] != "1.00" {
		t.Fatalf("async task after restart: %v", task)
	}
}

func login(t *testing.T, base, email, password string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	res := call(t, "POST", base+"/api/auth/login", "", string(body), 200)
	return res["access_token"].(string)
}

func call(t *testing.T, method, url, token, body string, want int) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, res.StatusCode, raw, want)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}
