// Package aggregates runs commands against event-sourced aggregates: load
// (from a bounded in-memory cache, else the store), decide, append with the
// expected sequence, and on a conflict reload and decide again, a bounded
// number of times.
//
// Commands for one aggregate that arrive while an append is in flight are
// group-committed: the next leader decides all of them, in arrival order,
// against the state each previous one leaves, and appends their events as
// one commit. A hot account then costs one store round trip per batch, not
// per command, and the commands still serialize exactly as if run alone.
package aggregates

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// State is an aggregate that folds events of type E.
type State[E codec.Named] interface {
	Apply(E)
}

// Meta is who and what caused a command; it goes on every event it makes.
type Meta struct {
	Actor         string
	CorrelationID string // the request id
	CausationID   string // the command id
}

// Decide is one command: read state, return the events to append (none to
// change nothing) or an error that rejects the command and changes nothing.
// It may run more than once (after a conflict), so it must not have side
// effects beyond recording its result in variables it closes over.
type Decide[S any, E any] func(state S) ([]E, error)

// Outcome is what a command appended.
type Outcome struct {
	Events    []eventstore.Event // with ids, sequences and hashes
	StreamSeq uint64             // of the commit holding them; 0 if none
}

// Config of a repository.
type Config[S State[E], E codec.Named] struct {
	Type     string // aggregate type, e.g. "account"
	Store    eventstore.Store
	Codec    *codec.Codec[E]
	New      func(id string) S
	NewID    func(prefix string) string
	Now      func() time.Time
	Logger   *slog.Logger
	CacheMax int // aggregates kept in memory; default 100,000
	// MaxBatch bounds how many commands one commit carries.
	MaxBatch int
	// OnCommit, if set, is given every commit this repository appends,
	// after it is stored and before any of its commands is answered: the
	// instance's in-memory views (the API-key index) then show a write
	// before its caller hears of it.
	OnCommit func(c eventstore.Commit)
	// Then, if set, is given each accepted command's events with the state
	// before them, and returns events that follow from them (a balance
	// crossing an alert threshold), appended in the same commit.
	Then func(state S, decided []E) []E
	// Turns, if set, carries this repository's requests for a turn to the
	// other instances writing the same aggregates (see turns.go).
	Turns Turns
	// AppendTimeout bounds one append; default commitTimeout. Loads have
	// their own bound (loadTimeout).
	AppendTimeout time.Duration
	// Snapshots, if set with DecodeState, keeps snapshots of aggregates
	// whose state can be cloned and encoded (see snapshots.go), one every
	// SnapshotEvery events (default snapshotEvery).
	Snapshots     Snapshots
	DecodeState   func(id string, b []byte) (S, error)
	SnapshotEvery uint64
}

// Repo runs commands for one aggregate type.
type Repo[S State[E], E codec.Named] struct {
	cfg Config[S, E]

	mu      sync.Mutex
	entries map[string]*list.Element // of *entry
	lru     *list.List               // front: most recently used

	commits, commands atomic.Uint64 // appended; for the group-commit ratio
}

// Stats reports how many commits were appended and how many commands
// they carried: the ratio is the group-commit batching achieved.
func (r *Repo[S, E]) Stats() (commits, commands uint64) {
	return r.commits.Load(), r.commands.Load()
}

// New returns a repository.
func New[S State[E], E codec.Named](cfg Config[S, E]) *Repo[S, E] {
	if cfg.CacheMax == 0 {
		cfg.CacheMax = 100_000
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 256
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AppendTimeout == 0 {
		cfg.AppendTimeout = commitTimeout
	}
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = snapshotEvery
	}
	return &Repo[S, E]{cfg: cfg, entries: map[string]*list.Element{}, lru: list.New()}
}

// maxConflicts bounds how often a batch is re-decided after losing a race
// to another writer before its commands fail.
const maxConflicts = 12

// conflictBackoff is how long a batch waits before its next try after
// losing attempt races in a row: nothing after the first loss, then a
// random wait up to a bound that doubles to 32 ms. Two instances writing
// one hot account that both retried at once would keep colliding; the
// jitter lets one through, and commands arriving meanwhile join the batch.
func conflictBackoff(attempt int) time.Duration {
	if attempt < 1 {
		return 0
	}
	bound := time.Millisecond << min(attempt, 5)
	return time.Duration(rand.Int64N(int64(bound)))
}

// ErrTooManyConflicts: the aggregate is contended beyond maxConflicts.
var ErrTooManyConflicts = errors.New("aggregate contended: too many concurrent appends")

type entry[S any, E any] struct {
	id string

	mu        sync.Mutex
	state     S
	loaded    bool
	streamSeq uint64
	seq       uint64
	hash      string
	pending   []*request[S, E]
	leading   bool

	// observed is the highest stream sequence seen on the stream for this
	// aggregate. Above streamSeq, another writer has appended: refresh
	// before trusting a rejection.
	observed atomic.Uint64
	// lastAppended mirrors streamSeq for readers that do not take mu.
	lastAppended atomic.Uint64
	// askers are the other instances waiting for a turn (see turns.go).
	askers askers
	// contended: a batch has lost a race for this aggregate. Its loads
	// then keep a snapshot of the stored state (when S can be cloned), and
	// the next reload reads only what was appended after it.
	contended bool
	snap      *snapshot[S]
	// persistedSeq is the event of the last snapshot stored or read.
	persistedSeq uint64
}

// snapshot is a copy of an aggregate's state as stored up to streamSeq.
type snapshot[S any] struct {
	state     S
	streamSeq uint64
	seq       uint64
	hash      string
}

// cloner is a state that can copy itself deeply.
type cloner[S any] interface {
	Clone() S
}

func (e *entry[S, E]) stale() bool { return e.observed.Load() > e.streamSeq }

type request[S any, E any] struct {
	decide Decide[S, E]
	meta   Meta
	done   chan result
	// filled by the leader
	events []eventstore.Event
	err    error
}

type result struct {
	out Outcome
	err error
}

func (r *Repo[S, E]) ref(id string) eventstore.Ref { return eventstore.Ref{Type: r.cfg.Type, ID: id} }

// entry returns the cache entry for id, creating it, and marks it used.
func (r *Repo[S, E]) entry(id string) *entry[S, E] {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.entries[id]; ok {
		r.lru.MoveToFront(el)
		return el.Value.(*entry[S, E])
	}
	e := &entry[S, E]{id: id, askers: askers{wake: make(chan struct{}, 1)}}
	r.entries[id] = r.lru.PushFront(e)
	for r.lru.Len() > r.cfg.CacheMax {
		back := r.lru.Back()
		old := back.Value.(*entry[S, E])
		// An entry with work in flight stays; its leader still holds it.
		if !old.mu.TryLock() {
			break
		}
		busy := old.leading || len(old.pending) > 0
		old.mu.Unlock()
		if busy {
			break
		}
		r.lru.Remove(back)
		delete(r.entries, old.id)
	}
	return e
}

// Execute runs one command against aggregate id and returns what it
// appended. If ctx ends while the command waits in a batch, Execute returns
// ctx.Err() but the command may still be committed: callers that need to
// know reload or use an idempotency key.
func (r *Repo[S, E]) Execute(ctx context.Context, id string, meta Meta, decide Decide[S, E]) (Outcome, error) {
	e := r.entry(id)
	req := &request[S, E]{decide: decide, meta: meta, done: make(chan result, 1)}
	e.mu.Lock()
	e.pending = append(e.pending, req)
	lead := !e.leading
	if lead {
		e.leading = true
	}
	e.mu.Unlock()
	if lead {
		r.lead(e)
	}
	select {
	case res := <-req.done:
		return res.out, res.err
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
}

// commitTimeout bounds one append. The leader serves commands of many
// callers, so it does not run on any one caller's context.
const commitTimeout = 10 * time.Second

// loadTimeout bounds one load of an aggregate, apart from its append: a
// long history takes its time to fold (about 6 µs an event on the 2-core
// build machine, so 10 s is some 1.5 million events), and a load cut
// short at the append's bound would be cut short again on every call, so
// such an account could never be written. The callers waiting meanwhile
// give up on their own contexts; the ones after them find it cached.
const loadTimeout = 5 * time.Minute

// bounded runs fn with a fresh context that ends after d.
func bounded(d time.Duration, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return fn(ctx)
}

// lead commits batches until no command is pending.
func (r *Repo[S, E]) lead(e *entry[S, E]) {
	for {
		e.mu.Lock()
		n := min(len(e.pending), r.cfg.MaxBatch)
		if n == 0 {
			e.leading = false
			e.mu.Unlock()
			return
		}
		batch := e.pending[:n:n]
		e.pending = e.pending[n:]
		r.commit(e, batch) // e.mu held: state is ours until the batch is done
		e.mu.Unlock()
	}
}

// commit decides and appends one batch; e.mu is held.
func (r *Repo[S, E]) commit(e *entry[S, E], batch []*request[S, E]) {
	refreshed := false
	lost := false // races enough to ask the other instances for a turn
	defer func() {
		if lost && r.cfg.Turns != nil {
			r.cfg.Turns.Done(e.id)
		}
	}()
	for attempt := 0; ; attempt++ {
		if attempt == 0 && r.holdBack(e) {
			// The asker got its turn: decide after its commit. Nothing is
			// decided yet, so the cached state is as stored and only the
			// new commits need reading.
			if err := bounded(loadTimeout, func(ctx context.Context) error { return r.refresh(ctx, e) }); err != nil {
				r.failAll(batch, err)
				return
			}
		}
		if !e.loaded {
			if err := bounded(loadTimeout, func(ctx context.Context) error { return r.reload(ctx, e) }); err != nil {
				r.failAll(batch, err)
				return
			}
		}
		events, rejected := r.decideAll(e, batch)
		if rejected && e.stale() && !refreshed {
			// A rejection against state another instance has moved on
			// from may be wrong (a top-up we have not seen): refresh once
			// and decide again.
			refreshed = true
			e.loaded = false
			continue
		}
		if len(events) == 0 {
			r.reply(batch, 0)
			return
		}
		// Always a fresh id: the head check after a conflict trusts it to
		// name this commit and no other.
		commitID := r.cfg.NewID("cmt")
		head := eventstore.Chain(e.seq, e.hash, events)
		c := eventstore.Commit{ID: commitID, Aggregate: r.ref(e.id), Events: events}
		var seqs []uint64
		err := bounded(r.cfg.AppendTimeout, func(ctx context.Context) (err error) {
			seqs, err = r.cfg.Store.Append(ctx, eventstore.Append{Expected: e.streamSeq, Commit: c})
			return err
		})
		if err == nil {
			e.streamSeq, e.seq, e.hash = seqs[0], c.LastSeq(), head
			e.lastAppended.Store(seqs[0])
			r.commits.Add(1)
			r.commands.Add(uint64(len(batch)))
			if r.cfg.OnCommit != nil {
				c.StreamSeq = seqs[0]
				r.cfg.OnCommit(c)
			}
			r.reply(batch, seqs[0])
			r.persist(e)
			return
		}
		// The state now holds events that may not be stored: rebuild it.
		e.loaded = false
		if errors.Is(err, eventstore.ErrConflict) {
			e.contended = true
			// Another writer got in (one that asked for a turn, if any
			// did): this batch now needs a turn itself, and two writers
			// holding back for each other would both wait out the window.
			e.askers.clear()
			if r.cfg.Turns != nil && attempt+1 >= askAfter {
				lost = true
				r.cfg.Turns.Ask(e.id)
			}
		}
		switch {
		case errors.Is(err, eventstore.ErrConflict) && attempt < maxConflicts:
			time.Sleep(conflictBackoff(attempt)) // 32 ms at most
			continue
		case errors.Is(err, eventstore.ErrConflict):
			r.failAll(batch, fmt.Errorf("%w: %s", ErrTooManyConflicts, e.id))
			return
		case errors.Is(err, eventstore.ErrUnavailable):
			// The outcome is unknown: the commit may have been stored
			// before the connection failed. Reloading tells.
			var seq uint64
			var found bool
			_ = bounded(loadTimeout, func(ctx context.Context) error {
				seq, found = r.reloadFinding(ctx, e, commitID)
				return nil
			})
			if found {
				r.reply(batch, seq)
				return
			}
			r.failAll(batch, err)
			return
		default:
			r.failAll(batch, err)
			return
		}
	}
}

// decideAll runs each command against the state left by the ones before
// it, applying accepted events as it goes, and returns every event to
// append. A rejected command records its error and changes nothing.
func (r *Repo[S, E]) decideAll(e *entry[S, E], batch []*request[S, E]) (all []eventstore.Event, rejected bool) {
	now := r.cfg.Now().UTC()
	for _, req := range batch {
		req.events, req.err = nil, nil
		evs, err := req.decide(e.state)
		if err != nil {
			req.err = err
			rejected = true
			continue
		}
		if r.cfg.Then != nil && len(evs) > 0 {
			if more := r.cfg.Then(e.state, evs); len(more) > 0 {
				evs = append(evs[:len(evs):len(evs)], more...)
			}
		}
		for _, ev := range evs {
			name, version, data, err := r.cfg.Codec.Encode(ev)
			if err != nil {
				// A bug, not bad input: the event type is unregistered.
				panic(err)
			}
			req.events = append(req.events, eventstore.Event{
				ID: r.cfg.NewID("evt"), Type: name, Version: version,
				AggregateType: r.cfg.Type, AggregateID: e.id,
				OccurredAt: now, Actor: req.meta.Actor,
				CausationID: req.meta.CausationID, CorrelationID: req.meta.CorrelationID,
				Data: data,
			})
			e.state.Apply(ev)
		}
		all = append(all, req.events...)
	}
	// Chain fills sequences and hashes in place; point each request's
	// slice at the chained copies.
	if len(all) > 0 {
		i := 0
		for _, req := range batch {
			n := len(req.events)
			req.events = all[i : i+n : i+n]
			i += n
		}
	}
	return all, rejected
}

func (r *Repo[S, E]) reply(batch []*request[S, E], streamSeq uint64) {
	for _, req := range batch {
		if req.err != nil {
			req.done <- result{err: req.err}
			continue
		}
		out := Outcome{Events: req.events}
		if len(req.events) > 0 {
			out.StreamSeq = streamSeq
		}
		req.done <- result{out: out}
	}
}

func (r *Repo[S, E]) failAll(batch []*request[S, E], err error) {
	for _, req := range batch {
		req.done <- result{err: err}
	}
}

// reload rebuilds the entry's state from the store.
func (r *Repo[S, E]) reload(ctx context.Context, e *entry[S, E]) error {
	_, err := r.load(ctx, e, "")
	return err
}

func (r *Repo[S, E]) reloadFinding(ctx context.Context, e *entry[S, E], commitID string) (uint64, bool) {
	seq, err := r.load(ctx, e, commitID)
	if err != nil {
		return 0, false
	}
	return seq, seq != 0
}

// load folds the stored events into a state: from the entry's in-memory
// snapshot if it keeps one (a contended aggregate), else from its stored
// snapshot, else from the start. If find is set, it returns the stream
// sequence of the commit with that id, if stored: a commit of this
// instance's, appended after e.streamSeq, so after its in-memory snapshot;
// a stored snapshot, which another instance may have taken after it, is
// used only if it is from before.
func (r *Repo[S, E]) load(ctx context.Context, e *entry[S, E], find string) (uint64, error) {
	from, stored := snapshot[S]{state: r.cfg.New(e.id)}, false
	if e.snap != nil {
		from = *e.snap
	} else if s, ok := r.stored(ctx, e); ok && (find == "" || s.streamSeq <= e.streamSeq) {
		from, stored = s, true
	}
	found, err := r.fold(ctx, e, from, stored, find)
	if err != nil && stored {
		r.cfg.Logger.Warn("aggregate snapshot does not fit the stream; folding from the start", "type", r.cfg.Type, "id", e.id, "err", err)
		e.persistedSeq = 0
		found, err = r.fold(ctx, e, snapshot[S]{state: r.cfg.New(e.id)}, false, find)
	}
	if err == nil {
		r.persist(e)
	}
	return found, err
}

// fold reads the commits after from and folds them into from's state,
// which becomes the entry's. A stored snapshot (check) must name a commit
// the stream holds, with that event and hash: it is read as well, and
// compared.
func (r *Repo[S, E]) fold(ctx context.Context, e *entry[S, E], from snapshot[S], check bool, find string) (uint64, error) {
	after := from.streamSeq
	if check {
		after--
	}
	commits, err := r.cfg.Store.Load(ctx, r.ref(e.id), after)
	if err != nil {
		return 0, err
	}
	if check {
		if len(commits) == 0 || commits[0].StreamSeq != from.streamSeq || len(commits[0].Events) == 0 ||
			commits[0].Events[len(commits[0].Events)-1].Seq != from.seq || commits[0].Events[len(commits[0].Events)-1].Hash != from.hash {
			return 0, fmt.Errorf("aggregates: %s/%s: the stream has no commit at %d ending with event %d (%s)",
				r.cfg.Type, e.id, from.streamSeq, from.seq, from.hash)
		}
		commits = commits[1:]
	}
	// The snapshot's state becomes the live one; a fresh copy is kept
	// below. (If folding fails half-way, the next load starts over.)
	e.snap = nil
	state, streamSeq, seq, hash := from.state, from.streamSeq, from.seq, from.hash
	var found uint64
	for _, c := range commits {
		for _, ev := range c.Events {
			if ev.Seq != seq+1 {
				return 0, fmt.Errorf("aggregates: %s/%s: event %s at seq %d, want %d", r.cfg.Type, e.id, ev.ID, ev.Seq, seq+1)
			}
			if seq > 0 && seq == from.seq && ev.PrevHash != hash {
				return 0, fmt.Errorf("aggregates: %s/%s: event %s follows %s, not %s", r.cfg.Type, e.id, ev.ID, ev.PrevHash, hash)
			}
			d, err := r.cfg.Codec.Decode(ev.Type, ev.Version, ev.Data)
			if err != nil {
				return 0, fmt.Errorf("aggregates: %s/%s seq %d: %w", r.cfg.Type, e.id, ev.Seq, err)
			}
			state.Apply(d)
			seq, hash = ev.Seq, ev.Hash
		}
		streamSeq = c.StreamSeq
		if find != "" && c.ID == find {
			found = c.StreamSeq
		}
	}
	e.state, e.loaded = state, true
	e.streamSeq, e.seq, e.hash = streamSeq, seq, hash
	if cl, ok := any(state).(cloner[S]); ok && e.contended {
		e.snap = &snapshot[S]{state: cl.Clone(), streamSeq: streamSeq, seq: seq, hash: hash}
	}
	return found, nil
}

// Read runs fn on the aggregate's current state, first bringing the state
// up to date with the store (one round trip for what is new). fn must not
// keep the state.
func (r *Repo[S, E]) Read(ctx context.Context, id string, fn func(S)) error {
	e := r.entry(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := r.refresh(ctx, e); err != nil {
		return err
	}
	fn(e.state)
	return nil
}

// ReadCached runs fn on the cached state without a store round trip when
// the aggregate is cached and not known to be stale; otherwise as Read.
func (r *Repo[S, E]) ReadCached(ctx context.Context, id string, fn func(S)) error {
	e := r.entry(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.loaded || e.stale() {
		if err := r.refresh(ctx, e); err != nil {
			return err
		}
	}
	fn(e.state)
	return nil
}

// refresh applies commits stored after the cached position; e.mu is held.
func (r *Repo[S, E]) refresh(ctx context.Context, e *entry[S, E]) error {
	if !e.loaded {
		_, err := r.load(ctx, e, "")
		return err
	}
	commits, err := r.cfg.Store.Load(ctx, r.ref(e.id), e.streamSeq)
	if err != nil {
		return err
	}
	for _, c := range commits {
		for _, ev := range c.Events {
			d, err := r.cfg.Codec.Decode(ev.Type, ev.Version, ev.Data)
			if err != nil {
				e.loaded = false
				return fmt.Errorf("aggregates: %s/%s seq %d: %w", r.cfg.Type, e.id, ev.Seq, err)
			}
			e.state.Apply(d)
			e.seq, e.hash = ev.Seq, ev.Hash
		}
		e.streamSeq = c.StreamSeq
	}
	return nil
}

// Observe tells the repository that a commit was stored for id at
// streamSeq (seen on the stream). If the cached state is behind it, the
// next rejection re-checks against the store before it is believed.
func (r *Repo[S, E]) Observe(id string, streamSeq uint64) {
	if e := r.cached(id); e != nil {
		e.raiseObserved(streamSeq)
	}
}

// raiseObserved lifts the highest stream sequence known for the entry.
func (e *entry[S, E]) raiseObserved(streamSeq uint64) {
	for {
		cur := e.observed.Load()
		if streamSeq <= cur {
			return
		}
		if e.observed.CompareAndSwap(cur, streamSeq) {
			e.askers.nudge()
			return
		}
	}
}

// Created records that this instance just appended id's first commit
// at streamSeq (outside Execute, as NewCommit's callers do), so reads of
// it wait for the read models to reach that point even though nothing of
// it is cached yet.
func (r *Repo[S, E]) Created(id string, streamSeq uint64) { r.entry(id).raiseObserved(streamSeq) }

// NewCommit encodes events for a new aggregate (chained from its start),
// for commits that must be appended atomically with other aggregates'.
// After appending, call Observe so a cached empty state is not trusted.
func (r *Repo[S, E]) NewCommit(id string, meta Meta, evs []E) (eventstore.Commit, error) {
	now := r.cfg.Now().UTC()
	out := make([]eventstore.Event, 0, len(evs))
	for _, ev := range evs {
		name, version, data, err := r.cfg.Codec.Encode(ev)
		if err != nil {
			return eventstore.Commit{}, err
		}
		out = append(out, eventstore.Event{
			ID: r.cfg.NewID("evt"), Type: name, Version: version,
			AggregateType: r.cfg.Type, AggregateID: id, OccurredAt: now,
			Actor: meta.Actor, CausationID: meta.CausationID, CorrelationID: meta.CorrelationID,
			Data: data,
		})
	}
	eventstore.Chain(0, "", out)
	return eventstore.Commit{ID: r.cfg.NewID("cmt"), Aggregate: r.ref(id), Events: out}, nil
}

// LastStreamSeq is the stream sequence of the last commit this instance
// knows for id (0 if not cached): what a read must wait for to show this
// instance's writes.
func (r *Repo[S, E]) LastStreamSeq(id string) uint64 {
	e := r.cached(id)
	if e == nil {
		return 0
	}
	return max(e.observed.Load(), e.lastAppended.Load())
}
