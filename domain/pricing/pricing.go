// Package pricing holds the price list: what each model costs, what kind of
// generation it is, and which provider runs it with which options.
package pricing

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// Type is the kind of generation, which decides the scope a key needs.
type Type string

const (
	TypeImage    Type = "image"
	TypeVideo    Type = "video"
	TypeDirector Type = "director"
)

// ParseType accepts a known type.
func ParseType(s string) (Type, bool) {
	switch t := Type(s); t {
	case TypeImage, TypeVideo, TypeDirector:
		return t, true
	}
	return "", false
}

// Scope is the API-key scope that calling a model of this type needs.
func (t Type) Scope() string { return string(t) + ":generate" }

// Options configure how a provider runs a model. Zero values mean "no
// constraint" or "provider default".
type Options struct {
	TimeoutMS   int      `json:"timeout_ms,omitempty"`
	Retries     int      `json:"retries,omitempty"`
	Sizes       []string `json:"sizes,omitempty"`
	Durations   []int    `json:"durations,omitempty"`
	Resolutions []string `json:"resolutions,omitempty"`
	// Passthrough names input fields sent to the provider as given.
	Passthrough []string `json:"passthrough,omitempty"`
	// The local provider's simulation knobs.
	LatencyMS   int     `json:"latency_ms,omitempty"`
	FailureRate float64 `json:"failure_rate,omitempty"`
}

// Model is one entry of the price list.
type Model struct {
	Name          string         `json:"model"`
	Type          Type           `json:"type"`
	Price         money.Amount   `json:"price"`
	Currency      money.Currency `json:"currency"`
	Provider      string         `json:"provider"`
	ProviderModel string         `json:"provider_model,omitempty"`
	Options       Options        `json:"options"`
}

// Providers ledgerd knows how to drive.
var Providers = []string{"local", "fal", "openai", "replicate"}

// ErrUnknownModel: no such model on the price list.
var ErrUnknownModel = errors.New("unknown model")

// ValidName reports whether s can name a model (it becomes part of a
// subject and a URL path).
func ValidName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Check validates a model definition, naming every bad field.
func (m Model) Check() error {
	var verr validation.Error
	if !ValidName(m.Name) {
		verr.Add("model", "must be 1-100 characters of a-z, 0-9, - and _")
	}
	if _, ok := ParseType(string(m.Type)); !ok {
		verr.Add("type", "must be image, video or director")
	}
	if !m.Price.IsPositive() {
		verr.Add("price", "must be greater than 0.00")
	}
	if !slices.Contains(Providers, m.Provider) {
		verr.Add("provider", "must be one of "+strings.Join(Providers, ", "))
	}
	o := m.Options
	if o.TimeoutMS < 0 || o.TimeoutMS > 3_600_000 {
		verr.Add("options.timeout_ms", "must be from 0 to 3600000")
	}
	if o.Retries < 0 || o.Retries > 10 {
		verr.Add("options.retries", "must be from 0 to 10")
	}
	if o.LatencyMS < 0 || o.LatencyMS > 600_000 {
		verr.Add("options.latency_ms", "must be from 0 to 600000")
	}
	if o.FailureRate < 0 || o.FailureRate > 1 {
		verr.Add("options.failure_rate", "must be from 0 to 1")
	}
	for i, d := range o.Durations {
		if d <= 0 || d > 600 {
			verr.Add(fmt.Sprintf("options.durations[%d]", i), "must be from 1 to 600 seconds")
		}
	}
	return verr.Err()
}

// CheckInput validates a call's size, duration and resolution against the
// model's allowed values (an empty list allows any).
func (m Model) CheckInput(size string, duration int, resolution string) error {
	var verr validation.Error
	if size != "" && len(m.Options.Sizes) > 0 && !slices.Contains(m.Options.Sizes, size) {
		verr.Add("size", "must be one of "+strings.Join(m.Options.Sizes, ", "))
	}
	if duration != 0 && len(m.Options.Durations) > 0 && !slices.Contains(m.Options.Durations, duration) {
		verr.Add("duration", fmt.Sprintf("must be one of %v", m.Options.Durations))
	}
	if resolution != "" && len(m.Options.Resolutions) > 0 && !slices.Contains(m.Options.Resolutions, resolution) {
		verr.Add("resolution", "must be one of "+strings.Join(m.Options.Resolutions, ", "))
	}
	return verr.Err()
}

// Defaults is the price list a fresh install carries (the vendor's public
// list), every model on the local provider until an operator maps it.
func Defaults() []Model {
	img := Options{Sizes: []string{"512x512", "768x768", "1024x1024", "1024x1792", "1792x1024"}}
	vid := Options{Durations: []int{4, 5, 8, 10}, Resolutions: []string{"480p", "720p", "1080p"}}
	dir := Options{Durations: []int{5, 10}, Resolutions: []string{"720p", "1080p"}}
	m := func(name string, t Type, price string, o Options) Model {
		return Model{Name: name, Type: t, Price: money.MustParse(price), Currency: money.USD, Provider: "local", ProviderModel: name, Options: o}
	}
	return []Model{
		m("nano-banana-2", TypeImage, "0.80", img),
		m("recraft-v3", TypeImage, "1.00", img),
		m("dall-e-3", TypeImage, "1.50", img),
		m("google-veo-3", TypeVideo, "2.50", vid),
		m("kling-3", TypeVideo, "2.50", vid),
		m("seedance-2", TypeVideo, "2.50", vid),
		m("sora-2", TypeVideo, "2.50", vid),
		m("dop-lite", TypeDirector, "2.50", dir),
		m("dop-preview", TypeDirector, "3.00", dir),
		m("dop-turbo", TypeDirector, "3.50", dir),
	}
}
