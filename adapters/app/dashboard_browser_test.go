package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// chromiumPath is Debian's chromium; .ci/run installs it when missing.
const chromiumPath = "/usr/bin/chromium"

// TestDashboardInBrowser drives the dashboard in headless Chromium
// (playwright-core from npm, no browser download; see e2e/dashboard.mjs):
// log in, see the balance, create, copy and revoke a key, then watch the
// balance and usage change without a reload while this test makes calls
// through the API; then the staff view. Screenshots go to
// $LEDGER_E2E_SCREENSHOTS, or the test's temp dir.
func TestDashboardInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser test skipped: no Chromium at %s (apt-get install chromium; .ci/run does it)", chromiumPath)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("browser test skipped: no node in PATH (apt-get install nodejs npm; .ci/run does it)")
	}
	dir, err := filepath.Abs("e2e")
	if err != nil {
		t.Fatal(err)
	}
	installE2EDeps(t, dir)

	e := newChargingEnv(t, nil)
	e.topUp("25.00", "fund")
	const loadKeyName = "load"
	key, _ := newKey(t, e.cust, map[string]any{"name": loadKeyName})
	shots := os.Getenv("LEDGER_E2E_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	// The browser reaches ledgerd through a proxy the test can cut, to see
	// the page admit that its figures may be stale and then catch up.
	proxy := newCutProxy(t, strings.TrimPrefix(e.a.URL(), "http://"))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "dashboard.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"LEDGER_URL=http://"+proxy.addr(),
		"CUSTOMER_EMAIL=payer@example.com", "CUSTOMER_PASSWORD=password-payer@example.com",
		"ADMIN_EMAIL=root@example.com", "ADMIN_PASSWORD=root-password",
		// 3 calls while the page is live, then 1 while it is offline.
		"EXPECT_BALANCE=$25.00", "EXPECT_BALANCE_AFTER=$22.60", "EXPECT_CALLS_AFTER=3", "EXPECT_SPEND_AFTER=$2.40",
		"EXPECT_BALANCE_FINAL=$21.80", "EXPECT_CALLS_FINAL=4", "EXPECT_SPEND_FINAL=$3.20",
		"LOAD_KEY_NAME="+loadKeyName,
		"SCREENSHOT_DIR="+shots,
		"CHROMIUM="+chromiumPath,
	)
	// The browser runs in node's process group, ended with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	fail := func(format string, args ...any) {
		t.Helper()
		cancel()
		_ = cmd.Wait()
		t.Fatalf(format+"\nbrowser test log:\n%s", append(args, stderr.String())...)
	}

	passed, made := false, 0
	for line := range lines {
		var n int
		reply := "DONE\n"
		switch {
		case func() bool { _, err := fmt.Sscanf(line, "CALL %d", &n); return err == nil }():
			// The page is open: make the calls through the API (directly,
			// not through the browser's proxy).
			gen := withKey(e.anon, key)
			for range n {
				made++
				if r := gen.do("POST", "/api/v1/image/generate", image(fmt.Sprintf("dashboard call %d", made))); r.Status != 200 {
					fail("call %d: %d %s", made, r.Status, r.Raw)
				}
			}
		case line == "CUT":
			proxy.cut()
		case line == "RESTORE":
			proxy.restore()
		case line == "PASS":
			passed = true
			reply = ""
		default:
			t.Logf("browser test: %s", line)
			reply = ""
		}
		if reply != "" {
			if _, err := io.WriteString(stdin, reply); err != nil {
				fail("answering the browser test: %v", err)
			}
		}
	}
	if err := cmd.Wait(); err != nil || !passed || made != 4 {
		t.Fatalf("browser test failed (%v):\n%s", err, stderr.String())
	}
	t.Logf("%s", stderr.String())
	for _, name := range []string{"customer.png", "customer-offline.png", "customer-phone.png", "admin.png"} {
		b, err := os.ReadFile(filepath.Join(shots, name))
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("screenshot %s: %v (%d bytes), want a PNG", name, err, len(b))
		}
	}
	t.Logf("screenshots in %s", shots)
}

// installE2EDeps runs `npm ci` in dir when its node_modules do not hold the
// versions package-lock.json pins, under a file lock so concurrent test
// binaries never install at the same time.
func installE2EDeps(t *testing.T, dir string) {
	t.Helper()
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "ledgerd-e2e-npm.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck

	if e2eDepsCurrent(dir) {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("node is installed but npm is not (apt-get install npm): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	if !e2eDepsCurrent(dir) {
		t.Fatalf("npm ci in %s did not install what package-lock.json pins", dir)
	}
}

// e2eDepsCurrent reports whether every package the lock file pins is
// installed at its pinned version.
func e2eDepsCurrent(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return false
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if json.Unmarshal(b, &lock) != nil {
		return false
	}
	for path, p := range lock.Packages {
		if !strings.HasPrefix(path, "node_modules/") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, path, "package.json"))
		var got struct {
			Version string `json:"version"`
		}
		if err != nil || json.Unmarshal(b, &got) != nil || got.Version != p.Version {
			return false
		}
	}
	return true
}

// cutProxy forwards TCP connections to a backend until cut: then it drops
// every open connection and refuses new ones until restored.
type cutProxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	down    bool
	conns   map[net.Conn]bool
}

func newCutProxy(t *testing.T, backend string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: backend, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c] = true
	p.mu.Unlock()
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[b] = true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done
	c.Close()
	b.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, b)
	p.mu.Unlock()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
