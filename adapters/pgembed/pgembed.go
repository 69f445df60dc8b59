// Package pgembed runs a real PostgreSQL server as a child process of
// ledgerd, with its cluster under a data directory, using the Postgres
// binaries installed on the machine.
//
// Layout of Config.Dir:
//
//	data/          the cluster (owned by the unprivileged user when run as root)
//	run/           unix socket directory
//	password       superuser password (0600, owned by the invoking user)
//	port           TCP port, reused across restarts
//	postgres.log   server and initdb output (appended)
//	lock           flock held while a Server owns Dir
package pgembed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	superuser = "ledgerd"

	readyTimeout  = 30 * time.Second
	orphanTimeout = 10 * time.Second
	killGrace     = 5 * time.Second
	logTailLines  = 20

	// sun_path is 108 bytes on Linux; postgres needs room for
	// ".s.PGSQL.<port>.lock" on top of the directory.
	maxSocketPath = 100
)

// Config configures an embedded server.
type Config struct {
	Dir     string       // data root; cluster lives in Dir/data. Created if missing.
	Port    int          // 0: pick a free loopback port once, persist it in Dir and reuse it while it stays free
	BinDir  string       // optional override; else FindBinDir
	Logger  *slog.Logger // nil → slog.Default()
	Durable bool         // true: fsync on (production); false: fsync, synchronous_commit and full_page_writes off (tests)
	RunAs   string       // user to run postgres as when ledgerd is root; default "postgres" if it exists, else "nobody"
}

// Server is a running embedded Postgres.
type Server struct {
	log      *slog.Logger
	dir      string
	dataDir  string
	logPath  string
	binDir   string
	durable  bool
	user     *unprivUser // nil unless ledgerd runs as root
	password string
	port     int

	socketDir     string
	tempSocketDir bool
	lock          *os.File

	cmd     *exec.Cmd
	exited  chan struct{} // closed once the postmaster has been reaped
	waitErr error         // valid after exited is closed

	mu      sync.Mutex
	stopped bool
}

// Start runs Postgres on cfg.Dir, initializing the cluster on first use, and
// returns once it accepts connections and the "ledgerd" database exists.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("pgembed: Config.Dir is required")
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("pgembed: invalid port %d", cfg.Port)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgembed: data dir %q: %w", cfg.Dir, err)
	}

	u, err := lookupRunAs(cfg.RunAs)
	if err != nil {
		return nil, err
	}
	if u != nil {
		logger.Info("embedded postgres running as unprivileged user", "user", u.name, "uid", u.uid)
	}
	if err := mkdirAll(dir, u); err != nil {
		return nil, err
	}
	if u != nil {
		if err := checkTraversable(dir, u); err != nil {
			return nil, err
		}
	}

	s := &Server{
		log:     logger,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "postgres.log"),
		durable: cfg.Durable,
		user:    u,
	}
	// Postgres's own postmaster.pid check cannot tell a live sibling from an
	// orphan we should reap, so exclusive use of Dir is decided here.
	s.lock, err = lockDir(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			stopCtx, cancel := context.WithTimeout(context.Background(), killGrace)
			_ = s.terminate(stopCtx)
			cancel()
			s.release()
		}
	}()

	clusterMajor, err := readClusterVersion(s.dataDir)
	if err != nil {
		return nil, err
	}
	if err := s.resolveBinaries(cfg.BinDir, clusterMajor); err != nil {
		return nil, err
	}
	if s.password, err = loadOrCreatePassword(filepath.Join(dir, "password"), clusterMajor != ""); err != nil {
		return nil, err
	}
	if clusterMajor == "" {
		if err := s.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.waitForOrphan(ctx); err != nil {
		return nil, err
	}
	if err := s.prepareSocketDir(); err != nil {
		return nil, err
	}
	if u != nil {
		// Files may have been restored or touched by root since the last run.
		if err := chownTree(s.dataDir, u); err != nil {
			return nil, err
		}
	}
	if err := s.startWithPort(ctx, cfg.Port); err != nil {
		return nil, err
	}
	if err := s.CreateDatabase(ctx, "ledgerd"); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// DSN returns a URL for connecting to database as the superuser over TCP.
func (s *Server) DSN(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(superuser, s.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on (127.0.0.1 only).
func (s *Server) Port() int { return s.port }

// CreateDatabase creates the database unless it already exists.
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("pgembed: create database: empty name")
	}
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("pgembed: create database %q: connect: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("pgembed: create database %q: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: lost a race, same outcome
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgembed: create database %q: %w", name, err)
	}
	return nil
}

// Stop shuts the server down with a fast shutdown (SIGINT: roll back open
// transactions, checkpoint) and waits for it. If ctx ends first, it escalates
// to SIGQUIT and then SIGKILL. Calling Stop again is a no-op.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	err := s.terminate(ctx)
	s.release()
	return err
}

// terminate stops the child, if any, escalating when ctx ends.
func (s *Server) terminate(ctx context.Context) error {
	if s.cmd == nil {
		return nil
	}
	select {
	case <-s.exited:
		return nil
	default:
	}
	pid := s.cmd.Process.Pid
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
		s.log.Info("embedded postgres stopped", "pid", pid)
		return nil
	case <-ctx.Done():
	}

	s.log.Warn("embedded postgres fast shutdown timed out; sending SIGQUIT", "pid", pid)
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.exited:
	case <-time.After(killGrace):
		s.log.Warn("embedded postgres ignored SIGQUIT; killing it", "pid", pid)
		// Its backends share its process group (Setpgid); take them too
		// rather than leaving them to notice the postmaster is gone.
		_ = killGroup(pid, syscall.SIGKILL)
		select {
		case <-s.exited:
		case <-time.After(killGrace):
			return fmt.Errorf("pgembed: postgres (pid %d) did not exit after SIGKILL", pid)
		}
	}
	return fmt.Errorf("pgembed: postgres did not finish a fast shutdown: %w", ctx.Err())
}

func (s *Server) release() {
	if s.tempSocketDir {
		_ = os.RemoveAll(s.socketDir)
		s.tempSocketDir = false
	}
	if s.lock != nil {
		_ = s.lock.Close() // drops the flock
		s.lock = nil
	}
}

func (s *Server) resolveBinaries(override, clusterMajor string) error {
	if override != "" {
		if err := checkBinDir(override); err != nil {
			return fmt.Errorf("pgembed: Config.BinDir: %w", err)
		}
		s.binDir = override
	} else {
		d, err := findBinDir(clusterMajor)
		if err != nil {
			return err
		}
		s.binDir = d
	}
	if clusterMajor == "" {
		return nil
	}
	// Catch a package upgrade here, with advice, rather than as a FATAL
	// buried in postgres.log.
	out, err := exec.Command(filepath.Join(s.binDir, "postgres"), "--version").Output()
	if err != nil {
		return fmt.Errorf("pgembed: %s --version: %w", filepath.Join(s.binDir, "postgres"), err)
	}
	if got := majorVersion(string(out)); got != "" && got != clusterMajor {
		return fmt.Errorf("pgembed: the cluster in %s was created by PostgreSQL %s but %s has PostgreSQL %s; install postgresql-%s (or set LEDGER_PG_BINDIR), or pg_upgrade the cluster",
			s.dataDir, clusterMajor, s.binDir, got, clusterMajor)
	}
	return nil
}

// majorVersion extracts "15" from "postgres (PostgreSQL) 15.14 (Debian ...)".
func majorVersion(versionOutput string) string {
	_, rest, ok := strings.Cut(versionOutput, "(PostgreSQL) ")
	if !ok {
		return ""
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	return rest[:end]
}

// readClusterVersion returns the cluster's major version, or "" when there
// is no cluster yet.
func readClusterVersion(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("pgembed: reading cluster version: %w", err)
	}
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("pgembed: reading %s: %w", dataDir, err)
	}
	if len(entries) > 0 {
		// Not ours to delete: it may be a damaged cluster someone wants back.
		return "", fmt.Errorf("pgembed: %s is not empty but has no PG_VERSION (an interrupted initdb?); move it away to initialize a new cluster", dataDir)
	}
	return "", nil
}

func loadOrCreatePassword(path string, clusterExists bool) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		pw := strings.TrimSpace(string(b))
		if pw == "" {
			return "", fmt.Errorf("pgembed: password file %s is empty", path)
		}
		return pw, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("pgembed: reading password: %w", err)
	}
	if clusterExists {
		return "", fmt.Errorf("pgembed: the cluster exists but its password file %s is missing; restore it, or move the cluster away to start afresh", path)
	}
	pw, err := randomHex(16)
	if err != nil {
		return "", err
	}
	// Written before initdb so that an interrupted initdb is retried with
	// the same password rather than orphaning one.
	if err := writeFileAtomic(path, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("pgembed: saving password: %w", err)
	}
	return pw, nil
}

func (s *Server) initdb(ctx context.Context) error {
	s.log.Info("initializing embedded postgres cluster", "dir", s.dataDir, "bindir", s.binDir)
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		return fmt.Errorf("pgembed: creating %s: %w", s.dataDir, err)
	}
	if err := chownTo(s.dataDir, s.user); err != nil {
		return err
	}

	// initdb runs as the unprivileged user, so it cannot read Dir/password.
	pwf, err := os.CreateTemp(s.dir, ".pwfile-")
	if err != nil {
		return fmt.Errorf("pgembed: creating initdb password file: %w", err)
	}
	defer os.Remove(pwf.Name())
	_, err = pwf.WriteString(s.password + "\n")
	if cerr := pwf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgembed: writing initdb password file: %w", err)
	}
	if err := chownTo(pwf.Name(), s.user); err != nil {
		return err
	}

	args := []string{
		"-D", s.dataDir,
		"--username=" + superuser,
		"--pwfile=" + pwf.Name(),
		"--auth=scram-sha-256",
		"--encoding=UTF8",
		"--locale=C",
	}
	if !s.durable {
		args = append(args, "--no-sync")
	}
	logf, offset, err := s.openLog()
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, "initdb"), args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr(s.user, syscall.SIGKILL)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgembed: initdb: %w; last lines of %s:\n%s", err, s.logPath, logTail(s.logPath, offset, logTailLines))
	}
	return nil
}

// waitForOrphan deals with a postmaster left over from a previous ledgerd
// that died without stopping it. Holding the Dir lock means no live Server
// owns it, so it is an orphan, normally already in the fast shutdown that
// Pdeathsig triggered.
func (s *Server) waitForOrphan(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return nil // absent or unreadable: postgres will judge for itself
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 || !postmasterAlive(pid, s.dataDir) {
		// A stale pid file is postgres's to handle; deleting it could
		// only ever hide a live server.
		return nil
	}
	s.log.Warn("waiting for the previous embedded postgres to exit", "pid", pid)
	if waitGone(ctx, pid, s.dataDir, orphanTimeout) {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("pgembed: waiting for previous postgres (pid %d) to exit: %w", pid, ctx.Err())
	}
	s.log.Warn("previous embedded postgres still running; sending SIGQUIT", "pid", pid)
	_ = signalPid(pid, syscall.SIGQUIT)
	if waitGone(ctx, pid, s.dataDir, killGrace) {
		return nil
	}
	_ = killGroup(pid, syscall.SIGKILL)
	if waitGone(ctx, pid, s.dataDir, killGrace) {
		return nil
	}
	return fmt.Errorf("pgembed: previous postgres (pid %d) on %s will not exit", pid, s.dataDir)
}

func waitGone(ctx context.Context, pid int, dataDir string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for postmasterAlive(pid, dataDir) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

func (s *Server) prepareSocketDir() error {
	dir := filepath.Join(s.dir, "run")
	if len(dir)+len("/.s.PGSQL.65535.lock") > maxSocketPath {
		tmp, err := os.MkdirTemp("", "pgembed-")
		if err != nil {
			return fmt.Errorf("pgembed: socket dir: %w", err)
		}
		s.log.Debug("data dir path too long for a unix socket; using a temp socket dir", "dir", tmp)
		dir, s.tempSocketDir = tmp, true
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pgembed: socket dir: %w", err)
	}
	s.socketDir = dir
	return chownTo(dir, s.user)
}

// startWithPort starts postgres on the configured or persisted port. An
// automatically chosen port can be taken between probing and binding, so
// that case gets a few fresh ports before giving up.
func (s *Server) startWithPort(ctx context.Context, fixed int) error {
	portFile := filepath.Join(s.dir, "port")
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		port := fixed
		if port == 0 {
			if port, err = choosePort(portFile, attempt > 0); err != nil {
				return err
			}
		}
		s.port = port
		var bindErr bool
		bindErr, err = s.launch(ctx)
		if err == nil {
			if err := writeFileAtomic(portFile, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
				return fmt.Errorf("pgembed: saving port: %w", err)
			}
			return nil
		}
		if fixed != 0 || !bindErr {
			return err
		}
		s.log.Warn("embedded postgres port was taken; trying another", "port", port)
	}
	return err
}

// choosePort reuses the persisted port while it is free, so that DSNs
// handed out earlier (e.g. to psql users) keep working.
func choosePort(portFile string, fresh bool) (int, error) {
	if !fresh {
		if b, err := os.ReadFile(portFile); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 && p <= 65535 && portFree(p) {
				return p, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgembed: picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// launch starts the postmaster and waits until it accepts connections.
// bindErr reports that it exited because the port was in use.
func (s *Server) launch(ctx context.Context) (bindErr bool, err error) {
	logf, offset, err := s.openLog()
	if err != nil {
		return false, err
	}
	args := []string{
		"-D", s.dataDir,
		"-p", strconv.Itoa(s.port),
		"-k", s.socketDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=200",
		"-c", "shared_buffers=128MB",
	}
	if s.durable {
		args = append(args, "-c", "fsync=on")
	} else {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig makes an orphaned postmaster do a fast shutdown if ledgerd
	// is killed -9; Go sets it after switching credentials (a credential
	// change would clear it). Setpgid keeps a terminal's Ctrl-C away from
	// postgres so that ledgerd shuts down in order.
	cmd.SysProcAttr = sysProcAttr(s.user, syscall.SIGINT)

	// Pdeathsig fires when the forking *thread* exits, and Go only retires
	// threads whose goroutine locked them. A fresh goroutine never runs on
	// such a thread, whatever the caller did with LockOSThread.
	startErr := make(chan error, 1)
	go func() { startErr <- cmd.Start() }()
	err = <-startErr
	logf.Close() // the child has its own descriptor
	if err != nil {
		return false, fmt.Errorf("pgembed: starting postgres: %w", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitReady(ctx); err != nil {
		select {
		case <-s.exited:
			tail := logTail(s.logPath, offset, logTailLines)
			bindErr = strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use")
			return bindErr, fmt.Errorf("pgembed: postgres exited during startup (%v); last lines of %s:\n%s", s.waitErr, s.logPath, tail)
		default:
		}
		stopCtx, cancel := context.WithTimeout(context.Background(), killGrace)
		_ = s.terminate(stopCtx)
		cancel()
		return false, fmt.Errorf("%w; last lines of %s:\n%s", err, s.logPath, logTail(s.logPath, offset, logTailLines))
	}
	s.log.Info("embedded postgres ready", "port", s.port, "pid", cmd.Process.Pid, "dir", s.dir, "bindir", s.binDir, "durable", s.durable)
	return false, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	dsn := s.DSN("postgres")
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, dsn)
		cancelAttempt()
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		select {
		case <-s.exited:
			return errors.New("pgembed: postgres exited during startup")
		case <-ctx.Done():
			return fmt.Errorf("pgembed: postgres not accepting connections on port %d (last error: %v): %w", s.port, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// openLog opens postgres.log for appending and returns its size, so that
// error messages can quote only this run's output.
func (s *Server) openLog() (*os.File, int64, error) {
	f, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("pgembed: opening log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("pgembed: opening log: %w", err)
	}
	return f, fi.Size(), nil
}

// logTail returns up to n last lines written to path after offset.
func logTail(path string, offset int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	const maxRead = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > maxRead {
		offset = fi.Size() - maxRead
	}
	b, err := io.ReadAll(io.NewSectionReader(f, offset, maxRead))
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// mkdirAll creates dir and any missing parents. When postgres will run as
// another user, the directories created here are made traversable for it;
// directories that already existed are left alone.
func mkdirAll(dir string, u *unprivUser) error {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("pgembed: %s is not a directory", p)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pgembed: data dir: %w", err)
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pgembed: creating %s: %w", p, err)
		}
		if u != nil {
			// Traverse only: Dir holds the password, which stays 0600.
			if err := os.Chmod(p, 0o711); err != nil {
				return fmt.Errorf("pgembed: %w", err)
			}
		}
	}
	return nil
}

func chownTo(path string, u *unprivUser) error {
	if u == nil {
		return nil
	}
	if err := os.Lchown(path, int(u.uid), int(u.gid)); err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	return nil
}

// PrepareTestDir makes a directory a test created (e.g. with os.MkdirTemp)
// traversable by the unprivileged user postgres runs as under root. Use it
// rather than t.TempDir, whose parent directory is private.
func PrepareTestDir(path string) error {
	if err := os.Chmod(path, 0o755); err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	u, err := lookupRunAs("")
	if err != nil || u == nil {
		return err
	}
	return checkTraversable(path, u)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
