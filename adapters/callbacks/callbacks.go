// Package callbacks delivers task outcomes to callers' callback_url:
// signed, retried with backoff, every attempt recorded as an event.
package callbacks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
)

// Due is a callback to deliver.
type Due struct {
	TaskID    string // the task, or for an account event (Event set) the event's id
	AccountID string
	URL       string
	Attempts  int    // made so far
	Body      []byte // the task as GET /api/v1/tasks/{id} renders it
	// Event, if set, makes this an account event such as
	// wallet.low_balance rather than a task's callback.
	Event string
}

// Dispatcher delivers due callbacks.
type Dispatcher struct {
	Due    func(ctx context.Context, now time.Time, limit int) ([]Due, error)
	Record func(ctx context.Context, accountID string, c account.CallbackAttempted) error
	Secret func(accountID string) string
	Log    *slog.Logger
	// AllowPrivate permits callbacks to loopback and private addresses
	// (tests, single-host setups); off, such deliveries fail.
	AllowPrivate bool
	MaxAttempts  int           // default 8
	BaseDelay    time.Duration // first retry after this, doubling; default 10s
	Interval     time.Duration // how often to look for due callbacks; default 500ms
	Now          func() time.Time

	client   *http.Client
	mu       sync.Mutex
	attempts map[string]time.Time // task/attempt made here, awaiting the read model
}

// Sign returns the X-Ledger-Signature value for body at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

func (d *Dispatcher) init() {
	if d.MaxAttempts == 0 {
		d.MaxAttempts = 8
	}
	if d.BaseDelay == 0 {
		d.BaseDelay = 10 * time.Second
	}
	if d.Interval == 0 {
		d.Interval = 500 * time.Millisecond
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: d.guard}
	d.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 4,
			ResponseHeaderTimeout: 10 * time.Second},
		// A redirect could lead anywhere; a callback goes where it was told.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	d.attempts = map[string]time.Time{}
}

// errPrivate: the callback resolves to an address ledgerd will not call.
var errPrivate = errors.New("callback address is loopback, private or link-local")

// guard refuses connections to internal addresses (checked on the resolved
// address, so DNS cannot smuggle one in).
func (d *Dispatcher) guard(_, address string, _ syscall.RawConn) error {
	if d.AllowPrivate {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() {
		return errPrivate
	}
	return nil
}

// Run delivers until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	d.init()
	for {
		if err := d.tick(ctx); err != nil && ctx.Err() == nil {
			d.Log.Warn("callbacks", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.Interval):
		}
	}
}

func (d *Dispatcher) tick(ctx context.Context) error {
	due, err := d.Due(ctx, d.Now(), 100)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, c := range due {
		key := fmt.Sprintf("%s/%d", c.TaskID, c.Attempts+1)
		d.mu.Lock()
		_, seen := d.attempts[key]
		if !seen {
			d.attempts[key] = d.Now()
		}
		for k, at := range d.attempts {
			if d.Now().Sub(at) > 10*time.Minute {
				delete(d.attempts, k)
			}
		}
		d.mu.Unlock()
		if seen {
			continue // made here already; the read model has not caught up
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			d.deliver(ctx, c)
		}()
	}
	wg.Wait()
	return nil
}

// Deliver makes one attempt and records it.
func (d *Dispatcher) deliver(ctx context.Context, c Due) {
	attempt := c.Attempts + 1
	rec := account.CallbackAttempted{TaskID: c.TaskID, Attempt: attempt}
	status, err := d.post(ctx, c, attempt)
	rec.Status = status
	switch {
	case err == nil && status >= 200 && status < 300:
		rec.Delivered = true
	case err != nil:
		rec.Error = err.Error()
	default:
		rec.Error = "HTTP " + strconv.Itoa(status)
	}
	if !rec.Delivered && attempt < d.MaxAttempts {
		next := d.Now().Add(min(d.BaseDelay<<(attempt-1), time.Hour))
		rec.NextAttemptAt = &next
	}
	if err := d.Record(ctx, c.AccountID, rec); err != nil {
		d.Log.Warn("recording callback attempt", "task", c.TaskID, "attempt", attempt, "err", err)
		d.mu.Lock()
		delete(d.attempts, fmt.Sprintf("%s/%d", c.TaskID, attempt)) // try again
		d.mu.Unlock()
	}
}

func (d *Dispatcher) post(ctx context.Context, c Due, attempt int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(c.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ledgerd-callbacks/1")
	req.Header.Set("X-Ledger-Signature", Sign(d.Secret(c.AccountID), d.Now(), c.Body))
	if c.Event != "" {
		req.Header.Set("X-Ledger-Event", c.Event)
		req.Header.Set("X-Ledger-Delivery-Id", c.TaskID)
	} else {
		req.Header.Set("X-Ledger-Task-Id", c.TaskID)
	}
	req.Header.Set("X-Ledger-Delivery-Attempt", strconv.Itoa(attempt))
	res, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	return res.StatusCode, nil
}
