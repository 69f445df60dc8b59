package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"reflect"
	"sort"
	"strings"

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
				verr.Add(name, "unknown field")
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
			verr.Add(path+k, "unknown field")
			continue
		}
		unknownFields(obj[k], ft, path+k+".", verr)
	}
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
