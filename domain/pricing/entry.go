package pricing

import "github.com/ledgerd/ledgerd/domain/money"

// Entry is the price-list aggregate for one model: its history of
// definitions, one event per change.
type Entry struct {
	name    string
	model   Model
	defined bool
	version uint64
}

// NewEntry returns the empty aggregate for a model name.
func NewEntry(name string) *Entry { return &Entry{name: name} }

// Model returns the current definition.
func (e *Entry) Model() (Model, bool) { return e.model, e.defined }

// Set decides a new definition. A definition equal to the current one
// records nothing.
func (e *Entry) Set(m Model) ([]Event, error) {
	m.Name = e.name
	if err := m.Check(); err != nil {
		return nil, err
	}
	if e.defined && same(e.model, m) {
		return nil, nil
	}
	ev := ModelSet{Model: m}
	if e.defined {
		prev := e.model.Price
		ev.PreviousPrice = &prev
	}
	return []Event{ev}, nil
}

func same(a, b Model) bool {
	if a.Type != b.Type || !a.Price.Equal(b.Price) || a.Currency != b.Currency || a.Provider != b.Provider || a.ProviderModel != b.ProviderModel {
		return false
	}
	oa, ob := a.Options, b.Options
	return oa.TimeoutMS == ob.TimeoutMS && oa.Retries == ob.Retries && oa.LatencyMS == ob.LatencyMS && oa.FailureRate == ob.FailureRate &&
		eq(oa.Sizes, ob.Sizes) && eq(oa.Resolutions, ob.Resolutions) && eq(oa.Passthrough, ob.Passthrough) && eq(oa.Durations, ob.Durations)
}

func eq[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Apply folds an event.
func (e *Entry) Apply(ev Event) {
	e.version++
	if s, ok := ev.(ModelSet); ok {
		e.model, e.defined = s.Model, true
	}
}

// Event is a fact about a price-list entry.
type Event interface{ EventName() string }

// ModelSet defines or redefines a model. A new price applies to calls
// accepted after it; every call records the price it used.
type ModelSet struct {
	Model         Model         `json:"model"`
	PreviousPrice *money.Amount `json:"previous_price,omitempty"`
}

const EventModelSet = "model.set"

func (ModelSet) EventName() string { return EventModelSet }
