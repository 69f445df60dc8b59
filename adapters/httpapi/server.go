// Package httpapi serves the HTTP contract (../shared/API.md): thin
// handlers that decode, call the command or read side, and render.
package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ledgerd/ledgerd/adapters/idempotency"
	"github.com/ledgerd/ledgerd/adapters/session"
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/tasks"
	"github.com/ledgerd/ledgerd/projections"
	"github.com/ledgerd/ledgerd/projections/keyindex"
)

// Commands is the command side as the HTTP layer uses it.
type Commands interface {
	CreateAccount(ctx context.Context, meta ledger.Meta, email, password string, plan account.Plan) (ledger.AccountView, error)
	UpdateAccount(ctx context.Context, meta ledger.Meta, id string, plan *account.Plan, status *account.Status) (ledger.AccountView, error)
	TopUp(ctx context.Context, meta ledger.Meta, accountID string, amount money.Amount, reference string) (ledger.TopUpResult, error)
	RegisterStaff(ctx context.Context, meta ledger.Meta, email, password string, role user.Role) (string, error)
	Login(ctx context.Context, email, password string) (ledger.Identity, error)
	CreateKey(ctx context.Context, meta ledger.Meta, accountID string, in apikey.SpecInput) (ledger.IssuedKey, error)
	RotateKey(ctx context.Context, meta ledger.Meta, accountID, keyID string) (ledger.IssuedKey, error)
	RevokeKey(ctx context.Context, meta ledger.Meta, accountID, keyID string) (apikey.Hash, uint64, error)
	Reserve(ctx context.Context, meta ledger.Meta, accountID string, req account.TaskRequest) (ledger.Reservation, error)
	OpenTask(ctx context.Context, accountID, taskID string) (account.Hold, bool, error)
	InDoubt(ctx context.Context, taskID string) (bool, error)
	Model(name string) (pricing.Model, error)
	Models() []pricing.Model
	SetModel(ctx context.Context, meta ledger.Meta, m pricing.Model) (pricing.Model, error)
	Adjust(ctx context.Context, meta ledger.Meta, accountID string, amount money.Amount, reason string) (string, uint64, error)
	GrantCredits(ctx context.Context, meta ledger.Meta, accountID string, amount money.Amount, expiresAt time.Time, reason, source string) (ledger.GrantResult, error)
	Plans() []plan.Plan
	SetPlan(ctx context.Context, meta ledger.Meta, p plan.Plan) (plan.Plan, error)
	Subscribe(ctx context.Context, meta ledger.Meta, accountID, planName string) (ledger.SubscriptionResult, error)
	Subscription(ctx context.Context, accountID string) (account.Subscription, bool, error)
	Account(ctx context.Context, id string) (ledger.AccountView, ledger.Wallet, error)
	AccountSeq(id string) uint64
	NewID(prefix string) string
}

// Reads is the read side as the HTTP layer uses it.
type Reads interface {
	Wallet(ctx context.Context, accountID string) (projections.WalletRow, error)
	Account(ctx context.Context, id string) (projections.AccountRow, error)
	Keys(ctx context.Context, accountID string) ([]projections.KeyRow, error)
	Task(ctx context.Context, accountID, taskID string) (projections.TaskRow, error)
	Tasks(ctx context.Context, accountID string, at time.Time, id string, limit int) ([]projections.TaskRow, error)
	TaskByIdempotencyKey(ctx context.Context, accountID, key string) (projections.TaskRow, error)
	Entries(ctx context.Context, accountID string, before int64, limit int) ([]projections.EntryRow, error)
	Usage(ctx context.Context, accountID, granularity, groupBy string, from, to time.Time) ([]projections.UsagePoint, error)
	KeysUsage(ctx context.Context, accountID, month string) (map[string]projections.UsagePoint, error)
	Alerts(ctx context.Context, accountID string, limit int) ([]projections.AlertRow, error)
	Ping(ctx context.Context) error
}

// Projections reports and waits on the read models.
type Projections interface {
	Statuses() []projections.Status
	Runner(name string) *projections.Runner
}

// Check is a named readiness probe.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Config of the HTTP server.
type Config struct {
	Commands    Commands
	Reads       Reads
	Projections Projections
	Sessions    *session.Issuer
	Logger      *slog.Logger
	Registry    *prometheus.Registry
	Checks      []Check
	Currency    money.Currency
	// BodyLimit bounds request bodies (default 1 MiB).
	BodyLimit int64
	// ReadYourWritesWait bounds how long a read waits for the read model
	// to show the caller's own preceding write.
	ReadYourWritesWait time.Duration
	// MaxProjectionLag is the lag, in events, beyond which /readyz fails.
	MaxProjectionLag uint64
	// MaxProjectionLagTime is how long a projection may be behind the
	// stream before /readyz fails (0: no bound in time).
	MaxProjectionLagTime time.Duration
	// Role names what this instance runs; /readyz reports it.
	Role string
	// Keys verifies API keys; AllowQueryKey permits ?api_key=.
	Keys          KeyVerifier
	AllowQueryKey bool
	// TrustedProxies may set X-Forwarded-For.
	TrustedProxies []netip.Prefix
	// Tasks drives generation calls; Timing sets their bounds.
	Tasks  TaskRunner
	Timing tasks.Timing
	// Idempotency replays POSTs other than generation calls (which are
	// idempotent on the account aggregate itself).
	Idempotency *idempotency.Store
	// WebhookSecret derives an account's callback signing secret.
	WebhookSecret func(accountID string) string
	// Files serves generated media under /files/; Media, copies of
	// providers' outputs under /media/.
	Files, Media http.Handler
	// FalWebhooks, if set, takes fal's completion webhooks.
	FalWebhooks http.Handler
	// Finance proves the ledger: audit, as-of, verify, the live feed.
	Finance Finance
	// Replay rebuilds the read models.
	Replay Replayer
	// Streams pushes the read models' changes live; StreamWriteTimeout
	// bounds one write to a stream client (default 10 s).
	Streams            Streams
	StreamWriteTimeout time.Duration
	// SelfServe runs payments, refunds and alert settings; Payments is
	// Stripe (nil: not configured, and its endpoints answer 503).
	SelfServe SelfServe
	Payments  Payments
	// FindPayment names the account whose top-up a payment intent paid
	// (projections.ErrNotFound if none).
	FindPayment func(ctx context.Context, paymentIntent string) (string, error)
	// OpenSignup enables POST /api/auth/signup, SignupsPerHour per address.
	OpenSignup     bool
	SignupsPerHour int
}

// Replayer rebuilds every read model from the first event.
type Replayer interface {
	Run(ctx context.Context) (projections.ReplayResult, error)
	Progress() projections.ReplayProgress
}

// TaskRunner drives generation tasks.
type TaskRunner interface {
	Start(t tasks.Task)
	Run(ctx context.Context, t tasks.Task) (tasks.Result, error)
	Provider(name string) (tasks.Provider, bool)
	Available(provider string) bool
	BreakerStates() []tasks.BreakerState
}

// KeyVerifier is the API-key hot path.
type KeyVerifier interface {
	Verify(key string, addr netip.Addr, now time.Time) (keyindex.Key, error)
	Allow(keyID string, now time.Time) (bool, time.Duration)
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *httpMetrics
	// streams ends with the server: long-lived responses (event streams)
	// stop when shutdown begins instead of holding it up.
	streams    context.Context
	endStreams context.CancelFunc
	signups    *ipLimiter
}

// EndStreams ends every open stream; call it when shutdown begins.
func (s *Server) EndStreams() { s.endStreams() }

// New builds the server and its routes.
func New(cfg Config) *Server {
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = 1 << 20
	}
	if cfg.ReadYourWritesWait == 0 {
		cfg.ReadYourWritesWait = 2 * time.Second
	}
	if cfg.MaxProjectionLag == 0 {
		cfg.MaxProjectionLag = 10_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StreamWriteTimeout == 0 {
		cfg.StreamWriteTimeout = 10 * time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.SignupsPerHour <= 0 {
		cfg.SignupsPerHour = 10
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), metrics: newHTTPMetrics(cfg.Registry),
		signups: newIPLimiter(cfg.SignupsPerHour)}
	s.streams, s.endStreams = context.WithCancel(context.Background())
	cfg.Registry.MustRegister(projectionCollector{cfg.Projections})
	if cfg.Tasks != nil {
		cfg.Registry.MustRegister(breakerCollector{cfg.Tasks})
	}
	if cfg.Streams != nil {
		cfg.Registry.MustRegister(streamCollector{cfg.Streams})
	}
	s.routes()
	return s
}

// route is one endpoint; the table is also checked against openapi.json.
type route struct {
	method, path string
	handler      http.Handler
}

func (s *Server) routeTable() []route {
	h := func(f http.HandlerFunc) http.Handler { return f }
	return []route{
		// Operations.
		{"GET", "/healthz", h(s.healthz)},
		{"GET", "/readyz", h(s.readyz)},
		{"GET", "/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})},
		{"GET", "/openapi.json", h(s.openapi)},
		{"GET", "/dashboard", dashboard()},
		{"GET", "/dashboard/", dashboard()},
		{"GET", "/files/", s.files()},
		{"GET", "/media/", orNotFound(s, s.cfg.Media)},
		{"POST", "/api/webhooks/fal/{taskId}", orNotFound(s, s.cfg.FalWebhooks)},
		// Sessions.
		{"POST", "/api/auth/login", h(s.login)},
		{"POST", "/api/auth/signup", h(s.signup)},
		// Self-serve money.
		{"POST", "/api/v1/wallet/checkout", s.account(apikey.ScopeKeys, s.checkout)},
		{"POST", "/api/webhooks/stripe", h(s.stripeWebhook)},
		{"GET", "/api/v1/notifications", s.account(apikey.ScopeKeys, s.getNotifications)},
		{"PUT", "/api/v1/notifications", s.account(apikey.ScopeKeys, s.putNotifications)},
		// Admin and finance.
		{"POST", "/api/admin/accounts", s.staff(roleAdmin, s.createAccount)},
		{"GET", "/api/admin/accounts/{id}", s.staff(roleReader, s.getAccount)},
		{"PATCH", "/api/admin/accounts/{id}", s.staff(roleAdmin, s.updateAccount)},
		{"POST", "/api/admin/accounts/{id}/topups", s.staff(roleAdmin, s.topUp)},
		{"GET", "/api/admin/accounts/{id}/api-keys", s.staff(roleReader, s.adminListKeys)},
		{"POST", "/api/admin/users", s.staff(roleAdmin, s.createStaff)},
		{"GET", "/api/admin/projections", s.staff(roleReader, s.projectionsStatus)},
		{"POST", "/api/admin/projections/replay", s.staff(roleAdmin, s.replay)},
		{"GET", "/api/admin/projections/replay", s.staff(roleReader, s.replayProgress)},
		{"POST", "/api/admin/projections/{name}/retry", s.staff(roleAdmin, s.retryProjection)},
		{"GET", "/api/admin/accounts", s.staff(roleReader, s.listAccounts)},
		{"GET", "/api/admin/audit", s.staff(roleReader, s.auditExport)},
		{"GET", "/api/admin/accounts/{id}/balance", s.staff(roleReader, s.balanceAsOf)},
		{"GET", "/api/admin/verify", s.staff(roleReader, s.verify)},
		{"GET", "/api/admin/events/stream", s.staff(roleReader, s.eventStream)},
		{"GET", "/api/admin/usage/stream", h(s.adminUsageStream)},
		// Customers: a session, or an API key with the scope named.
		{"GET", "/api/v1/wallet", s.account(apikey.ScopeUsage, s.wallet)},
		{"GET", "/api/v1/wallet/entries", s.accountOrStaff(apikey.ScopeUsage, s.entries)},
		{"GET", "/api/v1/usage", s.accountOrStaff(apikey.ScopeUsage, s.usage)},
		// Live streams authenticate themselves: they also take ?token=.
		{"GET", "/api/v1/usage/stream", h(s.usageStream)},
		{"GET", "/api/ws/usage", h(s.wsUsage)},
		{"GET", "/api/users/me/api-keys", s.account(apikey.ScopeKeys, s.listKeys)},
		{"POST", "/api/users/me/api-keys", s.account(apikey.ScopeKeys, s.createKey)},
		{"POST", "/api/users/me/api-keys/{id}/rotate", s.account(apikey.ScopeKeys, s.rotateKey)},
		{"DELETE", "/api/users/me/api-keys/{id}", s.account(apikey.ScopeKeys, s.revokeKey)},
		{"GET", "/api/v1/webhook-secret", s.account(apikey.ScopeKeys, s.webhookSecret)},
		// Generation: the scope is checked against the model's type.
		{"POST", "/api/v1/image/generate", s.account("", s.imageGenerate)},
		{"POST", "/api/v1/video/generate", s.account("", s.videoGenerate)},
		{"POST", "/api/v1/generateTask/{model}", s.vendorErrors(s.account("", s.generateTask))},
		{"GET", "/api/v1/tasks", s.account(apikey.ScopeTasks, s.listTasks)},
		{"GET", "/api/v1/tasks/{taskId}", s.account(apikey.ScopeTasks, s.getTask)},
		{"GET", "/api/v1/models", h(s.listModels)},
		// Price list and corrections.
		{"PUT", "/api/admin/models/{model}", s.staff(roleAdmin, s.putModel)},
		{"POST", "/api/admin/accounts/{id}/adjustments", s.staff(roleAdmin, s.adjust)},
		{"POST", "/api/admin/accounts/{id}/grants", s.staff(roleAdmin, s.grant)},
		// Plans and subscriptions.
		{"GET", "/api/v1/plans", h(s.listPlans)},
		{"PUT", "/api/admin/plans/{plan}", s.staff(roleAdmin, s.putPlan)},
		{"POST", "/api/v1/subscription", s.account(apikey.ScopeKeys, s.subscribe)},
		{"GET", "/api/v1/subscription", s.account(apikey.ScopeUsage, s.getSubscription)},
	}
}

func orNotFound(s *Server, h http.Handler) http.Handler {
	if h == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.writeError(w, r, errNotFound) })
	}
	return h
}

func (s *Server) files() http.Handler {
	if s.cfg.Files == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.writeError(w, r, errNotFound) })
	}
	return s.cfg.Files
}

// WriteError renders err in the contract's format (for middleware that
// lives outside this package).
func (s *Server) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeError(w, r, err)
}

func (s *Server) routes() {
	for _, r := range s.routeTable() {
		s.mux.Handle(r.method+" "+r.path, r.handler)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { s.writeError(w, r, errNotFound) })
}

// Handler returns the server with its middleware: panics become 500s,
// every request gets an id, a body limit, a log line and metrics.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = s.cfg.Commands.NewID("req")
		}
		ctx := context.WithValue(r.Context(), requestIDKey{}, id)
		r = r.WithContext(ctx)
		w.Header().Set("X-Request-Id", id)
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.BodyLimit)
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic", "request_id", id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !rec.wrote {
					s.writeError(rec, r, fmt.Errorf("panic: %v", p))
				}
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			elapsed := time.Since(start)
			s.metrics.observe(route, rec.status, elapsed)
			// The path only, never the query string: it may carry a key.
			s.log.Debug("request", "request_id", id, "method", r.Method, "path", r.URL.Path,
				"status", rec.status, "duration_ms", float64(elapsed.Microseconds())/1000)
		}()
		s.mux.ServeHTTP(rec, r)
	})
}

type requestIDKey struct{}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// validRequestID accepts a caller's id only if it is short and plain, so
// it can be logged and echoed safely.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush lets streaming responses (event streams, exports) through.
func (r *statusRecorder) Flush() {
	r.wrote = true
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func itoa(n int) string { return strconv.Itoa(n) }

// meta is what a command records about its caller: who, in which request,
// and a fresh id for the command itself.
func (s *Server) meta(r *http.Request, p Principal) ledger.Meta {
	return ledger.Meta{Actor: p.Actor(), CorrelationID: requestID(r.Context()), CausationID: s.cfg.Commands.NewID("cmd")}
}
