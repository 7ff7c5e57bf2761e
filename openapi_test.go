package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/require"
)

// kin-openapi v0.153.0 loads OpenAPI 3.1 documents as they are, and for
// them validates with a JSON Schema 2020-12 validator (const, anyOf,
// unevaluatedProperties, dependentRequired...), so openapi.yaml is checked
// without any transformation. TestOpenAPISchemasAreStrict makes sure that
// this validation actually bites.

// spec is openapi.yaml, loaded and validated, with a router over it.
type spec struct {
	doc    *openapi3.T
	router routers.Router
	// seen records "METHOD /path status" for every response validated.
	seen map[string]bool
}

func loadSpec(t *testing.T) *spec {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("openapi.yaml")
	require.NoError(t, err)
	require.True(t, doc.IsOpenAPI31OrLater(), "openapi.yaml must be OpenAPI 3.1")
	require.NoError(t, doc.Validate(loader.Context))
	router, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	return &spec{doc: doc, router: router, seen: map[string]bool{}}
}

// operations returns every "METHOD /path" of the document.
func (s *spec) operations() []string {
	var out []string
	for p, item := range s.doc.Paths.Map() {
		for m := range item.Operations() {
			out = append(out, m+" "+p)
		}
	}
	slices.Sort(out)
	return out
}

// methods returns the methods of a path of the document, sorted.
func (s *spec) methods(p string) []string {
	var out []string
	for m := range s.doc.Paths.Value(p).Operations() {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// apiCall is a request to the API, as mounted under apiPrefix.
type apiCall struct {
	method string
	path   string // without the prefix
	body   string
	ctype  string // Content-Type; "application/json" when empty and body is set
	header http.Header
	// chunked sends the body without a Content-Length.
	chunked bool
}

// apiResponse is what the API answered.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

func (r apiResponse) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

// errorCode returns error.code of an error answer.
func (r apiResponse) errorCode(t testing.TB) string {
	t.Helper()
	e, ok := r.json(t)["error"].(map[string]any)
	require.True(t, ok, "not an error answer: %s", r.body)
	code, _ := e["code"].(string)
	return code
}

const apiPrefix = "/api"

// mountAPI serves h under apiPrefix, as a host would, on a loopback
// server.
func mountAPI(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(apiPrefix+"/", http.StripPrefix(apiPrefix, h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// do sends c to srv.
func do(t testing.TB, srv *httptest.Server, c apiCall) apiResponse {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
		if c.chunked {
			body = io.MultiReader(body)
		}
	}
	req, err := http.NewRequestWithContext(t.Context(), c.method, srv.URL+apiPrefix+c.path, body)
	require.NoError(t, err)
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.ctype != "" {
		req.Header.Set("Content-Type", c.ctype)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return apiResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// check validates resp, the answer to c, against the document: its
// status must be documented for the operation, and its headers and body
// must match. Answers to paths or methods the document lacks are checked
// against the NotFound and MethodNotAllowed responses. When requestValid
// is set, the request must match the document too.
func (s *spec) check(t testing.TB, c apiCall, resp apiResponse, requestValid bool) {
	t.Helper()
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, c.method, c.path, strings.NewReader(c.body))
	require.NoError(t, err)
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	route, params, err := s.router.FindRoute(req)
	switch err {
	case nil:
	case routers.ErrPathNotFound, routers.ErrMethodNotAllowed:
		// No operation: validate against the generic response.
		name, status := "NotFound", http.StatusNotFound
		if err == routers.ErrMethodNotAllowed {
			name, status = "MethodNotAllowed", http.StatusMethodNotAllowed
		}
		require.Equal(t, status, resp.status, "%s %s: %s", c.method, c.path, resp.body)
		ops := openapi3.NewResponses(openapi3.WithStatus(status, s.doc.Components.Responses[name]))
		route = &routers.Route{Spec: s.doc, Path: c.path, Method: c.method, Operation: &openapi3.Operation{Responses: ops}}
		s.seen[fmt.Sprintf("%s %d", name, status)] = true
	default:
		require.NoError(t, err)
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: params,
		Route:      route,
		Options:    &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	if requestValid {
		require.NoError(t, openapi3filter.ValidateRequest(ctx, in), "%s %s %s: the document rejects the request", c.method, c.path, c.body)
	}
	err = openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.status,
		Header:                 resp.header,
		Body:                   io.NopCloser(bytes.NewReader(resp.body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	})
	require.NoError(t, err, "%s %s answered %d %s", c.method, c.path, resp.status, resp.body)
	if route.PathItem != nil {
		s.seen[fmt.Sprintf("%s %s %d", c.method, route.Path, resp.status)] = true
	}
}

// call sends c, checks that it is answered with status and validates the
// exchange against the document.
func (s *spec) call(t testing.TB, srv *httptest.Server, c apiCall, status int) apiResponse {
	t.Helper()
	resp := do(t, srv, c)
	require.Equal(t, status, resp.status, "%s %s %s: %s", c.method, c.path, c.body, resp.body)
	s.check(t, c, resp, status < 300)
	return resp
}

func TestOpenAPISchemasAreStrict(t *testing.T) {
	s := loadSpec(t)
	opt := openapi3.EnableJSONSchema2020()
	schema := func(name string) *openapi3.Schema { return s.doc.Components.Schemas[name].Value }
	hook := map[string]any{
		"id": "0190b5c6-3f0e-7a2b-8c7d-1e2f3a4b5c6d", "url": "https://example.com/hook", "format": "json", "events": []any{"*"},
		"enabled": true, "description": "", "created_at": "2024-05-01T00:00:00Z", "updated_at": "2024-05-01T00:00:00Z",
		"failure_streak": 0,
	}
	withKey := func(m map[string]any, k string, v any) map[string]any {
		out := maps.Clone(m)
		out[k] = v
		return out
	}
	withoutKey := func(m map[string]any, k string) map[string]any {
		out := maps.Clone(m)
		delete(out, k)
		return out
	}
	withSecret := func(m map[string]any) map[string]any {
		return withKey(m, "secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	}
	withRotation := func(m map[string]any) map[string]any {
		return withKey(m, "previous_secret_until", "2024-05-02T00:00:00Z")
	}
	stats := map[string]any{
		"pending": 2, "oldest_pending_age_ms": 1500, "delivered": 10, "failed": 1, "cancelled": 0, "superseded": 2,
		"attempts_succeeded": 10, "attempts_failed": 4, "webhooks": 3, "disabled_webhooks": 1,
	}
	delivery := map[string]any{
		"id": 7, "webhook_id": "0190b5c6-3f0e-7a2b-8c7d-1e2f3a4b5c6d", "event_id": "evt_1", "event_type": "score.changed",
		"status": "superseded", "attempts": 0, "last_status_code": 0, "last_error": "superseded by a newer score.changed",
		"created_at": "2024-05-01T00:00:00Z", "updated_at": "2024-05-01T00:00:00Z",
	}
	refused := map[string]any{
		"id": 1, "delivery_id": 1, "number": 1, "trigger": "scheduled", "started_at": "2024-05-01T00:00:00Z",
		"duration_ms": 1, "status_code": 550, "error_class": "smtp", "error": "the SMTP server refused the recipient",
	}
	tests := []struct {
		name   string
		schema string
		value  any
		ok     bool
	}{
		{"webhook", "Webhook", hook, true},
		{"webhook never shows a secret", "Webhook", withSecret(hook), false},
		{"webhook during a rotation", "Webhook", withRotation(hook), true},
		{"webhook with its secret", "WebhookWithSecret", withSecret(hook), true},
		{"webhook with its secret during a rotation", "WebhookWithSecret", withSecret(withRotation(hook)), true},
		{"webhook with its secret needs it", "WebhookWithSecret", hook, false},
		{"webhook with its secret has no other field", "WebhookWithSecret", map[string]any{"extra": 1, "secret": "whsec_x"}, false},
		{"webhook needs its format", "Webhook", withoutKey(hook, "format"), false},
		{"webhook in slack", "Webhook", withKey(hook, "format", "slack"), true},
		{"webhook in discord", "Webhook", withKey(hook, "format", "discord"), true},
		{"webhook by email", "Webhook", withKey(withKey(hook, "url", "mailto:team@example.com"), "format", "email"), true},
		{"webhook in an unknown format", "Webhook", withKey(hook, "format", "teams"), false},
		{"registration in slack", "WebhookCreate", map[string]any{"url": "https://example.com/", "events": []any{"*"}, "format": "slack"}, true},
		{"registration in an unknown format", "WebhookCreate", map[string]any{"url": "https://example.com/", "events": []any{"*"}, "format": "Slack"}, false},
		{"registration with an empty format", "WebhookCreate", map[string]any{"url": "https://example.com/", "events": []any{"*"}, "format": ""}, false},
		{"change of format", "WebhookUpdate", map[string]any{"format": "discord"}, true},
		{"change to an unknown format", "WebhookUpdate", map[string]any{"format": "teams"}, false},
		{"enable without options", "EnableRequest", map[string]any{}, true},
		{"enable with recovery", "EnableRequest", map[string]any{"recover": true}, true},
		{"enable with recovery as a string", "EnableRequest", map[string]any{"recover": "true"}, false},
		{"enable with an unknown field", "EnableRequest", map[string]any{"recovered": true}, false},
		{"enabled", "EnableResult", map[string]any{"webhook": hook, "recovered": 3}, true},
		{"enabled needs the count", "EnableResult", map[string]any{"webhook": hook}, false},
		{"enabled with a negative count", "EnableResult", map[string]any{"webhook": hook, "recovered": -1}, false},
		{"enabled never shows a secret", "EnableResult", map[string]any{"webhook": withSecret(hook), "recovered": 0}, false},
		{"enabled is not the webhook itself", "EnableResult", withKey(hook, "recovered", 0), false},
		{"superseded delivery", "Delivery", delivery, true},
		{"delivery in an unknown state", "Delivery", withKey(delivery, "status", "dropped"), false},
		{"attempt refused by an SMTP server", "Attempt", refused, true},
		{"attempt with an unknown error class", "Attempt", withKey(refused, "error_class", "imap"), false},
		{"result refused by an SMTP server", "AttemptResult", map[string]any{
			"delivered": false, "status_code": 550, "duration_ms": 1, "error_class": "smtp", "error": "refused", "delivery_id": 1,
		}, true},
		{"rotation without options", "RotateSecretRequest", map[string]any{}, true},
		{"rotation without grace", "RotateSecretRequest", map[string]any{"grace_seconds": -1}, true},
		{"rotation with the longest grace", "RotateSecretRequest", map[string]any{"grace_seconds": 604800, "secret": goodSecret}, true},
		{"rotation with too long a grace", "RotateSecretRequest", map[string]any{"grace_seconds": 604801}, false},
		{"rotation with a negative grace", "RotateSecretRequest", map[string]any{"grace_seconds": -2}, false},
		{"rotation with a fractional grace", "RotateSecretRequest", map[string]any{"grace_seconds": 1.5}, false},
		{"rotation with an empty secret", "RotateSecretRequest", map[string]any{"secret": ""}, false},
		{"rotation with an unknown field", "RotateSecretRequest", map[string]any{"grace": 60}, false},
		{"stats", "Stats", stats, true},
		{"stats with a field missing", "Stats", withoutKey(stats, "oldest_pending_age_ms"), false},
		{"stats without superseded", "Stats", withoutKey(stats, "superseded"), false},
		{"stats with a duration in nanoseconds", "Stats", withKey(stats, "oldest_pending_age", 1), false},
		{"error", "Error", map[string]any{"error": map[string]any{"code": "not_found", "message": "m"}}, true},
		{"error with an unknown code", "Error", map[string]any{"error": map[string]any{"code": "oops", "message": "m"}}, false},
		{"attempt body without its encoding", "Attempt", map[string]any{
			"id": 1, "delivery_id": 1, "number": 1, "trigger": "test", "started_at": "2024-05-01T00:00:00Z",
			"duration_ms": 1, "status_code": 200, "response_body": "x",
		}, false},
		{"result with an empty error class", "AttemptResult", map[string]any{
			"delivered": true, "status_code": 200, "duration_ms": 1, "error_class": "", "delivery_id": 1,
		}, true},
		{"result with an unknown error class", "AttemptResult", map[string]any{
			"delivered": false, "status_code": 0, "duration_ms": 1, "error_class": "weird", "delivery_id": 1,
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Round-trip through JSON, as a decoded body would be.
			b, err := json.Marshal(tt.value)
			require.NoError(t, err)
			var v any
			require.NoError(t, json.Unmarshal(b, &v))
			err = schema(tt.schema).VisitJSON(v, opt)
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}

	// A response schema that pins the error code rejects another code.
	nf := s.doc.Components.Responses["NotFound"].Value.Content.Get("application/json").Schema.Value
	require.NoError(t, nf.VisitJSON(map[string]any{"error": map[string]any{"code": "not_found", "message": "m"}}, opt))
	require.Error(t, nf.VisitJSON(map[string]any{"error": map[string]any{"code": "conflict", "message": "m"}}, opt))
	in := s.doc.Components.Responses["Internal"].Value.Content.Get("application/json").Schema.Value
	require.Error(t, in.VisitJSON(map[string]any{"error": map[string]any{"code": "internal", "message": "m"}}, opt), "request_id is required")
}

// TestOpenAPIRoutes checks that the handler serves exactly the operations
// of the document.
func TestOpenAPIRoutes(t *testing.T) {
	s := loadSpec(t)
	d := openTest(t, testConfig())
	srv := mountAPI(t, d.Handler())
	mux := d.Handler().(*api).mux

	var served []string
	for _, rt := range apiRoutes {
		served = append(served, rt.method+" "+rt.path)
	}
	slices.Sort(served)
	require.Equal(t, s.operations(), served, "the routes of the handler and of the document differ")

	// Every operation of the document reaches its own route of the mux.
	sample := strings.NewReplacer("/webhooks/{id}", "/webhooks/0190b5c6-3f0e-7a2b-8c7d-1e2f3a4b5c6d", "/deliveries/{id}", "/deliveries/7")
	for _, op := range s.operations() {
		method, p, _ := strings.Cut(op, " ")
		req := httptest.NewRequest(method, sample.Replace(p), nil)
		_, pattern := mux.Handler(req)
		require.Equal(t, op, pattern, "%s is not served", op)
	}

	// From outside: every method the document lists for a path is served,
	// and every other one is answered with 405 and the document's methods.
	all := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}
	for p := range s.doc.Paths.Map() {
		want := s.methods(p)
		allow := slices.Clone(want)
		if slices.Contains(allow, "GET") {
			allow = append(allow, "HEAD") // the ServeMux serves HEAD with GET
		}
		slices.Sort(allow)
		for _, m := range all {
			c := apiCall{method: m, path: sample.Replace(p)}
			resp := do(t, srv, c)
			if slices.Contains(allow, m) {
				require.NotEqual(t, http.StatusMethodNotAllowed, resp.status, "%s %s", m, p)
				if m != "HEAD" && resp.status == http.StatusNotFound {
					require.NotEqual(t, "no such route", resp.json(t)["error"].(map[string]any)["message"], "%s %s", m, p)
				}
				continue
			}
			require.Equal(t, http.StatusMethodNotAllowed, resp.status, "%s %s: %s", m, p, resp.body)
			require.Equal(t, strings.Join(allow, ", "), resp.header.Get("Allow"), "%s %s", m, p)
			s.check(t, c, resp, false)
		}
	}
}

// TestOpenAPIResponses drives every route of the handler through its
// answers, errors included, and validates each against the document.
// In the end every status that the document lists for an operation must
// have been seen, but 500, which one failure suffices to check.
func TestOpenAPIResponses(t *testing.T) {
	s := loadSpec(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/binary") {
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte{0xff, 0xfe, 0x00, 0x01})
			return
		}
		w.Write([]byte("thanks"))
	})
	d := openTest(t, testConfig())
	srv := mountAPI(t, d.Handler())
	ctx := t.Context()

	// Create.
	resp := s.call(t, srv, apiCall{method: "POST", path: "/webhooks", body: `{"url":"` + rc.url() + `","format":"json","events":["*"],"description":"main"}`}, 201)
	hook := resp.json(t)
	require.Equal(t, "json", hook["format"])
	id := hook["id"].(string)
	require.Equal(t, apiPrefix+"/webhooks/"+id, resp.header.Get("Location"))
	binary := s.call(t, srv, apiCall{method: "POST", path: "/webhooks", body: `{"url":"` + rc.srv.URL + `/binary","events":["job.*"],"enabled":true}`}, 201).json(t)["id"].(string)
	require.Equal(t, "json", s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + binary}, 200).json(t)["format"], "the default")

	// Deliveries to page through, and a failed one to recover.
	for range 3 {
		_, err := d.Publish(ctx, NewJobComplete(JobComplete{JobID: "j", Name: "n"}))
		require.NoError(t, err)
	}
	eventually(t, func() bool {
		page, err := d.Deliveries(ctx, id, DeliveryQuery{Status: StatusDelivered})
		require.NoError(t, err)
		return len(page.Deliveries) == 3
	}, "deliveries never arrived")
	eventually(t, func() bool {
		page, err := d.Deliveries(ctx, binary, DeliveryQuery{Status: StatusFailed})
		require.NoError(t, err)
		return len(page.Deliveries) == 3
	}, "deliveries never failed")

	page := s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?limit=2&status=delivered"}, 200).json(t)
	require.Len(t, page["deliveries"], 2)
	cursor := page["next_cursor"].(string)
	page = s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?limit=2&cursor=" + cursor}, 200).json(t)
	require.Len(t, page["deliveries"], 1)
	require.NotContains(t, page, "next_cursor")
	superseded := s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=superseded"}, 200).json(t)
	require.Empty(t, superseded["deliveries"])
	did := fmt.Sprint(page["deliveries"].([]any)[0].(map[string]any)["id"])
	failed := fmt.Sprint(s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + binary + "/deliveries"}, 200).json(t)["deliveries"].([]any)[0].(map[string]any)["id"])

	s.call(t, srv, apiCall{method: "GET", path: "/deliveries/" + did}, 200)
	s.call(t, srv, apiCall{method: "GET", path: "/deliveries/" + did + "/attempts"}, 200)
	attempts := s.call(t, srv, apiCall{method: "GET", path: "/deliveries/" + failed + "/attempts"}, 200).json(t)["attempts"].([]any)
	require.Equal(t, "base64", attempts[0].(map[string]any)["response_body_encoding"])
	s.call(t, srv, apiCall{method: "POST", path: "/deliveries/" + did + "/retry"}, 200)
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/test"}, 200)
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + binary + "/recover", body: `{"since":"` + since + `"}`}, 200)
	s.call(t, srv, apiCall{method: "GET", path: "/webhooks"}, 200)
	s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + id}, 200)
	slack := s.call(t, srv, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"format":"slack"}`}, 200).json(t)
	require.Equal(t, "slack", slack["format"])
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/test"}, 200)
	s.call(t, srv, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"format":"teams"}`}, 400)
	s.call(t, srv, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"format":"json","description":"main"}`}, 200)
	s.call(t, srv, apiCall{method: "PATCH", path: "/webhooks/" + binary, body: `{"enabled":false}`}, 200)
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + binary + "/recover", body: `{"since":"` + since + `"}`}, 409)
	s.call(t, srv, apiCall{method: "GET", path: "/event-types"}, 200)
	stats := s.call(t, srv, apiCall{method: "GET", path: "/stats"}, 200).json(t)
	require.EqualValues(t, 2, stats["webhooks"])
	require.EqualValues(t, 1, stats["disabled_webhooks"])
	require.EqualValues(t, 0, stats["superseded"])

	// Enable: with recovery, without a body, with an empty one.
	enabled := s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + binary + "/enable", body: `{"recover":true}`}, 200).json(t)
	require.Equal(t, true, enabled["webhook"].(map[string]any)["enabled"])
	require.Contains(t, enabled, "recovered")
	enabled = s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + binary + "/enable"}, 200).json(t)
	require.EqualValues(t, 0, enabled["recovered"], "an enabled webhook recovers nothing")
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/enable", body: `{}`}, 200)
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/enable", body: `{"recover":1}`}, 400)

	// Secret rotation: without a body, with an empty one, with options,
	// without grace; then the grace period revoked.
	rotated := s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret"}, 200).json(t)
	require.Contains(t, rotated, "secret")
	require.Contains(t, rotated, "previous_secret_until")
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: `{}`}, 200)
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: `{"secret":"` + goodSecret + `","grace_seconds":3600}`}, 200)
	s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + id}, 200)
	s.call(t, srv, apiCall{method: "GET", path: "/webhooks"}, 200)
	s.call(t, srv, apiCall{method: "DELETE", path: "/webhooks/" + id + "/previous-secret"}, 204)
	rotated = s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: `{"grace_seconds":-1}`}, 200).json(t)
	require.NotContains(t, rotated, "previous_secret_until")
	s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: `{"grace_seconds":604801}`}, 400)

	// The errors every operation can give.
	unknown := map[string]string{"/webhooks/{id}": "/webhooks/0190b5c6-3f0e-7a2b-8c7d-1e2f3a4b5c6d", "/deliveries/{id}": "/deliveries/999999"}
	malformed := map[string]string{"/webhooks/{id}": "/webhooks/not-a-uuid", "/deliveries/{id}": "/deliveries/007"}
	known := map[string]string{"/webhooks/{id}": "/webhooks/" + id, "/deliveries/{id}": "/deliveries/" + did}
	bodies := map[string]string{
		"POST /webhooks":              `{"url":"` + rc.url() + `","events":["*"]}`,
		"PATCH /webhooks/{id}":        `{"description":"x"}`,
		"POST /webhooks/{id}/recover": `{"since":"` + since + `"}`,
		"POST /webhooks/{id}/enable":  `{"recover":true}`,
		// The body is optional here; a present one must be valid.
		"POST /webhooks/{id}/rotate-secret": `{"grace_seconds":60}`,
	}
	withPath := func(p string, ids map[string]string) string {
		for tmpl, v := range ids {
			if strings.HasPrefix(p, tmpl) {
				return v + strings.TrimPrefix(p, tmpl)
			}
		}
		return p
	}
	for _, op := range s.operations() {
		method, p, _ := strings.Cut(op, " ")
		body := bodies[op]
		s.call(t, srv, apiCall{method: method, path: withPath(p, known) + "?bogus=1", body: body}, 400)
		if strings.Contains(p, "{id}") {
			s.call(t, srv, apiCall{method: method, path: withPath(p, unknown), body: body}, 404)
			s.call(t, srv, apiCall{method: method, path: withPath(p, malformed), body: body}, 404)
		}
		if body != "" {
			s.call(t, srv, apiCall{method: method, path: withPath(p, known), body: body, ctype: "text/plain"}, 415)
			s.call(t, srv, apiCall{method: method, path: withPath(p, known), body: `{"description":"` + strings.Repeat("x", maxRequestBody) + `"}`}, 413)
			s.call(t, srv, apiCall{method: method, path: withPath(p, known), body: `{"bogus":1}`}, 400)
		}
	}
	s.call(t, srv, apiCall{method: "GET", path: "/nowhere"}, 404)
	s.call(t, srv, apiCall{method: "PUT", path: "/webhooks"}, 405)
	s.call(t, srv, apiCall{method: "DELETE", path: "/webhooks/" + id}, 204)

	// 503 from every operation once the dispatcher is closed.
	closed := openTest(t, testConfig())
	closedSrv := mountAPI(t, closed.Handler())
	require.NoError(t, closed.Close(ctx))
	for _, op := range s.operations() {
		method, p, _ := strings.Cut(op, " ")
		s.call(t, closedSrv, apiCall{method: method, path: withPath(p, unknown), body: bodies[op]}, 503)
	}

	// 500 from a failing database.
	broken := openTest(t, Config{DisableDelivery: true})
	brokenSrv := mountAPI(t, broken.Handler())
	require.NoError(t, broken.st.Reader().Close())
	resp = s.call(t, brokenSrv, apiCall{method: "GET", path: "/webhooks"}, 500)
	require.Equal(t, resp.header.Get("X-Request-Id"), resp.json(t)["error"].(map[string]any)["request_id"])
	s.call(t, brokenSrv, apiCall{method: "GET", path: "/stats"}, 500)

	// Every documented status of every operation was seen, but 500.
	var missing []string
	for p, item := range s.doc.Paths.Map() {
		for m, op := range item.Operations() {
			for code := range op.Responses.Map() {
				if code == "500" {
					continue
				}
				if !s.seen[m+" "+p+" "+code] {
					missing = append(missing, m+" "+p+" "+code)
				}
			}
		}
	}
	slices.Sort(missing)
	require.Empty(t, missing, "documented answers never produced")
	require.True(t, s.seen["GET /webhooks 500"])
	require.True(t, s.seen["NotFound 404"])
	require.True(t, s.seen["MethodNotAllowed 405"])
}

// TestOpenAPIFormatsAndStates validates against the document the answers
// that only email webhooks and score changes give: a webhook in the email
// format, attempts refused by an SMTP server, superseded deliveries and
// their count.
func TestOpenAPIFormatsAndStates(t *testing.T) {
	s := loadSpec(t)

	t.Run("email", func(t *testing.T) {
		smtpSrv := startSMTPServer(t, smtpServerOptions{rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}})
		smtpCfg := smtpSrv.config()
		cfg := testConfig()
		cfg.SMTP = &smtpCfg
		d := openTest(t, cfg)
		srv := mountAPI(t, d.Handler())

		hook := s.call(t, srv, apiCall{method: "POST", path: "/webhooks", body: `{"url":"mailto:nobody@example.com","events":["job.*"]}`}, 201).json(t)
		require.Equal(t, "email", hook["format"])
		id := hook["id"].(string)
		s.call(t, srv, apiCall{method: "POST", path: "/webhooks", body: `{"url":"mailto:team@example.com","format":"email","events":["*"]}`}, 201)
		s.call(t, srv, apiCall{method: "POST", path: "/webhooks", body: `{"url":"mailto:team@example.com","format":"slack","events":["*"]}`}, 400)
		s.call(t, srv, apiCall{method: "GET", path: "/webhooks"}, 200)

		res := s.call(t, srv, apiCall{method: "POST", path: "/webhooks/" + id + "/test"}, 200).json(t)
		require.Equal(t, false, res["delivered"])
		require.EqualValues(t, 550, res["status_code"])
		require.Equal(t, ClassSMTP, res["error_class"])

		_, err := d.Publish(t.Context(), NewJobComplete(JobComplete{JobID: "m", Name: "mail"}))
		require.NoError(t, err)
		eventually(t, func() bool {
			page, err := d.Deliveries(t.Context(), id, DeliveryQuery{Status: StatusFailed, Limit: 10})
			require.NoError(t, err)
			return slices.ContainsFunc(page.Deliveries, func(dl Delivery) bool { return dl.EventType == EventJobComplete })
		}, "the email never failed")
		page := s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=failed"}, 200).json(t)
		var did string
		for _, x := range page["deliveries"].([]any) {
			if dl := x.(map[string]any); dl["event_type"] == EventJobComplete {
				did = fmt.Sprint(dl["id"])
				require.EqualValues(t, 550, dl["last_status_code"])
			}
		}
		require.NotEmpty(t, did)
		attempts := s.call(t, srv, apiCall{method: "GET", path: "/deliveries/" + did + "/attempts"}, 200).json(t)["attempts"].([]any)
		require.Len(t, attempts, 4, "email shares the retry schedule")
		for _, x := range attempts {
			require.Equal(t, ClassSMTP, x.(map[string]any)["error_class"])
			require.EqualValues(t, 550, x.(map[string]any)["status_code"])
		}
		s.call(t, srv, apiCall{method: "GET", path: "/deliveries/" + did}, 200)
	})

	t.Run("mailto without SMTP", func(t *testing.T) {
		srv := mountAPI(t, openTest(t, testConfig()).Handler())
		resp := s.call(t, srv, apiCall{method: "POST", path: "/webhooks", body: `{"url":"mailto:team@example.com","events":["*"]}`}, 400)
		require.Equal(t, "url", resp.json(t)["error"].(map[string]any)["field"])
	})

	t.Run("superseded", func(t *testing.T) {
		cfg := testConfig()
		cfg.DisableDelivery = true // the score changes wait, to be superseded
		d := openTest(t, cfg)
		srv := mountAPI(t, d.Handler())
		rc := newReceiver(t, nil)
		id := s.call(t, srv, apiCall{method: "POST", path: "/webhooks", body: `{"url":"` + rc.url() + `","events":["score.changed"]}`}, 201).json(t)["id"].(string)
		for _, score := range []float64{50, 60, 70} {
			_, err := d.ObserveScore(t.Context(), "acme", score)
			require.NoError(t, err)
		}
		page := s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=superseded"}, 200).json(t)
		dls := page["deliveries"].([]any)
		require.Len(t, dls, 1)
		dl := dls[0].(map[string]any)
		require.Equal(t, "superseded", dl["status"])
		s.call(t, srv, apiCall{method: "GET", path: fmt.Sprintf("/deliveries/%v", dl["id"])}, 200)
		s.call(t, srv, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries"}, 200)
		stats := s.call(t, srv, apiCall{method: "GET", path: "/stats"}, 200).json(t)
		require.EqualValues(t, 1, stats["superseded"])
		require.EqualValues(t, 1, stats["pending"])
	})
}
