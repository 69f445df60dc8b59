package ledger

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// catalog is an in-memory set of definitions (the price list, the plans)
// that every call reads: loaded from its aggregates at start, updated by
// this instance's own changes before they are answered, and by other
// instances' changes as they arrive on the stream.
type catalog[E codec.Named, T any] struct {
	what    string
	typ     string
	mu      sync.RWMutex
	items   map[string]T
	version map[string]uint64 // event seq applied, for idempotent re-application
	codec   *codec.Codec[E]
	// definition picks the definition an event sets, if it sets one.
	definition func(E) (T, bool)
}

func newCatalog[E codec.Named, T any](what, typ string, c *codec.Codec[E], definition func(E) (T, bool)) *catalog[E, T] {
	return &catalog[E, T]{what: what, typ: typ, items: map[string]T{}, version: map[string]uint64{}, codec: c, definition: definition}
}

func (k *catalog[E, T]) applyCommit(c eventstore.Commit) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ev := range c.Events {
		if ev.Seq <= k.version[c.Aggregate.ID] {
			continue
		}
		d, err := k.codec.Decode(ev.Type, ev.Version, ev.Data)
		if err != nil {
			return fmt.Errorf("%s: %s seq %d: %w", k.what, c.Aggregate, ev.Seq, err)
		}
		if v, ok := k.definition(d); ok {
			k.items[c.Aggregate.ID] = v
		}
		k.version[c.Aggregate.ID] = ev.Seq
	}
	return nil
}

func (k *catalog[E, T]) get(name string) (T, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	v, ok := k.items[name]
	return v, ok
}

// all returns every definition, by name.
func (k *catalog[E, T]) all() []T {
	k.mu.RLock()
	names := make([]string, 0, len(k.items))
	for n := range k.items {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]T, len(names))
	for i, n := range names {
		out[i] = k.items[n]
	}
	k.mu.RUnlock()
	return out
}

// TypeLoader reads every aggregate of a type (the JetStream store does).
type TypeLoader interface {
	LoadType(ctx context.Context, typ string) ([]eventstore.Commit, error)
}

// load reads the catalog from its events.
func (k *catalog[E, T]) load(ctx context.Context, store eventstore.Store) error {
	tl, ok := store.(TypeLoader)
	if !ok {
		return errors.New("ledger: the event store cannot list the " + k.what)
	}
	commits, err := tl.LoadType(ctx, k.typ)
	if err != nil {
		return err
	}
	for _, c := range commits {
		if err := k.applyCommit(c); err != nil {
			return err
		}
	}
	return nil
}
