package ledger

import (
	"context"
	"fmt"

	"github.com/ledgerd/ledgerd/domain/pricing"
)

// priceList is the price list every call is priced from.
type priceList = catalog[pricing.Event, pricing.Model]

func newPriceList() *priceList {
	return newCatalog("price list", TypeModel, ModelCodec(), func(e pricing.Event) (pricing.Model, bool) {
		s, ok := e.(pricing.ModelSet)
		return s.Model, ok
	})
}

// Model returns a model's current definition.
func (l *Ledger) Model(name string) (pricing.Model, error) {
	m, ok := l.prices.get(name)
	if !ok {
		return pricing.Model{}, pricing.ErrUnknownModel
	}
	return m, nil
}

// Models returns the price list, by name.
func (l *Ledger) Models() []pricing.Model { return l.prices.all() }

// LoadPrices reads the price list from its events.
func (l *Ledger) LoadPrices(ctx context.Context) error { return l.prices.load(ctx, l.store) }

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
