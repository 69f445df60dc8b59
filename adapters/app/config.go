// Package app wires ledgerd together: embedded or external NATS and
// Postgres, the event store, the command side, the projections and the
// HTTP API, started in order and stopped in reverse.
package app

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

// Config is every setting, read from the environment (see README).
type Config struct {
	HTTPAddr  string
	PublicURL string
	// HTTP server deadlines: a client gets ReadHeaderTimeout to send its
	// request line and headers and ReadTimeout for the whole request
	// including the body, so slow (slowloris) clients are cut off;
	// IdleTimeout closes kept-alive connections left unused.
	HTTPReadHeaderTimeout time.Duration
	HTTPReadTimeout       time.Duration
	HTTPIdleTimeout       time.Duration
	DataDir               string
	NATSURL               string // empty: embedded
	NATSAddr              string // where the embedded server listens
	DatabaseURL           string // empty: embedded
	PGPort                int    // embedded Postgres port; 0 picks one and keeps it
	Stream                string
	StreamReplicas        int
	AdminEmail            string
	AdminPassword         string
	KeyPrefix             string
	JWTSecret             string
	SessionTTL            time.Duration
	Currency              money.Currency
	Demo                  bool
	LogLevel              string
	LogFormat             string
	BcryptCost            int
	MaxKeysPerAccount     int
	DefaultRateLimit      int // requests per minute per key
	AllowQueryKey         bool
	TrustedProxies        []netip.Prefix
	// Call timeouts and hold lifetimes per generation type.
	Timeouts map[pricing.Type]time.Duration
	HoldTTLs map[pricing.Type]time.Duration
	// SweepInterval is how often open tasks are checked.
	SweepInterval time.Duration
	// Generation providers: each is enabled by its credential.
	FalKey, FalQueueURL           string
	FalWebhooks                   bool
	OpenAIKey, OpenAIBaseURL      string
	ReplicateToken, ReplicateBase string
	CopyOutputs                   bool
	BreakerThreshold              int
	BreakerCooldown               time.Duration
	CallbackAllowPrivate          bool
	CallbackBaseDelay             time.Duration
	WebhookKey                    string
	// Live streams: each subscriber's queue (deliveries), messages kept
	// for resuming, and how long one write to a client may take.
	StreamBuffer       int
	StreamReplay       int
	StreamWriteTimeout time.Duration
	// Stripe: enabled when both secrets are set.
	StripeSecretKey     string
	StripeWebhookSecret string
	StripeAPIURL        string
	StripeSuccessURL    string
	StripeCancelURL     string
	// Self-serve signup.
	OpenSignup     bool
	SignupsPerHour int
	// Durable makes the embedded Postgres fsync (off only in tests).
	Durable bool
	// Role is what this instance runs (see Roles); never empty after
	// FromEnv.
	Role Roles
	// ReadyMaxLag is how far behind the stream (in time) a projection may
	// be before /readyz fails.
	ReadyMaxLag time.Duration

	// wrapStore, when set, stands between the command side and the event
	// stream. Tests only: it loses appends' answers on demand, which no
	// real outage does on cue.
	wrapStore func(eventstore.Store) eventstore.Store
}

func (c Config) stripeEnabled() bool { return c.StripeSecretKey != "" && c.StripeWebhookSecret != "" }

// zeroDecimal are the currencies Stripe counts in whole units, not cents;
// ledgerd's amounts always have two decimals, so it does not take them.
var zeroDecimal = map[string]bool{"BIF": true, "CLP": true, "DJF": true, "GNF": true, "JPY": true, "KMF": true,
	"KRW": true, "MGA": true, "PYG": true, "RWF": true, "UGX": true, "VND": true, "VUV": true, "XAF": true,
	"XOF": true, "XPF": true}

func (c Config) timing() tasks.Timing {
	return tasks.Timing{Timeout: c.Timeouts, HoldTTL: c.HoldTTLs}
}

// FromEnv reads the configuration; getenv is os.Getenv outside tests.
func FromEnv(getenv func(string) string) (Config, error) {
	get := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	c := Config{
		HTTPAddr:      get("LEDGER_HTTP_ADDR", "127.0.0.1:8080"),
		PublicURL:     get("LEDGER_PUBLIC_URL", ""),
		DataDir:       get("LEDGER_DATA_DIR", "./.data"),
		NATSURL:       get("NATS_URL", ""),
		NATSAddr:      get("LEDGER_NATS_ADDR", "127.0.0.1:4222"),
		DatabaseURL:   get("DATABASE_URL", ""),
		Stream:        get("LEDGER_STREAM", "LEDGER"),
		AdminEmail:    get("LEDGER_ADMIN_EMAIL", ""),
		AdminPassword: getenv("LEDGER_ADMIN_PASSWORD"),
		KeyPrefix:     get("LEDGER_KEY_PREFIX", "nx_live_"),
		JWTSecret:     getenv("LEDGER_JWT_SECRET"),
		LogLevel:      get("LEDGER_LOG_LEVEL", "info"),
		LogFormat:     get("LEDGER_LOG_FORMAT", "text"),
		Durable:       true,
	}
	var err error
	if c.Role, err = ParseRoles(get("LEDGER_ROLE", "all")); err != nil {
		return c, fmt.Errorf("LEDGER_ROLE: %w", err)
	}
	if c.ReadyMaxLag, err = durationVar(get("LEDGER_READY_MAX_LAG", "30s"), "LEDGER_READY_MAX_LAG"); err != nil {
		return c, err
	}
	if c.StreamReplicas, err = intVar(get("LEDGER_STREAM_REPLICAS", "1"), "LEDGER_STREAM_REPLICAS", 1, 5); err != nil {
		return c, err
	}
	if c.PGPort, err = intVar(get("LEDGER_PG_PORT", "0"), "LEDGER_PG_PORT", 0, 65535); err != nil {
		return c, err
	}
	if c.BcryptCost, err = intVar(get("LEDGER_BCRYPT_COST", "10"), "LEDGER_BCRYPT_COST", 4, 31); err != nil {
		return c, err
	}
	if c.MaxKeysPerAccount, err = intVar(get("LEDGER_MAX_KEYS_PER_ACCOUNT", "5"), "LEDGER_MAX_KEYS_PER_ACCOUNT", 1, 1000); err != nil {
		return c, err
	}
	if c.DefaultRateLimit, err = intVar(get("LEDGER_DEFAULT_RATE_LIMIT", "600"), "LEDGER_DEFAULT_RATE_LIMIT", 1, 1_000_000); err != nil {
		return c, err
	}
	if c.AllowQueryKey, err = boolVar(get("LEDGER_ALLOW_QUERY_KEY", "false"), "LEDGER_ALLOW_QUERY_KEY"); err != nil {
		return c, err
	}
	for _, p := range strings.Split(get("LEDGER_TRUSTED_PROXIES", ""), ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return c, fmt.Errorf("LEDGER_TRUSTED_PROXIES: %q is not a CIDR or address", p)
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, prefix)
	}
	c.Timeouts, c.HoldTTLs = map[pricing.Type]time.Duration{}, map[pricing.Type]time.Duration{}
	for _, t := range []struct {
		typ           pricing.Type
		timeout, hold string
	}{{pricing.TypeImage, "60s", "5m"}, {pricing.TypeVideo, "5m", "20m"}, {pricing.TypeDirector, "5m", "20m"}} {
		name := strings.ToUpper(string(t.typ))
		if c.Timeouts[t.typ], err = durationVar(get("LEDGER_TIMEOUT_"+name, t.timeout), "LEDGER_TIMEOUT_"+name); err != nil {
			return c, err
		}
		if c.HoldTTLs[t.typ], err = durationVar(get("LEDGER_HOLD_TTL_"+name, t.hold), "LEDGER_HOLD_TTL_"+name); err != nil {
			return c, err
		}
	}
	if c.SweepInterval, err = durationVar(get("LEDGER_SWEEP_INTERVAL", "1s"), "LEDGER_SWEEP_INTERVAL"); err != nil {
		return c, err
	}
	if c.BreakerThreshold, err = intVar(get("LEDGER_BREAKER_THRESHOLD", "5"), "LEDGER_BREAKER_THRESHOLD", 0, 1000); err != nil {
		return c, err
	}
	if c.BreakerCooldown, err = durationVar(get("LEDGER_BREAKER_COOLDOWN", "30s"), "LEDGER_BREAKER_COOLDOWN"); err != nil {
		return c, err
	}
	if c.CallbackAllowPrivate, err = boolVar(get("LEDGER_CALLBACK_ALLOW_PRIVATE", "false"), "LEDGER_CALLBACK_ALLOW_PRIVATE"); err != nil {
		return c, err
	}
	if c.CallbackBaseDelay, err = durationVar(get("LEDGER_CALLBACK_BASE_DELAY", "10s"), "LEDGER_CALLBACK_BASE_DELAY"); err != nil {
		return c, err
	}
	c.WebhookKey = getenv("LEDGER_WEBHOOK_KEY")
	if c.StreamBuffer, err = intVar(get("LEDGER_STREAM_BUFFER", "64"), "LEDGER_STREAM_BUFFER", 1, 100_000); err != nil {
		return c, err
	}
	if c.StreamReplay, err = intVar(get("LEDGER_STREAM_REPLAY", "10000"), "LEDGER_STREAM_REPLAY", 1, 10_000_000); err != nil {
		return c, err
	}
	if c.StreamWriteTimeout, err = durationVar(get("LEDGER_STREAM_WRITE_TIMEOUT", "10s"), "LEDGER_STREAM_WRITE_TIMEOUT"); err != nil {
		return c, err
	}
	if c.HTTPReadHeaderTimeout, err = durationVar(get("LEDGER_HTTP_READ_HEADER_TIMEOUT", "10s"), "LEDGER_HTTP_READ_HEADER_TIMEOUT"); err != nil {
		return c, err
	}
	if c.HTTPReadTimeout, err = durationVar(get("LEDGER_HTTP_READ_TIMEOUT", "30s"), "LEDGER_HTTP_READ_TIMEOUT"); err != nil {
		return c, err
	}
	if c.HTTPIdleTimeout, err = durationVar(get("LEDGER_HTTP_IDLE_TIMEOUT", "2m"), "LEDGER_HTTP_IDLE_TIMEOUT"); err != nil {
		return c, err
	}
	c.FalKey, c.FalQueueURL = getenv("FAL_KEY"), get("LEDGER_FAL_QUEUE_URL", "https://queue.fal.run")
	c.OpenAIKey, c.OpenAIBaseURL = getenv("OPENAI_API_KEY"), get("LEDGER_OPENAI_BASE_URL", "https://api.openai.com/v1")
	c.ReplicateToken, c.ReplicateBase = getenv("REPLICATE_API_TOKEN"), get("LEDGER_REPLICATE_BASE_URL", "https://api.replicate.com/v1")
	if c.FalWebhooks, err = boolVar(get("LEDGER_FAL_WEBHOOKS", "false"), "LEDGER_FAL_WEBHOOKS"); err != nil {
		return c, err
	}
	if c.CopyOutputs, err = boolVar(get("LEDGER_COPY_OUTPUTS", "false"), "LEDGER_COPY_OUTPUTS"); err != nil {
		return c, err
	}
	c.StripeSecretKey, c.StripeWebhookSecret = strings.TrimSpace(getenv("STRIPE_SECRET_KEY")), strings.TrimSpace(getenv("STRIPE_WEBHOOK_SECRET"))
	c.StripeAPIURL = get("LEDGER_STRIPE_API_URL", "")
	c.StripeSuccessURL, c.StripeCancelURL = get("LEDGER_STRIPE_SUCCESS_URL", ""), get("LEDGER_STRIPE_CANCEL_URL", "")
	if (c.StripeSecretKey == "") != (c.StripeWebhookSecret == "") {
		return c, fmt.Errorf("set both STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET, or neither")
	}
	for name, u := range map[string]string{"LEDGER_STRIPE_API_URL": c.StripeAPIURL, "LEDGER_STRIPE_SUCCESS_URL": c.StripeSuccessURL,
		"LEDGER_STRIPE_CANCEL_URL": c.StripeCancelURL} {
		if u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return c, fmt.Errorf("%s %q: want an http(s) URL", name, u)
		}
	}
	if c.OpenSignup, err = boolVar(get("LEDGER_OPEN_SIGNUP", "false"), "LEDGER_OPEN_SIGNUP"); err != nil {
		return c, err
	}
	if c.SignupsPerHour, err = intVar(get("LEDGER_SIGNUP_RATE", "10"), "LEDGER_SIGNUP_RATE", 1, 1_000_000); err != nil {
		return c, err
	}
	if c.SessionTTL, err = time.ParseDuration(get("LEDGER_SESSION_TTL", "15m")); err != nil || c.SessionTTL <= 0 {
		return c, fmt.Errorf("LEDGER_SESSION_TTL: want a positive duration such as 15m")
	}
	if c.Currency, err = money.ParseCurrency(get("LEDGER_CURRENCY", "USD")); err != nil {
		return c, fmt.Errorf("LEDGER_CURRENCY: %w", err)
	}
	if c.stripeEnabled() && zeroDecimal[string(c.Currency)] {
		return c, fmt.Errorf("LEDGER_CURRENCY %s: Stripe counts it in whole units; ledgerd takes Stripe payments only in currencies with cents", c.Currency)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return c, fmt.Errorf("LEDGER_HTTP_ADDR %q: %w", c.HTTPAddr, err)
	}
	if (c.AdminEmail == "") != (c.AdminPassword == "") {
		return c, fmt.Errorf("set both LEDGER_ADMIN_EMAIL and LEDGER_ADMIN_PASSWORD, or neither")
	}
	// The demo customer is for a developer's machine: on by default only
	// when everything is embedded.
	embedded := c.NATSURL == "" && c.DatabaseURL == ""
	switch v := strings.ToLower(get("LEDGER_DEMO", "")); v {
	case "":
		c.Demo = embedded
	case "true", "1", "yes":
		c.Demo = true
	case "false", "0", "no":
		c.Demo = false
	default:
		return c, fmt.Errorf("LEDGER_DEMO %q: want true or false", v)
	}
	if c.DataDir, err = filepath.Abs(c.DataDir); err != nil {
		return c, err
	}
	return c, nil
}

// EnvFromOS is FromEnv(os.Getenv).
func EnvFromOS() (Config, error) { return FromEnv(os.Getenv) }

func durationVar(s, name string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q: want a positive duration such as 90s", name, s)
	}
	return d, nil
}

func boolVar(s, name string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, fmt.Errorf("%s %q: want true or false", name, s)
}

func intVar(s, name string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q: want a whole number from %d to %d", name, s, lo, hi)
	}
	return n, nil
}
