package projections

import (
	"context"
	"sync"
)

// Set runs several projections side by side; each has its own consumer and
// position, so a poison event in one stops only that one.
type Set struct {
	runners []*Runner
	byName  map[string]*Runner
}

// NewSet returns runners for projs sharing cfg.
func NewSet(cfg RunnerConfig, projs ...Projection) *Set {
	s := &Set{byName: map[string]*Runner{}}
	for _, p := range projs {
		r := NewRunner(cfg, p)
		s.runners = append(s.runners, r)
		s.byName[p.Name()] = r
	}
	return s
}

// Run runs every projection until ctx ends.
func (s *Set) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range s.runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Run(ctx)
		}()
	}
	wg.Wait()
}

// Runner returns the named projection's runner, or nil.
func (s *Set) Runner(name string) *Runner { return s.byName[name] }

// Statuses reports every projection, in a stable order.
func (s *Set) Statuses() []Status {
	out := make([]Status, len(s.runners))
	for i, r := range s.runners {
		out[i] = r.Status()
	}
	return out
}
