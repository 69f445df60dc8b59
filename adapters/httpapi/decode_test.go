package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	"github.com/ledgerd/ledgerd/domain/validation"
)

func TestDecodeRefusesAmbiguousAndBrokenBodies(t *testing.T) {
	topUp := bodyRoute{method: "POST", new: func() body { return &topUpBody{} }}
	key := bodyRoute{method: "POST", new: func() body { return &createKeyBody{} }}
	task := bodyRoute{method: "POST", new: func() body { return &taskBody{} }}
	plans := bodyRoute{method: "PUT", new: func() body { return &planBody{} }}
	tests := []struct {
		name        string
		route       bodyRoute
		contentType string
		body        string
		status      int
		field       string // for 422
	}{
		{"duplicate key", topUp, "application/json", `{"amount":"10.00","amount":"1000.00","reference":"r"}`, 422, "amount"},
		{"duplicate key in another case", topUp, "application/json", `{"amount":"10.00","AMOUNT":"1000.00","reference":"r"}`, 422, "AMOUNT"},
		// encoding/json matches the Kelvin sign to k: max_\u212aeys sets max_keys.
		{"duplicate key by the Kelvin sign", plans, "application/json", `{"api_access":true,"max_keys":1,"max_\u212aeys":1000}`, 422, "max_\u212aeys"},
		{"duplicate nested key", key, "application/json", `{"name":"a","monthly_quota":{"spend":"1.00","Spend":"9.00"}}`, 422, "monthly_quota.Spend"},
		{"duplicate key deep in passthrough input", task, "application/json", `{"input":{"prompt":"x","style":[{"a":1,"a":2}]}}`, 422, "input.style[0].a"},
		{"same key in sibling objects", task, "application/json", `{"input":{"prompt":"x","a":{"k":1},"b":{"k":2}}}`, 0, ""},
		{"duplicate then broken", topUp, "application/json", `{"amount":"1","amount":"2"`, 400, ""},
		{"trailing garbage", topUp, "application/json", `{"amount":"10.00","reference":"r"} x`, 400, ""},
		{"two objects", topUp, "application/json", `{"amount":"10.00","reference":"r"}{}`, 400, ""},
		{"NaN number", topUp, "application/json", `{"amount":NaN,"reference":"r"}`, 400, ""},
		{"wrong content type", topUp, "text/plain", `{"amount":"10.00","reference":"r"}`, 400, ""},
		{"form content type", topUp, "application/x-www-form-urlencoded", `amount=10.00&reference=r`, 400, ""},
		{"no content type", topUp, "", `{"amount":"10.00","reference":"r"}`, 0, ""},
		{"json with charset", topUp, "application/json; charset=utf-8", `{"amount":"10.00","reference":"r"}`, 0, ""},
		{"vendor json type", topUp, "application/vnd.api+json", `{"amount":"10.00","reference":"r"}`, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeFuzzed(tt.route, tt.contentType, []byte(tt.body))
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("got %v, want accepted", err)
				}
				return
			}
			ae, _ := toAPIError(err)
			if err == nil || ae.Status != tt.status {
				t.Fatalf("got %v, want %d", err, tt.status)
			}
			if tt.status == http.StatusUnprocessableEntity && (len(ae.Details) != 1 || ae.Details[0].Field != tt.field) {
				t.Fatalf("got details %+v, want one for %s", ae.Details, tt.field)
			}
		})
	}
}

// duplicateKeysByTokens is the first duplicateKeys, on encoding/json's
// token decoder: slower, plainly right, and the reference the byte scan is
// held to.
func duplicateKeysByTokens(body []byte) error {
	type frame struct {
		object bool
		path   string
		keys   map[string]struct{}
		index  int  // next array element
		key    bool // the next string token of an object is a key
		name   string
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []*frame
	// child names the value about to start inside the innermost frame.
	child := func() string {
		if len(stack) == 0 {
			return ""
		}
		f := stack[len(stack)-1]
		if f.object {
			return f.path + f.name
		}
		p := f.path + "[" + strconv.Itoa(f.index) + "]"
		f.index++
		return p
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // end of input, or a syntax error the decoder reports
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if k, isKey := tok.(string); isKey && top != nil && top.object && top.key {
			if top.keys == nil {
				top.keys = map[string]struct{}{}
			}
			folded := foldKey(k)
			if _, dup := top.keys[folded]; dup {
				return validation.Field(fieldPath(top.path, k), "is given more than once")
			}
			top.keys[folded] = struct{}{}
			top.name, top.key = k, false
			continue
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				path := child()
				if path != "" {
					if t == '{' {
						path += "."
					}
				}
				stack = append(stack, &frame{object: t == '{', path: path, key: t == '{'})
				continue
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
		default:
			child()
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].key = true
		}
	}
}

// FuzzDuplicateKeysMatchesTokenScan holds the byte scan to the token
// decoder's answer on every valid JSON body: the same verdict, naming the
// same field.
func FuzzDuplicateKeysMatchesTokenScan(f *testing.F) {
	for _, seed := range []string{
		`{"amount":"10.00","AMOUNT":"1000.00"}`,
		`{"api_access":true,"max_keys":1,"max_\u212aeys":1000}`,
		`{"name":"a","monthly_quota":{"spend":"1.00","Spend":"9.00"}}`,
		`{"input":{"prompt":"x","style":[{"a":1,"a":2}]}}`,
		`{"input":{"prompt":"x","a":{"k":1},"b":{"k":2}}}`,
		`{"a":[1,[2,{"b":true,"c":null}],{"d":-1.5e3,"D":"x"}]}`,
		`{"\"q\"":1,"\u0022q\u0022":2}`,
		`{"":1,"":2}`,
		`[{"a":1},{"a":1}]`,
		`{"a\\":{"x":[{},{"y":1,"Y":2}]}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		got, want := duplicateKeys(body), duplicateKeysByTokens(body)
		if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
			t.Fatalf("%q: byte scan %v, token scan %v", body, got, want)
		}
	})
}
