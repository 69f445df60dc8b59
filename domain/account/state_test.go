package account

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// sameState fails unless a and b hold the same state: amounts and times
// compared by value, an empty map or slice equal to a nil one.
func sameState(t *testing.T, a, b *Account) {
	t.Helper()
	if path := differs(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), "Account"); path != "" {
		t.Fatalf("states differ at %s:\n%+v\n%+v", path, a, b)
	}
}

// differs names the first place where a and b (addressable values of one
// type) differ, or returns "".
func differs(a, b reflect.Value, path string) string {
	switch a.Type() {
	case amountType, timeType:
		if !a.MethodByName("Equal").Call([]reflect.Value{b})[0].Bool() {
			return path
		}
		return ""
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return path
			}
			return ""
		}
		return differs(addressable(a.Elem()), addressable(b.Elem()), "*"+path)
	case reflect.Map:
		if a.Len() != b.Len() {
			return path + " (size)"
		}
		for _, k := range a.MapKeys() {
			if !b.MapIndex(k).IsValid() {
				return path + "[" + k.String() + "] (missing)"
			}
			if p := differs(addressable(a.MapIndex(k)), addressable(b.MapIndex(k)), path+"["+k.String()+"]"); p != "" {
				return p
			}
		}
	case reflect.Slice, reflect.Array:
		if a.Len() != b.Len() {
			return path + " (length)"
		}
		for i := range a.Len() {
			if p := differs(addressable(a.Index(i)), addressable(b.Index(i)), path+"[i]"); p != "" {
				return p
			}
		}
	case reflect.Struct:
		for i := range a.NumField() {
			if p := differs(field(a, i), field(b, i), path+"."+a.Type().Field(i).Name); p != "" {
				return p
			}
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			return path
		}
	}
	return ""
}

// field is v's field i, readable even when unexported (v is addressable).
func field(v reflect.Value, i int) reflect.Value {
	f := v.Field(i)
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
}

// addressable is v, or a copy of it that can be addressed.
func addressable(v reflect.Value) reflect.Value {
	if v.CanAddr() {
		return v
	}
	c := reflect.New(v.Type()).Elem()
	c.Set(v)
	return c
}

// roundTrip encodes a's state and decodes it again, failing on any error.
func roundTrip(t *testing.T, a *Account) *Account {
	t.Helper()
	b, err := a.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalState(a.id, b)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, a, back)
	for k, h := range back.openKeys {
		if back.holds[h.TaskID] != h {
			t.Fatalf("decoded open key %q does not name the decoded hold", k)
		}
	}
	return back
}

func TestStateRoundTrip(t *testing.T) {
	a := rich(t)
	back := roundTrip(t, a)
	// The decoded account decides as the original does.
	for _, acc := range []*Account{a, back} {
		evs, err := acc.CompleteTask("gen_xx", "inst_a", TaskOutput{ImageURL: "v"})
		if err != nil || len(evs) == 0 {
			t.Fatalf("complete on %p: %v %v", acc, evs, err)
		}
		for _, e := range evs {
			acc.Apply(e)
		}
	}
	sameState(t, a, back)
	// A different state is told apart (the check can fail).
	if path := differs(reflect.ValueOf(New(accID)).Elem(), reflect.ValueOf(a).Elem(), "Account"); path == "" {
		t.Fatal("an empty account compares equal to a used one")
	}
}

// Every field of Account is in the snapshot: a field added to the
// aggregate without a place in stateJSON would be lost at every restart.
func TestStateCoversEveryField(t *testing.T) {
	var fields []string
	for f := range reflect.TypeFor[Account]().Fields() {
		fields = append(fields, f.Name)
	}
	known := []string{"id", "opened", "email", "ownerUserID", "plan", "status", "currency", "available", "held",
		"credits", "heldCredits", "grants", "sub", "receivable", "topUps", "keys", "keyOrder", "holds", "idem",
		"idemOrder", "openKeys", "usage", "alerts", "version"}
	if !slices.Equal(fields, known) {
		t.Fatalf("Account has fields %v; the snapshot (stateJSON, and this list) knows %v: add the new ones and bump stateVersion", fields, known)
	}
	if n := reflect.TypeFor[stateJSON]().NumField(); n != len(known)+1 {
		t.Fatalf("stateJSON has %d fields, want one per Account field and its version", n)
	}
}

func TestUnmarshalStateRefuses(t *testing.T) {
	good, err := rich(t).MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		id   string
		data string
	}{
		"another version":      {accID, strings.Replace(string(good), `"v":1`, `"v":2`, 1)},
		"another account":      {"acc_2", string(good)},
		"not JSON":             {accID, "{"},
		"open key, no hold":    {accID, strings.Replace(string(good), `"open_keys":{"idem-2":"gen_xx"}`, `"open_keys":{"idem-2":"gen_zz"}`, 1)},
		"a hold with no value": {accID, strings.Replace(string(good), `"holds":{`, `"holds":{"gen_null":null,`, 1)},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.data == string(good) && tc.id == accID {
				t.Fatal("the case changes nothing")
			}
			if _, err := UnmarshalState(tc.id, []byte(tc.data)); err == nil {
				t.Fatal("decoded")
			}
		})
	}
}
