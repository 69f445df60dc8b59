package projections

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"
)

// ReadModelTables are every table the projections write, with the
// columns that are facts of the events (telemetry such as api_keys'
// last_used_at, and bookkeeping times, are left out of comparisons).
var ReadModelTables = []struct {
	Name    string
	Exclude []string
}{
	{"accounts", nil}, {"wallets", nil}, {"topups", nil}, {"grants", nil}, {"users", nil},
	{"api_keys", []string{"last_used_at"}}, {"tasks", nil},
	{"usage_minute", nil}, {"usage_hour", nil}, {"usage_day", nil}, {"key_usage_month", nil},
	{"usage_open_tasks", nil}, {"wallet_entries", nil}, {"low_balance_alerts", nil},
	{"projection_positions", []string{"updated_at"}},
}

// ReplaySchema holds the tables a replay rebuilds.
const ReplaySchema = "replay"

// ReplayProgress is how far a replay has come.
type ReplayProgress struct {
	Running  bool              `json:"running"`
	Phase    string            `json:"phase"` // rebuilding, catching_up, comparing, swapping, done, failed
	Target   uint64            `json:"target"`
	Position map[string]uint64 `json:"positions"`
	Events   uint64            `json:"events"`
	Started  time.Time         `json:"started_at"`
	Error    string            `json:"error,omitempty"`
}

// ReplayResult is what a replay found.
type ReplayResult struct {
	Events      uint64   `json:"events"`
	DurationMS  int64    `json:"duration_ms"`
	Identical   bool     `json:"identical"`
	Swapped     bool     `json:"swapped"`
	Differences []string `json:"differences,omitempty"`
}

// Replayer rebuilds the read models from the first event.
type Replayer struct {
	Live     *bun.DB // the live read models
	Replay   *bun.DB // the same database with search_path set to the replay schema
	Runner   RunnerConfig
	Set      *Set
	Fresh    func() []Projection // new, empty projections to rebuild with
	Head     func(ctx context.Context) (uint64, error)
	mu       sync.Mutex
	progress ReplayProgress
}

// Progress reports the running (or last) replay.
func (rp *Replayer) Progress() ReplayProgress {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	p := rp.progress
	p.Position = map[string]uint64{}
	for k, v := range rp.progress.Position {
		p.Position[k] = v
	}
	return p
}

func (rp *Replayer) set(f func(*ReplayProgress)) {
	rp.mu.Lock()
	f(&rp.progress)
	rp.mu.Unlock()
}

// ErrReplayRunning: one replay at a time.
var ErrReplayRunning = errors.New("a replay is already running")

// Run rebuilds every read model into the replay schema while the live
// ones keep serving, brings both to the same stream position, compares
// them, and, if they differ, replaces the live rows with the rebuilt ones
// in one transaction.
func (rp *Replayer) Run(ctx context.Context) (ReplayResult, error) {
	rp.mu.Lock()
	if rp.progress.Running {
		rp.mu.Unlock()
		return ReplayResult{}, ErrReplayRunning
	}
	rp.progress = ReplayProgress{Running: true, Phase: "rebuilding", Started: time.Now(), Position: map[string]uint64{}}
	rp.mu.Unlock()
	res, err := rp.run(ctx)
	rp.set(func(p *ReplayProgress) {
		p.Running = false
		p.Phase = "done"
		if err != nil {
			p.Phase, p.Error = "failed", err.Error()
		}
	})
	return res, err
}

// RebuildBatch is a rebuild's batch bounds, in commits and events: larger
// than a live runner's, since a rebuild has everything at hand and fewer,
// larger statements cost Postgres less per row.
func RebuildBatch() (commits, events int) { return 5000, 50_000 }

func (rp *Replayer) run(ctx context.Context) (ReplayResult, error) {
	start := time.Now()
	if err := rp.prepare(ctx); err != nil {
		return ReplayResult{}, err
	}
	head, err := rp.Head(ctx)
	if err != nil {
		return ReplayResult{}, err
	}
	rp.set(func(p *ReplayProgress) { p.Target = head })
	projs := rp.Fresh()
	runners := make([]*Runner, len(projs))
	cfg := rp.Runner
	cfg.DB = rp.Replay
	cfg.MaxBatch, cfg.MaxEvents = RebuildBatch()
	cfg.Live = nil // a rebuild is not news
	for i, p := range projs {
		runners[i] = NewRunner(cfg, p)
	}
	// Rebuild up to the head as it was when the replay began, every
	// projection in parallel, while live traffic goes on.
	if err := rp.each(ctx, runners, func(r *Runner) (uint64, error) { return head, nil }); err != nil {
		return ReplayResult{}, err
	}
	// Hold the live projections still, at or past where the rebuild is,
	// and bring the rebuild to exactly their positions.
	rp.set(func(p *ReplayProgress) { p.Phase = "catching_up" })
	var live []*Runner // in the set's order, the order its batches take them in
	for _, r := range runners {
		lr := rp.Set.Runner(r.Name())
		if lr == nil {
			return ReplayResult{}, fmt.Errorf("no live projection %s", r.Name())
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := lr.WaitFor(wctx, r.Position())
		cancel()
		if err != nil {
			return ReplayResult{}, fmt.Errorf("live projection %s is behind the rebuild: %w", r.Name(), err)
		}
		live = append(live, lr)
	}
	targets := map[string]uint64{}
	for _, lr := range live {
		targets[lr.Name()] = lr.Pause()
	}
	defer func() {
		for _, lr := range live {
			lr.Resume()
		}
	}()
	if err := rp.each(ctx, runners, func(r *Runner) (uint64, error) { return targets[r.Name()], nil }); err != nil {
		return ReplayResult{}, err
	}
	rp.set(func(p *ReplayProgress) { p.Phase = "comparing" })
	diffs, err := rp.compare(ctx)
	if err != nil {
		return ReplayResult{}, err
	}
	res := ReplayResult{Identical: len(diffs) == 0, Differences: diffs}
	for _, r := range runners {
		res.Events += r.Status().Events
	}
	if !res.Identical {
		rp.set(func(p *ReplayProgress) { p.Phase = "swapping" })
		if err := rp.swap(ctx); err != nil {
			return res, err
		}
		res.Swapped = true
	}
	res.DurationMS = time.Since(start).Milliseconds()
	return res, nil
}

// each brings every rebuild runner up to its target from one shared
// reading of the stream.
func (rp *Replayer) each(ctx context.Context, runners []*Runner, target func(*Runner) (uint64, error)) error {
	targets := map[string]uint64{}
	for _, r := range runners {
		t, err := target(r)
		if err != nil {
			return err
		}
		targets[r.Name()] = t
	}
	return CatchUpAll(ctx, runners, targets, func(name string, pos, events uint64) {
		rp.set(func(p *ReplayProgress) { p.Position[name] = pos; p.Events += events })
	})
}

// prepare makes an empty copy of every read-model table in the replay
// schema.
func (rp *Replayer) prepare(ctx context.Context) error {
	stmts := []string{"DROP SCHEMA IF EXISTS " + ReplaySchema + " CASCADE", "CREATE SCHEMA " + ReplaySchema}
	for _, t := range ReadModelTables {
		stmts = append(stmts, fmt.Sprintf("CREATE TABLE %s.%s (LIKE public.%s INCLUDING ALL)", ReplaySchema, t.Name, t.Name))
	}
	for _, s := range stmts {
		if _, err := rp.Live.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("preparing the replay schema: %s: %w", s, err)
		}
	}
	return nil
}

func (rp *Replayer) columns(ctx context.Context, table string, exclude []string) (string, error) {
	var cols []string
	err := rp.Live.NewRaw(`SELECT column_name FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name = ? ORDER BY ordinal_position`, table).Scan(ctx, &cols)
	if err != nil {
		return "", err
	}
	var keep []string
	for _, c := range cols {
		skip := false
		for _, x := range exclude {
			skip = skip || c == x
		}
		if !skip {
			keep = append(keep, `"`+c+`"`)
		}
	}
	return strings.Join(keep, ", "), nil
}

// compare lists the tables whose rows differ, and how many rows.
func (rp *Replayer) compare(ctx context.Context) ([]string, error) {
	var diffs []string
	for _, t := range ReadModelTables {
		cols, err := rp.columns(ctx, t.Name, t.Exclude)
		if err != nil {
			return nil, err
		}
		var missing, extra int
		q := func(a, b string) string {
			return fmt.Sprintf("SELECT count(*) FROM (SELECT %s FROM %s.%s EXCEPT ALL SELECT %s FROM %s.%s) d", cols, a, t.Name, cols, b, t.Name)
		}
		if err := rp.Live.NewRaw(q(ReplaySchema, "public")).Scan(ctx, &missing); err != nil {
			return nil, err
		}
		if err := rp.Live.NewRaw(q("public", ReplaySchema)).Scan(ctx, &extra); err != nil {
			return nil, err
		}
		if missing+extra > 0 {
			diffs = append(diffs, fmt.Sprintf("%s: %d row(s) only in the rebuild, %d only in the live table", t.Name, missing, extra))
		}
	}
	return diffs, nil
}

// swap replaces every live table's rows with the rebuilt ones in one
// transaction: readers see the old read models or the new, never a mix.
// Telemetry the events do not hold (last_used_at) is carried over.
func (rp *Replayer) swap(ctx context.Context) error {
	return rp.Live.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE replay.api_keys r SET last_used_at = p.last_used_at
			FROM public.api_keys p WHERE r.id = p.id`); err != nil {
			return err
		}
		names := make([]string, len(ReadModelTables))
		for i, t := range ReadModelTables {
			names[i] = "public." + t.Name
		}
		if _, err := tx.ExecContext(ctx, "TRUNCATE "+strings.Join(names, ", ")); err != nil {
			return err
		}
		for _, t := range ReadModelTables {
			cols, err := rp.columns(ctx, t.Name, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO public.%s (%s) SELECT %s FROM replay.%s", t.Name, cols, cols, t.Name)); err != nil {
				return fmt.Errorf("swapping %s: %w", t.Name, err)
			}
		}
		return nil
	})
}

// CatchUp applies the stream from the runner's position up to target,
// then returns: CatchUpAll for one runner. progress is told of each batch.
func (r *Runner) CatchUp(ctx context.Context, target uint64, progress func(pos, events uint64)) error {
	return CatchUpAll(ctx, []*Runner{r}, map[string]uint64{r.Name(): target}, func(_ string, pos, events uint64) {
		progress(pos, events)
	})
}

// feed is one runner's share of a shared reading of the stream.
type feed struct {
	r      *Runner
	ch     chan *delivered
	start  uint64
	target uint64
}

// CatchUpAll brings several runners up to their targets from one reading
// of the stream: each commit is decoded once (its account events too) and
// handed to every runner that reads its aggregate type, so a rebuild costs
// one decode per event instead of one per projection. Each runner still
// applies its own batches, with its own position, at its own pace; the
// slowest one paces the reader.
func CatchUpAll(ctx context.Context, runners []*Runner, targets map[string]uint64, progress func(name string, pos, events uint64)) error {
	if len(runners) == 0 {
		return nil
	}
	cfg := runners[0].cfg
	g := newGroup(cfg, runners)
	var feeds []*feed
	from, upTo := ^uint64(0), uint64(0)
	for _, r := range runners {
		pos, _, err := r.loadPosition(ctx)
		if err != nil {
			return err
		}
		f := &feed{r: r, ch: make(chan *delivered, 4096), start: pos, target: targets[r.Name()]}
		if pos >= f.target {
			continue
		}
		feeds = append(feeds, f)
		from, upTo = min(from, pos), max(upTo, f.target)
	}
	if len(feeds) == 0 {
		return nil
	}
	cons, err := cfg.JS.OrderedConsumer(ctx, cfg.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{cfg.SubjectPrefix + ".>"}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from + 1,
	})
	if err != nil {
		return fmt.Errorf("replay consumer: %w", err)
	}
	// How many messages there are to read is known up front; a rebuild
	// ends when they are read, never because a read took long.
	if cons.CachedInfo().NumPending == 0 {
		for _, f := range feeds {
			close(f.ch)
		}
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(4*cfg.MaxBatch, pullBytes))
	if err != nil {
		return err
	}
	defer it.Stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(feeds))
	var wg sync.WaitGroup
	for i, f := range feeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = f.apply(ctx, progress); errs[i] != nil {
				cancel()
			}
		}()
	}
	// Decoding is the reader's work; it runs on every core, in a pipeline
	// that keeps stream order: each message gets a slot whose result is
	// filled by a decoder and consumed in order.
	type slot struct {
		d    *delivered
		done chan struct{}
	}
	slots := make(chan *slot, 256)
	work := make(chan struct {
		s   *slot
		msg jetstream.Msg
	}, 256)
	var dwg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for w := range work {
				w.s.d = g.decode(w.msg, runners)
				close(w.s.done)
			}
		}()
	}
	fetchErr := make(chan error, 1)
	go func() {
		defer close(slots)
		defer close(work)
		stop := context.AfterFunc(ctx, it.Stop)
		defer stop()
		for {
			m, err := it.Next()
			if err != nil {
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				fetchErr <- err
				return
			}
			md, err := m.Metadata()
			if err != nil {
				fetchErr <- err
				return
			}
			if md.Sequence.Stream > upTo {
				fetchErr <- nil
				return
			}
			s := &slot{done: make(chan struct{})}
			select {
			case slots <- s:
			case <-ctx.Done():
				fetchErr <- ctx.Err()
				return
			}
			work <- struct {
				s   *slot
				msg jetstream.Msg
			}{s, m}
			if md.NumPending == 0 {
				fetchErr <- nil
				return
			}
		}
	}()
	readErr := func() error {
		defer func() {
			for _, f := range feeds {
				close(f.ch)
			}
		}()
		for s := range slots {
			<-s.done
			d := s.d
			for _, f := range feeds {
				// Every projection's position moves with each commit of the
				// types the set reads, as a live Set's do.
				if g.reads(d.aggType) && d.commit.StreamSeq > f.start && d.commit.StreamSeq <= f.target {
					select {
					case f.ch <- f.r.share(d):
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
		}
		return <-fetchErr
	}()
	dwg.Wait()
	wg.Wait()
	return errors.Join(append(errs, readErr)...)
}

// apply batches what the feed receives and applies it as the live runner
// does: rows and position in one transaction per batch.
func (f *feed) apply(ctx context.Context, progress func(string, uint64, uint64)) error {
	pos := f.start
	for {
		batch := nextBatch(ctx, f.ch, f.r.cfg)
		if len(batch) == 0 {
			return nil // read to the end, or stopped (the reader says why)
		}
		before := f.r.Status().Events
		if err := f.r.applyBatch(ctx, &pos, batch); err != nil {
			return fmt.Errorf("%s: %w", f.r.Name(), err)
		}
		if progress != nil {
			progress(f.r.Name(), pos, f.r.Status().Events-before)
		}
	}
}
