package storetest

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// LostAnswers is a store whose answers are lost on demand, as a stream
// without quorum loses them for a publish it keeps and stores later, but
// on cue: while Lose is set an append is stored and its caller hears
// "unavailable", and so does the load that would have found it. LoseNext
// loses one answer only, that of the next append carrying an event type,
// and the answer of the load of its aggregate that follows it;
// LoseNextAppend loses the append's answer alone.
type LostAnswers struct {
	eventstore.Store
	Lose atomic.Bool

	lost     atomic.Int64
	mu       sync.Mutex
	next     string          // event type whose next append's answer is lost
	andLoad  bool            // and then its aggregate's next load's
	loseLoad *eventstore.Ref // aggregate whose next load's answer is lost
}

// Lost is how many answers were lost so far.
func (s *LostAnswers) Lost() int64 { return s.lost.Load() }

// LoseNext loses the answer of the next append with an event of type typ
// (stored all the same), and of the next load of its aggregate, which
// would have found it: the writer cannot tell that it was stored until it
// loads the aggregate again.
func (s *LostAnswers) LoseNext(typ string) { s.loseNext(typ, true) }

// LoseNextAppend loses the answer of the next append with an event of type
// typ (stored all the same); the load that follows finds it.
func (s *LostAnswers) LoseNextAppend(typ string) { s.loseNext(typ, false) }

func (s *LostAnswers) loseNext(typ string, andLoad bool) {
	s.mu.Lock()
	s.next, s.andLoad = typ, andLoad
	s.mu.Unlock()
}

func (s *LostAnswers) Append(ctx context.Context, a ...eventstore.Append) ([]uint64, error) {
	seqs, err := s.Store.Append(ctx, a...)
	if err == nil && (s.Lose.Load() || s.takeNext(a)) {
		s.lost.Add(1)
		return nil, eventstore.ErrUnavailable
	}
	return seqs, err
}

// takeNext tells whether a carries the event type LoseNext named, and
// forgets the type if it does.
func (s *LostAnswers) takeNext(a []eventstore.Append) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == "" {
		return false
	}
	for _, ap := range a {
		for _, e := range ap.Commit.Events {
			if e.Type == s.next {
				s.next = ""
				if s.andLoad {
					ref := ap.Commit.Aggregate
					s.loseLoad = &ref
				}
				return true
			}
		}
	}
	return false
}

func (s *LostAnswers) Load(ctx context.Context, ref eventstore.Ref, after uint64) ([]eventstore.Commit, error) {
	if s.Lose.Load() || s.takeLoad(ref) {
		return nil, eventstore.ErrUnavailable
	}
	return s.Store.Load(ctx, ref, after)
}

func (s *LostAnswers) takeLoad(ref eventstore.Ref) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loseLoad == nil || *s.loseLoad != ref {
		return false
	}
	s.loseLoad = nil
	s.lost.Add(1)
	return true
}

// LoadType passes through to a store that reads whole aggregate types (the
// ledger's catalogs need it), losing its answers as Load does.
func (s *LostAnswers) LoadType(ctx context.Context, typ string) ([]eventstore.Commit, error) {
	if s.Lose.Load() {
		return nil, eventstore.ErrUnavailable
	}
	return loadType(ctx, s.Store, typ)
}
