// Package local is ledgerd's built-in offline provider. It renders real,
// small media (a PNG for image models, a looping GIF for video and director
// models) so the whole product — billing, tasks, delivery — works without
// any network or vendor account.
//
// Renders are deterministic and content-addressed: the file name is a hash
// of the inputs, so a repeated prompt is a cache hit that costs neither a
// render nor a system call.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

// Config configures the provider.
type Config struct {
	Dir     string // where files are stored, e.g. $LEDGER_DATA_DIR/files
	BaseURL string // e.g. http://127.0.0.1:8080 (no trailing slash)
	Seed    uint64 // seeds the simulated failures; 0: random
}

// Provider renders media locally. It is safe for concurrent use.
type Provider struct {
	dir     string
	baseURL string

	rngMu sync.Mutex
	rng   *rand.Rand // not safe for concurrent use, hence rngMu

	mu       sync.RWMutex
	known    map[[keyLen]byte]struct{} // names known to be on disk
	inflight map[[keyLen]byte]*flight  // renders under way, so each name renders once
}

// flight is one render under way; waiters block on done and then read err.
type flight struct {
	done chan struct{}
	err  error
}

var _ tasks.Provider = (*Provider)(nil)

const (
	// keyLen bytes of SHA-256 name a file (32 hex characters): plenty to
	// avoid collisions, short enough for URLs.
	keyLen = 16
	// refPrefix marks the references this provider hands out.
	refPrefix = "local_"
	// renderVersion is hashed into every name: bump it whenever rendering
	// changes, so a name never maps to two different contents (the files
	// are served as immutable).
	renderVersion = "v1"
)

// New returns a provider storing its files under cfg.Dir, creating it.
func New(cfg Config) (*Provider, error) {
	if cfg.Dir == "" {
		return nil, errors.New("local provider: Config.Dir is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("local provider: create file dir: %w", err)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Provider{
		dir:      cfg.Dir,
		baseURL:  strings.TrimRight(cfg.BaseURL, "/"),
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		known:    make(map[[keyLen]byte]struct{}),
		inflight: make(map[[keyLen]byte]*flight),
	}, nil
}

// Name implements tasks.Provider.
func (p *Provider) Name() string { return "local" }

// Submit renders the job synchronously (after the model's simulated
// latency) and returns the finished output.
func (p *Provider) Submit(ctx context.Context, job tasks.Job) (tasks.Handle, error) {
	pl, err := newPlan(job)
	if err != nil {
		return tasks.Handle{}, err
	}
	if err := p.wait(ctx, job.Options.LatencyMS); err != nil {
		return tasks.Handle{}, err
	}
	if p.fails(job.Options.FailureRate) {
		return tasks.Handle{}, fmt.Errorf("local provider: simulated failure: %w", tasks.ErrProvider)
	}
	if err := p.ensure(ctx, pl); err != nil {
		return tasks.Handle{}, err
	}
	return tasks.Handle{Ref: refPrefix + pl.name, Done: true, Output: p.output(pl)}, nil
}

// Poll reports a submitted job as done. It recomputes the output from the
// job, so a restarted ledgerd can resume; a file lost since (say, a crash
// before it reached the disk) is rendered again, without the simulated
// latency and failures, which belong to the submission.
func (p *Provider) Poll(ctx context.Context, job tasks.Job, ref string) (bool, tasks.Output, error) {
	pl, err := newPlan(job)
	if err != nil {
		return false, tasks.Output{}, err
	}
	if !strings.HasPrefix(ref, refPrefix) || ref[len(refPrefix):] != pl.name {
		return false, tasks.Output{}, fmt.Errorf("local provider: ref %q does not match the job: %w", ref, tasks.ErrProvider)
	}
	if err := p.ensure(ctx, pl); err != nil {
		return false, tasks.Output{}, err
	}
	return true, p.output(pl), nil
}

// Cancel is a no-op: Submit finishes before it returns.
func (p *Provider) Cancel(context.Context, tasks.Job, string) error { return nil }

// wait sleeps for the simulated latency, honouring ctx.
func (p *Provider) wait(ctx context.Context, ms int) error {
	if err := ctx.Err(); err != nil {
		return ctxError(err)
	}
	if ms <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctxError(ctx.Err())
	}
}

// ctxError maps a context error to the tasks error the caller expects.
func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("local provider: %w: %w", tasks.ErrTimeout, err)
	}
	return fmt.Errorf("local provider: %w", err)
}

// fails rolls the simulated failure. The edges skip the lock, keeping the
// common no-failure path contention-free.
func (p *Provider) fails(rate float64) bool {
	switch {
	case rate <= 0:
		return false
	case rate >= 1:
		return true
	}
	p.rngMu.Lock()
	defer p.rngMu.Unlock()
	return p.rng.Float64() < rate
}

func (p *Provider) output(pl plan) tasks.Output {
	url := p.baseURL + "/files/" + pl.name
	out := tasks.Output{URLs: []string{url}, EnhancedPrompt: pl.prompt}
	if pl.video {
		out.VideoURL = url
	} else {
		out.ImageURL = url
	}
	return out
}

// ensure makes sure pl's file is on disk: free when it is known to be,
// otherwise rendered once however many callers ask at the same time.
func (p *Provider) ensure(ctx context.Context, pl plan) error {
	p.mu.RLock()
	_, ok := p.known[pl.key]
	p.mu.RUnlock()
	if ok {
		return nil
	}

	p.mu.Lock()
	if _, ok := p.known[pl.key]; ok {
		p.mu.Unlock()
		return nil
	}
	if f, ok := p.inflight[pl.key]; ok {
		p.mu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return ctxError(ctx.Err())
		}
	}
	f := &flight{done: make(chan struct{})}
	p.inflight[pl.key] = f
	p.mu.Unlock()

	f.err = p.materialize(pl)

	p.mu.Lock()
	delete(p.inflight, pl.key)
	if f.err == nil {
		p.known[pl.key] = struct{}{}
	}
	p.mu.Unlock()
	close(f.done)
	return f.err
}

// materialize renders pl's file unless it is already on disk (from an
// earlier run). It writes a temp file and renames it into place, so a
// reader — or another process sharing the directory — never sees a
// partial file.
func (p *Provider) materialize(pl plan) (err error) {
	path := filepath.Join(p.dir, pl.name)
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local provider: stat %s: %w: %w", pl.name, tasks.ErrProvider, err)
	}

	data, err := pl.render()
	if err != nil {
		return fmt.Errorf("local provider: render %s: %w: %w", pl.name, tasks.ErrProvider, err)
	}

	tmp, err := os.CreateTemp(p.dir, ".tmp-"+pl.name+"-*")
	if err != nil {
		return fmt.Errorf("local provider: write %s: %w: %w", pl.name, tasks.ErrProvider, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("local provider: write %s: %w: %w", pl.name, tasks.ErrProvider, err)
	}
	// Sync before rename: after a crash the name must not exist with
	// missing content, since Poll trusts an existing file.
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("local provider: sync %s: %w: %w", pl.name, tasks.ErrProvider, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("local provider: chmod %s: %w: %w", pl.name, tasks.ErrProvider, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("local provider: close %s: %w: %w", pl.name, tasks.ErrProvider, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("local provider: rename %s: %w: %w", pl.name, tasks.ErrProvider, err)
	}
	return nil
}

// forget drops a name from the known set, e.g. after its file vanished,
// so the next request renders it again.
func (p *Provider) forget(name string) {
	var key [keyLen]byte
	if _, err := hex.Decode(key[:], []byte(name[:2*keyLen])); err != nil {
		return
	}
	p.mu.Lock()
	delete(p.known, key)
	p.mu.Unlock()
}

// plan is everything about a job that decides its file.
type plan struct {
	video  bool
	prompt string // normalized; also the EnhancedPrompt
	key    [keyLen]byte
	seed   [sha256.Size]byte // drives the render
	name   string            // hex(key) + extension
	w, h   int
}

// newPlan validates the job and derives its file name and render inputs.
func newPlan(job tasks.Job) (plan, error) {
	pl := plan{prompt: NormalizePrompt(job.Prompt)}
	if pl.prompt == "" {
		return plan{}, fmt.Errorf("local provider: prompt is empty: %w", tasks.ErrInvalidInput)
	}
	// The model the provider runs; the price-list name when unmapped.
	model := job.ProviderModel
	if model == "" {
		model = job.Model
	}

	// Length-prefixed fields, so ("ab","c") and ("a","bc") hash apart. The
	// buffer lives on the stack for usual prompts: a cache hit stays cheap.
	buf := make([]byte, 0, 512)
	field := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	field(renderVersion)
	field(string(job.Type))
	field(model)
	field(pl.prompt)
	var ext string
	switch job.Type {
	case pricing.TypeImage:
		field(job.Size)
		pl.w, pl.h = imageSize(job.Size)
		ext = ".png"
	case pricing.TypeVideo, pricing.TypeDirector:
		buf = binary.AppendVarint(buf, int64(job.Duration))
		field(job.Resolution)
		pl.w, pl.h = videoSize(job.Resolution)
		pl.video = true
		ext = ".gif"
	default:
		return plan{}, fmt.Errorf("local provider: unsupported type %q: %w", job.Type, tasks.ErrInvalidInput)
	}
	pl.seed = sha256.Sum256(buf)
	copy(pl.key[:], pl.seed[:])

	var name [2*keyLen + 4]byte
	hex.Encode(name[:], pl.key[:])
	copy(name[2*keyLen:], ext)
	pl.name = string(name[:])
	return pl, nil
}

func (pl plan) render() ([]byte, error) {
	if pl.video {
		return renderGIF(pl.seed, pl.w, pl.h)
	}
	return renderPNG(pl.seed, pl.w, pl.h)
}

// NormalizePrompt tidies a prompt the way the provider "enhances" it: trims
// it, collapses whitespace runs to one space, upper-cases the first letter
// and ends it with a period unless it already ends with . ! or ?. An empty
// or all-space prompt gives "".
func NormalizePrompt(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 1)
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = b.Len() > 0 // leading space is dropped, inner runs become one
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len() == 0 {
			r = unicode.ToUpper(r)
		}
		b.WriteRune(r)
	}
	out := b.String()
	if out == "" {
		return ""
	}
	if last, _ := utf8.DecodeLastRuneInString(out); last == '.' || last == '!' || last == '?' {
		return out
	}
	b.WriteByte('.')
	return b.String()
}
