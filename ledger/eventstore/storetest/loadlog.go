package storetest

import (
	"context"
	"errors"
	"sync"

	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// LoadLog is a store that records, for each load of an aggregate of one
// type, the stream position it read after.
type LoadLog struct {
	eventstore.Store
	Type string

	mu     sync.Mutex
	afters []uint64
}

// Afters are the positions loads read after, in order.
func (s *LoadLog) Afters() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.afters...)
}

func (s *LoadLog) Load(ctx context.Context, ref eventstore.Ref, after uint64) ([]eventstore.Commit, error) {
	if ref.Type == s.Type {
		s.mu.Lock()
		s.afters = append(s.afters, after)
		s.mu.Unlock()
	}
	return s.Store.Load(ctx, ref, after)
}

// LoadType passes through to a store that reads whole aggregate types.
func (s *LoadLog) LoadType(ctx context.Context, typ string) ([]eventstore.Commit, error) {
	return loadType(ctx, s.Store, typ)
}

func loadType(ctx context.Context, s eventstore.Store, typ string) ([]eventstore.Commit, error) {
	tl, ok := s.(interface {
		LoadType(ctx context.Context, typ string) ([]eventstore.Commit, error)
	})
	if !ok {
		return nil, errors.New("storetest: the wrapped store cannot load by type")
	}
	return tl.LoadType(ctx, typ)
}
