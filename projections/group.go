package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// group applies several projections from one reading of the stream: one
// consumer, each commit delivered and decoded once, then handed to a feed
// per projection (see session). Read separately, every projection paid for
// its own delivery from the NATS server, its own decode and its own filter
// pass, for every commit.
//
// The group leads as one (one lock, one durable consumer). Each
// projection keeps its own position: after a batch it stands at the
// batch's last commit, whatever it read of it. A projection that meets a
// poison event is parked and the others go on; a retry brings it back, and
// the group reads again from the lowest position (what the others already
// applied is skipped).
type group struct {
	cfg     RunnerConfig
	runners []*Runner
	name    string
	// types are the aggregate types any projection reads.
	types []string
	codec *codec.Codec[account.Event]
	// headUnread: a standby could not read the consumer last time (the
	// lead loop's alone).
	headUnread bool
}

func newGroup(cfg RunnerConfig, runners []*Runner) *group {
	names := make([]string, len(runners))
	g := &group{cfg: cfg, runners: runners, codec: ledger.AccountCodec()}
	for i, r := range runners {
		names[i] = r.Name()
		for _, t := range r.proj.AggregateTypes() {
			if !slices.Contains(g.types, t) {
				g.types = append(g.types, t)
			}
		}
	}
	g.name = strings.Join(names, "-")
	return g
}

// reads tells whether a projection of the group reads the aggregate type.
func (g *group) reads(aggType string) bool { return slices.Contains(g.types, aggType) }

func (g *group) lockName() string     { return "projection:" + g.name }
func (g *group) consumerName() string { return "proj_" + g.name }

func (g *group) eachState(state string, err error) {
	for _, r := range g.runners {
		if !r.parked.Load() {
			r.setState(state, err, 0)
		}
	}
}

// run consumes until ctx ends. Failures to reach NATS or Postgres are
// retried with backoff.
func (g *group) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := g.consume(ctx)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errRetrying):
			g.cfg.Logger.Info("retrying after poison event", "projections", g.name)
			backoff = 100 * time.Millisecond
		default:
			g.eachState("retrying", err)
			g.cfg.Logger.Warn("projection interrupted; retrying", "projections", g.name, "err", err, "in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}
	for _, r := range g.runners {
		r.setState("stopped", nil, 0)
	}
}

// consume leads, then runs one consumer session from the stored positions.
func (g *group) consume(ctx context.Context) error {
	lease, err := g.lead(ctx)
	if err != nil {
		return err
	}
	defer lease.Release()
	// Once the lock's session is gone another instance may lead: stop
	// (the conditional position updates would make its batches or ours
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
	s := &session{g: g, cancel: cancel}
	err = s.run(ctx)
	if cause := context.Cause(ctx); cause == errLockLost || cause == errRetrying {
		return cause
	}
	return err
}

// errLockLost: the session holding the projections' lock died.
var errLockLost = errors.New("lost the projection's lock")

// errRetrying: a parked projection was asked to retry; read again from
// its position.
var errRetrying = errors.New("retrying a parked projection")

// lead blocks until this instance holds the group's lock, tracking the
// leader's positions meanwhile. A crashed leader's lock is freed with its
// Postgres session, so it is replaced within a poll interval.
func (g *group) lead(ctx context.Context) (Lease, error) {
	for {
		if !g.cfg.Follow {
			lease, ok, err := g.cfg.Lock(ctx, g.lockName())
			if err != nil {
				return nil, fmt.Errorf("projection lock: %w", err)
			}
			if ok {
				return lease, nil
			}
		}
		for _, r := range g.runners {
			r.setState("standby", nil, 0)
		}
		// Another instance applies; follow its positions so reads here can
		// still wait for their own writes, and the stream's head so the
		// lag (and /readyz) tells when the leader stalls.
		g.followHead(ctx)
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			g.followPositions(ctx)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(standbyPoll):
			}
		}
	}
}

// followPositions reads where the leading instance has brought each
// projection of the group: one query for all of them (a standby polls
// every standbyPoll; a query per projection, each with an insert, was
// some 600 statements a second per standby), bounded so that a read
// waiting on the pool cannot freeze the lag the standby reports.
func (g *group) followPositions(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	names := make([]string, len(g.runners))
	for i, r := range g.runners {
		names[i] = r.Name()
	}
	var rows []struct {
		Name     string `bun:"name"`
		Position uint64 `bun:"position"`
		Events   uint64 `bun:"events"`
	}
	if err := g.cfg.DB.NewSelect().Table("projection_positions").Column("name", "position", "events").
		Where("name IN (?)", bun.In(names)).Scan(pctx, &rows); err != nil {
		return
	}
	for _, row := range rows {
		for _, r := range g.runners {
			if r.Name() == row.Name {
				r.followed(row.Position, row.Events)
			}
		}
	}
}

// followHead reads how much the leader's durable consumer has yet to
// apply (pending plus delivered-unacknowledged), for a standby's lag. When
// the consumer cannot be read (not created yet, or its replicas still
// electing a leader after a restart) the lag is judged from the stream
// instead: how far its last message is past the lowest position. That
// counts commits of types the projections do not read too, but it never
// hides a leader that stopped: keeping the last figure did, when it was 0.
// A failure of both leaves the last figure: the event-store check on
// /readyz reports an unreachable stream.
func (g *group) followHead(ctx context.Context) {
	if g.cfg.JS == nil {
		return
	}
	// Each read has its own bound: one that timed out must not leave the
	// other an expired context (the standby then kept a lag of 0 through
	// a paused leader).
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	pending, err := g.consumerPending(hctx)
	if err != nil {
		if !g.headUnread {
			g.cfg.Logger.Warn("standby: the projections' consumer cannot be read; judging their lag from the stream",
				"projections", g.name, "err", err)
		}
		g.headUnread = true
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if pending, err = g.streamPending(sctx); err != nil {
			g.cfg.Logger.Debug("standby: the stream cannot be read either; keeping the last lag", "projections", g.name, "err", err)
			return
		}
	} else {
		g.headUnread = false
	}
	g.cfg.Logger.Debug("standby: leader's backlog", "projections", g.name, "pending", pending, "from_stream", g.headUnread)
	for _, r := range g.runners {
		r.mu.Lock()
		r.standbyPending = pending
		r.updateStandbyLag()
		r.mu.Unlock()
	}
}

func (g *group) consumerPending(ctx context.Context) (uint64, error) {
	cons, err := g.cfg.JS.Consumer(ctx, g.cfg.Stream, g.consumerName())
	if err != nil {
		return 0, err
	}
	return backlog(cons.CachedInfo()), nil // just read
}

// backlog is what the consumer has yet to see applied: pending, plus
// delivered and not yet acknowledged.
func backlog(info *jetstream.ConsumerInfo) uint64 {
	return info.NumPending + uint64(info.NumAckPending)
}

func (g *group) streamPending(ctx context.Context) (uint64, error) {
	stream, err := g.cfg.JS.Stream(ctx, g.cfg.Stream)
	if err != nil {
		return 0, err
	}
	last := stream.CachedInfo().State.LastSeq
	lowest := last
	for _, r := range g.runners {
		lowest = min(lowest, r.Position())
	}
	return last - lowest, nil
}

// standbyPoll is how often a standby reads the leader's position.
const standbyPoll = 20 * time.Millisecond

// session is one consumer session of a leading group: one reader of the
// stream, and a feed per projection that applies its share in its own
// transactions, at its own pace (the projections' writes run side by
// side on Postgres).
type session struct {
	g      *group
	cancel context.CancelCauseFunc
	feeds  []*liveFeed
	// unacked are the deliveries read and not yet acknowledged, oldest
	// first: a delivery is acknowledged once every feed has applied it.
	mu      sync.Mutex
	unacked []unacked
}

// unacked is a delivery read and not yet acknowledged.
type unacked struct {
	seq uint64
	msg jetstream.Msg
}

// liveFeed is one projection's share of a session.
type liveFeed struct {
	r       *Runner
	pos     uint64 // the feed goroutine's
	ch      chan *delivered
	done    chan struct{} // closed when the feed takes no more
	applied atomic.Uint64
}

func (s *session) run(ctx context.Context) error {
	g := s.g
	from := ^uint64(0)
	for _, r := range g.runners {
		pos, events, err := r.loadPosition(ctx)
		if err != nil {
			return err
		}
		r.loaded(pos, events)
		if r.parked.Load() {
			s.watchRetry(ctx, r)
			continue
		}
		f := &liveFeed{r: r, pos: pos, ch: make(chan *delivered, 2*g.cfg.MaxBatch), done: make(chan struct{})}
		f.applied.Store(pos)
		s.feeds = append(s.feeds, f)
		from = min(from, pos)
		if _, ok := r.proj.(LiveProjection); ok && r.cfg.Live != nil {
			r.cfg.Live.Applied(Changes{Projection: r.proj.Name(), Position: pos})
		}
	}
	if len(s.feeds) == 0 {
		<-ctx.Done() // every projection is parked: wait for a retry
		return ctx.Err()
	}
	cons, err := g.ensureConsumer(ctx, from)
	if err != nil {
		return err
	}
	// Until its first batch is applied each projection is as far behind
	// as the consumer has messages for it: a session whose first pull goes
	// unanswered must not look caught up (it did, with the lag left at 0
	// from before a Postgres restart, while nothing was applied).
	if info := cons.CachedInfo(); info != nil {
		for _, f := range s.feeds {
			f.r.behind(backlog(info))
		}
	}
	// A short expiry: a pull lost with a NATS node (or unanswered by a
	// consumer just recreated) is noticed by its missing heartbeats and
	// sent again within pullExpiry, not the client's default 30 s.
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(2*g.cfg.MaxBatch, pullBytes), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return fmt.Errorf("consuming: %w", err)
	}
	defer it.Stop()
	fctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	stop := context.AfterFunc(fctx, it.Stop)
	defer stop()
	for _, f := range s.feeds {
		f.r.setState("running", nil, 0)
	}
	var wg sync.WaitGroup
	for _, f := range s.feeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.feed(ctx, fctx, f); err != nil {
				fail(err)
			}
		}()
	}
	readErr := s.read(fctx, it)
	// The feeds apply what they were given, then end.
	for _, f := range s.feeds {
		close(f.ch)
	}
	wg.Wait()
	if err := context.Cause(fctx); err != nil && ctx.Err() == nil {
		return err // a feed failed
	}
	return readErr
}

// read hands every delivery, decoded once, to every feed.
func (s *session) read(ctx context.Context, it jetstream.MessagesContext) error {
	readers := make([]*Runner, len(s.feeds))
	for i, f := range s.feeds {
		readers[i] = f.r
	}
	var lastDelivery uint64
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("next message: %w", err)
		}
		d := s.g.decode(m, readers)
		// Deliveries are numbered by the consumer without gaps. A gap means
		// a pull response was lost (a NATS node died with it in flight):
		// applying past it would ack the lost commits too (the consumer acks
		// everything up to what is acknowledged) and the read models would
		// never see them. Apply what came before the gap and start a new
		// session from the stored positions instead.
		if d.delivery != 0 {
			if lastDelivery != 0 && d.delivery != lastDelivery+1 {
				return fmt.Errorf("%w: delivery %d after %d", errDeliveryGap, d.delivery, lastDelivery)
			}
			lastDelivery = d.delivery
		}
		s.mu.Lock()
		s.unacked = append(s.unacked, unacked{seq: d.commit.StreamSeq, msg: d.msg})
		s.mu.Unlock()
		parked := false
		for _, f := range s.feeds {
			select {
			case f.ch <- f.r.share(d):
			case <-f.done: // parked
				parked = true
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		if parked && s.allParked() {
			// Nothing to apply until a retry: reading on would only
			// hold the stream in memory, unacknowledged.
			<-ctx.Done()
			return context.Cause(ctx)
		}
	}
}

// allParked tells whether every feed has stopped taking commits.
func (s *session) allParked() bool {
	for _, f := range s.feeds {
		select {
		case <-f.done:
		default:
			return false
		}
	}
	return true
}

// errDeliveryGap: the consumer skipped deliveries this session never saw.
var errDeliveryGap = errors.New("deliveries lost in transit")

// feed applies one projection's share in batches until the session ends
// or a poison event parks the projection.
func (s *session) feed(sctx, ctx context.Context, f *liveFeed) error {
	defer close(f.done)
	for {
		batch := nextBatch(ctx, f.ch, f.r.cfg)
		if len(batch) == 0 {
			return nil // the session is over
		}
		err := f.r.applyBatch(ctx, &f.pos, batch)
		if errors.Is(err, errPoison) {
			f.r.parked.Store(true)
			s.watchRetry(sctx, f.r)
			return s.ack()
		}
		if err != nil {
			return err
		}
		f.applied.Store(f.pos)
		if err := s.ack(); err != nil {
			return err
		}
	}
}

// ack acknowledges what every feed still applying has applied.
func (s *session) ack() error {
	upTo := ^uint64(0)
	for _, f := range s.feeds {
		if !f.r.parked.Load() {
			upTo = min(upTo, f.applied.Load())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for n < len(s.unacked) && s.unacked[n].seq <= upTo {
		n++
	}
	if n == 0 {
		return nil
	}
	last := s.unacked[n-1].msg
	s.unacked = s.unacked[n:]
	if s.g.cfg.beforeAck != nil {
		if err := s.g.cfg.beforeAck(); err != nil {
			return err
		}
	}
	// AckAll policy: acking the last message acknowledges all before it.
	// Under the lock, so acknowledgements go out in stream order.
	if err := last.Ack(); err != nil {
		// Not fatal: the batch is committed; a redelivery is skipped.
		s.g.cfg.Logger.Debug("ack failed", "err", err)
	}
	return nil
}

// watchRetry ends the session when a parked projection is asked to retry.
func (s *session) watchRetry(ctx context.Context, r *Runner) {
	go func() {
		select {
		case <-r.retry:
			r.parked.Store(false)
			s.cancel(errRetrying)
		case <-ctx.Done():
		}
	}()
}

// nextBatch blocks for one commit, then takes whatever else arrives
// within the linger time, up to MaxBatch commits and MaxEvents events. It
// returns nothing once in is closed and drained, or ctx ends.
func nextBatch(ctx context.Context, in <-chan *delivered, cfg RunnerConfig) []*delivered {
	var d *delivered
	var ok bool
	select {
	case d, ok = <-in:
	case <-ctx.Done():
	}
	if !ok {
		return nil
	}
	batch := make([]*delivered, 1, min(cfg.MaxBatch, max(busyBatch, len(in)+1)))
	batch[0] = d
	events := d.events()
	window := time.Now().Add(cfg.BusyWindow)
	for len(batch) < cfg.MaxBatch && events < cfg.MaxEvents {
		select {
		case d, ok := <-in: // what is already read goes in without a timer
			if !ok {
				return batch
			}
			batch, events = append(batch, d), events+d.events()
			continue
		default:
		}
		// A quiet stream does not hold a lone commit back for company:
		// the batch ends after Linger without a message. A busy one
		// (busyBatch commits already in hand) fills the window: fewer,
		// larger transactions, the write cost that dominates under load,
		// at a lag bounded by the window.
		wait := cfg.Linger
		if len(batch) >= busyBatch {
			if wait = time.Until(window); wait < time.Millisecond {
				break
			}
		}
		t := time.NewTimer(wait)
		select {
		case d, ok := <-in:
			t.Stop()
			if !ok {
				return batch
			}
			batch, events = append(batch, d), events+d.events()
		case <-t.C:
			return batch
		case <-ctx.Done():
			t.Stop()
			return batch
		}
	}
	return batch
}

// busyBatch is how many commits in hand make a batch collect for its
// whole BusyWindow.
const busyBatch = 16

// decode decodes a message once for every projection in readers:
// its commit, and the commit's account events, unless none of them reads
// any of it. What each one gets of it is Runner.share.
func (g *group) decode(m jetstream.Msg, readers []*Runner) *delivered {
	d := &delivered{msg: m, subject: m.Subject()}
	md, err := m.Metadata()
	if err != nil {
		d.err = fmt.Errorf("message metadata: %w", err)
		return d
	}
	d.pending, d.delivery = md.NumPending, md.Sequence.Consumer
	d.commit = eventstore.Commit{StreamSeq: md.Sequence.Stream, Stored: md.Timestamp}
	// The subject names the aggregate type, as the consumer's filter read it.
	d.aggType, _, _ = strings.Cut(strings.TrimPrefix(d.subject, g.cfg.SubjectPrefix+"."), ".")
	if types := m.Headers().Get(eventstore.HeaderEventTypes); types != "" {
		d.types = strings.Split(types, ",")
	}
	if !slices.ContainsFunc(readers, func(r *Runner) bool { read, _ := r.reads(d); return read }) {
		return d
	}
	c, err := eventstore.DecodeCommit(m.Data(), m.Headers(), md.Sequence.Stream, md.Timestamp, eventstore.Ref{})
	if err != nil {
		d.err = err
		return d
	}
	if c.Aggregate.Type == ledger.TypeAccount {
		c.Decoded = make([]any, len(c.Events))
		for i, ev := range c.Events {
			// One that fails is left for the projection to decode and
			// report as a poison event.
			if e, err := g.codec.Decode(ev.Type, ev.Version, ev.Data); err == nil {
				c.Decoded[i] = e
			}
		}
	}
	d.commit = c
	return d
}

// reads tells whether the projection reads the delivered commit; if not,
// skipped is how many of its events it passes over (the events of an
// aggregate type it does not read are not counted).
func (r *Runner) reads(d *delivered) (read bool, skipped int) {
	if !slices.Contains(r.aggTypes, d.aggType) {
		return false, 0
	}
	if r.filter != nil && len(d.types) > 0 && !slices.ContainsFunc(d.types, r.filter.Wants) {
		return false, len(d.types)
	}
	return true, 0
}

// share is the projection's view of a commit read for several: the
// commit itself (read only: every projection that reads it gets the same
// one), or, if it reads none of it, only its position. It is called by the
// one goroutine that hands the delivery out.
func (r *Runner) share(d *delivered) *delivered {
	read, skipped := r.reads(d)
	if read {
		return d
	}
	marker := &d.otherType
	if skipped > 0 {
		marker = &d.passedOver
	}
	if *marker == nil {
		*marker = &delivered{commit: eventstore.Commit{StreamSeq: d.commit.StreamSeq, Stored: d.commit.Stored},
			pending: d.pending, delivery: d.delivery, subject: d.subject, aggType: d.aggType, skipped: skipped}
	}
	return *marker
}

// ensureConsumer returns the group's durable consumer positioned at pos.
// It is recreated when it is ahead (the database was restored or reset,
// which would otherwise skip events) or holds unacked deliveries of a
// previous session (which it would only redeliver after AckWait, stalling
// the read models for that long).
func (g *group) ensureConsumer(ctx context.Context, pos uint64) (jetstream.Consumer, error) {
	stream, err := g.cfg.JS.Stream(ctx, g.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	var filters []string
	for _, t := range g.types {
		filters = append(filters, g.cfg.SubjectPrefix+"."+t+".>")
	}
	name := g.consumerName()
	if c, err := stream.Consumer(ctx, name); err == nil {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("consumer info: %w", err)
		}
		if info.AckFloor.Stream <= pos && info.NumAckPending == 0 && slices.Equal(info.Config.FilterSubjects, filters) {
			return c, nil
		}
		g.cfg.Logger.Debug("recreating consumer", "consumer", name, "ack_floor", info.AckFloor.Stream,
			"ack_pending", info.NumAckPending, "position", pos)
		if err := stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("deleting consumer: %w", err)
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	if len(g.runners) > 1 {
		// Each projection once had a consumer of its own; they are not read
		// any more.
		for _, r := range g.runners {
			if err := stream.DeleteConsumer(ctx, "proj_"+r.Name()); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				g.cfg.Logger.Debug("deleting a projection's old consumer", "projection", r.Name(), "err", err)
			}
		}
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "read models " + strings.ReplaceAll(g.name, "-", ", "),
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

// pullExpiry bounds each pull request of a live session; heartbeats come
// every half of it and two missed ones renew the pull.
const pullExpiry = 5 * time.Second

// pullBytes bounds what a consumer asks for at once: commits carry up to
// hundreds of events, and an unbounded pull overruns the connection.
const pullBytes = 16 << 20
