package ledger

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"github.com/ledgerd/ledgerd/ledger/codec"
)

// decoder is one codec seen through its event names, for the fuzzer.
type decoder struct {
	names      []string
	fast, std  func(name string, data []byte) (any, error)
	sampleData func(f *testing.F) [][]byte
}

func decoderOf[E codec.Named](c *codec.Codec[E], samples []E) decoder {
	ref := c.WithUnmarshal(json.Unmarshal)
	names := make([]string, 0)
	for n := range c.Types() {
		names = append(names, n)
	}
	slices.Sort(names)
	return decoder{
		names: names,
		fast:  func(n string, d []byte) (any, error) { return c.Decode(n, c.Types()[n], d) },
		std:   func(n string, d []byte) (any, error) { return ref.Decode(n, c.Types()[n], d) },
		sampleData: func(f *testing.F) [][]byte {
			var out [][]byte
			for _, s := range samples {
				_, _, data, err := c.Encode(s)
				if err != nil {
					f.Fatal(err)
				}
				out = append(out, data)
			}
			return out
		},
	}
}

// FuzzEventDecodingMatchesEncodingJSON holds the codecs' JSON library
// (goccy/go-json, chosen for speed) to encoding/json: for every event type
// of every aggregate, any data either fails to decode in both or decodes
// to the same value. The seeds are every sample event as stored.
func FuzzEventDecodingMatchesEncodingJSON(f *testing.F) {
	decoders := []decoder{
		decoderOf(AccountCodec(), accountSamples), decoderOf(UserCodec(), userSamples),
		decoderOf(ModelCodec(), modelSamples), decoderOf(PlanCodec(), planSamples),
	}
	for i, d := range decoders {
		for _, data := range d.sampleData(f) {
			for j := range d.names {
				f.Add(uint8(i), uint8(j), data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, which, typ uint8, data []byte) {
		d := decoders[int(which)%len(decoders)]
		name := d.names[int(typ)%len(d.names)]
		got, gotErr := d.fast(name, bytes.Clone(data))
		want, wantErr := d.std(name, data)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("%s: goccy error %v, encoding/json error %v", name, gotErr, wantErr)
		}
		if gotErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %#v\nwant %#v", name, got, want)
		}
	})
}
