// Package codec maps domain events to and from their stored form: a stable
// type name, a schema version and JSON data. Renaming a Go type never
// changes what is stored; old versions are upcast when read.
package codec

import (
	"encoding/json"
	"fmt"

	gojson "github.com/goccy/go-json"
)

// Named is what every domain event implements.
type Named interface{ EventName() string }

// Upcaster turns the data of one schema version into the next.
type Upcaster func(json.RawMessage) (json.RawMessage, error)

// Codec knows the events of one aggregate type.
type Codec[E Named] struct {
	current   map[string]int
	decode    map[string]func(json.RawMessage, Unmarshal) (E, error)
	upcasters map[string]map[int]Upcaster // by type, then by from-version
	unmarshal Unmarshal
}

// Unmarshal reads JSON into v, as encoding/json.Unmarshal does.
type Unmarshal func(data []byte, v any) error

// New returns an empty codec.
//
// It decodes with github.com/goccy/go-json: every projection, aggregate
// load and rebuild decodes every event, and that package does it about
// three times faster than encoding/json with the same results (a
// differential fuzz test in package ledger holds it to encoding/json on
// every registered event type). Encoding stays with encoding/json: the
// stored bytes are hashed, and their form must not depend on a library.
func New[E Named]() *Codec[E] {
	return &Codec[E]{
		current:   map[string]int{},
		decode:    map[string]func(json.RawMessage, Unmarshal) (E, error){},
		upcasters: map[string]map[int]Upcaster{},
		unmarshal: gojson.Unmarshal,
	}
}

// WithUnmarshal returns a codec for the same events that decodes with u
// (encoding/json's Unmarshal, for a reference to compare with).
func (c *Codec[E]) WithUnmarshal(u Unmarshal) *Codec[E] {
	cp := *c
	cp.unmarshal = u
	return &cp
}

// Register adds event type T, whose current schema is version. It panics on
// misuse, which is a programming error found at start-up.
func Register[E Named, T Named](c *Codec[E], version int) {
	var zero T
	if _, ok := any(zero).(E); !ok {
		panic(fmt.Sprintf("codec: %T is not an event of this aggregate", zero))
	}
	name := zero.EventName()
	if _, dup := c.current[name]; dup {
		panic("codec: event registered twice: " + name)
	}
	c.current[name] = version
	c.decode[name] = func(raw json.RawMessage, unmarshal Unmarshal) (E, error) {
		var t T
		if err := unmarshal(raw, &t); err != nil {
			var none E
			return none, err
		}
		return any(t).(E), nil
	}
}

// Upcast registers how data of (name, from) becomes version from+1.
func (c *Codec[E]) Upcast(name string, from int, fn Upcaster) {
	if c.upcasters[name] == nil {
		c.upcasters[name] = map[int]Upcaster{}
	}
	c.upcasters[name][from] = fn
}

// Encode returns the stored form of e.
func (c *Codec[E]) Encode(e E) (name string, version int, data json.RawMessage, err error) {
	name = e.EventName()
	version, ok := c.current[name]
	if !ok {
		return "", 0, nil, fmt.Errorf("codec: unregistered event %s", name)
	}
	data, err = json.Marshal(e)
	if err != nil {
		return "", 0, nil, fmt.Errorf("codec: encoding %s: %w", name, err)
	}
	return name, version, data, nil
}

// Decode reads stored data of (name, version) into the current event type.
func (c *Codec[E]) Decode(name string, version int, data json.RawMessage) (E, error) {
	var none E
	dec, ok := c.decode[name]
	if !ok {
		return none, fmt.Errorf("codec: unknown event type %q", name)
	}
	cur := c.current[name]
	if version > cur {
		return none, fmt.Errorf("codec: %s v%d is newer than this build knows (v%d)", name, version, cur)
	}
	for v := version; v < cur; v++ {
		up, ok := c.upcasters[name][v]
		if !ok {
			return none, fmt.Errorf("codec: no upcaster for %s v%d", name, v)
		}
		var err error
		if data, err = up(data); err != nil {
			return none, fmt.Errorf("codec: upcasting %s v%d: %w", name, v, err)
		}
	}
	e, err := dec(data, c.unmarshal)
	if err != nil {
		return none, fmt.Errorf("codec: decoding %s v%d: %w", name, version, err)
	}
	return e, nil
}

// Types lists the registered event names and their current versions.
func (c *Codec[E]) Types() map[string]int {
	out := make(map[string]int, len(c.current))
	for k, v := range c.current {
		out[k] = v
	}
	return out
}
