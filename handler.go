package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// maxRequestBody is the largest request body, in bytes, that the API
// reads; a larger one is answered with 413.
const maxRequestBody = 64 << 10

// The error codes of the API: the "code" of every error answer. They are
// stable and documented in openapi.yaml; clients match on them rather than
// on the messages, which are for people.
const (
	// codeInvalidJSON (400): the body is not one JSON object: it is empty,
	// not valid JSON or UTF-8, null, another kind of value, or followed by
	// more data.
	codeInvalidJSON = "invalid_json"
	// codeInvalidRequest (400): the request is well-formed but a field or
	// query parameter is wrong; "field" names it.
	codeInvalidRequest = "invalid_request"
	// codeNotFound (404): no such webhook or delivery (a malformed ID
	// included), or no such route.
	codeNotFound = "not_found"
	// codeMethodNotAllowed (405): the path exists, but not with this
	// method; the Allow header lists the methods it has.
	codeMethodNotAllowed = "method_not_allowed"
	// codeConflict (409): the webhook's state forbids the request, such as
	// recovering deliveries of a disabled webhook.
	codeConflict = "conflict"
	// codePayloadTooLarge (413): the body exceeds maxRequestBody.
	codePayloadTooLarge = "payload_too_large"
	// codeUnsupportedMediaType (415): the body is not declared as
	// application/json in UTF-8.
	codeUnsupportedMediaType = "unsupported_media_type"
	// codeUnavailable (503): the dispatcher is closed, or the request was
	// cancelled before it completed.
	codeUnavailable = "unavailable"
	// codeInternal (500): an unexpected failure. The answer carries only a
	// request ID; the failure is logged with it.
	codeInternal = "internal"
)

// Handler returns the management HTTP API of the dispatcher: JSON routes
// to register, list, change and delete webhooks, enable a webhook and
// recover what it missed while disabled, rotate a webhook's secret and
// revoke its previous one, send a test event, list deliveries and their
// attempts, retry a delivery, recover failed deliveries, list the event
// types and read the dispatcher's stats. openapi.yaml in this module
// describes every route, answer and error code.
//
// A webhook's "format" says how its deliveries are rendered: json (the
// signed Standard Webhooks envelope, the default), slack or discord (a
// message for people in that service's form, still signed), or email,
// which a "mailto:" URL implies and which is accepted only with one. A
// mailto: URL is accepted only when Config.SMTP is set; its deliveries are
// sent through that SMTP server, and their attempts report the server's
// reply code as status_code and, when it refuses, the error class "smtp".
//
// The handler serves the paths /webhooks, /webhooks/{id}, ... at its root,
// so a host mounts it under a prefix of its choice with http.StripPrefix,
// and must wrap it with its own authentication and authorization, since
// the handler checks neither:
//
//	mux := http.NewServeMux()
//	mux.Handle("/api/", http.StripPrefix("/api", requireAdmin(d.Handler())))
//
// Every answer, errors included, is JSON: {"error":{"code","message",
// "field"?,"request_id"?}} for an error, where code is one of
// invalid_json, invalid_request, not_found, method_not_allowed, conflict,
// payload_too_large, unsupported_media_type, unavailable and internal.
// Request bodies must be application/json and at most 64 KiB (else 415 or
// 413); those of POST /webhooks/{id}/rotate-secret and POST
// /webhooks/{id}/enable may be left out. They
// are decoded strictly: unknown fields, field names in another case,
// repeated fields, null values, values of the wrong type and data after
// the object are rejected with 400, naming the field. Unknown query
// parameters are rejected too. A malformed webhook or delivery ID is
// answered with 404, as an unknown one, without a query. An unknown path
// is answered with 404, and a known path asked with another method with
// 405 and an Allow header. A failure the caller cannot fix is answered
// with 500 and a request ID (also sent as the X-Request-Id header) and
// nothing else; the error is logged through Config.Logger with that ID as
// "request_id". A host middleware that sets X-Request-Id on the response
// beforehand has its ID used instead.
//
// Only the answers to POST /webhooks and POST /webhooks/{id}/rotate-secret
// show a webhook's secret. The handler starts no goroutines, and Close
// waits for the requests it is serving. It is safe for simultaneous use by
// multiple goroutines.
func (d *Dispatcher) Handler() http.Handler {
	a := &api{d: d, mux: http.NewServeMux()}
	for _, rt := range apiRoutes {
		a.mux.HandleFunc(rt.method+" "+rt.path, func(w http.ResponseWriter, r *http.Request) {
			a.serve(w, r, rt)
		})
	}
	return a
}

// api is the handler that Dispatcher.Handler returns.
type api struct {
	d   *Dispatcher
	mux *http.ServeMux
}

// route is one route of the API.
type route struct {
	method string
	path   string
	// query lists the query parameters the route accepts.
	query []string
	// notFound is the message of a 404 answer for the route's resource.
	notFound string
	handle   func(a *api, w http.ResponseWriter, r *http.Request) error
}

const (
	webhookNotFound  = "webhook not found"
	deliveryNotFound = "delivery not found"
)

// apiRoutes is every route of the API; Handler registers these and no
// others.
var apiRoutes = []route{
	{method: http.MethodPost, path: "/webhooks", handle: (*api).createWebhook},
	{method: http.MethodGet, path: "/webhooks", handle: (*api).listWebhooks},
	{method: http.MethodGet, path: "/webhooks/{id}", notFound: webhookNotFound, handle: (*api).getWebhook},
	{method: http.MethodPatch, path: "/webhooks/{id}", notFound: webhookNotFound, handle: (*api).updateWebhook},
	{method: http.MethodDelete, path: "/webhooks/{id}", notFound: webhookNotFound, handle: (*api).deleteWebhook},
	{method: http.MethodPost, path: "/webhooks/{id}/enable", notFound: webhookNotFound, handle: (*api).enableWebhook},
	{method: http.MethodPost, path: "/webhooks/{id}/rotate-secret", notFound: webhookNotFound, handle: (*api).rotateSecret},
	{method: http.MethodDelete, path: "/webhooks/{id}/previous-secret", notFound: webhookNotFound, handle: (*api).revokePreviousSecret},
	{method: http.MethodPost, path: "/webhooks/{id}/test", notFound: webhookNotFound, handle: (*api).testWebhook},
	{method: http.MethodGet, path: "/webhooks/{id}/deliveries", query: []string{"status", "cursor", "limit"}, notFound: webhookNotFound, handle: (*api).listDeliveries},
	{method: http.MethodPost, path: "/webhooks/{id}/recover", notFound: webhookNotFound, handle: (*api).recoverDeliveries},
	{method: http.MethodGet, path: "/deliveries/{id}", notFound: deliveryNotFound, handle: (*api).getDelivery},
	{method: http.MethodGet, path: "/deliveries/{id}/attempts", notFound: deliveryNotFound, handle: (*api).listAttempts},
	{method: http.MethodPost, path: "/deliveries/{id}/retry", notFound: "delivery not found, or its webhook was deleted", handle: (*api).retryDelivery},
	{method: http.MethodGet, path: "/event-types", handle: (*api).listEventTypes},
	{method: http.MethodGet, path: "/stats", handle: (*api).getStats},
}

// ServeHTTP answers unknown paths and methods itself, in JSON, and hands
// every other request to the route's handler.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A path that is not clean would get a redirect from the ServeMux,
	// which would be wrong under a prefix; no route has such a path.
	p := r.URL.EscapedPath()
	if p == "" || p[0] != '/' || path.Clean(p) != p {
		a.fail(w, r, route{}, errNoRoute)
		return
	}
	h, pattern := a.mux.Handler(r)
	if pattern == "" {
		// The ServeMux's own answer: 404, or 405 with an Allow header.
		c := &headerCapture{header: http.Header{}}
		h.ServeHTTP(c, r)
		if c.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", c.header.Get("Allow"))
			a.fail(w, r, route{}, &apiError{status: http.StatusMethodNotAllowed, code: codeMethodNotAllowed,
				message: "this path does not take this method; see the Allow header"})
			return
		}
		a.fail(w, r, route{}, errNoRoute)
		return
	}
	a.mux.ServeHTTP(w, r)
}

// serve runs a route's handler as one call on the dispatcher, so that Close
// waits for it.
func (a *api) serve(w http.ResponseWriter, r *http.Request, rt route) {
	if err := a.d.enter(); err != nil {
		a.fail(w, r, rt, err)
		return
	}
	defer a.d.calls.Done()
	if err := checkQuery(r, rt.query); err != nil {
		a.fail(w, r, rt, err)
		return
	}
	if err := rt.handle(a, w, r); err != nil {
		a.fail(w, r, rt, err)
	}
}

// headerCapture records the status and headers that a handler writes,
// and drops its body.
type headerCapture struct {
	header http.Header
	status int
}

func (c *headerCapture) Header() http.Header { return c.header }

func (c *headerCapture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return len(b), nil
}

func (c *headerCapture) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

// apiError is an error answer decided by the handler itself.
type apiError struct {
	status  int
	code    string
	message string
	field   string
}

func (e *apiError) Error() string { return e.message }

var (
	errNoRoute  = &apiError{status: http.StatusNotFound, code: codeNotFound, message: "no such route"}
	errTooLarge = &apiError{status: http.StatusRequestEntityTooLarge, code: codePayloadTooLarge,
		message: fmt.Sprintf("the request body exceeds %d bytes", maxRequestBody)}
)

func badJSON(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: codeInvalidJSON, message: msg}
}

func badField(field, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: codeInvalidRequest, field: field, message: field + ": " + msg}
}

// ErrorResponse is the JSON of every error answer of the API.
type ErrorResponse struct {
	Error APIError `json:"error"`
}

// APIError says what went wrong with a request: a stable code (such as
// "not_found" or "invalid_field"), a message for people, the field at
// fault, and for internal errors the request ID that the log records.
type APIError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// fail answers err as JSON with the status it calls for. A failure that is
// not the caller's is logged with a request ID and answered without
// detail.
func (a *api) fail(w http.ResponseWriter, r *http.Request, rt route, err error) {
	var ae *apiError
	var ve *ValidationError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &ve):
		ae = badField(ve.Field, ve.Message)
	case errors.Is(err, ErrInvalid):
		ae = &apiError{status: http.StatusBadRequest, code: codeInvalidRequest, message: "the request is invalid"}
	case errors.Is(err, ErrNotFound):
		msg := rt.notFound
		if msg == "" {
			msg = "not found"
		}
		ae = &apiError{status: http.StatusNotFound, code: codeNotFound, message: msg}
	case errors.Is(err, ErrWebhookDisabled):
		ae = &apiError{status: http.StatusConflict, code: codeConflict, message: "the webhook is disabled; enable it first"}
	case errors.Is(err, ErrClosed):
		ae = &apiError{status: http.StatusServiceUnavailable, code: codeUnavailable, message: "the webhook dispatcher is shutting down"}
	case r.Context().Err() != nil && errorsIsAny(err, context.Canceled, context.DeadlineExceeded):
		a.d.log.Debug("webhook: api request cancelled", "method", r.Method, "route", r.Pattern)
		ae = &apiError{status: http.StatusServiceUnavailable, code: codeUnavailable, message: "the request was cancelled before it completed"}
	default:
		id := w.Header().Get("X-Request-Id")
		if id == "" {
			id = rand.Text()
			w.Header().Set("X-Request-Id", id)
		}
		a.d.log.Error("webhook: api request failed", "request_id", id, "method", r.Method, "route", r.Pattern, "error", err.Error())
		writeJSON(w, http.StatusInternalServerError, ErrorResponse{Error: APIError{
			Code: codeInternal, Message: "internal error; quote the request ID when reporting it", RequestID: id,
		}})
		return
	}
	writeJSON(w, ae.status, ErrorResponse{Error: APIError{Code: ae.code, Message: ae.message, Field: ae.field}})
}

// writeJSON answers v as JSON. The answers are never cached, since one of
// them holds a secret.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a bug gets here: the answers are plain structs.
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// checkQuery rejects query parameters that the route does not take and
// parameters given twice.
func checkQuery(r *http.Request, allowed []string) error {
	if r.URL.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return &apiError{status: http.StatusBadRequest, code: codeInvalidRequest, message: "the query string is malformed"}
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			return badField(fieldName(k), "is not a query parameter of this route")
		}
		if len(q[k]) > 1 {
			return badField(k, "must be given at most once")
		}
	}
	return nil
}

// fieldName bounds a name taken from the request before it is echoed.
func fieldName(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// webhookID returns the route's webhook ID, or ErrNotFound when it is not
// a UUID: such an ID is never looked up.
func webhookID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if len(id) != 36 {
		return "", ErrNotFound
	}
	if _, err := uuid.Parse(id); err != nil {
		return "", ErrNotFound
	}
	return id, nil
}

// deliveryID returns the route's delivery ID, or ErrNotFound when it is not
// a positive decimal int64 without leading zeros: such an ID is never
// looked up.
func deliveryID(r *http.Request) (int64, error) {
	n, ok := parsePositive(r.PathValue("id"))
	if !ok {
		return 0, ErrNotFound
	}
	return n, nil
}

// parsePositive parses a positive decimal int64 written in canonical form.
func parsePositive(s string) (int64, bool) {
	if s == "" || len(s) > 19 || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// object is a JSON object decoded with its keys exactly as sent.
type object map[string]json.RawMessage

// readObject reads the request body as one JSON object whose keys are all
// in allowed, exactly.
func readObject(w http.ResponseWriter, r *http.Request, allowed ...string) (object, error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: codeUnsupportedMediaType,
			message: "the request body must be sent as Content-Type: application/json"}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: codeUnsupportedMediaType,
			message: "the request body must be encoded in UTF-8"}
	}
	if r.ContentLength > maxRequestBody {
		return nil, errTooLarge
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

	// Decode token by token: encoding/json would match keys in any case
	// and let a repeated key overwrite the first.
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	switch {
	case err == io.EOF:
		return nil, badJSON("the request body is empty; send a JSON object")
	case err != nil:
		return nil, badJSON("the request body is not valid JSON")
	case tok == nil:
		return nil, badJSON("the request body must be a JSON object, not null")
	case tok != json.Delim('{'):
		return nil, badJSON("the request body must be a JSON object")
	}
	var keys []string
	var values []json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badJSON("the request body is not valid JSON")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, badJSON("the request body is not valid JSON")
		}
		keys = append(keys, tok.(string))
		values = append(values, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, badJSON("the request body is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badJSON("the request body holds more than one JSON value")
	}

	obj := make(object, len(keys))
	for i, k := range keys {
		if _, dup := obj[k]; dup {
			return nil, badField(fieldName(k), "is given more than once")
		}
		if !slices.Contains(allowed, k) {
			for _, a := range allowed {
				if strings.EqualFold(a, k) {
					return nil, badField(fieldName(k), fmt.Sprintf("is not a known field; field names are case-sensitive: did you mean %q?", a))
				}
			}
			return nil, badField(fieldName(k), "is not a known field")
		}
		obj[k] = values[i]
	}
	return obj, nil
}

// readOptionalObject is readObject for a route whose body may be left out:
// an absent or empty body reads as an empty object, whatever its
// Content-Type. A body that is present is read as strictly as by
// readObject.
func readOptionalObject(w http.ResponseWriter, r *http.Request, allowed ...string) (object, error) {
	switch {
	case r.ContentLength == 0:
		return object{}, nil
	case r.ContentLength < 0:
		// Sent without a length: look at the first byte, then put it back.
		var first [1]byte
		n, err := io.ReadFull(r.Body, first[:])
		if n == 0 {
			if err == io.EOF {
				return object{}, nil
			}
			return nil, badJSON("the request body could not be read")
		}
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(first[:n]), r.Body), r.Body}
	}
	return readObject(w, r, allowed...)
}

// noBody rejects a request body on a route that takes none.
func noBody(r *http.Request) error {
	if r.ContentLength > 0 {
		return &apiError{status: http.StatusBadRequest, code: codeInvalidRequest, message: "this route takes no request body"}
	}
	if n, _ := io.ReadFull(r.Body, make([]byte, 1)); n > 0 {
		return &apiError{status: http.StatusBadRequest, code: codeInvalidRequest, message: "this route takes no request body"}
	}
	return nil
}

func isNull(v json.RawMessage) bool { return string(v) == "null" }

// str decodes the string field name, reporting whether it was present.
func (o object) str(name string, dst *string) (bool, error) {
	v, ok := o[name]
	if !ok {
		return false, nil
	}
	if isNull(v) {
		return true, badField(name, "must not be null")
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return true, badField(name, "must be a string")
	}
	return true, nil
}

// boolean decodes the boolean field name, reporting whether it was
// present.
func (o object) boolean(name string, dst *bool) (bool, error) {
	v, ok := o[name]
	if !ok {
		return false, nil
	}
	if isNull(v) {
		return true, badField(name, "must not be null")
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return true, badField(name, "must be true or false")
	}
	return true, nil
}

// stringList decodes the field name, an array of strings, reporting whether
// it was present. The slice is non-nil when it was.
func (o object) stringList(name string, dst *[]string) (bool, error) {
	v, ok := o[name]
	if !ok {
		return false, nil
	}
	if isNull(v) {
		return true, badField(name, "must not be null")
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return true, badField(name, "must be an array of strings")
	}
	out := make([]string, len(raw))
	for i, e := range raw {
		field := fmt.Sprintf("%s[%d]", name, i)
		if isNull(e) {
			return true, badField(field, "must not be null")
		}
		if err := json.Unmarshal(e, &out[i]); err != nil {
			return true, badField(field, "must be a string")
		}
	}
	*dst = out
	return true, nil
}

// integer decodes the field name, a JSON integer that fits an int64,
// reporting whether it was present. A fraction or an exponent is rejected.
func (o object) integer(name string, dst *int64) (bool, error) {
	v, ok := o[name]
	if !ok {
		return false, nil
	}
	if isNull(v) {
		return true, badField(name, "must not be null")
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return true, badField(name, "must be a whole number")
	}
	return true, nil
}

// format decodes the field name, a webhook format, reporting whether it
// was present. Which formats go with which URLs is the dispatcher's to
// judge; only the empty string, which Registration and WebhookUpdate read
// as "the default", is rejected here.
func (o object) format(name string, dst *Format) (bool, error) {
	var s string
	ok, err := o.str(name, &s)
	if !ok || err != nil {
		return ok, err
	}
	if s == "" {
		return true, badField(name, "must be json, slack, discord or email")
	}
	*dst = Format(s)
	return true, nil
}

// timestamp decodes the field name, an RFC 3339 date-time, reporting
// whether it was present.
func (o object) timestamp(name string, dst *time.Time) (bool, error) {
	var s string
	ok, err := o.str(name, &s)
	if !ok || err != nil {
		return ok, err
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return true, badField(name, "must be an RFC 3339 date-time, such as 2024-05-01T00:00:00Z")
	}
	*dst = t
	return true, nil
}

// Recovered is the answer to POST /webhooks/{id}/recover.
type Recovered struct {
	// Scheduled counts the failed deliveries scheduled again.
	Scheduled int `json:"scheduled"`
}

// WebhookList is the answer to GET /webhooks.
type WebhookList struct {
	Webhooks []Webhook `json:"webhooks"`
}

// AttemptList is the answer to GET /deliveries/{id}/attempts.
type AttemptList struct {
	Attempts []Attempt `json:"attempts"`
}

// EventTypeList is the answer to GET /event-types.
type EventTypeList struct {
	EventTypes []EventType `json:"event_types"`
}

// secretWebhook is a webhook with its secret: the answer to POST /webhooks
// and to POST /webhooks/{id}/rotate-secret, the only ones that show a
// secret (a Webhook alone never encodes it).
type secretWebhook struct {
	webhookFields
	Secret string `json:"secret"`
}

func withSecret(w Webhook) secretWebhook {
	if w.Events == nil {
		w.Events = []string{}
	}
	return secretWebhook{webhookFields: webhookFields(w), Secret: string(w.Secret)}
}

// createWebhook serves POST /webhooks.
func (a *api) createWebhook(w http.ResponseWriter, r *http.Request) error {
	obj, err := readObject(w, r, "url", "format", "events", "secret", "description", "enabled")
	if err != nil {
		return err
	}
	var reg Registration
	if ok, err := obj.str("url", &reg.URL); err != nil {
		return err
	} else if !ok {
		return badField("url", "is required")
	}
	if _, err := obj.format("format", &reg.Format); err != nil {
		return err
	}
	if ok, err := obj.stringList("events", &reg.Events); err != nil {
		return err
	} else if !ok {
		return badField("events", "is required")
	}
	if ok, err := obj.str("secret", &reg.Secret); err != nil {
		return err
	} else if ok && reg.Secret == "" {
		return badField("secret", "must not be empty; leave it out to have a secret made")
	}
	if _, err := obj.str("description", &reg.Description); err != nil {
		return err
	}
	var enabled bool
	if ok, err := obj.boolean("enabled", &enabled); err != nil {
		return err
	} else if ok {
		reg.Enabled = &enabled
	}
	wh, err := a.d.Register(r.Context(), reg)
	if err != nil {
		return err
	}
	w.Header().Set("Location", location(r, wh.ID))
	writeJSON(w, http.StatusCreated, withSecret(wh))
	return nil
}

// location returns the path of the webhook id, made from the path the
// client asked for, so that it is right under any prefix the host strips.
func location(r *http.Request, id string) string {
	p := r.URL.EscapedPath()
	if u, err := url.ParseRequestURI(r.RequestURI); err == nil && u.EscapedPath() != "" {
		p = u.EscapedPath()
	}
	return strings.TrimSuffix(p, "/") + "/" + id
}

// listWebhooks serves GET /webhooks.
func (a *api) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	hooks, err := a.d.List(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, WebhookList{Webhooks: hooks})
	return nil
}

// getWebhook serves GET /webhooks/{id}.
func (a *api) getWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	wh, err := a.d.Get(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wh)
	return nil
}

// updateWebhook serves PATCH /webhooks/{id}.
func (a *api) updateWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	obj, err := readObject(w, r, "url", "format", "events", "enabled", "description")
	if err != nil {
		return err
	}
	if len(obj) == 0 {
		return &apiError{status: http.StatusBadRequest, code: codeInvalidRequest,
			message: "give at least one of url, format, events, enabled and description"}
	}
	var u WebhookUpdate
	var s, desc string
	var f Format
	var enabled bool
	if ok, err := obj.str("url", &s); err != nil {
		return err
	} else if ok {
		u.URL = &s
	}
	if ok, err := obj.format("format", &f); err != nil {
		return err
	} else if ok {
		u.Format = &f
	}
	if _, err := obj.stringList("events", &u.Events); err != nil {
		return err
	}
	if ok, err := obj.boolean("enabled", &enabled); err != nil {
		return err
	} else if ok {
		u.Enabled = &enabled
	}
	if ok, err := obj.str("description", &desc); err != nil {
		return err
	} else if ok {
		u.Description = &desc
	}
	wh, err := a.d.Update(r.Context(), id, u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wh)
	return nil
}

// deleteWebhook serves DELETE /webhooks/{id}.
func (a *api) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	if err := a.d.Delete(r.Context(), id); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Enabled is the answer to POST /webhooks/{id}/enable.
type Enabled struct {
	Webhook Webhook `json:"webhook"`
	// Recovered counts the deliveries scheduled to make up for what the
	// webhook missed while it was disabled.
	Recovered int `json:"recovered"`
}

// enableWebhook serves POST /webhooks/{id}/enable.
func (a *api) enableWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	obj, err := readOptionalObject(w, r, "recover")
	if err != nil {
		return err
	}
	var opts EnableOptions
	if _, err := obj.boolean("recover", &opts.Recover); err != nil {
		return err
	}
	wh, n, err := a.d.Enable(r.Context(), id, opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Enabled{Webhook: wh, Recovered: n})
	return nil
}

// maxGraceSeconds is the largest grace_seconds of a rotation.
const maxGraceSeconds = int64(MaxRotationGrace / time.Second)

// rotateSecret serves POST /webhooks/{id}/rotate-secret.
func (a *api) rotateSecret(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	obj, err := readOptionalObject(w, r, "secret", "grace_seconds")
	if err != nil {
		return err
	}
	var opts RotateOptions
	if ok, err := obj.str("secret", &opts.Secret); err != nil {
		return err
	} else if ok && opts.Secret == "" {
		return badField("secret", "must not be empty; leave it out to have a secret made")
	}
	var grace int64
	if _, err := obj.integer("grace_seconds", &grace); err != nil {
		return err
	}
	switch {
	case grace == -1:
		opts.Grace = -1 // none
	case grace >= 0 && grace <= maxGraceSeconds:
		opts.Grace = time.Duration(grace) * time.Second // 0: the default
	default:
		return badField("grace_seconds", fmt.Sprintf("must be -1 (no grace), 0 (the default, 24 hours) or between 1 and %d (7 days)", maxGraceSeconds))
	}
	wh, err := a.d.RotateSecret(r.Context(), id, opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, withSecret(wh))
	return nil
}

// revokePreviousSecret serves DELETE /webhooks/{id}/previous-secret.
func (a *api) revokePreviousSecret(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	if err := a.d.RevokePreviousSecret(r.Context(), id); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// testWebhook serves POST /webhooks/{id}/test.
func (a *api) testWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	if err := noBody(r); err != nil {
		return err
	}
	res, err := a.d.SendTest(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// listDeliveries serves GET /webhooks/{id}/deliveries.
func (a *api) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var dq DeliveryQuery
	for _, name := range []string{"status", "cursor", "limit"} {
		if q.Has(name) && q.Get(name) == "" {
			return badField(name, "must not be empty")
		}
	}
	dq.Status = DeliveryStatus(q.Get("status"))
	dq.Cursor = q.Get("cursor")
	if s := q.Get("limit"); s != "" {
		n, ok := parsePositive(s)
		if !ok || n > 500 {
			return badField("limit", "must be a whole number between 1 and 500")
		}
		dq.Limit = int(n)
	}
	page, err := a.d.Deliveries(r.Context(), id, dq)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// recoverDeliveries serves POST /webhooks/{id}/recover.
func (a *api) recoverDeliveries(w http.ResponseWriter, r *http.Request) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	obj, err := readObject(w, r, "since", "until")
	if err != nil {
		return err
	}
	var since, until time.Time
	if ok, err := obj.timestamp("since", &since); err != nil {
		return err
	} else if !ok {
		return badField("since", "is required")
	}
	if _, err := obj.timestamp("until", &until); err != nil {
		return err
	}
	n, err := a.d.Recover(r.Context(), id, since, until)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Recovered{Scheduled: n})
	return nil
}

// getDelivery serves GET /deliveries/{id}.
func (a *api) getDelivery(w http.ResponseWriter, r *http.Request) error {
	id, err := deliveryID(r)
	if err != nil {
		return err
	}
	dl, err := a.d.Delivery(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dl)
	return nil
}

// listAttempts serves GET /deliveries/{id}/attempts.
func (a *api) listAttempts(w http.ResponseWriter, r *http.Request) error {
	id, err := deliveryID(r)
	if err != nil {
		return err
	}
	attempts, err := a.d.Attempts(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, AttemptList{Attempts: attempts})
	return nil
}

// retryDelivery serves POST /deliveries/{id}/retry.
func (a *api) retryDelivery(w http.ResponseWriter, r *http.Request) error {
	id, err := deliveryID(r)
	if err != nil {
		return err
	}
	if err := noBody(r); err != nil {
		return err
	}
	res, err := a.d.Retry(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// listEventTypes serves GET /event-types.
func (a *api) listEventTypes(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, EventTypeList{EventTypes: a.d.EventTypes()})
	return nil
}

// getStats serves GET /stats.
func (a *api) getStats(w http.ResponseWriter, r *http.Request) error {
	st, err := a.d.Stats(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
