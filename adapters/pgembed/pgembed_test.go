package pgembed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// helperDirEnv makes the test binary act as a ledgerd that starts a server
// and waits to be killed (see TestKilledParentLeavesNoServer).
const helperDirEnv = "PGEMBED_TEST_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		os.Exit(runHelper(dir))
	}
	os.Exit(m.Run())
}

func runHelper(dir string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	if err := exec1(ctx, s.DSN("ledgerd"), "CREATE TABLE t (v text); INSERT INTO t VALUES ('from the killed parent')"); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", s.cmd.Process.Pid)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the test kills us
	return 0
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testDir returns a fresh directory postgres can use even when the tests
// run as root (t.TempDir's parent is private to root).
func testDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgembed-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := PrepareTestDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, s) })
	return s
}

func stop(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Error(err)
	}
}

func exec1(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func queryString(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDataAndPortSurviveRestart(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	ctx := context.Background()

	s := start(t, Config{Dir: dir})
	port := s.Port()
	if err := s.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDatabase(ctx, "app"); err != nil {
		t.Fatalf("CreateDatabase is not idempotent: %v", err)
	}
	if err := exec1(ctx, s.DSN("app"), "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, s.DSN("ledgerd"), "SELECT current_database()"); got != "ledgerd" {
		t.Errorf("ledgerd database: got %q", got)
	}
	wantDSN := fmt.Sprintf("postgres://ledgerd:%s@127.0.0.1:%d/app?sslmode=disable", s.password, port)
	if s.DSN("app") != wantDSN {
		t.Errorf("DSN = %q, want %q", s.DSN("app"), wantDSN)
	}
	if len(s.password) != 32 {
		t.Errorf("password has %d chars, want 32 hex", len(s.password))
	}
	fi, err := os.Stat(filepath.Join(dir, "password"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("password file mode %v, want 0600", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Geteuid() {
		t.Errorf("password file owned by uid %d, want %d", st.Uid, os.Geteuid())
	}

	stop(t, s)
	stop(t, s) // idempotent

	s2 := start(t, Config{Dir: dir})
	if s2.Port() != port {
		t.Errorf("port after restart = %d, want %d", s2.Port(), port)
	}
	if got := queryString(t, s2.DSN("app"), "SELECT v FROM t"); got != "kept" {
		t.Errorf("row after restart = %q", got)
	}
}

func TestTakenPortIsReplaced(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	s := start(t, Config{Dir: dir})
	port := s.Port()
	stop(t, s)

	// Someone else takes the persisted port while we are down.
	l, err := netListen(port)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	s2 := start(t, Config{Dir: dir})
	if s2.Port() == port {
		t.Fatalf("started on taken port %d", port)
	}
	b, err := os.ReadFile(filepath.Join(dir, "port"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != strconv.Itoa(s2.Port()) {
		t.Errorf("persisted port %q, want %d", b, s2.Port())
	}
}

func TestSecondStartOnSameDirFails(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	s := start(t, Config{Dir: dir})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	s2, err := Start(ctx, Config{Dir: dir, Logger: quietLogger()})
	if err == nil {
		s2.Stop(ctx)
		t.Fatal("second Start on a dir in use succeeded")
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("second Start took %v to fail", d)
	}
	t.Logf("second Start: %v", err)
	if got := queryString(t, s.DSN("ledgerd"), "SELECT 'still up'"); got != "still up" {
		t.Errorf("first server: %q", got)
	}
}

func TestStopIsBoundedByContext(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Dir: testDir(t)})
	// A session blocking a smart shutdown does not block a fast one, but a
	// cancelled context must still stop the server (by escalating).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	began := time.Now()
	_ = s.Stop(ctx)
	if d := time.Since(began); d > 2*killGrace+time.Second {
		t.Errorf("Stop with a cancelled context took %v", d)
	}
	select {
	case <-s.exited:
	default:
		t.Fatal("postgres still running after Stop")
	}
}

func TestLongDirUsesTempSocketDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(testDir(t), strings.Repeat("d", 60), strings.Repeat("e", 60))
	s := start(t, Config{Dir: dir})
	if !s.tempSocketDir {
		t.Errorf("socket dir %s: expected a temp dir for a %d-byte path", s.socketDir, len(dir))
	}
	sock := s.socketDir
	if got := queryString(t, s.DSN("ledgerd"), "SHOW unix_socket_directories"); got != sock {
		t.Errorf("unix_socket_directories = %q, want %q", got, sock)
	}
	stop(t, s)
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp socket dir left behind: %v", err)
	}
}

func TestKilledParentLeavesNoServer(t *testing.T) {
	t.Parallel()
	dir := testDir(t)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // keeps the helper waiting
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- strings.TrimSpace(line)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatal("helper did not start postgres")
	}
	pidStr, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		t.Fatalf("helper: %q", line)
	}
	pid, _ := strconv.Atoi(pidStr)

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// Pdeathsig (set after the switch to the unprivileged user) must make
	// the orphan shut down by itself.
	deadline := time.Now().Add(orphanTimeout)
	for postmasterAlive(pid, filepath.Join(dir, "data")) {
		if time.Now().After(deadline) {
			t.Fatalf("orphaned postmaster %d still running %v after its parent was killed", pid, orphanTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}

	s := start(t, Config{Dir: dir})
	if got := queryString(t, s.DSN("ledgerd"), "SELECT v FROM t"); got != "from the killed parent" {
		t.Errorf("row = %q", got)
	}
}

func TestOrphanStillRunningIsWaitedFor(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	s := start(t, Config{Dir: dir})
	// Simulate a ledgerd that died while its postmaster lives on: release
	// the lock but leave postgres running. Start must wait it out or stop
	// it, not fail or hang.
	old := s.cmd.Process.Pid
	s.release()
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = s.cmd.Process.Signal(syscall.SIGINT) // the "parent death" signal
	}()
	s2 := start(t, Config{Dir: dir})
	if postmasterAlive(old, filepath.Join(dir, "data")) {
		t.Errorf("old postmaster %d still alive", old)
	}
	if s2.Port() != s.Port() {
		t.Logf("port changed from %d to %d", s.Port(), s2.Port())
	}
}

func TestFindBinDir(t *testing.T) {
	dir, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("FindBinDir() = %s: %v", dir, err)
		}
	}

	t.Setenv("LEDGER_PG_BINDIR", dir)
	if got, err := FindBinDir(); err != nil || got != dir {
		t.Errorf("with LEDGER_PG_BINDIR=%s: %q, %v", dir, got, err)
	}
	t.Setenv("LEDGER_PG_BINDIR", "/nonexistent")
	if _, err := FindBinDir(); err == nil || !strings.Contains(err.Error(), "LEDGER_PG_BINDIR") {
		t.Errorf("bad LEDGER_PG_BINDIR: err = %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"15", "9.6", 1}, {"9.6", "10", -1}, {"16", "16", 0}, {"x", "12", -1}} {
		if got := compareVersions(c.a, c.b); got != c.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	if got := majorVersion("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"); got != "15" {
		t.Errorf("majorVersion = %q", got)
	}
}

func TestUntraversableAncestorIsReported(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: postgres runs as the invoking user, nothing to check")
		return
	}
	t.Parallel()
	parent := testDir(t)
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Start(ctx, Config{Dir: filepath.Join(parent, "pg"), Logger: quietLogger()})
	if err == nil {
		s.Stop(ctx)
		t.Fatal("Start succeeded under an untraversable directory")
	}
	if !strings.Contains(err.Error(), parent) {
		t.Errorf("error does not name %s: %v", parent, err)
	}
	fi, _ := os.Stat(parent)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("Start changed the mode of %s to %v", parent, fi.Mode().Perm())
	}
}

func netListen(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}
