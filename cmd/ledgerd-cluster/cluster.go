package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/adapters/pgembed"
)

// Spec describes a local cluster: NATS nodes, ledgerd instances (by role)
// and where everything lives. Every address is on loopback.
type Spec struct {
	Dir string // root: bin/, nats-N/, pg/, ledgerd-N/, logs
	// NATSNodes is 3 for a quorum that survives one loss. 0 starts no
	// NATS or Postgres: one ledgerd runs on its embedded server and
	// Postgres, as a fresh install does.
	NATSNodes int
	Roles     []string // one ledgerd per entry, e.g. {"all", "all"}
	// Env is added to every ledgerd's environment (timeouts, sweep
	// interval...).
	Env []string
	// HTTPPorts, if set, fixes each ledgerd's port (else free ones).
	HTTPPorts     []int
	AdminEmail    string
	AdminPassword string
	Log           *slog.Logger
	// Quiet sends the processes' output to log files only.
	Quiet bool
}

// Cluster is a running local cluster: real nats-server processes, an
// embedded Postgres and real ledgerd processes.
type Cluster struct {
	spec      Spec
	natsBin   string
	ledgerBin string
	pg        *pgembed.Server
	pgPort    int
	nats      []*proc
	ledgerd   []*proc
	natsPorts []int
	routePort []int
	httpPorts []int
}

// proc is one child process; cmd is nil while it is down.
type proc struct {
	name string
	args []string
	env  []string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Build compiles nats-server (from the module this project requires) and
// ledgerd into dir/bin. It runs the go tool, so it works on a fresh machine
// with only Go installed.
func Build(ctx context.Context, dir string) (natsBin, ledgerBin string, err error) {
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", "", err
	}
	natsBin, ledgerBin = filepath.Join(bin, "nats-server"), filepath.Join(bin, "ledgerd")
	root, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	for _, b := range []struct{ out, pkg string }{{natsBin, "github.com/nats-io/nats-server/v2"}, {ledgerBin, "./cmd/ledgerd"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
		}
	}
	return natsBin, ledgerBin, nil
}

// moduleRoot finds the ledgerd module (go build needs to run inside it).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the ledgerd module")
	}
	return filepath.Dir(mod), nil
}

// Start builds what is needed and starts NATS, Postgres and every ledgerd,
// returning once each ledgerd answers /readyz.
func Start(ctx context.Context, spec Spec) (*Cluster, error) {
	c := &Cluster{spec: spec}
	if spec.NATSNodes == 0 && len(spec.Roles) != 1 {
		// Each would start its own NATS and Postgres: separate ledgers.
		return nil, fmt.Errorf("without NATS nodes, one ledgerd (not %d) runs on its embedded server", len(spec.Roles))
	}
	var err error
	if c.natsBin, c.ledgerBin, err = Build(ctx, spec.Dir); err != nil {
		return nil, err
	}
	if spec.NATSNodes > 0 {
		if err := c.startNATSAll(); err != nil {
			c.Stop()
			return nil, err
		}
		if err := c.startPostgres(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.startLedgers(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) startNATSAll() error {
	n := c.spec.NATSNodes
	for range n {
		p, err := freePort()
		if err != nil {
			return err
		}
		r, err := freePort()
		if err != nil {
			return err
		}
		c.natsPorts, c.routePort = append(c.natsPorts, p), append(c.routePort, r)
	}
	var routes []string
	for _, r := range c.routePort {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", r))
	}
	for i := range n {
		dir := c.natsDir(i)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 8MB
jetstream { store_dir: %q }
cluster {
  name: ledgerd
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, c.natsName(i), c.natsPorts[i], filepath.Join(dir, "js"), c.routePort[i], strings.Join(routes, ", "))
		path := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return err
		}
		p := &proc{name: fmt.Sprintf("nats-%d", i+1), args: []string{c.natsBin, "-c", path}, log: filepath.Join(dir, "nats.log")}
		c.nats = append(c.nats, p)
		if err := c.startProc(p); err != nil {
			return err
		}
	}
	for i := range n {
		if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", c.natsPorts[i]), 20*time.Second); err != nil {
			return fmt.Errorf("nats-%d: %w", i+1, err)
		}
	}
	return nil
}

func (c *Cluster) startPostgres(ctx context.Context) error {
	dir := filepath.Join(c.spec.Dir, "pg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := pgembed.PrepareTestDir(dir); err != nil {
		return err
	}
	pg, err := pgembed.Start(ctx, pgembed.Config{Dir: dir, Port: c.pgPort, Logger: c.spec.Log, Durable: true})
	if err != nil {
		return err
	}
	c.pg, c.pgPort = pg, pg.Port()
	return nil
}

func (c *Cluster) startLedgers(ctx context.Context) error {
	for i, role := range c.spec.Roles {
		port := 0
		if i < len(c.spec.HTTPPorts) {
			port = c.spec.HTTPPorts[i]
		}
		if port == 0 {
			var err error
			if port, err = freePort(); err != nil {
				return err
			}
		}
		c.httpPorts = append(c.httpPorts, port)
		dir := filepath.Join(c.spec.Dir, fmt.Sprintf("ledgerd-%d", i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		env := append(os.Environ(), "LEDGER_DATA_DIR="+dir, fmt.Sprintf("LEDGER_HTTP_ADDR=127.0.0.1:%d", port),
			// Instances must share these: sessions and callback secrets
			// made on one are checked on another.
			"LEDGER_JWT_SECRET=local-cluster-jwt-secret-0123456789abcdef",
			"LEDGER_WEBHOOK_KEY=local-cluster-webhook-key-0123456789abcdef",
			"LEDGER_ADMIN_EMAIL="+c.spec.AdminEmail, "LEDGER_ADMIN_PASSWORD="+c.spec.AdminPassword,
			"LEDGER_DEMO=false")
		if c.spec.NATSNodes > 0 {
			env = append(env, "NATS_URL="+c.NATSURL(), "DATABASE_URL="+c.pg.DSN("ledgerd"), "LEDGER_STREAM_REPLICAS=3")
		} else {
			// Embedded whatever this shell says; and the embedded
			// server's default port may be another ledgerd's.
			natsPort, err := freePort()
			if err != nil {
				return err
			}
			env = append(env, "NATS_URL=", "DATABASE_URL=", "LEDGER_STREAM_REPLICAS=1",
				fmt.Sprintf("LEDGER_NATS_ADDR=127.0.0.1:%d", natsPort))
		}
		env = append(env, c.spec.Env...)
		p := &proc{name: fmt.Sprintf("ledgerd-%d", i+1), args: []string{c.ledgerBin, "--role", role}, env: env,
			log: filepath.Join(dir, "ledgerd.log")}
		c.ledgerd = append(c.ledgerd, p)
	}
	// One at a time: the first creates the stream, migrates and makes the
	// admin; the others find them. Each is waited for until it has started,
	// and all of them until they are ready only once all run: an API
	// instance is not ready while the read models lag, and they lag until
	// the projector (often started last) runs.
	for i := range c.ledgerd {
		started := c.banners(i)
		if err := c.startProc(c.ledgerd[i]); err != nil {
			return err
		}
		if err := c.waitStarted(ctx, i, started, 60*time.Second); err != nil {
			return err
		}
	}
	for i := range c.ledgerd {
		if err := c.WaitReady(ctx, i, 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// startedBanner is what ledgerd prints once it has started, its bootstrap
// (stream, migrations, admin) done.
const startedBanner = "ledgerd is running"

// banners counts the start banners in instance i's log, which every start
// of the instance appends to.
func (c *Cluster) banners(i int) int {
	b, _ := os.ReadFile(c.ledgerd[i].log)
	return bytes.Count(b, []byte(startedBanner))
}

// waitStarted waits until instance i has printed one more start banner
// than before.
func (c *Cluster) waitStarted(ctx context.Context, i, before int, bound time.Duration) error {
	return c.waitFor(ctx, i, bound, "started", func() error {
		if c.banners(i) <= before {
			return fmt.Errorf("no start banner yet; see %s", c.ledgerd[i].log)
		}
		return nil
	})
}

// StartLedgerd (re)starts instance i and waits until it is ready.
func (c *Cluster) StartLedgerd(ctx context.Context, i int) error {
	if err := c.startProc(c.ledgerd[i]); err != nil {
		return err
	}
	return c.WaitReady(ctx, i, 60*time.Second)
}

// WaitReady waits until instance i answers /readyz with 200.
func (c *Cluster) WaitReady(ctx context.Context, i int, bound time.Duration) error {
	return c.waitFor(ctx, i, bound, "ready", func() error {
		req, _ := http.NewRequestWithContext(ctx, "GET", c.URL(i)+"/readyz", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("/readyz %d: %s", res.StatusCode, body)
		}
		return nil
	})
}

// waitFor polls check every 100 ms until it passes, instance i exits, or
// bound passes (then its last error says why).
func (c *Cluster) waitFor(ctx context.Context, i int, bound time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(bound)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if !c.ledgerd[i].running() {
			return fmt.Errorf("%s exited; see %s", c.ledgerd[i].name, c.ledgerd[i].log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not %s within %v: %v", c.ledgerd[i].name, what, bound, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) startProc(p *proc) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s already running", p.name)
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = p.env
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if !c.spec.Quiet {
		cmd.Stderr = io.MultiWriter(logf, prefixed(p.name))
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	done := p.done
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

// prefixed writes each line to stderr with the process's name.
func prefixed(name string) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(os.Stderr, "%-10s %s\n", name, sc.Text())
		}
	}()
	return pw
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the process; for SIGKILL it also waits for the exit.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s is not running", p.name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return err
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM || sig == syscall.SIGINT {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		p.mu.Lock()
		p.cmd = nil
		p.mu.Unlock()
	}
	return nil
}

// KillNATS kill -9s node i; StartNATS brings it back on the same ports
// and store.
func (c *Cluster) KillNATS(i int) error { return c.nats[i].signal(syscall.SIGKILL) }

// StartNATS starts node i again.
func (c *Cluster) StartNATS(i int) error {
	if err := c.startProc(c.nats[i]); err != nil {
		return err
	}
	return waitTCP(fmt.Sprintf("127.0.0.1:%d", c.natsPorts[i]), 20*time.Second)
}

// ReplaceNATS starts node i, which must be down, on an empty store: a
// replaced machine with the same name and ports but nothing on disk. The
// cluster has to copy it every stream and consumer it holds a replica of.
func (c *Cluster) ReplaceNATS(i int) error {
	if c.nats[i].running() {
		return fmt.Errorf("%s is running; kill it first", c.nats[i].name)
	}
	if err := os.RemoveAll(filepath.Join(c.natsDir(i), "js")); err != nil {
		return err
	}
	return c.StartNATS(i)
}

// NATSNode is the index of the node a server name (as JetStream reports
// leaders and peers) belongs to.
func (c *Cluster) NATSNode(serverName string) (int, bool) {
	for i := range c.nats {
		if serverName == c.natsName(i) {
			return i, true
		}
	}
	return 0, false
}

func (c *Cluster) natsName(i int) string { return fmt.Sprintf("n%d", i+1) }

func (c *Cluster) natsDir(i int) string {
	return filepath.Join(c.spec.Dir, fmt.Sprintf("nats-%d", i+1))
}

// KillLedgerd kill -9s instance i.
func (c *Cluster) KillLedgerd(i int) error { return c.ledgerd[i].signal(syscall.SIGKILL) }

// PauseLedgerd and ResumeLedgerd SIGSTOP and SIGCONT instance i.
func (c *Cluster) PauseLedgerd(i int) error  { return c.ledgerd[i].signal(syscall.SIGSTOP) }
func (c *Cluster) ResumeLedgerd(i int) error { return c.ledgerd[i].signal(syscall.SIGCONT) }

// RestartPostgres stops Postgres (fast shutdown) and starts it again on
// the same port and data.
func (c *Cluster) RestartPostgres(ctx context.Context) error {
	if err := c.pg.Stop(ctx); err != nil {
		return err
	}
	return c.startPostgres(ctx)
}

// URL is instance i's HTTP base URL.
func (c *Cluster) URL(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", c.httpPorts[i]) }

// NATSURL lists every node ("" when ledgerd embeds its server).
func (c *Cluster) NATSURL() string {
	urls := make([]string, len(c.natsPorts))
	for i, p := range c.natsPorts {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	return strings.Join(urls, ",")
}

// DatabaseURL is Postgres's connection URL ("" when ledgerd embeds it).
func (c *Cluster) DatabaseURL() string {
	if c.pg == nil {
		return ""
	}
	return c.pg.DSN("ledgerd")
}

// Stop ends every process: ledgerd first (SIGTERM: in-flight calls finish),
// then NATS and Postgres.
func (c *Cluster) Stop() {
	for _, p := range c.ledgerd {
		if p.running() {
			_ = p.signal(syscall.SIGCONT) // a paused process cannot exit
			_ = p.signal(syscall.SIGTERM)
		}
	}
	for _, p := range c.nats {
		if p.running() {
			_ = p.signal(syscall.SIGTERM)
		}
	}
	if c.pg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.pg.Stop(ctx)
	}
}

func waitTCP(addr string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening within %v: %w", addr, bound, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
