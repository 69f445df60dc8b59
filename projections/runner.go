// Package projections builds the read models in Postgres from the event
// stream. Each projection consumes the stream with its own durable
// JetStream consumer and applies commits in batches: one transaction per
// batch writes the rows and the projection's stream position together, and
// only then are the messages acknowledged. A redelivered message is at or
// below the stored position and is skipped, so every event is applied
// exactly once whatever crashes in between.
package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
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

	mu           sync.Mutex
	status       Status
	advanced     chan struct{} // closed and replaced whenever the position moves
	retry        chan struct{} // a staff request to retry after a poison event
	lastStoredAt time.Time     // stream time of the last applied message
	// A standby's view of the leader: what its consumer has pending, when the
	// leader's position last moved, and since when it has been behind.
	standbyPending uint64
	standbyMoved   time.Time
	standbySince   time.Time
	latencies      [4096]time.Duration
	nLatency       int
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
	return &Runner{
		cfg: cfg, proj: proj,
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
func (r *Runner) recordLatency(ds []delivered) {
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

// errPoison stops consumption until Retry.
var errPoison = errors.New("poison event")

// Run consumes until ctx ends. Failures to reach NATS or Postgres are
// retried with backoff; a poison event parks the projection until Retry.
func (r *Runner) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.consume(ctx)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errPoison):
			select {
			case <-ctx.Done():
			case <-r.retry:
				r.log.Info("retrying after poison event")
			}
			backoff = 100 * time.Millisecond
		default:
			r.setState("retrying", err, 0)
			r.log.Warn("projection interrupted; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}
	r.setState("stopped", nil, 0)
}

func (r *Runner) consumerName() string { return "proj_" + r.proj.Name() }

// lead blocks until this instance holds the projection's lock, tracking
// the leader's position meanwhile. A crashed leader's lock is freed with
// its Postgres session, so it is replaced within a poll interval.
func (r *Runner) lead(ctx context.Context) (Lease, error) {
	for {
		if !r.cfg.Follow {
			lease, ok, err := r.cfg.Lock(ctx, "projection:"+r.proj.Name())
			if err != nil {
				return nil, fmt.Errorf("projection lock: %w", err)
			}
			if ok {
				return lease, nil
			}
		}
		r.setState("standby", nil, 0)
		// Another instance applies; follow its position so reads here can
		// still wait for their own writes, and the stream's head so the
		// lag (and /readyz) tells when the leader stalls.
		r.followHead(ctx)
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if pos, events, err := r.loadPosition(ctx); err == nil {
				r.mu.Lock()
				moved := pos > r.status.Position
				r.status.Position, r.status.Events = max(pos, r.status.Position), events
				if moved {
					close(r.advanced)
					r.advanced = make(chan struct{})
					r.standbyMoved = time.Now()
				}
				r.updateStandbyLag()
				r.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(standbyPoll):
			}
		}
	}
}

// followHead reads how much the leader's durable consumer has yet to
// apply (pending plus delivered-unacked), for a standby's lag. The
// consumer filters the projection's subjects, so this counts only what the
// projection would apply. A failure leaves the last known figure: the
// event-store check on /readyz reports an unreachable stream.
func (r *Runner) followHead(ctx context.Context) {
	if r.cfg.JS == nil {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	cons, err := r.cfg.JS.Consumer(hctx, r.cfg.Stream, r.consumerName())
	if err != nil {
		return
	}
	info, err := cons.Info(hctx)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.standbyPending = info.NumPending + uint64(info.NumAckPending)
	r.updateStandbyLag()
	r.mu.Unlock()
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

// standbyPoll is how often a standby reads the leader's position.
const standbyPoll = 20 * time.Millisecond

// consume leads, then runs one consumer session from the stored position.
func (r *Runner) consume(ctx context.Context) error {
	lease, err := r.lead(ctx)
	if err != nil {
		return err
	}
	defer lease.Release()
	// Once the lock's session is gone another instance may lead: stop
	// (the conditional position update would make its batches or ours
	// change nothing, but both would read and decode everything).
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-lease.Lost():
			cancel(errLockLost)
		case <-ctx.Done():
		}
	}()
	err = r.session(ctx)
	if context.Cause(ctx) == errLockLost {
		return errLockLost
	}
	return err
}

// errLockLost: the session holding the projection's lock died.
var errLockLost = errors.New("lost the projection's lock")

// session consumes from the stored position while this instance leads.
func (r *Runner) session(ctx context.Context) error {
	pos, events, err := r.loadPosition(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if pos > r.status.Position || r.status.Position == 0 {
		r.status.Position, r.status.Events = pos, events
	}
	r.mu.Unlock()
	if _, ok := r.proj.(LiveProjection); ok && r.cfg.Live != nil {
		r.cfg.Live.Applied(Changes{Projection: r.proj.Name(), Position: pos})
	}
	cons, err := r.ensureConsumer(ctx, pos)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(2*r.cfg.MaxBatch, pullBytes))
	if err != nil {
		return fmt.Errorf("consuming: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	r.setState("running", nil, 0)

	var lastDelivery uint64
	for {
		batch, err := r.nextBatch(ctx, it)
		if err != nil {
			return err
		}
		// Deliveries are numbered by the consumer without gaps. A gap means
		// a pull response was lost (a NATS node died with it in flight):
		// applying past it would ack the lost commits too (the consumer acks
		// everything up to what is acknowledged) and the read model would
		// never see them. Apply what came before the gap and start a new
		// session from the stored position instead.
		cut := len(batch)
		for i, d := range batch {
			if d.delivery == 0 {
				continue
			}
			if lastDelivery != 0 && d.delivery != lastDelivery+1 {
				cut = i
				break
			}
			lastDelivery = d.delivery
		}
		if cut > 0 {
			if err := r.applyBatch(ctx, &pos, batch[:cut]); err != nil {
				return err
			}
		}
		if cut < len(batch) {
			return fmt.Errorf("%w: delivery %d after %d; reading again from position %d",
				errDeliveryGap, batch[cut].delivery, lastDelivery, pos)
		}
	}
}

// errDeliveryGap: the consumer skipped deliveries this session never saw.
var errDeliveryGap = errors.New("deliveries lost in transit")

type delivered struct {
	msg     jetstream.Msg
	commit  eventstore.Commit
	err     error // decoding failed: poison
	pending uint64
	skipped int // events in a commit not decoded (filtered out)
	// delivery is the consumer's delivery number (0: unknown).
	delivery uint64
}

// nextBatch blocks for one message, then takes whatever else arrives
// within the linger time, up to MaxBatch.
func (r *Runner) nextBatch(ctx context.Context, it jetstream.MessagesContext) ([]delivered, error) {
	first, err := it.Next()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("next message: %w", err)
	}
	d := r.decode(first)
	batch, events := []delivered{d}, d.events()
	window := time.Now().Add(r.cfg.BusyWindow)
	for len(batch) < r.cfg.MaxBatch && events < r.cfg.MaxEvents {
		// A quiet stream does not hold a lone commit back for company:
		// the batch ends after Linger without a message. A busy one
		// (busyBatch commits already in hand) fills the window: fewer,
		// larger transactions, the write cost that dominates under load,
		// at a lag bounded by the window.
		wait := r.cfg.Linger
		if len(batch) >= busyBatch {
			if wait = time.Until(window); wait < time.Millisecond {
				break
			}
		}
		m, err := it.Next(jetstream.NextMaxWait(wait))
		if err != nil {
			break // linger over (timeout) or iterator stopped; apply what we have
		}
		d := r.decode(m)
		batch, events = append(batch, d), events+d.events()
	}
	return batch, nil
}

// busyBatch is how many commits in hand make a batch collect for its
// whole BusyWindow.
const busyBatch = 16

// events is how many events the delivery carries, decoded or not.
func (d delivered) events() int { return len(d.commit.Events) + d.skipped }

func (r *Runner) decode(m jetstream.Msg) delivered {
	d := delivered{msg: m}
	md, err := m.Metadata()
	if err != nil {
		d.err = fmt.Errorf("message metadata: %w", err)
		return d
	}
	d.pending, d.delivery = md.NumPending, md.Sequence.Consumer
	if f, ok := r.proj.(Filter); ok {
		if types := m.Headers().Get(eventstore.HeaderEventTypes); types != "" && !wantsAny(f, types) {
			d.commit = eventstore.Commit{StreamSeq: md.Sequence.Stream, Stored: md.Timestamp}
			d.skipped = strings.Count(types, ",") + 1
			return d
		}
	}
	d.commit, d.err = eventstore.DecodeCommit(m.Data(), m.Headers(), md.Sequence.Stream, md.Timestamp, eventstore.Ref{})
	d.commit.StreamSeq = md.Sequence.Stream
	return d
}

// applyBatch applies the batch's new commits in one transaction, retrying
// transient failures; on a failure that is not transient it isolates the
// poison commit, applies everything before it, and parks.
func (r *Runner) applyBatch(ctx context.Context, pos *uint64, batch []delivered) error {
	r.applying.Lock()
	defer r.applying.Unlock()
	var fresh []delivered
	for _, d := range batch {
		if d.commit.StreamSeq > *pos {
			fresh = append(fresh, d)
		}
	}
	last := batch[len(batch)-1]
	if len(fresh) == 0 {
		// All redeliveries of what is already applied.
		return r.ack(last)
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
	r.setState("running", nil, 0)
	*pos = fresh[len(fresh)-1].commit.StreamSeq
	r.advance(*pos, countEvents(fresh), last.pending, fresh[len(fresh)-1].commit.Stored)
	r.recordLatency(fresh)
	return r.ack(last)
}

func (r *Runner) ack(last delivered) error {
	if r.cfg.beforeAck != nil {
		if err := r.cfg.beforeAck(); err != nil {
			return err
		}
	}
	if last.msg == nil {
		return nil // read by a shared reader: nothing to acknowledge
	}
	// AckAll policy: acking the last message acknowledges the batch.
	if err := last.msg.Ack(); err != nil {
		// Not fatal: the batch is committed; a redelivery is skipped.
		r.log.Debug("ack failed", "err", err)
	}
	return nil
}

// isolatePoison applies the commits one by one to find the first that
// fails, keeps everything before it, and parks the projection.
func (r *Runner) isolatePoison(ctx context.Context, pos *uint64, fresh []delivered, batchErr error) error {
	for i, d := range fresh {
		err := r.commitBatch(ctx, *pos, fresh[i:i+1])
		if err == nil {
			*pos = d.commit.StreamSeq
			r.advance(*pos, countEvents(fresh[i:i+1]), d.pending, d.commit.Stored)
			if ackErr := r.ack(d); ackErr != nil {
				return ackErr
			}
			continue
		}
		if r.cfg.IsTransient(err) {
			return err
		}
		r.setState("failed", err, d.commit.StreamSeq)
		if r.cfg.Poison != nil {
			r.cfg.Poison.Poisoned(ctx, r.proj.Name(), d.commit, err)
		}
		r.log.Error("poison event: projection stopped until retried", "stream_seq", d.commit.StreamSeq, "subject", d.msg.Subject(), "err", err)
		return errPoison
	}
	// Each alone succeeded: the failure depended on the batch, so retry.
	return fmt.Errorf("batch failed, its commits did not: %w", batchErr)
}

func wantsAny(f Filter, types string) bool {
	for t := range strings.SplitSeq(types, ",") {
		if f.Wants(t) {
			return true
		}
	}
	return false
}

func countEvents(ds []delivered) uint64 {
	var n uint64
	for _, d := range ds {
		n += uint64(len(d.commit.Events) + d.skipped)
	}
	return n
}

// commitBatch writes the commits and the new position in one transaction.
// The position update is conditional on the old position, so two runners
// of one projection (a misconfiguration) cannot both apply a batch.
func (r *Runner) commitBatch(ctx context.Context, from uint64, ds []delivered) error {
	commits := make([]eventstore.Commit, 0, len(ds))
	for _, d := range ds {
		if d.err != nil {
			return fmt.Errorf("stream seq %d: %w", d.commit.StreamSeq, d.err)
		}
		commits = append(commits, d.commit)
	}
	last := commits[len(commits)-1]
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
		if out != nil {
			return lp.ApplyLive(ctx, tx, commits, out)
		}
		return r.proj.Apply(ctx, tx, commits)
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

// ensureConsumer returns the projection's durable consumer positioned at
// the stored position. It is recreated when it is ahead (the database was
// restored or reset, which would otherwise skip events) or holds unacked
// deliveries of a previous session (which it would only redeliver after
// AckWait, stalling the read model for that long).
func (r *Runner) ensureConsumer(ctx context.Context, pos uint64) (jetstream.Consumer, error) {
	stream, err := r.cfg.JS.Stream(ctx, r.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	var filters []string
	for _, t := range r.proj.AggregateTypes() {
		filters = append(filters, r.cfg.SubjectPrefix+"."+t+".>")
	}
	name := r.consumerName()
	if c, err := stream.Consumer(ctx, name); err == nil {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("consumer info: %w", err)
		}
		if info.AckFloor.Stream <= pos && info.NumAckPending == 0 && equal(info.Config.FilterSubjects, filters) {
			return c, nil
		}
		r.log.Debug("recreating consumer", "ack_floor", info.AckFloor.Stream, "ack_pending", info.NumAckPending, "position", pos)
		if err := stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("deleting consumer: %w", err)
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "read model " + r.proj.Name(),
		AckPolicy:      jetstream.AckAllPolicy,
		AckWait:        time.Minute,
		MaxAckPending:  -1,
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if pos > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pos+1
	}
	c, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating consumer: %w", err)
	}
	return c, nil
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pullBytes bounds what a consumer asks for at once: commits carry up to
// hundreds of events, and an unbounded pull overruns the connection.
const pullBytes = 16 << 20
