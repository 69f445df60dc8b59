package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/adapters/app"
	"github.com/ledgerd/ledgerd/adapters/pgembed"
)

// result is one ledgerctl run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// harness runs ledgerctl in-process against one ledgerd.
type harness struct {
	t      *testing.T
	env    map[string]string
	config string // XDG_CONFIG_HOME
}

func newHarness(t *testing.T, url string) *harness {
	cfg := t.TempDir()
	return &harness{t: t, config: cfg, env: map[string]string{"XDG_CONFIG_HOME": cfg, "LEDGER_URL": url}}
}

func (h *harness) getenv(k string) string { return h.env[k] }

func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb, h.getenv)
	return result{code, out.String(), errb.String()}
}

// ok runs ledgerctl and fails the test unless it exits 0.
func (h *harness) ok(args ...string) result {
	h.t.Helper()
	r := h.run("", args...)
	if r.code != 0 {
		h.t.Fatalf("ledgerctl %s: %s", strings.Join(args, " "), r)
	}
	return r
}

func startLedgerd(t *testing.T) *app.App {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real ledgerd (embedded NATS and Postgres)")
	}
	dir, err := os.MkdirTemp("", "ledgerctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := pgembed.PrepareTestDir(dir); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"LEDGER_DATA_DIR":       dir,
		"LEDGER_HTTP_ADDR":      "127.0.0.1:0",
		"LEDGER_NATS_ADDR":      "127.0.0.1:-1",
		"LEDGER_ADMIN_EMAIL":    "root@example.com",
		"LEDGER_ADMIN_PASSWORD": "root-password",
		"LEDGER_BCRYPT_COST":    "4",
		"LEDGER_DEMO":           "true",
	}
	cfg, err := app.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Durable = false
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := app.Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("starting ledgerd: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := a.Close(ctx); err != nil {
			t.Errorf("stopping ledgerd: %v", err)
		}
	})
	return a
}

// balanceOf reads the balance through ledgerctl's --json output.
func (h *harness) balanceOf(acc string) *big.Rat {
	h.t.Helper()
	r := h.ok("balance", acc, "--json")
	var b struct {
		Balance string `json:"balance"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
		h.t.Fatalf("balance --json: %v\n%s", err, r)
	}
	return dec(h.t, b.Balance)
}

func dec(t *testing.T, s string) *big.Rat {
	t.Helper()
	v, ok := new(big.Rat).SetString(s)
	if !ok {
		t.Fatalf("not a decimal: %q", s)
	}
	return v
}

func wantDelta(t *testing.T, before, after *big.Rat, delta string) {
	t.Helper()
	if got := new(big.Rat).Sub(after, before); got.Cmp(dec(t, delta)) != 0 {
		t.Fatalf("balance moved by %s, want %s (before %s, after %s)",
			got.FloatString(2), delta, before.FloatString(2), after.FloatString(2))
	}
}

func wantContains(t *testing.T, r result, where, sub string) {
	t.Helper()
	s := r.stdout
	if where == "stderr" {
		s = r.stderr
	}
	if !strings.Contains(s, sub) {
		t.Fatalf("%s does not contain %q\n%s", where, sub, r)
	}
}

func TestAgainstLedgerd(t *testing.T) {
	a := startLedgerd(t)
	demo := a.Bootstrap.DemoAccountID
	if demo == "" {
		t.Fatal("no demo account")
	}
	h := newHarness(t, a.URL())

	t.Run("login", func(t *testing.T) {
		h.t = t
		r := h.run("root-password\n", "login", "--email", "root@example.com", "--password-stdin")
		if r.code != 0 {
			t.Fatalf("login: %s", r)
		}
		wantContains(t, r, "stdout", "Logged in to "+a.URL())
		path := filepath.Join(h.config, "ledgerctl", "credentials.json")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "windows" {
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("credentials mode %v, want 0600", fi.Mode().Perm())
			}
			di, err := os.Stat(filepath.Dir(path))
			if err != nil {
				t.Fatal(err)
			}
			if di.Mode().Perm() != 0o700 {
				t.Errorf("credentials dir mode %v, want 0700", di.Mode().Perm())
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var cr map[string]any
		if err := json.Unmarshal(b, &cr); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"url", "token", "email", "expires_at"} {
			if v, _ := cr[k].(string); v == "" {
				t.Errorf("credentials.%s is empty: %s", k, b)
			}
		}
		if cr["url"] != a.URL() || cr["email"] != "root@example.com" {
			t.Errorf("credentials = %s", b)
		}
		if strings.Contains(r.stdout+r.stderr, cr["token"].(string)) {
			t.Error("login printed the token")
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		h.t = t
		cfg := newHarness(t, a.URL())
		r := cfg.run("nope\n", "login", "--email", "root@example.com", "--password-stdin")
		if r.code != 1 {
			t.Fatalf("want exit 1: %s", r)
		}
		wantContains(t, r, "stderr", "error: unauthorized:")
	})

	t.Run("accounts", func(t *testing.T) {
		h.t = t
		// The list is a read model: wait until it has the demo account.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(h.ok("accounts", "--json").stdout, demo) {
			if time.Now().After(deadline) {
				t.Fatal("the demo account never showed in the accounts list")
			}
			time.Sleep(20 * time.Millisecond)
		}
		r := h.ok("accounts")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if f := strings.Fields(lines[0]); !slices.Equal(f, []string{"ID", "EMAIL", "PLAN", "STATUS"}) {
			t.Fatalf("header %q\n%s", lines[0], r)
		}
		wantContains(t, r, "stdout", demo)
		// The columns line up.
		col := strings.Index(lines[0], "EMAIL")
		for _, l := range lines[1:] {
			if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
				t.Errorf("misaligned row %q (EMAIL at %d)", l, col)
			}
		}

		r = h.ok("accounts", "--json", "--limit", "1", "--all")
		var page struct {
			Accounts []struct {
				ID    string `json:"id"`
				Email string `json:"email"`
			} `json:"accounts"`
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &page); err != nil {
			t.Fatalf("accounts --json: %v\n%s", err, r)
		}
		if !slices.ContainsFunc(page.Accounts, func(x struct {
			ID    string `json:"id"`
			Email string `json:"email"`
		}) bool {
			return x.ID == demo
		}) || page.NextCursor != nil {
			t.Fatalf("accounts --all --json: %s", r)
		}

		r = h.ok("accounts", "show", demo)
		for _, s := range []string{"Account", demo, "Balance", "Available"} {
			wantContains(t, r, "stdout", s)
		}
	})

	t.Run("topup then balance", func(t *testing.T) {
		h.t = t
		before := h.balanceOf(demo)
		r := h.ok("topup", demo, "25.00", "--reference", "wire-0001")
		wantContains(t, r, "stdout", "Credited 25.00 USD to "+demo)
		wantDelta(t, before, h.balanceOf(demo), "25.00")

		r = h.ok("balance", demo)
		wantContains(t, r, "stdout", "Balance")
		wantContains(t, r, "stdout", "Events")
	})

	t.Run("same reference credits once", func(t *testing.T) {
		h.t = t
		h.ok("topup", demo, "12.00", "--reference", "wire-0002")
		before := h.balanceOf(demo)
		r := h.ok("topup", demo, "12.00", "--reference", "wire-0002")
		wantContains(t, r, "stdout", "Already credited")
		wantDelta(t, before, h.balanceOf(demo), "0")

		// A retried invocation with the same Idempotency-Key too.
		h.ok("topup", demo, "10.00", "--reference", "wire-0003", "--idempotency-key", "retry-me-1")
		before = h.balanceOf(demo)
		h.ok("topup", demo, "10.00", "--reference", "wire-0003", "--idempotency-key", "retry-me-1")
		wantDelta(t, before, h.balanceOf(demo), "0")
	})

	t.Run("adjust negative", func(t *testing.T) {
		h.t = t
		before := h.balanceOf(demo)
		r := h.ok("adjust", demo, "-5.00", "--reason", "duplicate charge")
		wantContains(t, r, "stdout", "by -5.00")
		wantDelta(t, before, h.balanceOf(demo), "-5.00")

		before = h.balanceOf(demo)
		h.ok("adjust", "--reason", "correction", "--", demo, "-1.25")
		wantDelta(t, before, h.balanceOf(demo), "-1.25")

		r = h.ok("adjust", demo, "-0.75", "--reason", "as json", "--json")
		var out map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out["amount"] != "-0.75" {
			t.Fatalf("adjust --json: %v %s", err, r)
		}
	})

	t.Run("validation error", func(t *testing.T) {
		h.t = t
		r := h.run("", "topup", demo, "5.00", "--reference", "too-small")
		if r.code != 1 {
			t.Fatalf("want exit 1: %s", r)
		}
		wantContains(t, r, "stderr", "error: validation_error: ")
		wantContains(t, r, "stderr", "amount: must be at least 10.00")

		r = h.run("", "accounts", "show", "acc_doesnotexist")
		if r.code != 1 {
			t.Fatalf("want exit 1: %s", r)
		}
		wantContains(t, r, "stderr", "error: not_found: ")
	})

	t.Run("verify", func(t *testing.T) {
		h.t = t
		r := h.ok("verify")
		wantContains(t, r, "stdout", "CHECK")
		wantContains(t, r, "stdout", "OK: ")
		if n := strings.Count(r.stdout, " ok "); n == 0 {
			t.Fatalf("no passing checks listed:\n%s", r)
		}
		r = h.ok("verify", "--account", demo, "--json")
		var rep struct {
			OK     bool `json:"ok"`
			Checks []struct {
				Name string `json:"name"`
			} `json:"checks"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || !rep.OK || len(rep.Checks) == 0 {
			t.Fatalf("verify --json: %v %s", err, r)
		}
	})

	t.Run("audit export", func(t *testing.T) {
		h.t = t
		out := filepath.Join(t.TempDir(), "audit.jsonl")
		r := h.ok("audit", "export", "--account", demo, "--out", out)
		wantContains(t, r, "stderr", "Exported ")
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		var prev string
		n := 0
		for sc.Scan() {
			var e struct {
				Seq       uint64          `json:"seq"`
				Type      string          `json:"type"`
				AccountID string          `json:"account_id"`
				Data      json.RawMessage `json:"data"`
				PrevHash  *string         `json:"prev_hash"`
				Hash      string          `json:"hash"`
			}
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("line %d: %v: %s", n+1, err, sc.Text())
			}
			if e.Hash == "" || e.PrevHash == nil || e.AccountID != demo || e.Type == "" {
				t.Fatalf("line %d lacks chain fields: %s", n+1, sc.Text())
			}
			if n > 0 && *e.PrevHash != prev {
				t.Fatalf("line %d: prev_hash %s, want the previous hash %s", n+1, *e.PrevHash, prev)
			}
			prev = e.Hash
			n++
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if n < 3 {
			t.Fatalf("only %d events exported", n)
		}
		if m, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*partial*")); len(m) > 0 {
			t.Errorf("temporary files left: %v", m)
		}

		r = h.ok("audit", "export", "--account", demo, "--format", "csv", "--from", "2000-01-01")
		rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
		if err != nil {
			t.Fatalf("csv: %v\n%s", err, r)
		}
		if len(rows) != n+1 || rows[0][0] != "seq" || !slices.Contains(rows[0], "hash") || !slices.Contains(rows[0], "prev_hash") {
			t.Fatalf("csv: %d rows (want %d), header %v", len(rows), n+1, rows[0])
		}

		r = h.run("", "audit", "export", "--account", demo, "--from", "yesterday")
		if r.code != 2 {
			t.Fatalf("bad --from: want exit 2: %s", r)
		}
	})

	t.Run("projections", func(t *testing.T) {
		h.t = t
		r := h.ok("projections")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		for _, col := range []string{"NAME", "STATUS", "POSITION", "LAG EVENTS", "LAG MS", "ERROR"} {
			if !strings.Contains(lines[0], col) {
				t.Fatalf("header lacks %s:\n%s", col, r)
			}
		}
		if len(lines) < 2 || !strings.Contains(r.stdout, "accounts") {
			t.Fatalf("no projections listed:\n%s", r)
		}
	})

	t.Run("replay", func(t *testing.T) {
		h.t = t
		r := h.ok("replay")
		wantContains(t, r, "stdout", "Identical")
		wantContains(t, r, "stdout", "Replay done in ")
		wantContains(t, r, "stderr", "replay [")
		wantContains(t, r, "stderr", "done")
		if strings.Contains(r.stdout, "replay [") {
			t.Error("the progress bar went to stdout")
		}
		r = h.ok("replay", "status")
		wantContains(t, r, "stdout", "Phase")
	})

	t.Run("events tail", func(t *testing.T) {
		h.t = t
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errb syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"events", "tail", "--json", "--account", demo}, strings.NewReader(""), &out, &errb, h.getenv)
		}()
		waitFor(t, 10*time.Second, func() bool { return strings.Contains(errb.String(), "following events") }, &errb)
		// The stream starts at its live end once following, which may be
		// a moment after the response: top up until one shows.
		var seen string
		for i := 0; seen == "" && i < 20; i++ {
			h.ok("topup", demo, "10.00", "--reference", fmt.Sprintf("tail-%d", i))
			deadline := time.Now().Add(time.Second)
			for seen == "" && time.Now().Before(deadline) {
				for _, l := range strings.Split(out.String(), "\n") {
					var e struct {
						Type      string `json:"type"`
						AccountID string `json:"account_id"`
						Hash      string `json:"hash"`
					}
					if json.Unmarshal([]byte(l), &e) == nil && e.Type == "account.topped_up" && e.AccountID == demo && e.Hash != "" {
						seen = l
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		if seen == "" {
			t.Fatalf("no top-up event came\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
		}
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("tail exited %d after Ctrl-C\n%s", code, errb.String())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("tail did not stop when cancelled")
		}
	})

	t.Run("events tail table", func(t *testing.T) {
		h.t = t
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errb syncBuffer
		done := make(chan int, 1)
		go func() {
			// From the beginning of the stream: the demo account's history.
			done <- run(ctx, []string{"events", "tail", "--after", "1", "--account", demo, "--type", "account.topped_up"},
				strings.NewReader(""), &out, &errb, h.getenv)
		}()
		waitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "wire-0001") }, &out)
		cancel()
		<-done
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			f := strings.Fields(l)
			if len(f) < 5 || f[2] != "account.topped_up" || f[3] != demo || !strings.Contains(l, "amount=") {
				t.Fatalf("line %q: want seq time type account data", l)
			}
		}
	})

	t.Run("bad token", func(t *testing.T) {
		h.t = t
		bad := newHarness(t, a.URL())
		bad.env["LEDGER_TOKEN"] = "not-a-token"
		r := bad.run("", "accounts")
		if r.code != 1 {
			t.Fatalf("want exit 1: %s", r)
		}
		wantContains(t, r, "stderr", "error: unauthorized:")
		wantContains(t, r, "stderr", "ledgerctl login")
	})

	t.Run("other url", func(t *testing.T) {
		h.t = t
		r := h.run("", "--url", "http://127.0.0.1:1", "accounts")
		if r.code != 1 || !strings.Contains(r.stderr, "logged in to "+a.URL()) {
			t.Fatalf("the token must not go to another URL: %s", r)
		}
	})

	t.Run("logout", func(t *testing.T) {
		h.t = t
		h.ok("logout")
		if _, err := os.Stat(filepath.Join(h.config, "ledgerctl", "credentials.json")); !os.IsNotExist(err) {
			t.Fatalf("credentials still there: %v", err)
		}
		r := h.run("", "verify")
		if r.code != 1 {
			t.Fatalf("want exit 1: %s", r)
		}
		wantContains(t, r, "stderr", "not logged in")
	})
}

func TestHelp(t *testing.T) {
	h := newHarness(t, "http://127.0.0.1:1")
	for _, name := range append(slices.Clone(order), "audit", "events") {
		args := append(strings.Fields(name), "--help")
		r := h.run("", args...)
		if r.code != 0 {
			t.Errorf("%s: %s", strings.Join(args, " "), r)
			continue
		}
		if !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, "ledgerctl "+name) {
			t.Errorf("%s: no usage:\n%s", strings.Join(args, " "), r)
		}
		if cmd, ok := commands[name]; ok {
			if !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, cmd.summary) {
				t.Errorf("%s: no summary or examples:\n%s", strings.Join(args, " "), r)
			}
			if r2 := h.run("", append([]string{"help"}, strings.Fields(name)...)...); r2.code != 0 || r2.stdout != r.stdout {
				t.Errorf("help %s differs from %s --help", name, name)
			}
			if r2 := h.run("", append(strings.Fields(name), "-h")...); r2.code != 0 || r2.stdout != r.stdout {
				t.Errorf("%s -h differs from --help", name)
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := h.run("", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Commands:") {
			t.Errorf("%v: %s", args, r)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	h := newHarness(t, "http://127.0.0.1:1")
	h.env["LEDGER_TOKEN"] = "unused"
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"audit"},
		{"audit", "frobnicate"},
		{"accounts", "--limit", "0"},
		{"accounts", "--nope"},
		{"topup", "acc_x", "25.00"},
		{"topup", "acc_x", "lots", "--reference", "r"},
		{"topup", "acc_x"},
		{"adjust", "acc_x", "-5.00"},
		{"adjust", "acc_x", "-5.00", "--reason", "r", "extra"},
		{"balance", "acc_x", "--as-of", "noon"},
		{"audit", "export"},
		{"events", "tail", "--after", "0"},
		{"audit", "export", "--account", "acc_x", "--format", "xml"},
		{"login", "--password", "hunter2"},
		{"login", "--password=hunter2"},
		{"login", "--email", "a@example.com"}, // stdin is no terminal
		{"topup", "acc_x", "25.00", "--reference", "r", "--idempotency-key", "has space"},
		{"--url", "ftp://x", "accounts"},
	} {
		r := h.run("", args...)
		if r.code != 2 {
			t.Errorf("%q: want exit 2: %s", args, r)
		}
		if r.stderr == "" {
			t.Errorf("%q: nothing said", args)
		}
		if strings.Contains(r.stderr, "hunter2") {
			t.Errorf("%q: the password was echoed", args)
		}
	}
	r := h.run("", "frobnicate")
	wantContains(t, r, "stderr", `unknown command "frobnicate"`)
}

func TestNoToken(t *testing.T) {
	h := newHarness(t, "http://127.0.0.1:1")
	for _, args := range [][]string{{"accounts"}, {"verify"}, {"topup", "acc_x", "10.00", "--reference", "r"}, {"events", "tail"}} {
		r := h.run("", args...)
		if r.code != 1 {
			t.Errorf("%q: want exit 1: %s", args, r)
		}
		wantContains(t, r, "stderr", "not logged in: run 'ledgerctl login'")
	}
}

func TestSplitArgs(t *testing.T) {
	c := &cli{getenv: func(string) string { return "" }}
	for _, tc := range []struct {
		args   []string
		pos    []string
		reason string
	}{
		{[]string{"acc_1", "-5.00", "--reason", "x"}, []string{"acc_1", "-5.00"}, "x"},
		{[]string{"--reason", "x", "acc_1", "-5.00"}, []string{"acc_1", "-5.00"}, "x"},
		{[]string{"acc_1", "--reason=-x", "-.5"}, []string{"acc_1", "-.5"}, "-x"},
		{[]string{"--reason", "-3", "--", "acc_1", "-5", "--json"}, []string{"acc_1", "-5", "--json"}, "-3"},
	} {
		fs := c.flags("adjust")
		reason := fs.String("reason", "", "")
		pos, err := fs.parse(tc.args, 0, -1)
		if err != nil || !slices.Equal(pos, tc.pos) || *reason != tc.reason {
			t.Errorf("%q: pos %q reason %q err %v; want %q %q", tc.args, pos, *reason, err, tc.pos, tc.reason)
		}
	}
}

func TestSummarize(t *testing.T) {
	got := summarize(json.RawMessage(`{"amount":"10.00","reference":"wire 1","meta":{"a":1},"n":3}`), 200)
	if want := `amount=10.00 reference="wire 1" meta={…} n=3`; got != want {
		t.Errorf("summarize = %q, want %q", got, want)
	}
}

// syncBuffer is a bytes.Buffer safe to write and read from two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, show *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting; output so far:\n%s", show.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
