package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/validation"
)

var (
	errInvalidJSON = errStatus(http.StatusBadRequest, "invalid_json", "The request body is not valid JSON")
	errBadContent  = errStatus(http.StatusBadRequest, "bad_request", "Content-Type must be application/json")
	errEmptyBody   = errStatus(http.StatusBadRequest, "invalid_json", "The request body is empty; a JSON object is required")
)

// decode reads the body as one JSON object into v. Unknown fields and
// wrong types are validation errors naming the field; anything that is not
// a single JSON object is invalid_json; a body over the limit is 413.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return errBadContent
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errTooLarge
		}
		return errStatus(http.StatusBadRequest, "bad_request", "The request body could not be read")
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return errEmptyBody
	}
	if body[0] != '{' {
		return errStatus(http.StatusBadRequest, "invalid_json", "The request body must be a JSON object")
	}
	// encoding/json keeps the last of duplicate keys (matched without
	// regard to case). In a request that moves money that is an
	// ambiguity a proxy, a log or a signature may read the other way, so
	// it is refused before anything reads the values.
	if !json.Valid(body) {
		// Checked first so that a broken body is always invalid_json,
		// never a complaint about a key found before the break.
		return errInvalidJSON
	}
	if err := duplicateKeys(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			field := typeErr.Field
			if field == "" {
				field = "body"
			}
			return validation.Field(field, "must be a "+jsonType(typeErr.Type.Kind().String()))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			var verr validation.Error
			unknownFields(body, reflect.TypeOf(v), "", &verr)
			if len(verr.Fields) == 0 {
				name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
				verr.Add(fieldPath("", name), "unknown field")
			}
			return &verr
		}
		var ae *apiError
		if errors.As(err, &ae) {
			return ae
		}
		var verr *validation.Error
		if errors.As(err, &verr) {
			return verr
		}
		return errInvalidJSON
	}
	if dec.More() {
		return errStatus(http.StatusBadRequest, "invalid_json", "The request body holds more than one JSON value")
	}
	return nil
}

// unknownFields names every key of the JSON object that the target type
// has no field for, with its dotted path ("monthly_quota.minutes").
func unknownFields(raw []byte, t reflect.Type, path string, verr *validation.Error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[strings.ToLower(name)] = f.Type
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ft, ok := fields[strings.ToLower(k)]
		if !ok {
			verr.Add(fieldPath(path, k), "unknown field")
			continue
		}
		unknownFields(obj[k], ft, path+k+".", verr)
	}
}

// fieldPath names key k under path for an error detail; the empty key is
// written as JSON spells it, so a detail never names no field.
func fieldPath(path, k string) string {
	if k == "" {
		k = `""`
	}
	return path + k
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	default:
		return "number"
	}
}

// amount parses a money field given as a decimal string or a JSON number.
func amount(field string, raw json.RawMessage, verr *validation.Error) money.Amount {
	if len(raw) == 0 {
		verr.Add(field, "is required")
		return money.Zero
	}
	a, err := money.ParseJSON(raw)
	switch {
	case errors.Is(err, money.ErrTooPrecise):
		verr.Add(field, "must have at most 2 decimal places")
	case errors.Is(err, money.ErrTooLarge):
		verr.Add(field, "must be at most "+money.Max.String())
	case err != nil:
		verr.Add(field, `must be a decimal amount such as "10.00"`)
	}
	return a
}

// required records a missing string field.
func required(field, v string, verr *validation.Error) {
	if strings.TrimSpace(v) == "" {
		verr.Add(field, "is required")
	}
}

// duplicateKeys reports the first object key given twice in one object
// (compared the way encoding/json matches fields: case-folded) as a
// validation error naming it with its path. body must be valid JSON
// (decode checks first), so the scan trusts its shape: it reads the bytes
// once and allocates only the keys it compares, where a token decoder
// boxed every token (this runs on every request that moves money).
func duplicateKeys(body []byte) error {
	type frame struct {
		object    bool
		path      string
		keys      []string // folded; objects are small, a scan beats a map
		name      string   // the key whose value comes next
		index     int      // the next array element
		expectKey bool
	}
	var stack []frame
	// child names the value about to start inside the innermost frame.
	child := func() string {
		if len(stack) == 0 {
			return ""
		}
		f := &stack[len(stack)-1]
		if f.object {
			return f.path + f.name
		}
		p := f.path + "[" + strconv.Itoa(f.index) + "]"
		f.index++
		return p
	}
	for i := 0; i < len(body); {
		switch c := body[i]; c {
		case ' ', '\t', '\n', '\r', ':':
			i++
		case ',':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].expectKey = true
			}
			i++
		case '{', '[':
			path := child()
			if path != "" && c == '{' {
				path += "."
			}
			stack = append(stack, frame{object: c == '{', path: path, expectKey: c == '{'})
			i++
		case '}', ']':
			stack = stack[:len(stack)-1]
			i++
		case '"':
			end, plain := stringEnd(body, i)
			if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expectKey {
				top := &stack[n-1]
				k := string(body[i+1 : end-1])
				if !plain {
					// Escapes, and invalid UTF-8 (which the decoder reads
					// as U+FFFD), are read as encoding/json reads them.
					if json.Unmarshal(body[i:end], &k) != nil {
						return nil // not valid after all: the decoder says so
					}
				}
				folded := foldKey(k)
				if slices.Contains(top.keys, folded) {
					return validation.Field(fieldPath(top.path, k), "is given more than once")
				}
				top.keys = append(top.keys, folded)
				top.name, top.expectKey = k, false
			} else {
				child()
			}
			i = end
		default: // a number, true, false or null
			child()
			for i < len(body) && !strings.ContainsRune(",]} \t\n\r", rune(body[i])) {
				i++
			}
		}
	}
	return nil
}

// stringEnd returns the index just past the JSON string starting at
// body[i] (a quote), and whether the string is plain ASCII without
// escapes, its bytes being its value.
func stringEnd(body []byte, i int) (end int, plain bool) {
	plain = true
	for j := i + 1; j < len(body); j++ {
		switch b := body[j]; {
		case b == '\\':
			plain = false
			j++
		case b == '"':
			return j + 1, plain
		case b >= utf8.RuneSelf:
			plain = false
		}
	}
	return len(body), plain
}

// foldKey is a key's case-folded form: each rune replaced by the smallest
// rune of its Unicode simple-fold orbit, so "Amount", "AMOUNT" and
// "amount" (and the Kelvin sign K and k) are one key, as encoding/json
// matches them.
func foldKey(k string) string {
	var b strings.Builder
	b.Grow(len(k))
	for _, r := range k {
		min := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < min {
				min = f
			}
		}
		b.WriteRune(min)
	}
	return b.String()
}

// checkText records a short text field that is stored (in events and read
// models) and so must be plain: see validation.TextProblem.
func checkText(field, v string, maxRunes int, verr *validation.Error) {
	if v == "" {
		return
	}
	if utf8.RuneCountInString(v) > maxRunes {
		verr.Add(field, "must be at most "+strconv.Itoa(maxRunes)+" characters")
		return
	}
	if p := validation.TextProblem(v); p != "" {
		verr.Add(field, p)
	}
}

// Bounds on generateTask's passthrough input, which is stored as jsonb in
// the tasks read model: Postgres refuses NUL in jsonb strings and keys,
// numbers beyond its numeric range, and very deep nesting, and a refusal
// there would stop the projection for every account, not fail one call.
const (
	maxPassthroughDepth  = 8
	maxPassthroughNumber = 32 // characters of a number's text
)

// checkPassthrough records what of a passthrough value Postgres or a
// provider could not take.
func checkPassthrough(path string, v any, depth int, verr *validation.Error) {
	if depth > maxPassthroughDepth {
		verr.Add(path, "is nested too deeply (at most 8 levels)")
		return
	}
	switch t := v.(type) {
	case string:
		if strings.ContainsRune(t, 0) {
			verr.Add(path, "must not contain NUL characters")
		}
	case json.Number:
		if f, err := strconv.ParseFloat(string(t), 64); len(t) > maxPassthroughNumber || err != nil || math.IsInf(f, 0) {
			verr.Add(path, "must be a number of at most 32 characters within the range of a float64")
		}
	case map[string]any:
		for k, e := range t {
			if strings.ContainsRune(k, 0) {
				verr.Add(path, "must not have keys with NUL characters")
				continue
			}
			checkPassthrough(path+"."+k, e, depth+1, verr)
		}
	case []any:
		for i, e := range t {
			checkPassthrough(path+"["+strconv.Itoa(i)+"]", e, depth+1, verr)
		}
	}
}
