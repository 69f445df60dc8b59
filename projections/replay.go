package projections

import (
	"context"
	"errors"
	"fmt"
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
	{"accounts", nil}, {"wallets", nil}, {"topups", nil}, {"users", nil},
	{"api_keys", []string{"last_used_at"}}, {"tasks", nil},
	{"usage_minute", nil}, {"usage_hour", nil}, {"usage_day", nil}, {"key_usage_month", nil},
	{"usage_open_tasks", nil}, {"wallet_entries", nil},
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
	cfg.MaxBatch = 5000
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
	live := map[string]*Runner{}
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
		live[r.Name()] = lr
	}
	targets := map[string]uint64{}
	for name, lr := range live {
		targets[name] = lr.Pause()
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

// each runs every rebuild runner up to its target, in parallel.
func (rp *Replayer) each(ctx context.Context, runners []*Runner, target func(*Runner) (uint64, error)) error {
	var wg sync.WaitGroup
	errs := make([]error, len(runners))
	for i, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t, err := target(r)
			if err == nil {
				err = r.CatchUp(ctx, t, func(pos, events uint64) {
					rp.set(func(p *ReplayProgress) { p.Position[r.Name()] = pos; p.Events += events })
				})
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
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
// with an ephemeral ordered consumer (a rebuild needs no durable state),
// then returns. progress is told of each batch.
func (r *Runner) CatchUp(ctx context.Context, target uint64, progress func(pos, events uint64)) error {
	pos, _, err := r.loadPosition(ctx)
	if err != nil {
		return err
	}
	if pos >= target {
		return nil
	}
	var filters []string
	for _, t := range r.proj.AggregateTypes() {
		filters = append(filters, r.cfg.SubjectPrefix+"."+t+".>")
	}
	cons, err := r.cfg.JS.OrderedConsumer(ctx, r.cfg.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: pos + 1,
	})
	if err != nil {
		return fmt.Errorf("replay consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * r.cfg.MaxBatch))
	if err != nil {
		return err
	}
	defer it.Stop()
	for {
		var batch []delivered
		done := false
		for len(batch) < r.cfg.MaxBatch {
			wait := 20 * time.Millisecond
			if len(batch) == 0 {
				wait = 2 * time.Second // nothing left to deliver: caught up
			}
			m, err := it.Next(jetstream.NextMaxWait(wait))
			if err != nil {
				done = len(batch) == 0 || errors.Is(err, jetstream.ErrMsgIteratorClosed)
				break
			}
			d := r.decode(m)
			if d.commit.StreamSeq > target {
				done = true
				break
			}
			batch = append(batch, d)
			if d.pending == 0 {
				done = true
				break
			}
		}
		if len(batch) > 0 {
			before := r.Status().Events
			if err := r.applyBatch(ctx, &pos, batch); err != nil {
				return err
			}
			progress(pos, r.Status().Events-before)
		}
		if done || pos >= target {
			return ctx.Err()
		}
	}
}
