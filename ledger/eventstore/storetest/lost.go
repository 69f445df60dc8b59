package storetest

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// LostAnswers is a store whose answers are lost on demand: while Lose is
// set an append is stored but its caller hears "unavailable", and so does
// the load that would have found it. It is what a stream without quorum
// does to a publish it keeps and stores later, on cue.
type LostAnswers struct {
	eventstore.Store
	Lose atomic.Bool
}

func (s *LostAnswers) Append(ctx context.Context, a ...eventstore.Append) ([]uint64, error) {
	seqs, err := s.Store.Append(ctx, a...)
	if err == nil && s.Lose.Load() {
		return nil, eventstore.ErrUnavailable
	}
	return seqs, err
}

func (s *LostAnswers) Load(ctx context.Context, ref eventstore.Ref, after uint64) ([]eventstore.Commit, error) {
	if s.Lose.Load() {
		return nil, eventstore.ErrUnavailable
	}
	return s.Store.Load(ctx, ref, after)
}

// LoadType passes through to a store that reads whole aggregate types (the
// ledger's catalogs need it), losing its answers as Load does.
func (s *LostAnswers) LoadType(ctx context.Context, typ string) ([]eventstore.Commit, error) {
	tl, ok := s.Store.(interface {
		LoadType(ctx context.Context, typ string) ([]eventstore.Commit, error)
	})
	if !ok {
		return nil, errors.New("storetest: the wrapped store cannot load by type")
	}
	if s.Lose.Load() {
		return nil, eventstore.ErrUnavailable
	}
	return tl.LoadType(ctx, typ)
}
