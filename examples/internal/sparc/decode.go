package sparc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"
)

// maxRequestBody is the largest request body the routes read.
const maxRequestBody = 64 << 10

// The error codes, the same as the library API's.
const (
	codeInvalidJSON          = "invalid_json"
	codeInvalidRequest       = "invalid_request"
	codeMethodNotAllowed     = "method_not_allowed"
	codePayloadTooLarge      = "payload_too_large"
	codeUnsupportedMediaType = "unsupported_media_type"
	codeTooManyRequests      = "too_many_requests"
	codeUnavailable          = "unavailable"
	codeInternal             = "internal"
)

// apiError is an error answer.
type apiError struct {
	status  int
	code    string
	message string
	field   string
}

func (e *apiError) Error() string { return e.message }

var (
	errShuttingDown = &apiError{status: http.StatusServiceUnavailable, code: codeUnavailable, message: "the host is shutting down"}
	errTooLarge     = &apiError{status: http.StatusRequestEntityTooLarge, code: codePayloadTooLarge,
		message: fmt.Sprintf("the request body exceeds %d bytes", maxRequestBody)}
	errInternal = &apiError{status: http.StatusInternalServerError, code: codeInternal, message: "internal error"}
)

func badJSON(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: codeInvalidJSON, message: msg}
}

func badField(field, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: codeInvalidRequest, field: field, message: field + ": " + msg}
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, errorBody{Error: errorDetail{Code: e.code, Message: e.message, Field: e.field}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// only answers 405 to every method but method.
func only(method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeError(w, &apiError{status: http.StatusMethodNotAllowed, code: codeMethodNotAllowed,
				message: "method " + r.Method + " is not allowed here; use " + method})
			return
		}
		h(w, r)
	})
}

// object is a JSON object decoded with its keys exactly as sent.
type object map[string]json.RawMessage

// readObject reads the request body as one JSON object whose keys are all
// in allowed. encoding/json alone would match keys in any case, let a
// repeated key overwrite the first and accept trailing data, so the object
// is read token by token.
func readObject(w http.ResponseWriter, r *http.Request, allowed ...string) (object, *apiError) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: codeUnsupportedMediaType,
			message: "the request body must be sent as Content-Type: application/json"}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: codeUnsupportedMediaType,
			message: "the request body must be encoded in UTF-8"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errTooLarge
		}
		return nil, badJSON("the request body could not be read")
	}
	if !utf8.Valid(body) {
		return nil, badJSON("the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	switch {
	case err == io.EOF:
		return nil, badJSON("the request body is empty; send a JSON object")
	case err != nil:
		return nil, badJSON("the request body is not valid JSON")
	case tok != json.Delim('{'):
		return nil, badJSON("the request body must be a JSON object")
	}
	obj := object{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badJSON("the request body is not valid JSON")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, badJSON("the request body is not valid JSON")
		}
		k := tok.(string)
		if _, dup := obj[k]; dup {
			return nil, badField(k, "is given more than once")
		}
		if !slices.Contains(allowed, k) {
			for _, a := range allowed {
				if strings.EqualFold(a, k) {
					return nil, badField(k, fmt.Sprintf("is not a known field; field names are case-sensitive: did you mean %q?", a))
				}
			}
			return nil, badField(k, "is not a known field; known fields: "+strings.Join(allowed, ", "))
		}
		obj[k] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, badJSON("the request body is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badJSON("the request body holds more than one JSON value")
	}
	return obj, nil
}

// field decodes the field name into dst, reporting whether it was
// present. A null value or one of the wrong type is an error that names
// the field and says what was expected.
func (o object) field(name string, dst any, expected string) (bool, *apiError) {
	v, ok := o[name]
	if !ok {
		return false, nil
	}
	if string(v) == "null" {
		return true, badField(name, "must not be null")
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return true, badField(name, "must be "+expected)
	}
	return true, nil
}

func (o object) str(name string, dst *string) (bool, *apiError) {
	return o.field(name, dst, "a string")
}

func (o object) boolean(name string, dst *bool) (bool, *apiError) {
	return o.field(name, dst, "true or false")
}

func (o object) integer(name string, dst *int) (bool, *apiError) {
	return o.field(name, dst, "a whole number")
}

func (o object) number(name string, dst *float64) (bool, *apiError) {
	ok, err := o.field(name, dst, "a finite number")
	if err == nil && ok && (math.IsNaN(*dst) || math.IsInf(*dst, 0)) {
		return true, badField(name, "must be a finite number")
	}
	return ok, err
}
