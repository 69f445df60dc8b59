// Package idempotency makes POST requests that carry an Idempotency-Key
// header safe to retry: the first request with a key runs, later ones with
// the same key and the same request get its response replayed. Records live
// in a JetStream KV bucket, so the guarantee holds across restarts and
// across every ledgerd instance sharing the same JetStream.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrConflict: the key was already used for a different request.
	ErrConflict = errors.New("idempotency key already used for a different request")
	// ErrInProgress: the first request with this key is still running.
	ErrInProgress = errors.New("a request with this idempotency key is still in progress; retry later")
	// ErrInvalidKey: the header is empty, too long, repeated or not
	// printable ASCII.
	ErrInvalidKey = errors.New("invalid Idempotency-Key header: 1-255 printable ASCII characters required")
	// ErrUnavailable: the KV store could not be reached before running the
	// request, so nothing was executed.
	ErrUnavailable = errors.New("idempotency store unavailable")
)

// HeaderKey is the request header carrying the client's key; HeaderReplayed
// marks a response that was replayed rather than executed.
const (
	HeaderKey      = "Idempotency-Key"
	HeaderReplayed = "Idempotent-Replayed"
)

const (
	maxKeyLen = 255
	// maxBodyCopy bounds the memory and KV space a stored response takes.
	maxBodyCopy = 1 << 20
	// maxClaimAttempts bounds the create/read/take-over loop; running out
	// means others keep winning the key, i.e. it is in progress.
	maxClaimAttempts = 5
	// finishTimeout bounds recording the outcome, which runs after the
	// client may have gone away.
	finishTimeout = 10 * time.Second
)

// Config for a Store.
type Config struct {
	JS       jetstream.JetStream
	Bucket   string        // KV bucket name, default "ledger_idempotency"
	TTL      time.Duration // how long records live, default 48h (the contract promises >= 24h)
	Replicas int           // default 1
	// Lease is how long a pending record protects a running request; an
	// older one belongs to a crashed request and may be taken over.
	// Default 60s; it must exceed the longest request.
	Lease time.Duration
	// Redact, if set, is applied to a response body before it is stored
	// (e.g. to drop a one-time secret). The replayed body is the redacted one.
	Redact func(r *http.Request, body []byte) []byte
	// WriteError renders ErrConflict, ErrInProgress, ErrInvalidKey and
	// ErrUnavailable (wrapped) in the API's format. Default: plain text
	// with 409, 409, 400 and 503.
	WriteError func(w http.ResponseWriter, r *http.Request, err error)
	Now        func() time.Time
	Logger     *slog.Logger
}

// Store guards requests with idempotency records.
type Store struct {
	kv         jetstream.KeyValue
	lease      time.Duration
	redact     func(*http.Request, []byte) []byte
	writeError func(http.ResponseWriter, *http.Request, error)
	now        func() time.Time
	log        *slog.Logger
}

// New creates the KV bucket, or updates its settings if it exists.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.JS == nil {
		return nil, errors.New("idempotency: Config.JS is required")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = "ledger_idempotency"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 48 * time.Hour
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 60 * time.Second
	}
	if cfg.WriteError == nil {
		cfg.WriteError = defaultWriteError
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	kv, err := cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "ledgerd Idempotency-Key records",
		History:     1,
		TTL:         cfg.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency: creating KV bucket %q: %w", cfg.Bucket, err)
	}
	return &Store{
		kv:         kv,
		lease:      cfg.Lease,
		redact:     cfg.Redact,
		writeError: cfg.WriteError,
		now:        cfg.Now,
		log:        cfg.Logger,
	}, nil
}

// record is the stored state of one key.
type record struct {
	State       string    `json:"state"` // statePending or stateDone
	Fingerprint string    `json:"fingerprint"`
	StartedAt   time.Time `json:"started_at"`
	Status      int       `json:"status,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Location    string    `json:"location,omitempty"`
	Body        []byte    `json:"body,omitempty"`
	// BodyOmitted: the response was too large to keep. The key still
	// blocks re-execution, but the response cannot be replayed.
	BodyOmitted bool `json:"body_omitted,omitempty"`
}

const (
	statePending = "pending"
	stateDone    = "done"
)

// Wrap runs next under r's Idempotency-Key, scoped to the caller (the
// authenticated principal's id, so two callers may use the same key).
// Without the header it just calls next.
func (s *Store) Wrap(w http.ResponseWriter, r *http.Request, scope string, next http.Handler) {
	vals, ok := r.Header[HeaderKey]
	if !ok {
		next.ServeHTTP(w, r)
		return
	}
	if len(vals) != 1 || !validKey(vals[0]) {
		s.writeError(w, r, ErrInvalidKey)
		return
	}
	body, err := readBody(r)
	if err != nil {
		// A request that cannot be read cannot be fingerprinted; the handler
		// sees the same read error (e.g. its own 413) it would without us.
		next.ServeHTTP(w, r)
		return
	}
	fp := fingerprint(r, body)
	key := kvKey(scope, vals[0])

	rev, done, err := s.claim(r.Context(), key, fp)
	switch {
	case err != nil:
		s.writeError(w, r, err)
		return
	case done != nil:
		s.replay(w, r, done)
		return
	}

	rec := &recorder{w: w}
	finished := false
	defer func() {
		if !finished {
			// next panicked: that is a 500, so free the key for a real
			// retry, then let the panic go on to the recovery middleware.
			s.release(r, key, rev)
		}
	}()
	next.ServeHTTP(rec, r)
	finished = true
	s.finish(r, key, rev, fp, rec)
}

// claim creates the pending record for key, or reads the existing one and
// decides: replay it (done), refuse, or take over a stale pending record.
// It returns the pending record's revision when the caller should run.
func (s *Store) claim(ctx context.Context, key, fp string) (uint64, *record, error) {
	pending, err := json.Marshal(record{State: statePending, Fingerprint: fp, StartedAt: s.now()})
	if err != nil {
		return 0, nil, fmt.Errorf("idempotency: encoding record: %w", err)
	}
	for range maxClaimAttempts {
		rev, err := s.kv.Create(ctx, key, pending)
		if err == nil {
			return rev, nil, nil
		}
		if !isCASConflict(err) {
			return 0, nil, fmt.Errorf("%w: creating record: %w", ErrUnavailable, err)
		}
		entry, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released or expired since Create; try again
		}
		if err != nil {
			return 0, nil, fmt.Errorf("%w: reading record: %w", ErrUnavailable, err)
		}
		var cur record
		if err := json.Unmarshal(entry.Value(), &cur); err != nil {
			return 0, nil, fmt.Errorf("%w: decoding record %s: %w", ErrUnavailable, key, err)
		}
		switch {
		case cur.Fingerprint != fp:
			return 0, nil, ErrConflict
		case cur.State == stateDone:
			return 0, &cur, nil
		case s.now().Sub(cur.StartedAt) < s.lease:
			return 0, nil, ErrInProgress
		}
		// A pending record older than the lease belongs to a request that
		// died; the revision check makes sure only one retry inherits it.
		rev, err = s.kv.Update(ctx, key, pending, entry.Revision())
		if err == nil {
			s.log.Warn("idempotency: took over a stale pending request", "key", key, "started_at", cur.StartedAt)
			return rev, nil, nil
		}
		if !isCASConflict(err) {
			return 0, nil, fmt.Errorf("%w: taking over record: %w", ErrUnavailable, err)
		}
	}
	return 0, nil, ErrInProgress
}

// replay writes a stored response.
func (s *Store) replay(w http.ResponseWriter, r *http.Request, rec *record) {
	if rec.BodyOmitted {
		s.writeError(w, r, fmt.Errorf("%w: it already ran (status %d) and its response was too large to keep for replay", ErrConflict, rec.Status))
		return
	}
	h := w.Header()
	if rec.ContentType != "" {
		h.Set("Content-Type", rec.ContentType)
	}
	if rec.Location != "" {
		h.Set("Location", rec.Location)
	}
	h.Set(HeaderReplayed, "true")
	w.WriteHeader(rec.Status)
	_, _ = w.Write(rec.Body)
}

// finish records next's response, or releases the key if the response
// invites a retry. The response has already gone out, so failures are
// only logged.
func (s *Store) finish(r *http.Request, key string, rev uint64, fp string, rec *recorder) {
	status := rec.statusOrOK()
	if status >= 500 || status == http.StatusTooManyRequests {
		s.release(r, key, rev)
		return
	}
	done := record{
		State:       stateDone,
		Fingerprint: fp,
		StartedAt:   s.now(),
		Status:      status,
		ContentType: rec.contentType,
		Location:    rec.location,
	}
	if rec.truncated {
		done.BodyOmitted = true
	} else {
		done.Body = rec.body.Bytes()
		if s.redact != nil {
			done.Body = s.redact(r, done.Body)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), finishTimeout)
	defer cancel()
	err := s.update(ctx, key, rev, done)
	if errors.Is(err, nats.ErrMaxPayload) {
		// The server's max_payload is below what we captured; keeping the
		// key without its body still prevents a second execution.
		done.Body, done.BodyOmitted = nil, true
		err = s.update(ctx, key, rev, done)
	}
	switch {
	case err == nil:
	case isCASConflict(err):
		s.log.Warn("idempotency: record was taken over before the request finished; its response is not stored",
			"key", key, "status", status, "err", err)
	default:
		s.log.Error("idempotency: storing response", "key", key, "status", status, "err", err)
	}
}

func (s *Store) update(ctx context.Context, key string, rev uint64, rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding record: %w", err)
	}
	_, err = s.kv.Update(ctx, key, b, rev)
	return err
}

// release deletes our pending record so the client can retry for real.
// The revision check leaves alone a record someone else has taken over.
func (s *Store) release(r *http.Request, key string, rev uint64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), finishTimeout)
	defer cancel()
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	switch {
	case err == nil:
	case isCASConflict(err):
		s.log.Warn("idempotency: record was taken over before the request failed", "key", key, "err", err)
	default:
		// The record stays pending; retries get ErrInProgress until the
		// lease runs out and one takes it over.
		s.log.Error("idempotency: releasing record", "key", key, "err", err)
	}
}

// isCASConflict reports whether a KV write lost a compare-and-set. Besides
// the two sentinels it matches code 10164 itself, because Create's
// recreate-after-delete path returns the raw API error, which on replicated
// (R>1) streams carries 10164 and so matches neither sentinel.
func isCASConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) ||
		errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.Is(err, &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant})
}

// validKey accepts 1-255 bytes of printable ASCII without spaces.
func validKey(k string) bool {
	if k == "" || len(k) > maxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// kvKey hashes the scope and the client's key: KV keys allow a restricted
// charset, and hashing keeps scopes from colliding.
func kvKey(scope, key string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

// fingerprint identifies the request. Fields are length-prefixed so no two
// different requests hash the same input.
func fingerprint(r *http.Request, body []byte) string {
	h := sha256.New()
	for _, f := range [][]byte{
		[]byte(r.Method), []byte(r.URL.Path), []byte(r.URL.RawQuery),
		[]byte(r.Header.Get("Content-Type")), body,
	} {
		_, _ = h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(f))))
		_, _ = h.Write(f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// readBody reads the whole body and puts it back for next. On a read error
// next gets what was read followed by the same error, so it fails exactly
// as it would have (e.g. a *http.MaxBytesError becomes its 413).
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	orig := r.Body
	b, err := io.ReadAll(orig)
	if err != nil {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(b), errReader{err}), orig}
		return nil, err
	}
	r.Body = readCloser{bytes.NewReader(b), orig}
	return b, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// recorder streams the response to the real writer and keeps what is
// needed to replay it.
type recorder struct {
	w           http.ResponseWriter
	status      int
	contentType string
	location    string
	body        bytes.Buffer
	truncated   bool
}

func (rw *recorder) Header() http.Header { return rw.w.Header() }

func (rw *recorder) WriteHeader(code int) {
	// 1xx responses are informational; the final status comes later.
	if rw.status == 0 && code >= 200 {
		rw.status = code
		// Headers changed after WriteHeader are not sent, so snapshot now.
		rw.contentType = rw.w.Header().Get("Content-Type")
		rw.location = rw.w.Header().Get("Location")
	}
	rw.w.WriteHeader(code)
}

func (rw *recorder) Write(p []byte) (int, error) {
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if !rw.truncated {
		if rw.body.Len()+len(p) > maxBodyCopy {
			rw.truncated = true
			rw.body = bytes.Buffer{}
		} else {
			rw.body.Write(p)
		}
	}
	return rw.w.Write(p)
}

// Flush keeps streaming handlers working through the recorder.
func (rw *recorder) Flush() {
	_ = http.NewResponseController(rw.w).Flush()
}

// Unwrap lets http.ResponseController reach the real writer.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.w }

// statusOrOK is the status sent: net/http sends 200 for a handler that
// writes nothing.
func (rw *recorder) statusOrOK() int {
	if rw.status == 0 {
		return http.StatusOK
	}
	return rw.status
}

func defaultWriteError(w http.ResponseWriter, _ *http.Request, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalidKey):
		status = http.StatusBadRequest
	case errors.Is(err, ErrConflict), errors.Is(err, ErrInProgress):
		status = http.StatusConflict
	case errors.Is(err, ErrUnavailable):
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, err.Error(), status)
}
