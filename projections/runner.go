// Package projections builds the read models in Postgres from the event
// stream. The projections of a Set read the stream together through one
// durable JetStream consumer; each applies commits in batches, one
// transaction per batch writing its rows and its stream position together,
// and a message is acknowledged only once every projection has applied
// it. A redelivered message is at or below the stored positions and is
// skipped, so every event is applied exactly once whatever crashes in
// between.
package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// Projection is one read model.
type Projection interface {
	Name() string
	// Subjects lists the aggregate types it reads ("account", "user").
	AggregateTypes() []string
	// Apply writes the effect of commits, in stream order, within tx.
	// An error that is not transient marks a poison event.
	Apply(ctx context.Context, tx bun.Tx, commits []eventstore.Commit) error
}

// RunnerConfig configures a runner.
type RunnerConfig struct {
	DB            *bun.DB
	JS            jetstream.JetStream
	Stream        string
	SubjectPrefix string
	Logger        *slog.Logger
	// IsTransient tells a database outage (retry the batch until it
	// passes) from a poison event (stop this projection and report it).
	IsTransient func(error) bool
	// MaxBatch bounds the commits per transaction, MaxEvents the events
	// (a commit may hold a hundred: one unbounded statement of a million
	// rows costs more to build and parse than ten of a hundred thousand);
	// Linger is how long a batch waits for more messages once it has one.
	MaxBatch  int
	MaxEvents int
	Linger    time.Duration
	// BusyWindow is how long, from its first message, a batch that
	// already holds busyBatch commits goes on collecting.
	BusyWindow time.Duration
	// Poison, if set, receives a commit that stops a projection, so it can
	// be inspected (and replayed) apart from the stream.
	Poison PoisonSink
	// Live, if set, hears what each batch of a LiveProjection changed,
	// after the batch commits (and where each such projection starts).
	Live Live
	// Lock takes the named lock if no other instance holds it (ok false
	// if one does); a projection applies only while it holds its lock.
	// Required unless Follow.
	Lock func(ctx context.Context, name string) (lease Lease, ok bool, err error)
	// Follow makes the runner never lead: it only follows the leader's
	// position (for reads that wait on their own writes, and for lag on
	// /readyz). Instances without the projector role use it.
	Follow bool
	// beforeAck runs after a batch is committed and before it is acked;
	// tests use it to die at the worst moment.
	beforeAck func() error
}

// Filter is implemented by projections that read only some event types:
// commits with none of them are not decoded (their position still
// advances).
type Filter interface {
	Wants(eventType string) bool
}

// PoisonSink receives poison commits.
type PoisonSink interface {
	Poisoned(ctx context.Context, projection string, c eventstore.Commit, cause error)
}

// Status is what a runner reports.
type Status struct {
	Name        string    `json:"name"`
	State       string    `json:"status"` // starting, running, standby, retrying, failed, stopped
	Position    uint64    `json:"position"`
	Events      uint64    `json:"events_applied"`
	LagEvents   uint64    `json:"lag_events"`
	LagMillis   int64     `json:"lag_ms"`
	LastEventAt time.Time `json:"last_event_at,omitzero"`
	Error       string    `json:"error,omitempty"`
	ErrorSeq    uint64    `json:"error_seq,omitempty"`
	// How long events waited between being stored and being applied,
	// over the last few thousand events.
	ApplyP50MS float64 `json:"apply_latency_p50_ms"`
	ApplyP99MS float64 `json:"apply_latency_p99_ms"`
}

// Runner drives one projection.
type Runner struct {
	cfg  RunnerConfig
	proj Projection
	log  *slog.Logger

	// applying is held while a batch is written; Pause takes it so the
	// read model stands still at a known position.
	applying sync.Mutex
	// commits is commitBatch's slice, kept between batches (under
	// applying): six projections each building one per batch was a
	// steady 1.5 % of the allocation of a charged call.
	commits []eventstore.Commit

	mu           sync.Mutex
	status       Status
	advanced     chan struct{} // closed and replaced whenever the position moves
	retry        chan struct{} // a staff request to retry after a poison event
	lastStoredAt time.Time     // stream time of the last applied message
	// startedBehind: when a leading session that had never applied
	// anything here found a backlog; lag in time counts from then.
	startedBehind time.Time
	// A standby's view of the leader: what its consumer has pending, when the
	// leader's position last moved, and since when it has been behind.
	standbyPending uint64
	standbyMoved   time.Time
	standbySince   time.Time
	latencies      [4096]time.Duration
	nLatency       int
	// parked: a poison event stopped the projection until Retry.
	parked atomic.Bool
	// What the projection reads, asked once: each delivery asks again.
	aggTypes []string
	filter   Filter
}

// Lease is a held lock that says when it may be held elsewhere.
type Lease interface {
	Lost() <-chan struct{}
	Release()
}

// NewRunner returns a runner for proj.
func NewRunner(cfg RunnerConfig, proj Projection) *Runner {
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = 10_000
	}
	if cfg.Linger == 0 {
		cfg.Linger = 2 * time.Millisecond
	}
	if cfg.BusyWindow == 0 {
		cfg.BusyWindow = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IsTransient == nil {
		cfg.IsTransient = func(error) bool { return false }
	}
	filter, _ := proj.(Filter)
	return &Runner{
		cfg: cfg, proj: proj, aggTypes: proj.AggregateTypes(), filter: filter,
		log:      cfg.Logger.With("projection", proj.Name()),
		status:   Status{Name: proj.Name(), State: "starting"},
		advanced: make(chan struct{}),
		retry:    make(chan struct{}, 1),
	}
}

// Name of the projection.
func (r *Runner) Name() string { return r.proj.Name() }

// Status reports position, lag and state.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	switch {
	case s.State == "standby" && s.LagEvents > 0 && !r.standbySince.IsZero():
		// Behind since the later of: when the lag was first seen, when
		// the leader last moved.
		since := r.standbySince
		if r.standbyMoved.After(since) {
			since = r.standbyMoved
		}
		s.LagMillis = time.Since(since).Milliseconds()
	case s.LagEvents > 0 && !r.lastStoredAt.IsZero():
		s.LagMillis = time.Since(r.lastStoredAt).Milliseconds()
	case s.LagEvents > 0 && !r.startedBehind.IsZero():
		s.LagMillis = time.Since(r.startedBehind).Milliseconds()
	}
	if n := min(r.nLatency, len(r.latencies)); n > 0 {
		sorted := make([]time.Duration, n)
		copy(sorted, r.latencies[:n])
		slices.Sort(sorted)
		s.ApplyP50MS = float64(sorted[n/2].Microseconds()) / 1000
		s.ApplyP99MS = float64(sorted[n*99/100].Microseconds()) / 1000
	}
	return s
}

// Position is the stream sequence of the last applied commit.
func (r *Runner) Position() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status.Position
}

// WaitFor blocks until the projection has applied stream sequence seq, or
// ctx ends. It is how a read shows the caller's own preceding write.
func (r *Runner) WaitFor(ctx context.Context, seq uint64) error {
	for {
		r.mu.Lock()
		pos, ch := r.status.Position, r.advanced
		r.mu.Unlock()
		if pos >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Pause stops the runner between batches and returns the position it
// stands at; Resume lets it go on. Messages that arrive meanwhile wait.
func (r *Runner) Pause() uint64 {
	r.applying.Lock()
	return r.Position()
}

// Resume ends a Pause.
func (r *Runner) Resume() { r.applying.Unlock() }

// Retry asks a runner stopped by a poison event to try again (after the
// fix is deployed, or the data corrected).
func (r *Runner) Retry() {
	select {
	case r.retry <- struct{}{}:
	default:
	}
}

func (r *Runner) setState(state string, err error, seq uint64) {
	r.mu.Lock()
	r.status.State = state
	r.status.Error, r.status.ErrorSeq = "", 0
	if err != nil {
		r.status.Error, r.status.ErrorSeq = err.Error(), seq
	}
	r.mu.Unlock()
}

// behind records the backlog a leading session starts with, before it
// has applied anything. Lag in time then counts from now if nothing was
// ever applied here.
func (r *Runner) behind(pending uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.LagEvents = pending
	if pending > 0 && r.startedBehind.IsZero() {
		r.startedBehind = time.Now()
	}
}

func (r *Runner) advance(pos, events uint64, pending uint64, storedAt time.Time) {
	r.mu.Lock()
	r.status.Position = pos
	r.status.Events += events
	r.status.LagEvents = pending
	r.status.LastEventAt = storedAt
	r.lastStoredAt = storedAt
	close(r.advanced)
	r.advanced = make(chan struct{})
	r.mu.Unlock()
}

// recordLatency notes how long each commit of a batch waited to be
// applied.
func (r *Runner) recordLatency(ds []*delivered) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range ds {
		if d.commit.Stored.IsZero() {
			continue
		}
		r.latencies[r.nLatency%len(r.latencies)] = now.Sub(d.commit.Stored)
		r.nLatency++
	}
}

// errPoison: a poison event parked the projection until Retry.
var errPoison = errors.New("poison event")

// Run consumes until ctx ends, as a group of one (a Set reads for all its
// projections at once).
func (r *Runner) Run(ctx context.Context) { newGroup(r.cfg, []*Runner{r}).run(ctx) }

// loaded takes the position a session starts from. Waiters are woken: the
// position may have moved on in Postgres since this runner last applied
// (another leader, or its own batch committed before a crash).
func (r *Runner) loaded(pos, events uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if pos > r.status.Position || r.status.Position == 0 {
		r.status.Position, r.status.Events = pos, events
		close(r.advanced)
		r.advanced = make(chan struct{})
	}
}

// followed records where the leading instance has brought the
// projection (read by group.followPositions).
func (r *Runner) followed(pos, events uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	moved := pos > r.status.Position
	r.status.Position, r.status.Events = max(pos, r.status.Position), events
	if moved {
		close(r.advanced)
		r.advanced = make(chan struct{})
		r.standbyMoved = time.Now()
	}
	r.updateStandbyLag()
}

// updateStandbyLag sets a standby's lag: in events, what the leader's
// consumer has pending, and in time, since the leader's position last
// moved while it was behind. Called with mu held.
func (r *Runner) updateStandbyLag() {
	if r.standbyPending == 0 {
		r.status.LagEvents = 0
		r.standbySince = time.Time{}
		return
	}
	r.status.LagEvents = r.standbyPending
	if r.standbySince.IsZero() {
		r.standbySince = time.Now()
	}
}

type delivered struct {
	msg     jetstream.Msg
	commit  eventstore.Commit
	err     error // decoding failed: poison
	pending uint64
	skipped int // events in a commit not decoded (filtered out)
	// delivery is the consumer's delivery number (0: unknown).
	delivery uint64
	// subject, aggregate type and event types, from the message.
	subject, aggType string
	types            []string
	// What projections that read none of the commit get instead (see
	// Runner.share), made once per delivery.
	passedOver, otherType *delivered
}

// events is how many events the delivery carries, decoded or not.
func (d *delivered) events() int { return len(d.commit.Events) + d.skipped }

// applyBatch applies the batch's new commits in one transaction, retrying
// transient failures; on a failure that is not transient it isolates the
// poison commit, applies everything before it, and parks (errPoison).
func (r *Runner) applyBatch(ctx context.Context, pos *uint64, batch []*delivered) error {
	r.applying.Lock()
	defer r.applying.Unlock()
	return r.applyLocked(ctx, pos, batch)
}

// applyLocked is applyBatch with the applying lock held.
func (r *Runner) applyLocked(ctx context.Context, pos *uint64, batch []*delivered) error {
	// A batch is in stream order: what is new is its tail (taken as a
	// subslice: batches are large and this runs per projection).
	first := 0
	for first < len(batch) && batch[first].commit.StreamSeq <= *pos {
		first++
	}
	fresh := batch[first:]
	if len(fresh) == 0 {
		return nil // all redeliveries of what is already applied
	}
	err := r.commitBatch(ctx, *pos, fresh)
	backoff := 50 * time.Millisecond
	for err != nil && r.cfg.IsTransient(err) && ctx.Err() == nil {
		r.setState("retrying", err, 0)
		r.log.Warn("read model write failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
		err = r.commitBatch(ctx, *pos, fresh)
	}
	if err != nil && !r.cfg.IsTransient(err) && ctx.Err() == nil {
		return r.isolatePoison(ctx, pos, fresh, err)
	}
	if err != nil {
		return err
	}
	*pos = fresh[len(fresh)-1].commit.StreamSeq
	r.applied(fresh, batch[len(batch)-1].pending)
	return nil
}

// applied records a committed batch: position, counts, lag and latency.
func (r *Runner) applied(fresh []*delivered, pending uint64) {
	last := fresh[len(fresh)-1].commit
	r.setState("running", nil, 0)
	r.advance(last.StreamSeq, countEvents(fresh), pending, last.Stored)
	r.recordLatency(fresh)
}

// isolatePoison applies the commits one by one to find the first that
// fails, keeps everything before it, and parks the projection.
func (r *Runner) isolatePoison(ctx context.Context, pos *uint64, fresh []*delivered, batchErr error) error {
	for i, d := range fresh {
		err := r.commitBatch(ctx, *pos, fresh[i:i+1])
		if err == nil {
			*pos = d.commit.StreamSeq
			r.advance(*pos, countEvents(fresh[i:i+1]), d.pending, d.commit.Stored)
			continue
		}
		if r.cfg.IsTransient(err) {
			return err
		}
		r.setState("failed", err, d.commit.StreamSeq)
		if r.cfg.Poison != nil {
			r.cfg.Poison.Poisoned(ctx, r.proj.Name(), d.commit, err)
		}
		r.log.Error("poison event: projection stopped until retried", "stream_seq", d.commit.StreamSeq, "subject", d.subject, "err", err)
		return errPoison
	}
	// Each alone succeeded: the failure depended on the batch, so retry.
	return fmt.Errorf("batch failed, its commits did not: %w", batchErr)
}

func countEvents(ds []*delivered) uint64 {
	var n uint64
	for _, d := range ds {
		n += uint64(len(d.commit.Events) + d.skipped)
	}
	return n
}

// commitBatch writes the commits and the new position in one transaction.
// The position update is conditional on the old position, so two runners
// of one projection (a misconfiguration) cannot both apply a batch.
func (r *Runner) commitBatch(ctx context.Context, from uint64, ds []*delivered) error {
	commits := r.commits[:0]
	defer func() {
		clear(commits) // kept for reuse, not holding this batch's commits
		r.commits = commits[:0]
	}()
	for _, d := range ds {
		if d.err != nil {
			return fmt.Errorf("stream seq %d: %w", d.commit.StreamSeq, d.err)
		}
		// What the projection does not read only moves its position.
		if len(d.commit.Events) > 0 {
			commits = append(commits, d.commit)
		}
	}
	last := ds[len(ds)-1].commit
	var out *Changes
	lp, live := r.proj.(LiveProjection)
	if live && r.cfg.Live != nil {
		out = &Changes{Projection: r.proj.Name(), Position: last.StreamSeq}
	}
	err := r.cfg.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Table("projection_positions").
			Set("position = ?", last.StreamSeq).
			Set("events = events + ?", countEvents(ds)).
			Set("last_event_at = ?", last.Stored).
			Set("updated_at = now()").
			Where("name = ? AND position = ?", r.proj.Name(), from).
			Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: position of %s moved past %d", errLostRace, r.proj.Name(), from)
		}
		switch {
		case len(commits) == 0:
			return nil
		case out != nil:
			return lp.ApplyLive(ctx, tx, commits, out)
		default:
			return r.proj.Apply(ctx, tx, commits)
		}
	})
	if err == nil && out != nil {
		// Only now is what it describes readable by everyone.
		r.cfg.Live.Applied(*out)
	}
	return err
}

var errLostRace = errors.New("another runner advanced this projection")

func (r *Runner) loadPosition(ctx context.Context) (pos, events uint64, err error) {
	_, err = r.cfg.DB.NewRaw("INSERT INTO projection_positions (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
		r.proj.Name()).Exec(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("position: %w", err)
	}
	err = r.cfg.DB.NewSelect().Table("projection_positions").Column("position", "events").
		Where("name = ?", r.proj.Name()).Scan(ctx, &pos, &events)
	if err != nil {
		return 0, 0, fmt.Errorf("position: %w", err)
	}
	return pos, events, nil
}
