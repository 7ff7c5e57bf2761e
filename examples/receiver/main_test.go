package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sparc-webhooks/webhook"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// signed returns a delivery of body signed with secret in both schemes.
func signed(t *testing.T, secret, id, body string) *http.Request {
	t.Helper()
	now := time.Now()
	std, err := webhook.Sign(secret, id, now, []byte(body))
	require.NoError(t, err)
	sparc, err := webhook.SignSPARC(secret, now, []byte(body))
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
	r.Header.Set(webhook.HeaderWebhookID, id)
	r.Header.Set(webhook.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	r.Header.Set(webhook.HeaderWebhookSignature, std)
	r.Header.Set(webhook.HeaderSPARCSignature, sparc)
	return r
}

func serve(h http.Handler, r *http.Request) int {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code
}

func TestReceiver(t *testing.T) {
	secret, err := webhook.GenerateSecret()
	require.NoError(t, err)
	other, err := webhook.GenerateSecret()
	require.NoError(t, err)
	var out bytes.Buffer
	rc := newReceiver(string(secret), &out, slog.New(slog.NewTextHandler(io.Discard, nil)))
	body := `{"id":"evt_1","type":"job.complete","timestamp":"2025-01-02T03:04:05Z","data":{"job_id":"job_1"}}`

	require.Equal(t, http.StatusOK, serve(rc, signed(t, string(secret), "evt_1", body)))
	require.Equal(t, "2025-01-02T03:04:05Z  job.complete   evt_1  {\"job_id\":\"job_1\"}\n", out.String())

	// A retry of the same event is answered 200 and not printed again.
	require.Equal(t, http.StatusOK, serve(rc, signed(t, string(secret), "evt_1", body)))
	require.Equal(t, 1, strings.Count(out.String(), "\n"))

	// Either signature failing is answered 401.
	r := signed(t, string(other), "evt_2", body)
	require.Equal(t, http.StatusUnauthorized, serve(rc, r))
	r = signed(t, string(secret), "evt_2", body)
	r.Header.Del(webhook.HeaderSPARCSignature)
	require.Equal(t, http.StatusUnauthorized, serve(rc, r))
	r = signed(t, string(secret), "evt_2", body)
	r.Header.Set(webhook.HeaderWebhookSignature, "v1,AAAA")
	require.Equal(t, http.StatusUnauthorized, serve(rc, r))
	r = signed(t, string(secret), "evt_2", body)
	r.Body = io.NopCloser(strings.NewReader(strings.Replace(body, "job_1", "job_2", 1)))
	require.Equal(t, http.StatusUnauthorized, serve(rc, r))
	require.Equal(t, 1, strings.Count(out.String(), "\n"), "rejected requests print nothing")

	// Too large a body, and other methods.
	big := `{"data":"` + strings.Repeat("a", maxBody) + `"}`
	require.Equal(t, http.StatusRequestEntityTooLarge, serve(rc, signed(t, string(secret), "evt_3", big)))
	require.Equal(t, http.StatusMethodNotAllowed, serve(rc, httptest.NewRequest(http.MethodGet, "/hook", nil)))
}

func TestRunRejectsBadSecrets(t *testing.T) {
	t.Setenv("WEBHOOK_SECRET", "")
	var out bytes.Buffer
	require.ErrorContains(t, run(t.Context(), []string{"-addr", "127.0.0.1:0", "-secret", ""}, &out, &out), "-secret is required")
	require.ErrorContains(t, run(t.Context(), []string{"-addr", "127.0.0.1:0", "-secret", "whsec_short"}, &out, &out), "not a webhook secret")
}
