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
// validation error naming it with its path. Syntax errors are left to the
// decoder, which reports them as invalid_json.
func duplicateKeys(body []byte) error {
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
