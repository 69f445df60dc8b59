package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/uptrace/bun"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/ledgerd/ledgerd/adapters/callbacks"
	"github.com/ledgerd/ledgerd/adapters/httpapi"
	"github.com/ledgerd/ledgerd/adapters/idempotency"
	"github.com/ledgerd/ledgerd/adapters/media"
	"github.com/ledgerd/ledgerd/adapters/natsbus"
	"github.com/ledgerd/ledgerd/adapters/natsembed"
	"github.com/ledgerd/ledgerd/adapters/pgembed"
	"github.com/ledgerd/ledgerd/adapters/postgres"
	"github.com/ledgerd/ledgerd/adapters/providers/fal"
	"github.com/ledgerd/ledgerd/adapters/providers/local"
	"github.com/ledgerd/ledgerd/adapters/providers/openai"
	"github.com/ledgerd/ledgerd/adapters/providers/replicate"
	"github.com/ledgerd/ledgerd/adapters/session"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/tasks"
	"github.com/ledgerd/ledgerd/projections"
	"github.com/ledgerd/ledgerd/projections/keyindex"
	"github.com/ledgerd/ledgerd/projections/live"
)

// App is a running ledgerd.
type App struct {
	cfg Config
	log *slog.Logger

	natsServer *natsserver.Server
	nc         *nats.Conn
	pg         *pgembed.Server
	db         *bun.DB
	dsn        string
	Replayer   *projections.Replayer
	store      *eventstore.JetStream
	Ledger     *ledger.Ledger
	Projs      *projections.Set
	Keys       *keyindex.Index
	Runner     *tasks.Runner
	reader     *projections.Reader
	Hub        *live.Hub
	local      *local.Provider
	fal        *fal.Provider
	media      *media.Store
	timing     tasks.Timing
	instance   string

	webhookSecret func(string) string
	httpSrv       *http.Server
	api           *httpapi.Server
	listener      net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// closers run in reverse order on Close.
	closers []func(context.Context) error

	// Bootstrap is what start-up created or found: logins to print.
	Bootstrap Bootstrap
	StartedIn time.Duration
}

// Start brings ledgerd up. On error, whatever was started is stopped.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (a *App, err error) {
	began := time.Now()
	if len(cfg.Role) == 0 {
		cfg.Role = slices.Clone(AllRoles)
	}
	log = log.With("role", cfg.Role.String())
	a = &App{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = a.Close(cctx)
			a = nil
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return a, fmt.Errorf("data dir: %w", err)
	}
	if err := a.startNATS(ctx); err != nil {
		return a, err
	}
	if err := a.startPostgres(ctx); err != nil {
		return a, err
	}
	js, err := jetstream.New(a.nc)
	if err != nil {
		return a, err
	}
	if a.store, err = a.openStore(ctx, js); err != nil {
		return a, err
	}
	if a.instance, err = instanceID(cfg.DataDir); err != nil {
		return a, fmt.Errorf("instance id: %w", err)
	}
	// Listen now: the public URL goes into generated files' links.
	if a.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return a, fmt.Errorf("http: %w", err)
	}
	a.Keys = keyindex.New(cfg.KeyPrefix)
	fol := newFollower(a.Keys, log)
	var commands eventstore.Store = a.store
	if cfg.wrapStore != nil {
		commands = cfg.wrapStore(commands)
	}
	a.Ledger, err = ledger.New(commands, ledger.Config{
		Currency: cfg.Currency, BcryptCost: cfg.BcryptCost, Logger: log, Owner: a.instance,
		Keys:     ledger.KeyConfig{Prefix: cfg.KeyPrefix, MaxPerAccount: cfg.MaxKeysPerAccount, DefaultRateLimit: cfg.DefaultRateLimit},
		OnCommit: fol.apply, Doubts: postgres.NewDoubts(a.db), Turns: natsTurns{a},
		AccountSnapshots: postgres.NewSnapshots(a.db, ledger.TypeAccount),
	})
	if err != nil {
		return a, err
	}
	fol.ledger = a.Ledger
	if _, err := a.serveTurns(); err != nil {
		return a, fmt.Errorf("turns: %w", err)
	}
	if err := a.Ledger.LoadPrices(ctx); err != nil {
		return a, err
	}
	if err := a.Ledger.EnsureDefaultPrices(ctx); err != nil {
		return a, err
	}
	if err := a.Ledger.LoadPlans(ctx); err != nil {
		return a, err
	}
	if err := a.Ledger.EnsureDefaultPlans(ctx); err != nil {
		return a, err
	}
	a.Keys.APIAccess = a.Ledger.PlanAPIAccess
	providers, err := a.providers()
	if err != nil {
		return a, err
	}
	a.Runner = tasks.NewRunner(a.Ledger, log.With("component", "tasks"), providers...)
	a.Runner.Breaker = &tasks.Breaker{Threshold: cfg.BreakerThreshold, Cooldown: cfg.BreakerCooldown}
	a.media = &media.Store{Dir: filepath.Join(cfg.DataDir, "media"), BaseURL: a.URL()}
	if cfg.CopyOutputs {
		a.Runner.Keep = a.media.Copy
	}
	a.timing = cfg.timing()
	if err := natsbus.EnsurePoisonStream(ctx, js, poisonStream, poisonSubject+".>", cfg.StreamReplicas); err != nil {
		return a, err
	}
	pub, err := natsbus.NewPublisher(natsbus.PublisherConfig{JS: js, Logger: watermill.NewSlogLogger(log)})
	if err != nil {
		return a, err
	}
	a.reader = projections.NewReader(a.db)

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	a.Hub = live.New(live.Config{
		Sources: liveSources, Loader: a.reader, Currency: string(cfg.Currency),
		Statuses:  func() []projections.Status { return a.Projs.Statuses() },
		Providers: a.providerStates,
		Buffer:    cfg.StreamBuffer, Replay: cfg.StreamReplay, Logger: log.With("component", "streams"),
	})
	// The hub's totals must be loaded before any batch is applied.
	if err := a.Hub.Start(ctx); err != nil {
		return a, fmt.Errorf("live streams: %w", err)
	}
	runnerCfg := projections.RunnerConfig{
		DB: a.db, JS: js, Stream: a.store.StreamName(), SubjectPrefix: a.store.SubjectPrefix(),
		Logger: log, IsTransient: postgres.IsTransient, Poison: poisonSink{pub: pub, log: log}, Live: a.Hub,
		Lock: func(ctx context.Context, name string) (projections.Lease, bool, error) {
			l, ok, err := postgres.TryLock(ctx, a.db, name)
			if !ok {
				return nil, false, err // never a typed nil in the interface
			}
			return l, true, nil
		},
	}
	// Without the projector role the projections only follow the
	// leader's position: reads here still wait for their own writes.
	setCfg := runnerCfg
	setCfg.Follow = !cfg.Role.Has(RoleProjector)
	a.Projs = projections.NewSet(setCfg, allProjections()...)
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.Hub.Run(runCtx) }()
	replayDB, err := postgres.OpenSchema(ctx, a.dsn, projections.ReplaySchema, 8)
	if err != nil {
		return a, err
	}
	a.closers = append(a.closers, func(context.Context) error { return replayDB.Close() })
	a.Replayer = &projections.Replayer{Live: a.db, Replay: replayDB, Runner: runnerCfg, Set: a.Projs,
		Fresh: allProjections, Head: a.store.Head}
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.Projs.Run(runCtx) }()

	// The key index: loaded from the read model, then kept current from
	// the stream from the position that snapshot includes.
	snap, err := a.reader.KeySnapshot(ctx)
	if err != nil {
		return a, fmt.Errorf("loading api keys: %w", err)
	}
	a.Keys.Load(loadedKeys(snap))
	router, err := fol.run(runCtx, js, a.store.StreamName(), a.store.SubjectPrefix(), snap.Position+1)
	if err != nil {
		return a, err
	}
	a.closers = append(a.closers, func(context.Context) error { return router.Close() })
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if err := fol.catchUp(cctx, js, a.store.StreamName(), snap.Position); err != nil {
		return a, err
	}
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.flushKeyUse(runCtx) }()

	if err := a.startWork(runCtx, js); err != nil {
		return a, err
	}
	if err := a.startHTTP(ctx, js); err != nil {
		return a, err
	}
	if a.Bootstrap, err = a.bootstrap(ctx); err != nil {
		return a, err
	}
	a.StartedIn = time.Since(began)
	return a, nil
}

func (a *App) startNATS(ctx context.Context) error {
	if a.cfg.NATSURL == "" {
		dir := filepath.Join(a.cfg.DataDir, "nats")
		ns, err := natsembed.Start(natsembed.Config{Dir: dir, Addr: a.cfg.NATSAddr, Logger: a.log})
		if err != nil {
			return err
		}
		a.natsServer = ns
		a.closers = append(a.closers, func(context.Context) error {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil
		})
		a.log.Info("embedded NATS JetStream started", "url", ns.ClientURL(), "store", dir)
	}
	nc, err := natsembed.Connect(ctx, a.natsServer, a.cfg.NATSURL, "ledgerd", a.log)
	if err != nil {
		return err
	}
	a.nc = nc
	a.closers = append(a.closers, func(context.Context) error {
		// Draining needs the server; if it is gone, there is nothing to
		// flush and closing is all that is left.
		if err := nc.Drain(); err != nil {
			nc.Close()
		}
		return nil
	})
	return nil
}

func (a *App) startPostgres(ctx context.Context) error {
	dsn := a.cfg.DatabaseURL
	if dsn == "" {
		pg, err := pgembed.Start(ctx, pgembed.Config{
			Dir: filepath.Join(a.cfg.DataDir, "pg"), Port: a.cfg.PGPort, Logger: a.log, Durable: a.cfg.Durable,
		})
		if err != nil {
			return err
		}
		a.pg = pg
		a.closers = append(a.closers, pg.Stop)
		dsn = pg.DSN("ledgerd")
	}
	db, err := postgres.Open(ctx, dsn, 20)
	if err != nil {
		return err
	}
	a.db, a.dsn = db, dsn
	a.closers = append(a.closers, func(context.Context) error { return db.Close() })
	return postgres.Migrate(ctx, db, a.log)
}

// startWork starts what keeps money moving without requests: heartbeats,
// the sweeper that resumes, adopts and releases tasks, and (on one
// instance) callback delivery.
func (a *App) startWork(ctx context.Context, js jetstream.JetStream) error {
	hb, err := newHeartbeats(ctx, js, a.cfg.StreamReplicas)
	if err != nil {
		return err
	}
	if err := hb.beat(ctx, a.instance); err != nil {
		return err
	}
	secrets, err := webhookSecrets(a.cfg.WebhookKey, a.cfg.DataDir)
	if err != nil {
		return err
	}
	a.webhookSecret = secrets
	sweeper := &tasks.Sweeper{
		Ledger: a.Ledger, Runner: a.Runner, Open: openTasks(a.reader), Alive: hb.alive,
		Timeout: func(m pricing.Model) time.Duration { t, _ := a.timing.For(m); return t },
		Log:     a.log.With("component", "sweeper"), Interval: a.cfg.SweepInterval,
		OwnOnly: !a.cfg.Role.Has(RoleWorker),
	}
	dispatcher := &callbacks.Dispatcher{
		Due: dueCallbacks(a.reader), Record: a.Ledger.RecordCallback, Secret: secrets,
		Log: a.log.With("component", "callbacks"), AllowPrivate: a.cfg.CallbackAllowPrivate, BaseDelay: a.cfg.CallbackBaseDelay,
	}
	// Low-balance alerts go out like callbacks: same signing, retries and
	// address policy, from their own read model, on one instance.
	alerts := &callbacks.Dispatcher{
		Due: dueAlerts(a.reader), Record: a.recordAlert, Secret: secrets,
		Log: a.log.With("component", "alerts"), AllowPrivate: a.cfg.CallbackAllowPrivate, BaseDelay: a.cfg.CallbackBaseDelay,
	}
	// Every instance heartbeats: an API instance's calls must not be
	// adopted while it lives.
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		hb.run(ctx, a.instance, func(err error) { a.log.Warn("heartbeat", "err", err) })
	}()
	// The API role drives (and after a restart resumes) the calls it
	// accepted; the worker role also adopts dead instances' calls.
	if a.cfg.Role.Has(RoleAPI) || a.cfg.Role.Has(RoleWorker) {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); sweeper.Run(ctx) }()
	}
	if !a.cfg.Role.Has(RoleWorker) {
		return nil
	}
	a.wg.Add(4)
	go func() { defer a.wg.Done(); a.leading(ctx, "callbacks", dispatcher.Run) }()
	go func() { defer a.wg.Done(); a.leading(ctx, "grants", a.expireGrants) }()
	go func() { defer a.wg.Done(); a.leading(ctx, "renewals", a.renewSubscriptions) }()
	go func() { defer a.wg.Done(); a.leading(ctx, "alerts", alerts.Run) }()
	return nil
}

func (a *App) startHTTP(ctx context.Context, js jetstream.JetStream) error {
	key, err := session.LoadOrCreateKey(a.cfg.JWTSecret, a.cfg.DataDir)
	if err != nil {
		return err
	}
	sessions, err := session.NewIssuer(key, a.cfg.SessionTTL, nil)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var api *httpapi.Server
	idem, err := idempotency.New(ctx, idempotency.Config{
		JS: js, Replicas: a.cfg.StreamReplicas, Logger: a.log,
		WriteError: func(w http.ResponseWriter, r *http.Request, err error) { api.WriteError(w, r, err) },
		Redact:     redactSecrets,
	})
	if err != nil {
		return err
	}
	stripeClient, err := a.stripeClient()
	if err != nil {
		return err
	}
	var payments httpapi.Payments
	if stripeClient != nil {
		payments = stripeClient
	}
	api = httpapi.New(httpapi.Config{
		SelfServe: a.Ledger, Payments: payments, FindPayment: a.findPayment,
		OpenSignup: a.cfg.OpenSignup, SignupsPerHour: a.cfg.SignupsPerHour,
		Commands: a.Ledger, Reads: a.reader, Projections: a.Projs,
		Tasks: a.Runner, Timing: a.timing, Idempotency: idem, WebhookSecret: a.webhookSecret,
		Finance: finance{store: a.store, js: js, reader: a.reader, states: postgres.NewSnapshots(a.db, ledger.TypeAccount)}, Replay: a.Replayer,
		Files: http.StripPrefix("/files", a.local.FileServer()), Media: a.media.Handler(), FalWebhooks: a.falWebhooks(),
		Keys: a.Keys, AllowQueryKey: a.cfg.AllowQueryKey, TrustedProxies: a.cfg.TrustedProxies,
		Sessions: sessions, Logger: a.log, Registry: reg, Currency: a.cfg.Currency,
		Checks: []httpapi.Check{{Name: "event_store", Fn: a.checkNATS}},
		Role:   a.cfg.Role.String(), MaxProjectionLagTime: a.cfg.ReadyMaxLag,
		Streams: a.Hub, StreamWriteTimeout: a.cfg.StreamWriteTimeout,
	})
	ln := a.listener
	a.api = api
	a.httpSrv = &http.Server{
		Handler:           a.roleFilter(api.Handler()),
		ReadHeaderTimeout: a.cfg.HTTPReadHeaderTimeout,
		ReadTimeout:       a.cfg.HTTPReadTimeout,
		WriteTimeout:      5 * time.Minute, // synchronous video generation
		IdleTimeout:       a.cfg.HTTPIdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server", "err", err)
		}
	}()
	return nil
}

// checkNATS asks JetStream for the account info and the ledger stream's
// info: the first answers only with a working connection and (on a
// cluster) a meta-leader, the second only when the stream's own replicas
// have a leader, i.e. a quorum that can take appends.
func (a *App) checkNATS(ctx context.Context) error {
	if !a.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	js, err := jetstream.New(a.nc)
	if err != nil {
		return err
	}
	if _, err = js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	st, err := js.Stream(ctx, a.store.StreamName())
	if err != nil {
		return fmt.Errorf("stream %s: %w", a.store.StreamName(), err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", a.store.StreamName(), err)
	}
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return fmt.Errorf("stream %s has no leader (no quorum)", a.store.StreamName())
	}
	// A leader that has lost its followers keeps answering stream info
	// until it notices and steps down (up to about 15 s): count the
	// replicas it has heard from lately instead.
	if info.Cluster != nil && len(info.Cluster.Replicas) > 0 {
		heard, total := 1, 1+len(info.Cluster.Replicas) // the leader itself
		for _, p := range info.Cluster.Replicas {
			if !p.Offline && p.Active < replicaSilence {
				heard++
			}
		}
		if 2*heard <= total {
			return fmt.Errorf("stream %s has lost its quorum: the leader has heard from %d of %d replicas in %v",
				a.store.StreamName(), heard, total, replicaSilence)
		}
	}
	return nil
}

// replicaSilence is how long a stream replica may go unheard by the
// leader before /readyz counts it out of the quorum.
const replicaSilence = 3 * time.Second

// flushKeyUse writes last_used_at for keys used since the last flush: at
// most one write a second, whatever the request rate.
func (a *App) flushKeyUse(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if used := a.Keys.TakeUsed(); len(used) > 0 {
			if err := a.reader.TouchKeys(ctx, used); err != nil && ctx.Err() == nil {
				a.log.Warn("recording api key use", "keys", len(used), "err", err)
			}
		}
	}
}

func loadedKeys(s projections.KeySnapshot) ([]keyindex.Loaded, []keyindex.LoadedAccount) {
	keys := make([]keyindex.Loaded, 0, len(s.Keys))
	for _, k := range s.Keys {
		h, err := apikey.ParseHash(k.Hash)
		if err != nil {
			continue
		}
		scopes := make(apikey.Scopes, len(k.Scopes))
		for i, sc := range k.Scopes {
			scopes[i] = apikey.Scope(sc)
		}
		keys = append(keys, keyindex.Loaded{KeyID: k.ID, AccountID: k.AccountID, Hash: h, Scopes: scopes,
			Allowlist: k.IPAllowlist, ExpiresAt: k.ExpiresAt, RateLimit: k.RateLimit, Revoked: k.Status == "revoked", Version: k.Version})
	}
	accs := make([]keyindex.LoadedAccount, len(s.Accounts))
	for i, ac := range s.Accounts {
		accs[i] = keyindex.LoadedAccount{ID: ac.ID, Plan: account.Plan(ac.Plan), Status: account.Status(ac.Status), Version: ac.Version}
	}
	return keys, accs
}

// providers builds every generation provider that is configured: the
// local one always, the hosted ones when their credential is set.
func (a *App) providers() ([]tasks.Provider, error) {
	var err error
	if a.local, err = local.New(local.Config{Dir: filepath.Join(a.cfg.DataDir, "files"), BaseURL: a.URL()}); err != nil {
		return nil, err
	}
	out := []tasks.Provider{a.local}
	if a.cfg.FalKey != "" {
		fc := fal.Config{QueueURL: a.cfg.FalQueueURL, Key: a.cfg.FalKey}
		if a.cfg.FalWebhooks {
			fc.WebhookURL = a.URL() + "/api/webhooks/fal"
		}
		if a.fal, err = fal.New(fc); err != nil {
			return nil, fmt.Errorf("fal: %w", err)
		}
		out = append(out, a.fal)
	}
	if a.cfg.OpenAIKey != "" {
		p, err := openai.New(openai.Config{BaseURL: a.cfg.OpenAIBaseURL, APIKey: a.cfg.OpenAIKey})
		if err != nil {
			return nil, fmt.Errorf("openai: %w", err)
		}
		out = append(out, p)
	}
	if a.cfg.ReplicateToken != "" {
		p, err := replicate.New(replicate.Config{BaseURL: a.cfg.ReplicateBase, Token: a.cfg.ReplicateToken})
		if err != nil {
			return nil, fmt.Errorf("replicate: %w", err)
		}
		out = append(out, p)
	}
	for _, p := range out {
		a.log.Info("generation provider enabled", "provider", p.Name())
	}
	return out, nil
}

// falWebhooks accepts fal's completion webhooks: a verified one wakes the
// task's poll at once (the poll fetches the result itself).
func (a *App) falWebhooks() http.Handler {
	if a.fal == nil || !a.cfg.FalWebhooks {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "unreadable", http.StatusBadRequest)
			return
		}
		if err := a.fal.VerifyWebhook(r.Header, body); err != nil {
			a.log.Warn("fal webhook refused", "err", err)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		a.Runner.Nudge(r.PathValue("taskId"))
		w.WriteHeader(http.StatusOK)
	})
}

// liveSources are the projections whose changes the live streams push.
var liveSources = []string{"accounts", "usage", "tasks"}

func (a *App) providerStates() []live.Provider {
	states := a.Runner.BreakerStates()
	out := make([]live.Provider, len(states))
	for i, s := range states {
		out[i] = live.Provider{Provider: s.Provider, State: s.State}
	}
	return out
}

// allProjections returns a fresh instance of every read model.
func allProjections() []projections.Projection {
	return []projections.Projection{projections.NewAccounts(), projections.NewUsers(), projections.NewTasks(),
		projections.NewUsage(), projections.NewStatement(), projections.NewAlerts()}
}

// redactSecrets drops a one-time key secret from a response before the
// idempotency store keeps it: a replayed key creation says which key was
// made, never its secret again.
func redactSecrets(r *http.Request, body []byte) []byte {
	if !strings.HasPrefix(r.URL.Path, "/api/users/me/api-keys") {
		return body
	}
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return body
	}
	if _, ok := m["key"]; !ok {
		return body
	}
	delete(m, "key")
	m["key_redacted"] = "the secret is shown only in the first response"
	b, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return b
}

// URL is where the HTTP API listens.
func (a *App) URL() string {
	if a.cfg.PublicURL != "" {
		return a.cfg.PublicURL
	}
	return "http://" + a.listener.Addr().String()
}

// NATSURL is where other processes reach the event store.
func (a *App) NATSURL() string {
	if a.natsServer != nil {
		return a.natsServer.ClientURL()
	}
	return a.cfg.NATSURL
}

// Close stops taking requests, lets in-flight ones finish, stops the
// projections after their current batch, and stops the embedded servers.
func (a *App) Close(ctx context.Context) error {
	var errs []error
	if a.api != nil {
		a.api.EndStreams()
	}
	if a.httpSrv != nil {
		if err := a.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	}
	if a.Runner != nil {
		// Calls in flight finish and are recorded; any cut short by the
		// deadline stay open and are resumed at the next start.
		if err := a.Runner.Close(ctx); err != nil {
			a.log.Warn("stopping tasks", "err", err)
		}
	}
	if a.cancel != nil {
		a.cancel()
	}
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, errors.New("background work did not stop in time"))
	}
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// openStore creates (or updates) the event stream. A cluster that was
// just started, or is electing a leader, cannot answer yet: that is
// waited out for up to a minute rather than failing the start, as
// instances and NATS nodes are often started together.
func (a *App) openStore(ctx context.Context, js jetstream.JetStream) (*eventstore.JetStream, error) {
	deadline := time.Now().Add(time.Minute)
	wait := 250 * time.Millisecond
	for {
		store, err := eventstore.OpenJetStream(ctx, js, eventstore.JetStreamConfig{
			Stream: a.cfg.Stream, Replicas: a.cfg.StreamReplicas, Storage: jetstream.FileStorage,
		})
		if err == nil || !errors.Is(err, eventstore.ErrUnavailable) || time.Now().Add(wait).After(deadline) {
			return store, err
		}
		a.log.Warn("event stream not available yet; waiting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 4*time.Second)
	}
}
