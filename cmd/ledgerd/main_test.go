package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
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

	"github.com/ledgerd/ledgerd/adapters/pgembed"
)

// TestBinaryStartsServesAndStopsOnSIGTERM runs the real command twice on
// one data dir, as `make run` would: it prints where to go, serves, exits
// cleanly on SIGTERM leaving no Postgres behind, and starts again on the
// same data.
func TestBinaryStartsServesAndStopsOnSIGTERM(t *testing.T) {
	bin, dir := ledgerdBinary(t), dataDir(t, "ledgerd-bin-")
	httpAddr, natsAddr := freeAddr(t), freeAddr(t)
	var firstKey string
	for run := range 2 {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "LEDGER_DATA_DIR="+dir, "LEDGER_HTTP_ADDR="+httpAddr,
			"LEDGER_NATS_ADDR="+natsAddr, "LEDGER_BCRYPT_COST=4")
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		banner := readBanner(t, stdout)
		for _, want := range []string{"http://" + httpAddr, "Admin login", "Demo customer", "balance $25.00", "Demo API key"} {
			if !strings.Contains(banner, want) {
				t.Fatalf("run %d: banner lacks %q:\n%s", run, want, banner)
			}
		}
		key := regexp.MustCompile(`nx_live_[A-Za-z0-9_-]{32}`).FindString(banner)
		req, _ := http.NewRequest("GET", "http://"+httpAddr+"/api/v1/wallet", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), `"balance":"25.00"`) {
			t.Fatalf("run %d: wallet with the printed key: %d %s", run, res.StatusCode, body)
		}
		if run == 1 && key == firstKey {
			t.Fatal("the second start printed the same demo key")
		}
		firstKey = key

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d: exit after SIGTERM: %v", run, err)
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("run %d: did not exit within 60s of SIGTERM", run)
		}
		if _, err := os.Stat(filepath.Join(dir, "pg", "data", "postmaster.pid")); !os.IsNotExist(err) {
			t.Fatalf("run %d: Postgres still running after ledgerd exited (%v)", run, err)
		}
	}
}

func readBanner(t *testing.T, r io.Reader) string {
	t.Helper()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var b strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("ledgerd exited before it was ready:\n%s", b.String())
			}
			b.WriteString(l + "\n")
			if strings.Contains(l, "curl -s") && strings.Contains(l, "/api/v1/wallet") {
				go func() {
					for range lines {
					}
				}()
				return b.String()
			}
		case <-ctx.Done():
			t.Fatalf("no banner within 60s:\n%s", b.String())
		}
	}
}

// TestMain removes the binary the tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildDir  string
	built     string
	buildErr  error
)

// ledgerdBinary is ledgerd built once for the tests that run it as a
// process.
func ledgerdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "ledgerd-build-"); buildErr != nil {
			return
		}
		built = filepath.Join(buildDir, "ledgerd")
		if out, err := exec.Command("go", "build", "-o", built, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// dataDir is an empty data directory the embedded Postgres can use (also
// when the tests run as root), removed after the test.
func dataDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := pgembed.PrepareTestDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
