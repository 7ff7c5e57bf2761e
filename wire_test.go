package webhook

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// wireCall makes a request to the API and decodes its answer into out,
// refusing fields out does not have.
func wireCall(t *testing.T, api *httptest.Server, method, path, body string, status int, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, api.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, status, resp.StatusCode, "%s %s: %s", method, path, raw)
	if out == nil {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(out), "%s %s answered %s", method, path, raw)
}

// The exported types are the wire: every JSON answer of the handler
// decodes into them with unknown fields refused, and holds what the Go API
// returns for the same object.
func TestWireTypesAreGoTypes(t *testing.T) {
	d := openTest(t, testConfig())
	api := httptest.NewServer(d.Handler())
	defer api.Close()
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte{0xff, 0xfe, 'x'}) // not UTF-8: base64 on the wire
			return
		}
		w.Write([]byte("ok"))
	})
	ctx := t.Context()

	var created Webhook
	wireCall(t, api, "POST", "/webhooks", `{"url":"`+rc.url()+`","events":["job.complete"],"description":"wire"}`, 201, &created)
	require.True(t, strings.HasPrefix(string(created.Secret), SecretPrefix), "the 201 carries the secret")
	got, err := d.Get(ctx, created.ID)
	require.NoError(t, err)
	created.Secret = ""
	require.Equal(t, got, created)

	var one Webhook
	wireCall(t, api, "GET", "/webhooks/"+created.ID, "", 200, &one)
	require.Equal(t, got, one)
	require.Empty(t, one.Secret, "GET never carries the secret")

	var list WebhookList
	wireCall(t, api, "GET", "/webhooks", "", 200, &list)
	all, err := d.List(ctx)
	require.NoError(t, err)
	require.Equal(t, all, list.Webhooks)

	var patched Webhook
	wireCall(t, api, "PATCH", "/webhooks/"+created.ID, `{"description":"changed"}`, 200, &patched)
	got, err = d.Get(ctx, created.ID)
	require.NoError(t, err)
	require.Equal(t, got, patched)

	var rotated Webhook
	wireCall(t, api, "POST", "/webhooks/"+created.ID+"/rotate-secret", `{}`, 200, &rotated)
	require.NotEmpty(t, rotated.Secret)
	require.False(t, rotated.PreviousSecretUntil.IsZero())

	var enabled Enabled
	wireCall(t, api, "POST", "/webhooks/"+created.ID+"/enable", `{}`, 200, &enabled)
	require.Equal(t, created.ID, enabled.Webhook.ID)

	// A delivery that fails once, with a body that is not UTF-8, then
	// succeeds.
	_, err = d.Publish(ctx, Event{Type: EventJobComplete})
	require.NoError(t, err)
	rc.waitFor(2)
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "still pending")

	var page DeliveryPage
	wireCall(t, api, "GET", "/webhooks/"+created.ID+"/deliveries", "", 200, &page)
	want, err := d.Deliveries(ctx, created.ID, DeliveryQuery{})
	require.NoError(t, err)
	require.Equal(t, want, page)
	require.Len(t, page.Deliveries, 1)
	dlID := page.Deliveries[0].ID

	var dl Delivery
	wireCall(t, api, "GET", "/deliveries/"+itoa(dlID), "", 200, &dl)
	wantDl, err := d.Delivery(ctx, dlID)
	require.NoError(t, err)
	require.Equal(t, wantDl, dl)

	var attempts AttemptList
	wireCall(t, api, "GET", "/deliveries/"+itoa(dlID)+"/attempts", "", 200, &attempts)
	wantAt, err := d.Attempts(ctx, dlID)
	require.NoError(t, err)
	require.Len(t, attempts.Attempts, len(wantAt))
	for i := range wantAt {
		w := wantAt[i]
		w.Duration = w.Duration.Truncate(time.Millisecond) // milliseconds on the wire
		require.Equal(t, w, attempts.Attempts[i])
	}
	require.Equal(t, []byte{0xff, 0xfe, 'x'}, attempts.Attempts[0].ResponseBody, "a body that is not UTF-8 survives the wire")
	require.Equal(t, []byte("ok"), attempts.Attempts[1].ResponseBody)

	var res AttemptResult
	wireCall(t, api, "POST", "/deliveries/"+itoa(dlID)+"/retry", "", 200, &res)
	require.True(t, res.Delivered)
	require.Equal(t, dlID, res.DeliveryID)
	wireCall(t, api, "POST", "/webhooks/"+created.ID+"/test", "", 200, &res)
	require.True(t, res.Delivered)

	var rec Recovered
	wireCall(t, api, "POST", "/webhooks/"+created.ID+"/recover", `{"since":"2020-01-01T00:00:00Z"}`, 200, &rec)
	require.Zero(t, rec.Scheduled)

	var types EventTypeList
	wireCall(t, api, "GET", "/event-types", "", 200, &types)
	require.Equal(t, d.EventTypes(), types.EventTypes)

	var stats Stats
	wireCall(t, api, "GET", "/stats", "", 200, &stats)
	wantStats, err := d.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, wantStats.Delivered, stats.Delivered)
	require.Equal(t, wantStats.AttemptsFailed, stats.AttemptsFailed)
	require.Equal(t, wantStats.Webhooks, stats.Webhooks)

	var apiErr ErrorResponse
	wireCall(t, api, "GET", "/webhooks/00000000-0000-7000-8000-000000000000", "", 404, &apiErr)
	require.Equal(t, "not_found", apiErr.Error.Code)
	wireCall(t, api, "DELETE", "/webhooks/"+created.ID, "", 204, nil)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
