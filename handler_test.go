package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"
)

// apiTest is a dispatcher served under apiPrefix on a loopback server.
type apiTest struct {
	d    *Dispatcher
	srv  *httptest.Server
	logs *logBuffer
}

func newAPITest(t *testing.T, cfg Config) *apiTest {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = logs.logger()
	d := openTest(t, cfg)
	return &apiTest{d: d, srv: mountAPI(t, d.Handler()), logs: logs}
}

func (a *apiTest) do(t *testing.T, c apiCall) apiResponse {
	t.Helper()
	return do(t, a.srv, c)
}

// create registers a webhook through the API and returns its JSON.
func (a *apiTest) create(t *testing.T, body string) map[string]any {
	t.Helper()
	resp := a.do(t, apiCall{method: "POST", path: "/webhooks", body: body})
	require.Equal(t, http.StatusCreated, resp.status, "%s", resp.body)
	return resp.json(t)
}

// requireError checks an error answer's status, code and field.
func requireError(t *testing.T, resp apiResponse, status int, code, field string) map[string]any {
	t.Helper()
	require.Equal(t, status, resp.status, "%s", resp.body)
	require.Equal(t, "application/json", resp.header.Get("Content-Type"))
	e, ok := resp.json(t)["error"].(map[string]any)
	require.True(t, ok, "%s", resp.body)
	require.Equal(t, code, e["code"], "%s", resp.body)
	if field == "" {
		require.NotContains(t, e, "field", "%s", resp.body)
	} else {
		require.Equal(t, field, e["field"], "%s", resp.body)
	}
	require.NotEmpty(t, e["message"])
	return e
}

const (
	goodSecret = "whsec_BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY="
	unknownID  = "0190b5c6-3f0e-7a2b-8c7d-1e2f3a4b5c6d"
)

func TestHandlerCreateShowsTheSecretOnce(t *testing.T) {
	tests := []struct {
		name   string
		secret string // given in the request; empty to have one made
	}{
		{name: "made"},
		{name: "given", secret: goodSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSecret(goodSecret)
			require.NoError(t, err, "the test secret must be valid")
			a := newAPITest(t, testConfig())
			rc := newReceiver(t, nil)
			body := `{"url":"` + rc.url() + `","events":["job.*"],"description":"d"}`
			if tt.secret != "" {
				body = `{"url":"` + rc.url() + `","events":["job.*"],"secret":"` + tt.secret + `"}`
			}
			resp := a.do(t, apiCall{method: "POST", path: "/webhooks", body: body})
			require.Equal(t, http.StatusCreated, resp.status, "%s", resp.body)
			hook := resp.json(t)
			id := hook["id"].(string)
			secret := hook["secret"].(string)
			require.True(t, strings.HasPrefix(secret, SecretPrefix))
			if tt.secret != "" {
				require.Equal(t, tt.secret, secret)
			}
			require.Equal(t, apiPrefix+"/webhooks/"+id, resp.header.Get("Location"))
			require.Equal(t, "no-store", resp.header.Get("Cache-Control"))
			require.Equal(t, rc.url(), hook["url"])
			require.Equal(t, []any{"job.*"}, hook["events"])
			require.Equal(t, true, hook["enabled"])
			require.Equal(t, "json", hook["format"], "the default")

			// The secret is the one deliveries are signed with.
			_, err = a.d.Publish(t.Context(), NewJobComplete(JobComplete{JobID: "1"}))
			require.NoError(t, err)
			got := rc.waitFor(1)
			verifyStandard(t, secret, got[0].Header, got[0].Body)

			// No other answer shows it.
			for _, c := range []apiCall{
				{method: "GET", path: "/webhooks"},
				{method: "GET", path: "/webhooks/" + id},
				{method: "PATCH", path: "/webhooks/" + id, body: `{"description":"changed"}`},
				{method: "POST", path: "/webhooks/" + id + "/test"},
				{method: "GET", path: "/webhooks/" + id + "/deliveries"},
				{method: "DELETE", path: "/webhooks/" + id + "/previous-secret"},
				{method: "POST", path: "/webhooks/" + id + "/enable", body: `{"recover":true}`},
				{method: "GET", path: "/stats"},
			} {
				resp := a.do(t, c)
				require.Less(t, resp.status, 300, "%s %s: %s", c.method, c.path, resp.body)
				require.NotContains(t, string(resp.body), secret, "%s %s", c.method, c.path)
				require.NotContains(t, string(resp.body), `"secret"`, "%s %s", c.method, c.path)
				require.NotContains(t, string(resp.body), strings.TrimPrefix(secret, SecretPrefix), "%s %s", c.method, c.path)
			}
			require.NotContains(t, a.logs.String(), strings.TrimPrefix(secret, SecretPrefix), "the secret was logged")
		})
	}
}

func TestHandlerLocationUnderAnyPrefix(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, nil)
	body := `{"url":"` + rc.url() + `","events":["*"]}`
	tests := []struct {
		name   string
		mount  func(http.Handler) http.Handler
		prefix string
	}{
		{"root", func(h http.Handler) http.Handler { return h }, ""},
		{"one segment", func(h http.Handler) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("/api/", http.StripPrefix("/api", h))
			return mux
		}, "/api"},
		{"deep", func(h http.Handler) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("/admin/v2/hooks/", http.StripPrefix("/admin/v2/hooks", h))
			return mux
		}, "/admin/v2/hooks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.mount(d.Handler()))
			defer srv.Close()
			resp, err := srv.Client().Post(srv.URL+tt.prefix+"/webhooks?", "application/json", strings.NewReader(body))
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusCreated, resp.StatusCode)
			loc := resp.Header.Get("Location")
			require.Regexp(t, "^"+tt.prefix+"/webhooks/[0-9a-f-]{36}$", loc)

			// The Location leads to the webhook.
			got, err := srv.Client().Get(srv.URL + loc)
			require.NoError(t, err)
			got.Body.Close()
			require.Equal(t, http.StatusOK, got.StatusCode)
		})
	}
}

func TestHandlerStrictBodies(t *testing.T) {
	a := newAPITest(t, testConfig())
	rc := newReceiver(t, nil)
	url := rc.url()
	hook := a.create(t, `{"url":"`+url+`","events":["*"]}`)
	id := hook["id"].(string)
	before, err := a.d.Get(t.Context(), id)
	require.NoError(t, err)
	ok := `"url":"` + url + `","events":["job.complete"]`
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		code   string
		field  string
	}{
		// Malformed bodies.
		{"empty body", "POST", "/webhooks", "", codeInvalidJSON, ""},
		{"null body", "POST", "/webhooks", "null", codeInvalidJSON, ""},
		{"array body", "POST", "/webhooks", "[]", codeInvalidJSON, ""},
		{"string body", "POST", "/webhooks", `"x"`, codeInvalidJSON, ""},
		{"truncated", "POST", "/webhooks", `{"url":`, codeInvalidJSON, ""},
		{"trailing comma", "POST", "/webhooks", `{` + ok + `,}`, codeInvalidJSON, ""},
		{"trailing object", "POST", "/webhooks", `{` + ok + `} {}`, codeInvalidJSON, ""},
		{"trailing garbage", "POST", "/webhooks", `{` + ok + `}x`, codeInvalidJSON, ""},
		{"invalid UTF-8", "POST", "/webhooks", `{` + ok + `,"description":"` + "\xff" + `"}`, codeInvalidJSON, ""},
		// Fields.
		{"unknown field", "POST", "/webhooks", `{` + ok + `,"nope":1}`, codeInvalidRequest, "nope"},
		{"case variant URL", "POST", "/webhooks", `{"URL":"` + url + `","events":["*"]}`, codeInvalidRequest, "URL"},
		{"case variant Events", "POST", "/webhooks", `{"url":"` + url + `","Events":["*"]}`, codeInvalidRequest, "Events"},
		{"duplicate key", "POST", "/webhooks", `{` + ok + `,"url":"` + url + `"}`, codeInvalidRequest, "url"},
		{"null field", "POST", "/webhooks", `{` + ok + `,"description":null}`, codeInvalidRequest, "description"},
		{"null url", "POST", "/webhooks", `{"url":null,"events":["*"]}`, codeInvalidRequest, "url"},
		{"null events", "POST", "/webhooks", `{"url":"` + url + `","events":null}`, codeInvalidRequest, "events"},
		{"null event", "POST", "/webhooks", `{"url":"` + url + `","events":[null]}`, codeInvalidRequest, "events[0]"},
		{"null enabled", "POST", "/webhooks", `{` + ok + `,"enabled":null}`, codeInvalidRequest, "enabled"},
		{"null secret", "POST", "/webhooks", `{` + ok + `,"secret":null}`, codeInvalidRequest, "secret"},
		{"events not an array", "POST", "/webhooks", `{"url":"` + url + `","events":"job.complete"}`, codeInvalidRequest, "events"},
		{"event not a string", "POST", "/webhooks", `{"url":"` + url + `","events":["*",1]}`, codeInvalidRequest, "events[1]"},
		{"url not a string", "POST", "/webhooks", `{"url":1,"events":["*"]}`, codeInvalidRequest, "url"},
		{"enabled not a boolean", "POST", "/webhooks", `{` + ok + `,"enabled":"true"}`, codeInvalidRequest, "enabled"},
		{"description not a string", "POST", "/webhooks", `{` + ok + `,"description":{}}`, codeInvalidRequest, "description"},
		{"missing url", "POST", "/webhooks", `{"events":["*"]}`, codeInvalidRequest, "url"},
		{"missing events", "POST", "/webhooks", `{"url":"` + url + `"}`, codeInvalidRequest, "events"},
		// Values the dispatcher rejects.
		{"invalid url", "POST", "/webhooks", `{"url":"ftp://example.com/","events":["*"]}`, codeInvalidRequest, "url"},
		{"empty url", "POST", "/webhooks", `{"url":"","events":["*"]}`, codeInvalidRequest, "url"},
		{"blocked url", "POST", "/webhooks", `{"url":"http://169.254.169.254/latest","events":["*"]}`, codeInvalidRequest, "url"},
		{"no events", "POST", "/webhooks", `{"url":"` + url + `","events":[]}`, codeInvalidRequest, "events"},
		{"unknown event", "POST", "/webhooks", `{"url":"` + url + `","events":["*","no.such"]}`, codeInvalidRequest, "events[1]"},
		{"invalid secret", "POST", "/webhooks", `{` + ok + `,"secret":"whsec_c2hvcnQ="}`, codeInvalidRequest, "secret"},
		{"secret without prefix", "POST", "/webhooks", `{` + ok + `,"secret":"hunter2hunter2hunter2hunter2"}`, codeInvalidRequest, "secret"},
		{"empty secret", "POST", "/webhooks", `{` + ok + `,"secret":""}`, codeInvalidRequest, "secret"},
		{"long description", "POST", "/webhooks", `{` + ok + `,"description":"` + strings.Repeat("x", 1025) + `"}`, codeInvalidRequest, "description"},
		// Formats.
		{"unknown format", "POST", "/webhooks", `{` + ok + `,"format":"teams"}`, codeInvalidRequest, "format"},
		{"format in another case", "POST", "/webhooks", `{` + ok + `,"format":"Slack"}`, codeInvalidRequest, "format"},
		{"empty format", "POST", "/webhooks", `{` + ok + `,"format":""}`, codeInvalidRequest, "format"},
		{"null format", "POST", "/webhooks", `{` + ok + `,"format":null}`, codeInvalidRequest, "format"},
		{"format not a string", "POST", "/webhooks", `{` + ok + `,"format":["slack"]}`, codeInvalidRequest, "format"},
		{"case variant Format", "POST", "/webhooks", `{` + ok + `,"Format":"slack"}`, codeInvalidRequest, "Format"},
		{"email format of an http url", "POST", "/webhooks", `{` + ok + `,"format":"email"}`, codeInvalidRequest, "format"},
		{"mailto without SMTP", "POST", "/webhooks", `{"url":"mailto:team@example.com","events":["*"]}`, codeInvalidRequest, "url"},
		{"mailto in email without SMTP", "POST", "/webhooks", `{"url":"mailto:team@example.com","format":"email","events":["*"]}`, codeInvalidRequest, "url"},
		// PATCH.
		{"empty patch", "PATCH", "/webhooks/" + id, `{}`, codeInvalidRequest, ""},
		{"patch secret", "PATCH", "/webhooks/" + id, `{"secret":"` + goodSecret + `"}`, codeInvalidRequest, "secret"},
		{"patch null", "PATCH", "/webhooks/" + id, `{"url":null}`, codeInvalidRequest, "url"},
		{"patch case variant", "PATCH", "/webhooks/" + id, `{"Enabled":false}`, codeInvalidRequest, "Enabled"},
		{"patch duplicate", "PATCH", "/webhooks/" + id, `{"enabled":false,"enabled":true}`, codeInvalidRequest, "enabled"},
		{"patch no events", "PATCH", "/webhooks/" + id, `{"events":[]}`, codeInvalidRequest, "events"},
		{"patch invalid url", "PATCH", "/webhooks/" + id, `{"url":"http://user:pw@example.com/"}`, codeInvalidRequest, "url"},
		{"patch unknown format", "PATCH", "/webhooks/" + id, `{"format":"teams"}`, codeInvalidRequest, "format"},
		{"patch empty format", "PATCH", "/webhooks/" + id, `{"format":""}`, codeInvalidRequest, "format"},
		{"patch null format", "PATCH", "/webhooks/" + id, `{"format":null}`, codeInvalidRequest, "format"},
		{"patch email format of an http url", "PATCH", "/webhooks/" + id, `{"format":"email"}`, codeInvalidRequest, "format"},
		{"patch url and format", "PATCH", "/webhooks/" + id, `{"url":"` + url + `","format":"email"}`, codeInvalidRequest, "format"},
		{"patch mailto without SMTP", "PATCH", "/webhooks/" + id, `{"url":"mailto:team@example.com"}`, codeInvalidRequest, "url"},
		{"patch null body", "PATCH", "/webhooks/" + id, `null`, codeInvalidJSON, ""},
		// Recover.
		{"recover without since", "POST", "/webhooks/" + id + "/recover", `{}`, codeInvalidRequest, "since"},
		{"recover null since", "POST", "/webhooks/" + id + "/recover", `{"since":null}`, codeInvalidRequest, "since"},
		{"recover bad since", "POST", "/webhooks/" + id + "/recover", `{"since":"yesterday"}`, codeInvalidRequest, "since"},
		{"recover since as a number", "POST", "/webhooks/" + id + "/recover", `{"since":1714521600}`, codeInvalidRequest, "since"},
		{"recover until before since", "POST", "/webhooks/" + id + "/recover", `{"since":"2024-05-02T00:00:00Z","until":"2024-05-01T00:00:00Z"}`, codeInvalidRequest, "until"},
		{"recover unknown field", "POST", "/webhooks/" + id + "/recover", `{"since":"2024-05-02T00:00:00Z","status":"failed"}`, codeInvalidRequest, "status"},
		// Rotate.
		{"rotate null body", "POST", "/webhooks/" + id + "/rotate-secret", `null`, codeInvalidJSON, ""},
		{"rotate array body", "POST", "/webhooks/" + id + "/rotate-secret", `[]`, codeInvalidJSON, ""},
		{"rotate blank body", "POST", "/webhooks/" + id + "/rotate-secret", ` `, codeInvalidJSON, ""},
		{"rotate trailing object", "POST", "/webhooks/" + id + "/rotate-secret", `{} {}`, codeInvalidJSON, ""},
		{"rotate unknown field", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace":60}`, codeInvalidRequest, "grace"},
		{"rotate case variant Secret", "POST", "/webhooks/" + id + "/rotate-secret", `{"Secret":"` + goodSecret + `"}`, codeInvalidRequest, "Secret"},
		{"rotate duplicate", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace_seconds":1,"grace_seconds":2}`, codeInvalidRequest, "grace_seconds"},
		{"rotate invalid secret", "POST", "/webhooks/" + id + "/rotate-secret", `{"secret":"whsec_c2hvcnQ="}`, codeInvalidRequest, "secret"},
		{"rotate secret without prefix", "POST", "/webhooks/" + id + "/rotate-secret", `{"secret":"hunter2hunter2hunter2hunter2"}`, codeInvalidRequest, "secret"},
		{"rotate empty secret", "POST", "/webhooks/" + id + "/rotate-secret", `{"secret":""}`, codeInvalidRequest, "secret"},
		{"rotate null secret", "POST", "/webhooks/" + id + "/rotate-secret", `{"secret":null}`, codeInvalidRequest, "secret"},
		{"rotate secret not a string", "POST", "/webhooks/" + id + "/rotate-secret", `{"secret":1}`, codeInvalidRequest, "secret"},
		{"rotate null grace", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace_seconds":null}`, codeInvalidRequest, "grace_seconds"},
		{"rotate grace as a string", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace_seconds":"60"}`, codeInvalidRequest, "grace_seconds"},
		{"rotate fractional grace", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace_seconds":1.5}`, codeInvalidRequest, "grace_seconds"},
		{"rotate grace with an exponent", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace_seconds":1e3}`, codeInvalidRequest, "grace_seconds"},
		{"rotate grace below -1", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace_seconds":-2}`, codeInvalidRequest, "grace_seconds"},
		{"rotate grace over 7 days", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace_seconds":604801}`, codeInvalidRequest, "grace_seconds"},
		{"rotate grace overflowing", "POST", "/webhooks/" + id + "/rotate-secret", `{"grace_seconds":99999999999999999999}`, codeInvalidRequest, "grace_seconds"},
		// Enable.
		{"enable null body", "POST", "/webhooks/" + id + "/enable", `null`, codeInvalidJSON, ""},
		{"enable array body", "POST", "/webhooks/" + id + "/enable", `[true]`, codeInvalidJSON, ""},
		{"enable trailing object", "POST", "/webhooks/" + id + "/enable", `{} {}`, codeInvalidJSON, ""},
		{"enable unknown field", "POST", "/webhooks/" + id + "/enable", `{"recovered":true}`, codeInvalidRequest, "recovered"},
		{"enable case variant Recover", "POST", "/webhooks/" + id + "/enable", `{"Recover":true}`, codeInvalidRequest, "Recover"},
		{"enable duplicate", "POST", "/webhooks/" + id + "/enable", `{"recover":true,"recover":false}`, codeInvalidRequest, "recover"},
		{"enable null recover", "POST", "/webhooks/" + id + "/enable", `{"recover":null}`, codeInvalidRequest, "recover"},
		{"enable recover as a string", "POST", "/webhooks/" + id + "/enable", `{"recover":"true"}`, codeInvalidRequest, "recover"},
		{"enable recover as a number", "POST", "/webhooks/" + id + "/enable", `{"recover":1}`, codeInvalidRequest, "recover"},
		// Routes without a body.
		{"test with a body", "POST", "/webhooks/" + id + "/test", `{}`, codeInvalidRequest, ""},
		{"retry with a body", "POST", "/deliveries/1/retry", `{}`, codeInvalidRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := a.do(t, apiCall{method: tt.method, path: tt.path, body: tt.body, ctype: "application/json"})
			e := requireError(t, resp, http.StatusBadRequest, tt.code, tt.field)
			if strings.Contains(tt.name, "case variant") {
				require.Contains(t, e["message"], "case-sensitive")
			}
		})
	}

	// Nothing was registered or changed by the rejected requests.
	hooks, err := a.d.List(t.Context())
	require.NoError(t, err)
	require.Len(t, hooks, 1)
	require.True(t, hooks[0].Enabled)
	require.Equal(t, before, hooks[0], "no rotation happened")
}

func TestHandlerQueryParameters(t *testing.T) {
	a := newAPITest(t, testConfig())
	rc := newReceiver(t, nil)
	id := a.create(t, `{"url":"`+rc.url()+`","events":["*"]}`)["id"].(string)
	deliveries := "/webhooks/" + id + "/deliveries"
	tests := []struct {
		name  string
		path  string
		field string
	}{
		{"unknown parameter", "/webhooks?verbose=1", "verbose"},
		{"unknown parameter on a delivery route", deliveries + "?limit=5&offset=10", "offset"},
		{"case variant", deliveries + "?Limit=5", "Limit"},
		{"repeated", deliveries + "?status=failed&status=pending", "status"},
		{"limit zero", deliveries + "?limit=0", "limit"},
		{"limit too large", deliveries + "?limit=501", "limit"},
		{"limit negative", deliveries + "?limit=-1", "limit"},
		{"limit not a number", deliveries + "?limit=ten", "limit"},
		{"limit empty", deliveries + "?limit=", "limit"},
		{"status unknown", deliveries + "?status=lost", "status"},
		{"status in another case", deliveries + "?status=Superseded", "status"},
		{"status empty", deliveries + "?status=", "status"},
		{"cursor malformed", deliveries + "?cursor=abc", "cursor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireError(t, a.do(t, apiCall{method: "GET", path: tt.path}), http.StatusBadRequest, codeInvalidRequest, tt.field)
		})
	}
	t.Run("malformed query", func(t *testing.T) {
		requireError(t, a.do(t, apiCall{method: "GET", path: deliveries + "?limit=5;status=failed"}), http.StatusBadRequest, codeInvalidRequest, "")
	})
}

func TestHandlerNotFound(t *testing.T) {
	a := newAPITest(t, testConfig())
	rc := newReceiver(t, nil)
	id := a.create(t, `{"url":"`+rc.url()+`","events":["*"]}`)["id"].(string)
	recoverBody := `{"since":"2024-05-01T00:00:00Z"}`
	tests := []struct {
		name   string
		method string
		path   string
		body   string
	}{
		{"unknown webhook", "GET", "/webhooks/" + unknownID, ""},
		{"unknown webhook patch", "PATCH", "/webhooks/" + unknownID, `{"enabled":false}`},
		{"unknown webhook delete", "DELETE", "/webhooks/" + unknownID, ""},
		{"unknown webhook test", "POST", "/webhooks/" + unknownID + "/test", ""},
		{"unknown webhook deliveries", "GET", "/webhooks/" + unknownID + "/deliveries", ""},
		{"unknown webhook recover", "POST", "/webhooks/" + unknownID + "/recover", recoverBody},
		{"unknown webhook rotate", "POST", "/webhooks/" + unknownID + "/rotate-secret", ""},
		{"unknown webhook rotate with a body", "POST", "/webhooks/" + unknownID + "/rotate-secret", `{"grace_seconds":60}`},
		{"unknown webhook revoke", "DELETE", "/webhooks/" + unknownID + "/previous-secret", ""},
		{"unknown webhook enable", "POST", "/webhooks/" + unknownID + "/enable", ""},
		{"unknown webhook enable with recovery", "POST", "/webhooks/" + unknownID + "/enable", `{"recover":true}`},
		{"uppercase webhook id", "GET", "/webhooks/" + strings.ToUpper(id), ""},
		{"short webhook id", "GET", "/webhooks/123", ""},
		{"webhook id with braces", "GET", "/webhooks/{" + id[:34] + "}", ""},
		{"webhook id urn", "GET", "/webhooks/urn:uuid:" + id, ""},
		{"malformed webhook id patch", "PATCH", "/webhooks/nope", `{"enabled":false}`},
		{"malformed webhook id delete", "DELETE", "/webhooks/nope", ""},
		{"malformed webhook id recover", "POST", "/webhooks/nope/recover", recoverBody},
		{"malformed webhook id rotate", "POST", "/webhooks/nope/rotate-secret", `{"secret":"whsec_bad"}`},
		{"malformed webhook id revoke", "DELETE", "/webhooks/nope/previous-secret", ""},
		{"malformed webhook id enable", "POST", "/webhooks/nope/enable", `{"recover":true}`},
		{"unknown delivery", "GET", "/deliveries/424242", ""},
		{"unknown delivery attempts", "GET", "/deliveries/424242/attempts", ""},
		{"unknown delivery retry", "POST", "/deliveries/424242/retry", ""},
		{"delivery id zero", "GET", "/deliveries/0", ""},
		{"delivery id negative", "GET", "/deliveries/-1", ""},
		{"delivery id plus", "GET", "/deliveries/+1", ""},
		{"delivery id leading zero", "GET", "/deliveries/01", ""},
		{"delivery id overflow", "GET", "/deliveries/9223372036854775808", ""},
		{"delivery id not a number", "GET", "/deliveries/abc/attempts", ""},
		{"delivery id hex", "POST", "/deliveries/0x10/retry", ""},
		{"unknown route", "GET", "/nowhere", ""},
		{"root", "GET", "/", ""},
		{"trailing slash", "GET", "/webhooks/", ""},
		{"too deep", "GET", "/webhooks/" + id + "/deliveries/1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := a.do(t, apiCall{method: tt.method, path: tt.path, body: tt.body})
			requireError(t, resp, http.StatusNotFound, codeNotFound, "")
		})
	}

	// Paths that are not clean would be redirected by a ServeMux, to a
	// place that misses the host's prefix; the handler answers 404. (A
	// host's own ServeMux cleans them before, so ask the handler directly.)
	for _, p := range []string{"/webhooks/../webhooks", "//webhooks", "/./webhooks", "/webhooks/" + id + "/", "/event-types/."} {
		t.Run("unclean "+p, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/", nil)
			req.URL.Path = p
			a.d.Handler().ServeHTTP(rec, req)
			require.Equal(t, http.StatusNotFound, rec.Code, rec.Body.String())
			require.Contains(t, rec.Body.String(), `"code":"not_found"`)
			require.Empty(t, rec.Header().Get("Location"))
		})
	}
}

func TestHandlerIDsAreCheckedBeforeTheDatabase(t *testing.T) {
	t.Run("parse", func(t *testing.T) {
		tests := []struct {
			in   string
			want int64
			ok   bool
		}{
			{"1", 1, true},
			{"9223372036854775807", 1<<63 - 1, true},
			{"9223372036854775808", 0, false},
			{"0", 0, false},
			{"01", 0, false},
			{"-1", 0, false},
			{"+1", 0, false},
			{"1e3", 0, false},
			{" 1", 0, false},
			{"", 0, false},
		}
		for _, tt := range tests {
			got, ok := parsePositive(tt.in)
			require.Equal(t, tt.ok, ok, "%q", tt.in)
			require.Equal(t, tt.want, got, "%q", tt.in)
		}
	})

	// With the read pool closed, a query fails with 500: a 404 shows that
	// no query was made.
	a := newAPITest(t, Config{DisableDelivery: true})
	require.NoError(t, a.d.st.Reader().Close())
	for _, p := range []string{"/webhooks/nope", "/webhooks/" + unknownID[:35] + "x", "/deliveries/0", "/deliveries/x/attempts"} {
		requireError(t, a.do(t, apiCall{method: "GET", path: p}), http.StatusNotFound, codeNotFound, "")
	}
	for _, p := range []string{"/webhooks/" + unknownID, "/deliveries/1"} {
		require.Equal(t, http.StatusInternalServerError, a.do(t, apiCall{method: "GET", path: p}).status, p)
	}
}

func TestHandlerMethodNotAllowed(t *testing.T) {
	a := newAPITest(t, testConfig())
	tests := []struct {
		method string
		path   string
		allow  string
	}{
		{"PUT", "/webhooks", "GET, HEAD, POST"},
		{"DELETE", "/webhooks", "GET, HEAD, POST"},
		{"POST", "/webhooks/" + unknownID, "DELETE, GET, HEAD, PATCH"},
		{"PUT", "/webhooks/nope", "DELETE, GET, HEAD, PATCH"},
		{"GET", "/webhooks/" + unknownID + "/test", "POST"},
		{"POST", "/webhooks/" + unknownID + "/deliveries", "GET, HEAD"},
		{"GET", "/webhooks/" + unknownID + "/recover", "POST"},
		{"GET", "/webhooks/" + unknownID + "/rotate-secret", "POST"},
		{"PUT", "/webhooks/" + unknownID + "/rotate-secret", "POST"},
		{"GET", "/webhooks/" + unknownID + "/previous-secret", "DELETE"},
		{"POST", "/webhooks/" + unknownID + "/previous-secret", "DELETE"},
		{"GET", "/webhooks/" + unknownID + "/enable", "POST"},
		{"PATCH", "/webhooks/" + unknownID + "/enable", "POST"},
		{"POST", "/stats", "GET, HEAD"},
		{"DELETE", "/stats", "GET, HEAD"},
		{"DELETE", "/deliveries/1", "GET, HEAD"},
		{"POST", "/deliveries/1/attempts", "GET, HEAD"},
		{"GET", "/deliveries/1/retry", "POST"},
		{"POST", "/event-types", "GET, HEAD"},
		{"OPTIONS", "/event-types", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp := a.do(t, apiCall{method: tt.method, path: tt.path})
			requireError(t, resp, http.StatusMethodNotAllowed, codeMethodNotAllowed, "")
			require.Equal(t, tt.allow, resp.header.Get("Allow"))
		})
	}
}

func TestHandlerBodyLimitsAndMediaType(t *testing.T) {
	a := newAPITest(t, testConfig())
	rc := newReceiver(t, nil)
	id := a.create(t, `{"url":"`+rc.url()+`","events":["*"]}`)["id"].(string)
	big := `{"url":"` + rc.url() + `","events":["*"],"description":"` + strings.Repeat("x", maxRequestBody) + `"}`
	good := `{"url":"` + rc.url() + `","events":["*"]}`
	tests := []struct {
		name    string
		call    apiCall
		status  int
		code    string
		field   string
		created bool
	}{
		{"too large", apiCall{method: "POST", path: "/webhooks", body: big}, 413, codePayloadTooLarge, "", false},
		{"too large, chunked", apiCall{method: "POST", path: "/webhooks", body: big, chunked: true}, 413, codePayloadTooLarge, "", false},
		{"too large patch", apiCall{method: "PATCH", path: "/webhooks/" + id, body: big}, 413, codePayloadTooLarge, "", false},
		{"too large recover", apiCall{method: "POST", path: "/webhooks/" + id + "/recover", body: big, chunked: true}, 413, codePayloadTooLarge, "", false},
		{"too large rotate", apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: big}, 413, codePayloadTooLarge, "", false},
		{"too large rotate, chunked", apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: big, chunked: true}, 413, codePayloadTooLarge, "", false},
		{"too large enable", apiCall{method: "POST", path: "/webhooks/" + id + "/enable", body: big}, 413, codePayloadTooLarge, "", false},
		{"too large enable, chunked", apiCall{method: "POST", path: "/webhooks/" + id + "/enable", body: big, chunked: true}, 413, codePayloadTooLarge, "", false},
		{"enable as text/plain", apiCall{method: "POST", path: "/webhooks/" + id + "/enable", body: `{"recover":true}`, ctype: "text/plain"}, 415, codeUnsupportedMediaType, "", false},
		{"rotate as text/plain", apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: `{}`, ctype: "text/plain"}, 415, codeUnsupportedMediaType, "", false},
		{"rotate without a content type", apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: `{}`, header: http.Header{"Content-Type": nil}}, 415, codeUnsupportedMediaType, "", false},
		{"rotate in latin1", apiCall{method: "POST", path: "/webhooks/" + id + "/rotate-secret", body: `{}`, ctype: "application/json; charset=iso-8859-1"}, 415, codeUnsupportedMediaType, "", false},
		{"no content type", apiCall{method: "POST", path: "/webhooks", body: good, header: http.Header{"Content-Type": nil}}, 415, codeUnsupportedMediaType, "", false},
		{"text/plain", apiCall{method: "POST", path: "/webhooks", body: good, ctype: "text/plain"}, 415, codeUnsupportedMediaType, "", false},
		{"form", apiCall{method: "PATCH", path: "/webhooks/" + id, body: `enabled=false`, ctype: "application/x-www-form-urlencoded"}, 415, codeUnsupportedMediaType, "", false},
		{"json-ish", apiCall{method: "POST", path: "/webhooks", body: good, ctype: "application/jsonx"}, 415, codeUnsupportedMediaType, "", false},
		{"latin1", apiCall{method: "POST", path: "/webhooks", body: good, ctype: "application/json; charset=iso-8859-1"}, 415, codeUnsupportedMediaType, "", false},
		{"malformed content type", apiCall{method: "POST", path: "/webhooks", body: good, ctype: "application/json; charset"}, 415, codeUnsupportedMediaType, "", false},
		{"utf-8 charset", apiCall{method: "POST", path: "/webhooks", body: good, ctype: "application/json; charset=utf-8"}, 201, "", "", true},
		{"upper case", apiCall{method: "POST", path: "/webhooks", body: good, ctype: "Application/JSON; Charset=UTF-8"}, 201, "", "", true},
		{"just under the limit", apiCall{method: "POST", path: "/webhooks", chunked: true,
			body: `{"url":"` + rc.url() + `","events":["*"],"description":"` + strings.Repeat(" ", maxRequestBody-200) + `"}`}, 400, codeInvalidRequest, "description", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := a.d.List(t.Context())
			require.NoError(t, err)
			resp := a.do(t, tt.call)
			if tt.code == "" {
				require.Equal(t, tt.status, resp.status, "%s", resp.body)
			} else {
				// Just under the limit, the body is read in full and
				// judged on its content.
				requireError(t, resp, tt.status, tt.code, tt.field)
			}
			after, err := a.d.List(t.Context())
			require.NoError(t, err)
			if tt.created {
				require.Len(t, after, len(before)+1)
			} else {
				require.Equal(t, before, after)
			}
		})
	}
}

func TestHandlerInternalError(t *testing.T) {
	a := newAPITest(t, Config{DisableDelivery: true})
	require.NoError(t, a.d.st.Reader().Close()) // every read now fails

	tests := []struct {
		name string
		call apiCall
	}{
		{"list webhooks", apiCall{method: "GET", path: "/webhooks"}},
		{"get webhook", apiCall{method: "GET", path: "/webhooks/" + unknownID}},
		{"list deliveries", apiCall{method: "GET", path: "/webhooks/" + unknownID + "/deliveries"}},
		{"get delivery", apiCall{method: "GET", path: "/deliveries/1"}},
		{"list attempts", apiCall{method: "GET", path: "/deliveries/1/attempts"}},
		{"retry", apiCall{method: "POST", path: "/deliveries/1/retry"}},
		{"test send", apiCall{method: "POST", path: "/webhooks/" + unknownID + "/test"}},
		{"stats", apiCall{method: "GET", path: "/stats"}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := a.do(t, tt.call)
			require.Equal(t, http.StatusInternalServerError, resp.status)
			e := requireError(t, resp, http.StatusInternalServerError, codeInternal, "")
			rid, _ := e["request_id"].(string)
			require.NotEmpty(t, rid)
			require.Equal(t, rid, resp.header.Get("X-Request-Id"))
			require.False(t, seen[rid], "request IDs must differ")
			seen[rid] = true
			require.Equal(t, []string{"code", "message", "request_id"}, slices.Sorted(maps.Keys(e)))
			body := strings.ToLower(string(resp.body))
			for _, leak := range []string{"sql", "database", "closed", "select", ".db", os.TempDir(), "webhook:", ".go"} {
				require.NotContains(t, body, strings.ToLower(leak))
			}
			// The real error is logged with the request ID.
			logs := a.logs.String()
			require.Contains(t, logs, `"request_id":"`+rid+`"`)
			require.Contains(t, logs, "database is closed")
		})
	}

	t.Run("a request ID set by the host is used", func(t *testing.T) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Request-Id", "host-42")
			a.d.Handler().ServeHTTP(w, r)
		})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/webhooks", nil))
		require.Equal(t, http.StatusInternalServerError, rec.Code)
		require.Equal(t, "host-42", rec.Header().Get("X-Request-Id"))
		require.Contains(t, rec.Body.String(), `"request_id":"host-42"`)
	})
}

func TestHandlerUnavailable(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		a := newAPITest(t, testConfig())
		require.NoError(t, a.d.Close(t.Context()))
		for _, c := range []apiCall{
			{method: "GET", path: "/webhooks"},
			{method: "POST", path: "/webhooks", body: `{"url":"http://127.0.0.1/","events":["*"]}`},
			{method: "GET", path: "/webhooks/" + unknownID},
			{method: "POST", path: "/deliveries/1/retry"},
			{method: "GET", path: "/event-types"},
			{method: "POST", path: "/webhooks/" + unknownID + "/rotate-secret"},
			{method: "POST", path: "/webhooks/" + unknownID + "/rotate-secret", body: `{"grace_seconds":60}`},
			{method: "DELETE", path: "/webhooks/" + unknownID + "/previous-secret"},
			{method: "POST", path: "/webhooks/" + unknownID + "/enable"},
			{method: "POST", path: "/webhooks/" + unknownID + "/enable", body: `{"recover":true}`},
			{method: "GET", path: "/stats"},
		} {
			requireError(t, a.do(t, c), http.StatusServiceUnavailable, codeUnavailable, "")
		}
	})
	t.Run("cancelled request", func(t *testing.T) {
		d := openTest(t, testConfig())
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		rec := httptest.NewRecorder()
		d.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/webhooks", nil).WithContext(ctx))
		require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
		require.Contains(t, rec.Body.String(), `"code":"unavailable"`)
	})
}

func TestHandlerWebhookLifecycle(t *testing.T) {
	a := newAPITest(t, testConfig())
	rc := newReceiver(t, nil)
	other := newReceiver(t, nil)
	id := a.create(t, `{"url":"`+rc.url()+`","events":["*"],"description":"first"}`)["id"].(string)
	second := a.create(t, `{"url":"`+rc.url()+`","events":["job.failed"],"enabled":false}`)
	require.Equal(t, false, second["enabled"])
	require.Equal(t, "disabled by request", second["disabled_reason"])

	list := a.do(t, apiCall{method: "GET", path: "/webhooks"})
	require.Equal(t, http.StatusOK, list.status)
	hooks := list.json(t)["webhooks"].([]any)
	require.Len(t, hooks, 2)
	require.Equal(t, id, hooks[0].(map[string]any)["id"], "oldest first")

	tests := []struct {
		name  string
		patch string
		check func(t *testing.T, w map[string]any)
	}{
		{"url", `{"url":"` + other.url() + `"}`, func(t *testing.T, w map[string]any) { require.Equal(t, other.url(), w["url"]) }},
		{"events", `{"events":["job.complete","score.changed"]}`, func(t *testing.T, w map[string]any) {
			require.Equal(t, []any{"job.complete", "score.changed"}, w["events"])
		}},
		{"description", `{"description":""}`, func(t *testing.T, w map[string]any) { require.Equal(t, "", w["description"]) }},
		{"disable", `{"enabled":false}`, func(t *testing.T, w map[string]any) {
			require.Equal(t, false, w["enabled"])
			require.Equal(t, "disabled by request", w["disabled_reason"])
			require.Contains(t, w, "disabled_at")
		}},
		{"enable", `{"enabled":true}`, func(t *testing.T, w map[string]any) {
			require.Equal(t, true, w["enabled"])
			require.NotContains(t, w, "disabled_reason")
			require.NotContains(t, w, "disabled_at")
		}},
		{"several", `{"description":"both","enabled":true,"events":["*"]}`, func(t *testing.T, w map[string]any) {
			require.Equal(t, "both", w["description"])
			require.Equal(t, []any{"*"}, w["events"])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + id, body: tt.patch})
			require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
			tt.check(t, resp.json(t))
			got := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id})
			require.Equal(t, http.StatusOK, got.status)
			require.Equal(t, resp.json(t), got.json(t), "GET shows what PATCH answered")
		})
	}

	t.Run("head", func(t *testing.T) {
		resp := a.do(t, apiCall{method: "HEAD", path: "/webhooks/" + id})
		require.Equal(t, http.StatusOK, resp.status)
		require.Empty(t, resp.body)
	})

	t.Run("delete", func(t *testing.T) {
		resp := a.do(t, apiCall{method: "DELETE", path: "/webhooks/" + id})
		require.Equal(t, http.StatusNoContent, resp.status)
		require.Empty(t, resp.body)
		requireError(t, a.do(t, apiCall{method: "GET", path: "/webhooks/" + id}), http.StatusNotFound, codeNotFound, "")
		requireError(t, a.do(t, apiCall{method: "DELETE", path: "/webhooks/" + id}), http.StatusNotFound, codeNotFound, "")
	})
}

func TestHandlerSendTest(t *testing.T) {
	const answer = "receiver-private-answer-7f3a"
	tests := []struct {
		name      string
		answer    func(w http.ResponseWriter)
		closed    bool // the receiver is gone
		delivered bool
		status    float64
		class     string
	}{
		{"delivered", func(w http.ResponseWriter) { w.Write([]byte(answer)) }, false, true, 200, ""},
		{"refused by the receiver", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(answer))
		}, false, false, 503, ClassHTTP},
		{"redirected", func(w http.ResponseWriter) {
			w.Header().Set("Location", "http://169.254.169.254/")
			w.WriteHeader(http.StatusFound)
			w.Write([]byte(answer))
		}, false, false, 302, ClassRedirect},
		{"no receiver", nil, true, false, 0, ClassConnection},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAPITest(t, testConfig())
			rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { tt.answer(w) })
			id := a.create(t, `{"url":"`+rc.url()+`","events":["*"],"enabled":false}`)["id"].(string)
			if tt.closed {
				rc.srv.Close()
			}
			resp := a.do(t, apiCall{method: "POST", path: "/webhooks/" + id + "/test"})
			require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
			res := resp.json(t)
			require.Equal(t, tt.delivered, res["delivered"])
			require.Equal(t, tt.status, res["status_code"])
			require.Equal(t, tt.class, res["error_class"])
			require.GreaterOrEqual(t, res["duration_ms"], 0.0)
			require.Greater(t, res["delivery_id"], 0.0)

			// Neither the receiver's answer nor its address is shown.
			host := strings.TrimPrefix(rc.srv.URL, "http://")
			_, port, _ := strings.Cut(host, ":")
			for _, leak := range []string{answer, "127.0.0.1", port, "169.254"} {
				require.NotContains(t, string(resp.body), leak)
			}
			if !tt.closed {
				require.Len(t, rc.requests(), 1)
				require.Equal(t, EventTest, rc.requests()[0].Header.Get(HeaderSPARCEvent))
			}

			// The attempt log has the answer, by design.
			did := fmt.Sprint(res["delivery_id"])
			attempts := a.do(t, apiCall{method: "GET", path: "/deliveries/" + did + "/attempts"}).json(t)["attempts"].([]any)
			require.Len(t, attempts, 1)
			at := attempts[0].(map[string]any)
			require.Equal(t, "test", at["trigger"])
			if !tt.closed {
				require.Equal(t, answer, at["response_body"])
				require.Equal(t, "utf-8", at["response_body_encoding"])
			}
		})
	}
}

func TestHandlerDeliveriesAndAttempts(t *testing.T) {
	a := newAPITest(t, testConfig())
	binary := []byte{0xde, 0xad, 0xbe, 0xef, 0xff}
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderSPARCEvent) == EventJobFailed {
			w.WriteHeader(http.StatusBadRequest)
			w.Write(binary)
			return
		}
		w.Write([]byte("ok, thanks"))
	})
	id := a.create(t, `{"url":"`+rc.url()+`","events":["*"]}`)["id"].(string)
	ctx := t.Context()
	for i := range 5 {
		_, err := a.d.Publish(ctx, NewJobComplete(JobComplete{JobID: fmt.Sprint(i)}))
		require.NoError(t, err)
	}
	_, err := a.d.Publish(ctx, NewJobFailed(JobFailed{JobID: "f", Error: "boom"}))
	require.NoError(t, err)
	eventually(t, func() bool {
		page, err := a.d.Deliveries(ctx, id, DeliveryQuery{Status: StatusPending})
		require.NoError(t, err)
		return len(page.Deliveries) == 0
	}, "deliveries never settled")

	t.Run("paging", func(t *testing.T) {
		var ids []float64
		cursor := ""
		for pages := 0; ; pages++ {
			require.Less(t, pages, 10)
			p := "/webhooks/" + id + "/deliveries?limit=2"
			if cursor != "" {
				p += "&cursor=" + cursor
			}
			resp := a.do(t, apiCall{method: "GET", path: p})
			require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
			page := resp.json(t)
			dls := page["deliveries"].([]any)
			require.LessOrEqual(t, len(dls), 2)
			for _, dl := range dls {
				ids = append(ids, dl.(map[string]any)["id"].(float64))
			}
			next, ok := page["next_cursor"].(string)
			if !ok {
				break
			}
			cursor = next
		}
		require.Len(t, ids, 6)
		for i := 1; i < len(ids); i++ {
			require.Less(t, ids[i], ids[i-1], "newest first, no repeats")
		}
	})

	t.Run("filter", func(t *testing.T) {
		tests := []struct {
			status string
			n      int
		}{{"delivered", 5}, {"failed", 1}, {"pending", 0}, {"cancelled", 0}, {"superseded", 0}}
		for _, tt := range tests {
			resp := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=" + tt.status})
			require.Equal(t, http.StatusOK, resp.status)
			dls := resp.json(t)["deliveries"].([]any)
			require.Len(t, dls, tt.n, tt.status)
			for _, dl := range dls {
				require.Equal(t, tt.status, dl.(map[string]any)["status"])
			}
		}
	})

	failed := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=failed"}).json(t)["deliveries"].([]any)[0].(map[string]any)
	fid := fmt.Sprint(failed["id"])

	t.Run("delivery", func(t *testing.T) {
		resp := a.do(t, apiCall{method: "GET", path: "/deliveries/" + fid})
		require.Equal(t, http.StatusOK, resp.status)
		dl := resp.json(t)
		require.Equal(t, failed, dl)
		require.Equal(t, id, dl["webhook_id"])
		require.Equal(t, EventJobFailed, dl["event_type"])
		require.Equal(t, 400.0, dl["last_status_code"])
	})

	t.Run("attempts", func(t *testing.T) {
		resp := a.do(t, apiCall{method: "GET", path: "/deliveries/" + fid + "/attempts"})
		require.Equal(t, http.StatusOK, resp.status)
		attempts := resp.json(t)["attempts"].([]any)
		require.Len(t, attempts, 4, "fastRetries makes four attempts")
		for i, x := range attempts {
			at := x.(map[string]any)
			require.Equal(t, float64(i+1), at["number"])
			require.Equal(t, "scheduled", at["trigger"])
			require.Equal(t, ClassHTTP, at["error_class"])
			require.Contains(t, at, "duration_ms")
			require.NotContains(t, at, "duration_ns")
			require.Equal(t, "base64", at["response_body_encoding"])
			require.Equal(t, base64.StdEncoding.EncodeToString(binary), at["response_body"])
		}
		ok := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=delivered&limit=1"}).json(t)["deliveries"].([]any)[0].(map[string]any)
		attempts = a.do(t, apiCall{method: "GET", path: fmt.Sprintf("/deliveries/%v/attempts", ok["id"])}).json(t)["attempts"].([]any)
		require.Len(t, attempts, 1)
		at := attempts[0].(map[string]any)
		require.Equal(t, "ok, thanks", at["response_body"])
		require.Equal(t, "utf-8", at["response_body_encoding"])
		require.NotContains(t, at, "error_class")
	})

	t.Run("attempts of nothing", func(t *testing.T) {
		requireError(t, a.do(t, apiCall{method: "GET", path: "/deliveries/999999/attempts"}), http.StatusNotFound, codeNotFound, "")
	})
}

func TestHandlerRetryAndRecover(t *testing.T) {
	a := newAPITest(t, testConfig())
	var healthy = make(chan struct{})
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		select {
		case <-healthy:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte("down"))
		}
	})
	id := a.create(t, `{"url":"`+rc.url()+`","events":["*"]}`)["id"].(string)
	ctx := t.Context()
	for i := range 3 {
		_, err := a.d.Publish(ctx, NewJobComplete(JobComplete{JobID: fmt.Sprint(i)}))
		require.NoError(t, err)
	}
	var failed []Delivery
	eventually(t, func() bool {
		page, err := a.d.Deliveries(ctx, id, DeliveryQuery{Status: StatusFailed})
		require.NoError(t, err)
		failed = page.Deliveries
		return len(failed) == 3
	}, "deliveries never failed")
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)

	t.Run("retry that fails", func(t *testing.T) {
		resp := a.do(t, apiCall{method: "POST", path: fmt.Sprintf("/deliveries/%d/retry", failed[0].ID)})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		res := resp.json(t)
		require.Equal(t, false, res["delivered"])
		require.Equal(t, 500.0, res["status_code"])
		require.Equal(t, ClassHTTP, res["error_class"])
		require.Equal(t, float64(failed[0].ID), res["delivery_id"])
		require.NotContains(t, string(resp.body), "down")
	})

	close(healthy)

	t.Run("retry that succeeds", func(t *testing.T) {
		resp := a.do(t, apiCall{method: "POST", path: fmt.Sprintf("/deliveries/%d/retry", failed[0].ID)})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		res := resp.json(t)
		require.Equal(t, true, res["delivered"])
		require.Equal(t, 204.0, res["status_code"])
		require.Equal(t, "", res["error_class"])
		dl := a.do(t, apiCall{method: "GET", path: fmt.Sprintf("/deliveries/%d", failed[0].ID)}).json(t)
		require.Equal(t, "delivered", dl["status"])
		attempts := a.do(t, apiCall{method: "GET", path: fmt.Sprintf("/deliveries/%d/attempts", failed[0].ID)}).json(t)["attempts"].([]any)
		last := attempts[len(attempts)-1].(map[string]any)
		require.Equal(t, "manual", last["trigger"])
		require.Equal(t, 0.0, last["number"])
	})

	t.Run("recover of a disabled webhook", func(t *testing.T) {
		require.Equal(t, http.StatusOK, a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"enabled":false}`}).status)
		resp := a.do(t, apiCall{method: "POST", path: "/webhooks/" + id + "/recover", body: `{"since":"` + since + `"}`})
		requireError(t, resp, http.StatusConflict, codeConflict, "")
		require.Equal(t, http.StatusOK, a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"enabled":true}`}).status)
	})

	t.Run("recover of an empty window", func(t *testing.T) {
		resp := a.do(t, apiCall{method: "POST", path: "/webhooks/" + id + "/recover",
			body: `{"since":"2020-01-01T00:00:00Z","until":"2020-01-02T00:00:00+02:00"}`})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		require.Equal(t, map[string]any{"scheduled": 0.0}, resp.json(t))
	})

	t.Run("recover", func(t *testing.T) {
		resp := a.do(t, apiCall{method: "POST", path: "/webhooks/" + id + "/recover", body: `{"since":"` + since + `"}`})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		require.Equal(t, map[string]any{"scheduled": 2.0}, resp.json(t))
		for _, dl := range failed[1:] {
			waitStatus(t, a.d, dl.ID, StatusDelivered)
		}
	})

	t.Run("retry of a deleted webhook's delivery", func(t *testing.T) {
		require.Equal(t, http.StatusNoContent, a.do(t, apiCall{method: "DELETE", path: "/webhooks/" + id}).status)
		resp := a.do(t, apiCall{method: "POST", path: fmt.Sprintf("/deliveries/%d/retry", failed[0].ID)})
		requireError(t, resp, http.StatusNotFound, codeNotFound, "")
		dl := a.do(t, apiCall{method: "GET", path: fmt.Sprintf("/deliveries/%d", failed[0].ID)})
		require.Equal(t, http.StatusOK, dl.status, "the history stays")
		require.Equal(t, "", dl.json(t)["webhook_id"])
	})
}

func TestHandlerEventTypes(t *testing.T) {
	cfg := testConfig()
	cfg.EventTypes = []EventType{{Name: "invoice.paid", Description: "An invoice was paid."}}
	a := newAPITest(t, cfg)
	resp := a.do(t, apiCall{method: "GET", path: "/event-types"})
	require.Equal(t, http.StatusOK, resp.status)
	require.Equal(t, map[string]any{"event_types": []any{
		map[string]any{"name": "invoice.paid", "description": "An invoice was paid."},
		map[string]any{"name": EventJobComplete, "description": "A batch job finished successfully."},
		map[string]any{"name": EventJobFailed, "description": "A batch job failed."},
		map[string]any{"name": EventScoreChanged, "description": "A subject's score changed significantly since it was last announced."},
	}}, resp.json(t))

	// The declared type can be subscribed to through the API.
	rc := newReceiver(t, nil)
	a.create(t, `{"url":"`+rc.url()+`","events":["invoice.paid"]}`)
}

// requireNoSecret checks that an answer holds no "secret" field and none
// of secrets.
func requireNoSecret(t *testing.T, resp apiResponse, secrets ...string) {
	t.Helper()
	require.NotContains(t, string(resp.body), `"secret"`)
	for _, s := range secrets {
		require.NotContains(t, string(resp.body), strings.TrimPrefix(s, SecretPrefix))
	}
}

// previousSecretUntil returns the previous_secret_until of a webhook's
// JSON, or the zero time when it is absent.
func previousSecretUntil(t *testing.T, hook map[string]any) time.Time {
	t.Helper()
	s, ok := hook["previous_secret_until"].(string)
	if !ok {
		require.NotContains(t, hook, "previous_secret_until")
		return time.Time{}
	}
	until, err := time.Parse(time.RFC3339, s)
	require.NoError(t, err)
	require.False(t, until.IsZero())
	return until
}

func TestHandlerRotateSecret(t *testing.T) {
	a := newAPITest(t, testConfig())
	rc := newReceiver(t, nil)
	created := a.create(t, `{"url":"`+rc.url()+`","events":["*"]}`)
	id := created["id"].(string)
	old := created["secret"].(string)
	require.True(t, previousSecretUntil(t, created).IsZero())
	rotatePath := "/webhooks/" + id + "/rotate-secret"
	secrets := []string{old}

	// rotate asks for a rotation and returns the answer and its secret.
	rotate := func(t *testing.T, c apiCall) (map[string]any, string) {
		t.Helper()
		c.method, c.path = "POST", rotatePath
		resp := a.do(t, c)
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		require.Equal(t, "no-store", resp.header.Get("Cache-Control"))
		hook := resp.json(t)
		require.Equal(t, id, hook["id"])
		secret, _ := hook["secret"].(string)
		_, err := ParseSecret(secret)
		require.NoError(t, err, "the answer shows the new secret")
		require.NotContains(t, secrets, secret, "a new secret")
		secrets = append(secrets, secret)
		return hook, secret
	}
	// publish sends an event and returns the request that carried it.
	publish := func(t *testing.T) received {
		t.Helper()
		n := len(rc.requests())
		_, err := a.d.Publish(t.Context(), NewJobComplete(JobComplete{JobID: "r"}))
		require.NoError(t, err)
		return rc.waitFor(n + 1)[n]
	}
	// signedBy checks that r is signed by exactly the secrets signers, in
	// both schemes, and by none of the other secrets.
	signedBy := func(t *testing.T, r received, signers ...string) {
		t.Helper()
		require.Len(t, strings.Fields(r.Header.Get(HeaderWebhookSignature)), len(signers))
		require.Len(t, strings.Split(r.Header.Get(HeaderSPARCSignature), ","), 1+len(signers))
		for _, s := range secrets {
			if slices.Contains(signers, s) {
				require.NoError(t, Verify(s, r.Header, r.Body))
				require.NoError(t, VerifySPARC(s, r.Header, r.Body))
			} else {
				require.ErrorIs(t, Verify(s, r.Header, r.Body), ErrNoMatchingSignature)
				require.ErrorIs(t, VerifySPARC(s, r.Header, r.Body), ErrNoMatchingSignature)
			}
		}
	}

	// Without a body: a secret is made, and the previous one signs for
	// 24 hours beside it.
	start := time.Now()
	rotated, current := rotate(t, apiCall{})
	until := previousSecretUntil(t, rotated)
	require.WithinDuration(t, start.Add(DefaultRotationGrace), until, time.Minute)
	signedBy(t, publish(t), old, current)

	// A test send signs with both too, and no other answer shows a secret
	// during the rotation.
	test := a.do(t, apiCall{method: "POST", path: "/webhooks/" + id + "/test"})
	require.Equal(t, http.StatusOK, test.status, "%s", test.body)
	require.Equal(t, true, test.json(t)["delivered"])
	reqs := rc.requests()
	signedBy(t, reqs[len(reqs)-1], old, current)
	for _, c := range []apiCall{
		{method: "GET", path: "/webhooks/" + id},
		{method: "GET", path: "/webhooks"},
		{method: "PATCH", path: "/webhooks/" + id, body: `{"description":"rotating"}`},
		{method: "GET", path: "/webhooks/" + id + "/deliveries"},
		{method: "GET", path: "/stats"},
	} {
		resp := a.do(t, c)
		require.Less(t, resp.status, 300, "%s %s: %s", c.method, c.path, resp.body)
		requireNoSecret(t, resp, secrets...)
	}
	got := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id}).json(t)
	require.Equal(t, rotated["previous_secret_until"], got["previous_secret_until"])
	listed := a.do(t, apiCall{method: "GET", path: "/webhooks"}).json(t)["webhooks"].([]any)[0].(map[string]any)
	require.Equal(t, rotated["previous_secret_until"], listed["previous_secret_until"])

	// Revoked: only the new secret signs. Revoking again changes nothing.
	for range 2 {
		resp := a.do(t, apiCall{method: "DELETE", path: "/webhooks/" + id + "/previous-secret"})
		require.Equal(t, http.StatusNoContent, resp.status, "%s", resp.body)
		require.Empty(t, resp.body)
		got := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id}).json(t)
		require.True(t, previousSecretUntil(t, got).IsZero())
	}
	signedBy(t, publish(t), current)

	// A given secret without grace, sent without a length: only it signs,
	// at once.
	rotated, given := rotate(t, apiCall{body: `{"secret":"` + goodSecret + `","grace_seconds":-1}`, chunked: true})
	require.Equal(t, goodSecret, given)
	require.True(t, previousSecretUntil(t, rotated).IsZero())
	signedBy(t, publish(t), given)

	// Grace periods.
	tests := []struct {
		name  string
		call  apiCall
		grace time.Duration // 0: none
	}{
		{"empty object", apiCall{body: `{}`}, DefaultRotationGrace},
		{"zero", apiCall{body: `{"grace_seconds":0}`}, DefaultRotationGrace},
		{"one second", apiCall{body: `{"grace_seconds":1}`}, time.Second},
		{"ninety seconds", apiCall{body: `{"grace_seconds":90}`}, 90 * time.Second},
		{"seven days", apiCall{body: `{"grace_seconds":604800}`}, MaxRotationGrace},
		{"none", apiCall{body: `{"grace_seconds":-1}`}, 0},
		{"no body, any content type", apiCall{ctype: "text/plain"}, DefaultRotationGrace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			rotated, _ := rotate(t, tt.call)
			until := previousSecretUntil(t, rotated)
			if tt.grace == 0 {
				require.True(t, until.IsZero())
				return
			}
			require.WithinDuration(t, start.Add(tt.grace), until, 5*time.Second)
		})
	}

	t.Run("empty body sent without a length", func(t *testing.T) {
		req := httptest.NewRequest("POST", rotatePath, strings.NewReader(""))
		req.ContentLength = -1
		rec := httptest.NewRecorder()
		a.d.Handler().ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		var hook struct {
			Secret string `json:"secret"`
		}
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &hook))
		_, err := ParseSecret(hook.Secret)
		require.NoError(t, err)
		secrets = append(secrets, hook.Secret)
	})

	// The last two rotations had the default grace: the latest secret and
	// its predecessor sign, and none of the older ones.
	n := len(secrets)
	signedBy(t, publish(t), secrets[n-1], secrets[n-2])

	// The secrets were never logged.
	logs := a.logs.String()
	for _, s := range secrets {
		require.NotContains(t, logs, strings.TrimPrefix(s, SecretPrefix))
	}
}

func TestHandlerStats(t *testing.T) {
	t.Run("settled", func(t *testing.T) {
		cfg := testConfig()
		cfg.RetryPolicy = &ScheduleRetryPolicy{} // one attempt
		a := newAPITest(t, cfg)
		ok := newReceiver(t, nil)
		bad := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
		a.create(t, `{"url":"`+ok.url()+`","events":["*"]}`)
		a.create(t, `{"url":"`+bad.url()+`","events":["*"]}`)
		a.create(t, `{"url":"`+ok.url()+`","events":["*"],"enabled":false}`)
		for range 2 {
			_, err := a.d.Publish(t.Context(), NewJobComplete(JobComplete{JobID: "s"}))
			require.NoError(t, err)
		}
		eventually(t, func() bool { return pendingCount(t, a.d) == 0 }, "deliveries still pending")

		resp := a.do(t, apiCall{method: "GET", path: "/stats"})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		require.Equal(t, "no-store", resp.header.Get("Cache-Control"))
		require.Equal(t, map[string]any{
			"pending": 0.0, "oldest_pending_age_ms": 0.0,
			"delivered": 2.0, "failed": 2.0, "cancelled": 0.0, "superseded": 0.0,
			"attempts_succeeded": 2.0, "attempts_failed": 2.0,
			"webhooks": 3.0, "disabled_webhooks": 1.0,
		}, resp.json(t))
	})

	t.Run("pending", func(t *testing.T) {
		cfg := testConfig()
		cfg.DisableDelivery = true // nothing leaves the queue
		a := newAPITest(t, cfg)
		rc := newReceiver(t, nil)
		a.create(t, `{"url":"`+rc.url()+`","events":["*"]}`)
		for range 3 {
			_, err := a.d.Publish(t.Context(), NewJobComplete(JobComplete{JobID: "p"}))
			require.NoError(t, err)
		}
		time.Sleep(30 * time.Millisecond)
		resp := a.do(t, apiCall{method: "GET", path: "/stats"})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		stats := resp.json(t)
		require.Equal(t, 3.0, stats["pending"])
		require.GreaterOrEqual(t, stats["oldest_pending_age_ms"], 30.0, "in milliseconds")
		require.Less(t, stats["oldest_pending_age_ms"], float64(time.Minute.Milliseconds()), "in milliseconds")
		require.Equal(t, 0.0, stats["delivered"])
		require.Equal(t, 1.0, stats["webhooks"])

		requireError(t, a.do(t, apiCall{method: "GET", path: "/stats?verbose=1"}), http.StatusBadRequest, codeInvalidRequest, "verbose")
	})

	t.Run("superseded", func(t *testing.T) {
		cfg := testConfig()
		cfg.DisableDelivery = true // the score changes wait, to be superseded
		a := newAPITest(t, cfg)
		rc := newReceiver(t, nil)
		id := a.create(t, `{"url":"`+rc.url()+`","events":["score.changed"]}`)["id"].(string)
		var events []string
		for _, score := range []float64{50, 60, 70, 80} { // 50 is the baseline
			obs, err := a.d.ObserveScore(t.Context(), "acme", score)
			require.NoError(t, err)
			events = append(events, obs.EventID)
		}
		stats := a.do(t, apiCall{method: "GET", path: "/stats"}).json(t)
		require.Equal(t, 2.0, stats["superseded"])
		require.Equal(t, 1.0, stats["pending"], "only the latest change waits")

		resp := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=superseded"})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		dls := resp.json(t)["deliveries"].([]any)
		require.Len(t, dls, 2)
		for i, x := range dls {
			dl := x.(map[string]any)
			require.Equal(t, "superseded", dl["status"])
			require.Equal(t, events[2-i], dl["event_id"], "newest first")
			got := a.do(t, apiCall{method: "GET", path: fmt.Sprintf("/deliveries/%v", dl["id"])}).json(t)
			require.Equal(t, dl, got)
		}
	})
}

// Webhooks registered through the API in the Slack and Discord formats get
// messages for people, signed like every delivery; every answer shows the
// format, and a change of it takes effect at once.
func TestHandlerFormats(t *testing.T) {
	a := newAPITest(t, testConfig())
	ctx := t.Context()
	slack := newReceiver(t, nil)
	discord := newReceiver(t, nil)
	plain := newReceiver(t, nil)
	sh := a.create(t, `{"url":"`+slack.url()+`","format":"slack","events":["job.*"]}`)
	require.Equal(t, "slack", sh["format"])
	dh := a.create(t, `{"url":"`+discord.url()+`","format":"discord","events":["job.*"]}`)
	require.Equal(t, "discord", dh["format"])
	jh := a.create(t, `{"url":"`+plain.url()+`","events":["job.*"]}`)
	require.Equal(t, "json", jh["format"], "the default")

	pub, err := a.d.Publish(ctx, NewJobFailed(JobFailed{JobID: "job-7", Name: "nightly", Error: "disk full"}))
	require.NoError(t, err)

	got := slack.waitFor(1)[0]
	var slackMsg struct {
		Text   string            `json:"text"`
		Blocks []json.RawMessage `json:"blocks"`
	}
	require.NoError(t, json.Unmarshal(got.Body, &slackMsg), "%s", got.Body)
	require.Contains(t, slackMsg.Text, "nightly")
	require.NotEmpty(t, slackMsg.Blocks)
	require.NotContains(t, string(got.Body), `"type":"job.failed"`, "not the JSON envelope")
	require.Equal(t, "application/json", got.Header.Get("Content-Type"))
	require.Equal(t, pub.EventID, got.Header.Get("webhook-id"))
	verifyStandard(t, sh["secret"].(string), got.Header, got.Body)
	verifySPARC(t, sh["secret"].(string), got.Header, got.Body)

	got = discord.waitFor(1)[0]
	var discordMsg struct {
		Content string           `json:"content"`
		Embeds  []map[string]any `json:"embeds"`
	}
	require.NoError(t, json.Unmarshal(got.Body, &discordMsg), "%s", got.Body)
	require.NotEmpty(t, discordMsg.Content)
	require.Len(t, discordMsg.Embeds, 1)
	verifyStandard(t, dh["secret"].(string), got.Header, got.Body)

	got = plain.waitFor(1)[0]
	var env struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	require.NoError(t, json.Unmarshal(got.Body, &env))
	require.Equal(t, pub.EventID, env.ID)
	require.Equal(t, EventJobFailed, env.Type)

	// Every answer shows the format.
	formats := map[string]any{}
	for _, x := range a.do(t, apiCall{method: "GET", path: "/webhooks"}).json(t)["webhooks"].([]any) {
		h := x.(map[string]any)
		formats[h["id"].(string)] = h["format"]
	}
	require.Equal(t, map[string]any{sh["id"].(string): "slack", dh["id"].(string): "discord", jh["id"].(string): "json"}, formats)
	require.Equal(t, "discord", a.do(t, apiCall{method: "GET", path: "/webhooks/" + dh["id"].(string)}).json(t)["format"])

	// A new URL keeps the format.
	other := newReceiver(t, nil)
	resp := a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + sh["id"].(string), body: `{"url":"` + other.url() + `"}`})
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	require.Equal(t, "slack", resp.json(t)["format"])

	// A new format applies to the next delivery, the test send included.
	jid := jh["id"].(string)
	resp = a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + jid, body: `{"format":"discord"}`})
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	require.Equal(t, "discord", resp.json(t)["format"])
	require.Equal(t, "discord", a.do(t, apiCall{method: "GET", path: "/webhooks/" + jid}).json(t)["format"])
	test := a.do(t, apiCall{method: "POST", path: "/webhooks/" + jid + "/test"})
	require.Equal(t, true, test.json(t)["delivered"], "%s", test.body)
	require.NoError(t, json.Unmarshal(plain.waitFor(2)[1].Body, &discordMsg))
	require.Len(t, discordMsg.Embeds, 1)
	resp = a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + jid, body: `{"format":"json"}`})
	require.Equal(t, "json", resp.json(t)["format"])
}

// A mailto: webhook registered through the API gets email through the
// dispatcher's SMTP server, with the server's reply code as status code.
func TestHandlerEmail(t *testing.T) {
	srv := startSMTPServer(t, smtpServerOptions{})
	smtpCfg := srv.config()
	cfg := testConfig()
	cfg.SMTP = &smtpCfg
	a := newAPITest(t, cfg)
	ctx := t.Context()

	hook := a.create(t, `{"url":"mailto:team@example.com","events":["job.*"]}`)
	require.Equal(t, "email", hook["format"], "implied by the URL")
	require.Equal(t, "mailto:team@example.com", hook["url"])
	id := hook["id"].(string)
	require.Equal(t, "email", a.create(t, `{"url":"mailto:ops@example.com","format":"email","events":["job.*"]}`)["format"])
	requireError(t, a.do(t, apiCall{method: "POST", path: "/webhooks", body: `{"url":"mailto:team@example.com","format":"slack","events":["*"]}`}),
		http.StatusBadRequest, codeInvalidRequest, "format")
	requireError(t, a.do(t, apiCall{method: "POST", path: "/webhooks", body: `{"url":"mailto:a@example.com,b@example.com","events":["*"]}`}),
		http.StatusBadRequest, codeInvalidRequest, "url")
	requireError(t, a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"format":"discord"}`}),
		http.StatusBadRequest, codeInvalidRequest, "format")

	_, err := a.d.Publish(ctx, NewJobComplete(JobComplete{JobID: "job-9", Name: "export"}))
	require.NoError(t, err)
	var dl map[string]any
	eventually(t, func() bool {
		dls := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=delivered"}).json(t)["deliveries"].([]any)
		if len(dls) == 0 {
			return false
		}
		dl = dls[0].(map[string]any)
		return true
	}, "the email was never delivered")
	require.Equal(t, 250.0, dl["last_status_code"], "the SMTP reply code")
	eventually(t, func() bool { return pendingCount(t, a.d) == 0 }, "deliveries still pending")
	mails, _ := srv.received()
	var to []string
	for _, m := range mails {
		to = append(to, m.to...)
	}
	require.ElementsMatch(t, []string{"team@example.com", "ops@example.com"}, to)

	res := a.do(t, apiCall{method: "POST", path: "/webhooks/" + id + "/test"}).json(t)
	require.Equal(t, true, res["delivered"])
	require.Equal(t, 250.0, res["status_code"])
	require.Equal(t, "", res["error_class"])

	// To an http URL and back: the format follows.
	rc := newReceiver(t, nil)
	resp := a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"url":"` + rc.url() + `"}`})
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	require.Equal(t, "json", resp.json(t)["format"])
	resp = a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"url":"mailto:team@example.com"}`})
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	require.Equal(t, "email", resp.json(t)["format"])

	t.Run("refused", func(t *testing.T) {
		srv := startSMTPServer(t, smtpServerOptions{rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}})
		smtpCfg := srv.config()
		cfg := testConfig()
		cfg.SMTP = &smtpCfg
		a := newAPITest(t, cfg)
		id := a.create(t, `{"url":"mailto:nobody@example.com","events":["*"]}`)["id"].(string)
		res := a.do(t, apiCall{method: "POST", path: "/webhooks/" + id + "/test"}).json(t)
		require.Equal(t, false, res["delivered"])
		require.Equal(t, 550.0, res["status_code"])
		require.Equal(t, ClassSMTP, res["error_class"])
		attempts := a.do(t, apiCall{method: "GET", path: fmt.Sprintf("/deliveries/%v/attempts", res["delivery_id"])}).json(t)["attempts"].([]any)
		require.Len(t, attempts, 1)
		require.Equal(t, ClassSMTP, attempts[0].(map[string]any)["error_class"])
		require.Equal(t, 550.0, attempts[0].(map[string]any)["status_code"])
	})
}

func TestHandlerEnable(t *testing.T) {
	a := newAPITest(t, testConfig())
	ctx := t.Context()
	rc := newReceiver(t, nil)
	id := a.create(t, `{"url":"`+rc.url()+`","events":["job.*"]}`)["id"].(string)
	enable := func(t *testing.T, c apiCall) map[string]any {
		t.Helper()
		c.method, c.path = "POST", "/webhooks/"+id+"/enable"
		resp := a.do(t, c)
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		require.Equal(t, "no-store", resp.header.Get("Cache-Control"))
		requireNoSecret(t, resp)
		out := resp.json(t)
		require.Equal(t, []string{"recovered", "webhook"}, slices.Sorted(maps.Keys(out)))
		hook := out["webhook"].(map[string]any)
		require.Equal(t, id, hook["id"])
		require.Equal(t, true, hook["enabled"])
		require.NotContains(t, hook, "disabled_reason")
		require.NotContains(t, hook, "disabled_at")
		require.Equal(t, 0.0, hook["failure_streak"])
		return out
	}
	disable := func(t *testing.T) {
		t.Helper()
		resp := a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"enabled":false}`})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		require.Equal(t, false, resp.json(t)["enabled"])
	}

	// With recovery: what it missed while disabled, and only that.
	disable(t)
	var missed []string
	for range 3 {
		pub, err := a.d.Publish(ctx, NewJobComplete(JobComplete{JobID: "missed"}))
		require.NoError(t, err)
		require.Zero(t, pub.Deliveries)
		missed = append(missed, pub.EventID)
	}
	_, err := a.d.Publish(ctx, Event{Type: EventScoreChanged}) // not subscribed to
	require.NoError(t, err)
	out := enable(t, apiCall{body: `{"recover":true}`})
	require.Equal(t, 3.0, out["recovered"])
	got := a.do(t, apiCall{method: "GET", path: "/webhooks/" + id}).json(t)
	for _, k := range []string{"id", "enabled", "url", "events", "format"} {
		require.Equal(t, out["webhook"].(map[string]any)[k], got[k], "GET shows what enable answered: %s", k)
	}
	var ids []string
	for _, r := range rc.waitFor(3) {
		ids = append(ids, r.Header.Get("webhook-id"))
	}
	require.ElementsMatch(t, missed, ids)
	eventually(t, func() bool { return pendingCount(t, a.d) == 0 }, "deliveries still pending")

	// An enabled webhook: nothing changes, nothing is recovered.
	require.Equal(t, 0.0, enable(t, apiCall{})["recovered"])
	require.Equal(t, 0.0, enable(t, apiCall{body: `{"recover":true}`})["recovered"])

	// Without recovery, what it missed is not sent, whatever the body.
	for _, c := range []apiCall{
		{},
		{ctype: "text/plain"},
		{body: `{}`},
		{body: `{"recover":false}`},
		{body: `{"recover":false}`, chunked: true},
	} {
		disable(t)
		_, err := a.d.Publish(ctx, NewJobFailed(JobFailed{JobID: "lost"}))
		require.NoError(t, err)
		require.Equal(t, 0.0, enable(t, c)["recovered"], "%+v", c)
	}
	time.Sleep(50 * time.Millisecond)
	require.Len(t, rc.requests(), 3)

	t.Run("cancelled deliveries", func(t *testing.T) {
		cfg := testConfig()
		cfg.DisableDelivery = true // deliveries stay pending until disabling cancels them
		a := newAPITest(t, cfg)
		id := a.create(t, `{"url":"`+rc.url()+`","events":["*"]}`)["id"].(string)
		for range 2 {
			_, err := a.d.Publish(ctx, NewJobComplete(JobComplete{JobID: "waiting"}))
			require.NoError(t, err)
		}
		resp := a.do(t, apiCall{method: "PATCH", path: "/webhooks/" + id, body: `{"enabled":false}`})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		count := func(status string) int {
			return len(a.do(t, apiCall{method: "GET", path: "/webhooks/" + id + "/deliveries?status=" + status}).json(t)["deliveries"].([]any))
		}
		require.Equal(t, 2, count("cancelled"))
		_, err := a.d.Publish(ctx, NewJobFailed(JobFailed{JobID: "missed"}))
		require.NoError(t, err)

		resp = a.do(t, apiCall{method: "POST", path: "/webhooks/" + id + "/enable", body: `{"recover":true}`})
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		require.Equal(t, 3.0, resp.json(t)["recovered"], "two cancelled, one missed")
		require.Equal(t, 0, count("cancelled"))
		require.Equal(t, 3, count("pending"))
	})
}
