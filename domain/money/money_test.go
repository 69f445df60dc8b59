package money

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr error
	}{
		{in: `"0.80"`, want: "0.80"},
		{in: `"12.4"`, want: "12.40"},
		{in: `10`, want: "10.00"},
		{in: `0.1`, want: "0.10"},
		{in: `"-5.25"`, want: "-5.25"},
		{in: `"+5"`, want: "5.00"},
		{in: `"999999999999.99"`, want: "999999999999.99"},
		{in: `"10.000"`, want: "10.00"},
		{in: `"10.001"`, wantErr: ErrTooPrecise},
		{in: `0.005`, wantErr: ErrTooPrecise},
		{in: `"1000000000000"`, wantErr: ErrTooLarge},
		{in: `1e3`, wantErr: ErrInvalid},
		{in: `"NaN"`, wantErr: ErrInvalid},
		{in: `"Infinity"`, wantErr: ErrInvalid},
		{in: `"abc"`, wantErr: ErrInvalid},
		{in: `""`, wantErr: ErrInvalid},
		{in: `"."`, wantErr: ErrInvalid},
		{in: `"1.2.3"`, wantErr: ErrInvalid},
		{in: `"1 0"`, wantErr: ErrInvalid},
		{in: `null`, wantErr: ErrInvalid},
		{in: `true`, wantErr: ErrInvalid},
		{in: `"` + strings.Repeat("9", 10000) + `"`, wantErr: ErrInvalid},
		{in: strings.Repeat("9", 10000), wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 30 {
			name = name[:30]
		}
		t.Run(name, func(t *testing.T) {
			got, err := ParseJSON(json.RawMessage(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseJSON(%s) error = %v, want %v", name, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseJSON(%s) error = %v", name, err)
			}
			if got.String() != tt.want {
				t.Fatalf("ParseJSON(%s) = %s, want %s", name, got, tt.want)
			}
		})
	}
}

func TestAmountJSONRoundTrip(t *testing.T) {
	type doc struct {
		Price Amount `json:"price"`
	}
	b, err := json.Marshal(doc{Price: MustParse("2.5")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"price":"2.50"}`; got != want {
		t.Fatalf("marshal = %s, want %s", got, want)
	}
	var d doc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if !d.Price.Equal(MustParse("2.50")) {
		t.Fatalf("round trip = %s, want 2.50", d.Price)
	}
}

func TestArithmeticIsExact(t *testing.T) {
	// 0.1 + 0.2 is the classic float failure; ten of them must be exactly 1.
	sum := Zero
	for range 10 {
		sum = sum.Add(MustParse("0.10"))
	}
	if !sum.Equal(MustParse("1.00")) {
		t.Fatalf("sum = %s, want 1.00", sum)
	}
	if got := MustParse("25.00").Sub(MustParse("0.80")).String(); got != "24.20" {
		t.Fatalf("25.00 - 0.80 = %s, want 24.20", got)
	}
	if got := MustParse("-3.5").Cents(); got != -350 {
		t.Fatalf("cents = %d, want -350", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0.80", "10", "-1.5", "1e3", "NaN", "999999999999.99", ".5", "5."} {
		f.Add(s)
	}
	for _, s := range []string{"-0", "007.50", "-999999999999.99", "1000000000000", "0.805", "-", "+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The common-form shortcut gives exactly what the general parser
		// gives, down to the decimal's exponent.
		if c, ok := parseCommon(s); ok {
			g, err := parseGeneral(s)
			if err != nil || !g.d.Equal(c.d) || g.d.Exponent() != c.d.Exponent() || g.String() != c.String() {
				t.Fatalf("%q: shortcut %v (exp %d), general %v (exp %d) %v", s, c, c.d.Exponent(), g, g.d.Exponent(), err)
			}
		}
		a, err := Parse(s)
		if err != nil {
			return
		}
		// Anything accepted must survive a round trip through its text
		// unchanged and stay within the documented bounds.
		b, err := Parse(a.String())
		if err != nil || !b.Equal(a) {
			t.Fatalf("round trip of %q: %v %v", s, b, err)
		}
		if a.Abs().Cmp(Amount{d: Max}) > 0 {
			t.Fatalf("%q accepted beyond Max", s)
		}
	})
}
