package ledger

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/codec"
	"github.com/ledgerd/ledgerd/ledger/eventstore"
)

// priceList is the in-memory price list every call is priced from. It is
// loaded from the model aggregates at start, updated by this instance's
// own changes before they are answered, and by other instances' changes
// as they arrive on the stream.
type priceList struct {
	mu      sync.RWMutex
	models  map[string]pricing.Model
	version map[string]uint64 // model event seq applied, for idempotent re-application
	codec   *codec.Codec[pricing.Event]
}

func newPriceList() *priceList {
	return &priceList{models: map[string]pricing.Model{}, version: map[string]uint64{}, codec: ModelCodec()}
}

func (p *priceList) applyCommit(c eventstore.Commit) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range c.Events {
		if ev.Seq <= p.version[c.Aggregate.ID] {
			continue
		}
		d, err := p.codec.Decode(ev.Type, ev.Version, ev.Data)
		if err != nil {
			return fmt.Errorf("price list: %s seq %d: %w", c.Aggregate, ev.Seq, err)
		}
		if s, ok := d.(pricing.ModelSet); ok {
			p.models[c.Aggregate.ID] = s.Model
		}
		p.version[c.Aggregate.ID] = ev.Seq
	}
	return nil
}

// Model returns a model's current definition.
func (l *Ledger) Model(name string) (pricing.Model, error) {
	l.prices.mu.RLock()
	defer l.prices.mu.RUnlock()
	m, ok := l.prices.models[name]
	if !ok {
		return pricing.Model{}, pricing.ErrUnknownModel
	}
	return m, nil
}

// Models returns the price list, by name.
func (l *Ledger) Models() []pricing.Model {
	l.prices.mu.RLock()
	out := make([]pricing.Model, 0, len(l.prices.models))
	for _, m := range l.prices.models {
		out = append(out, m)
	}
	l.prices.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// TypeLoader reads every aggregate of a type (the JetStream store does).
type TypeLoader interface {
	LoadType(ctx context.Context, typ string) ([]eventstore.Commit, error)
}

// LoadPrices reads the price list from its events.
func (l *Ledger) LoadPrices(ctx context.Context) error {
	tl, ok := l.store.(TypeLoader)
	if !ok {
		return errors.New("ledger: the event store cannot list the price list")
	}
	commits, err := tl.LoadType(ctx, TypeModel)
	if err != nil {
		return err
	}
	for _, c := range commits {
		if err := l.prices.applyCommit(c); err != nil {
			return err
		}
	}
	return nil
}

// SetModel defines or changes a model. The price list on this instance
// shows the change before this returns.
func (l *Ledger) SetModel(ctx context.Context, meta Meta, m pricing.Model) (pricing.Model, error) {
	if !pricing.ValidName(m.Name) {
		return pricing.Model{}, pricing.ErrUnknownModel
	}
	if m.Currency == "" {
		m.Currency = l.cfg.Currency
	}
	var out pricing.Model
	_, err := l.models.Execute(ctx, m.Name, meta, func(e *pricing.Entry) ([]pricing.Event, error) {
		evs, err := e.Set(m)
		if err == nil {
			out, _ = e.Model()
			if len(evs) > 0 {
				out = evs[0].(pricing.ModelSet).Model
			}
		}
		return evs, err
	})
	return out, err
}

// EnsureDefaultPrices defines each default model that has never been
// defined, leaving operators' changes alone. Safe on every start and on
// several instances at once.
func (l *Ledger) EnsureDefaultPrices(ctx context.Context) error {
	meta := Meta{Actor: "system:bootstrap", CausationID: l.ids.New("cmd")}
	for _, m := range pricing.Defaults() {
		if m.Currency != l.cfg.Currency {
			m.Currency = l.cfg.Currency
		}
		_, err := l.models.Execute(ctx, m.Name, meta, func(e *pricing.Entry) ([]pricing.Event, error) {
			if _, defined := e.Model(); defined {
				return nil, nil
			}
			return e.Set(m)
		})
		if err != nil {
			return fmt.Errorf("default price of %s: %w", m.Name, err)
		}
	}
	return nil
}
