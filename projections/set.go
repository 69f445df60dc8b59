package projections

import "context"

// Set runs several projections from one reading of the stream (see
// group); each keeps its own position, so a poison event in one stops
// only that one.
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
	if len(s.runners) > 0 {
		newGroup(s.runners[0].cfg, s.runners).run(ctx)
	}
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
