package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"hongbao/internal/money"
)

// decode reads a request body strictly into v (a pointer to a struct):
// Content-Type application/json, valid UTF-8, exactly one JSON object,
// field names exactly as documented (case counts), each at most once, no
// unknown field. Its errors say what is wrong in the client's terms.
func decode(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return bad("bad_json", "request body is empty: send a JSON object")
	}
	return decodeBytes(body, v)
}

// decodeEmpty accepts no body, or the empty object {}: for requests whose
// every input is in the path and the token (grab, join).
func decodeEmpty(r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var none struct{}
	return decodeBytes(body, &none)
}

func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)}
		}
		return nil, bad("bad_json", "request body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return body, nil
	}
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, &apiError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type %q: JSON is UTF-8 (charset=utf-8 or none)", ct)}
	}
	if err != nil || mt != "application/json" {
		return nil, &apiError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type %q: send application/json", ct)}
	}
	if !utf8.Valid(body) {
		return nil, bad("bad_json", "request body is not valid UTF-8")
	}
	return body, nil
}

func decodeBytes(body []byte, v any) error {
	fields := jsonFields(v)
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return bad("bad_json", "request body must be one JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return bad("bad_json", "request body is not valid JSON")
		}
		name, _ := t.(string)
		if !fields[name] {
			return bad("bad_json", fmt.Sprintf("unknown field %q (fields: %s)", name, strings.Join(sortedNames(fields), ", ")))
		}
		if seen[name] {
			return bad("bad_json", fmt.Sprintf("field %q appears twice", name))
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return bad("bad_json", "request body is not valid JSON")
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return bad("bad_json", "request body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("bad_json", "request body must be one JSON object and nothing after it")
	}
	strict := json.NewDecoder(bytes.NewReader(body))
	strict.DisallowUnknownFields()
	if err := strict.Decode(v); err != nil {
		return decodeError(err)
	}
	return nil
}

// decodeError explains a JSON error without Go's type names.
func decodeError(err error) error {
	if errors.Is(err, money.ErrSyntax) || errors.Is(err, money.ErrPrecision) || errors.Is(err, money.ErrRange) {
		return bad("bad_amount", err.Error()+`: amounts are strings in yuan with at most two decimals, like "12.34"`)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := map[reflect.Kind]string{reflect.Int: "a whole number", reflect.Int64: "a whole number", reflect.Int32: "a whole number",
			reflect.String: "a string", reflect.Bool: "true or false"}[te.Type.Kind()]
		if te.Type == reflect.TypeOf(money.Amount(0)) {
			want = `a string amount like "12.34"`
		}
		if want == "" {
			want = "of another type"
		}
		return bad("bad_json", fmt.Sprintf("field %q must be %s", te.Field, want))
	}
	return bad("bad_json", "request body is not a valid request")
}

// jsonFields are the JSON names of a struct's fields.
func jsonFields(v any) map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}

func sortedNames(m map[string]bool) []string {
	if len(m) == 0 {
		return []string{"none"}
	}
	return slices.Sorted(maps.Keys(m))
}

// textValue checks a path or query value before it reaches a database:
// valid UTF-8, printable, no NUL, at most max bytes.
func textValue(name, v string, max int) error {
	if len(v) > max {
		return bad("bad_query", fmt.Sprintf("%s is longer than %d bytes", name, max))
	}
	if !utf8.ValidString(v) {
		return bad("bad_query", fmt.Sprintf("%s is not valid UTF-8", name))
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return bad("bad_query", fmt.Sprintf("%s contains a control character", name))
		}
	}
	return nil
}
