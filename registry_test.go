package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRegisterValidation(t *testing.T) {
	d := openTest(t, Config{}) // the default guard: only public addresses
	long := "https://example.com/" + strings.Repeat("a", 2048)
	short := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23))
	tooLong := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65))
	ok24 := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 24))
	tests := []struct {
		name  string
		r     Registration
		field string // "" when valid
	}{
		{"valid", Registration{URL: "https://example.com/hook", Events: []string{EventJobComplete}}, ""},
		{"valid pattern and 24-byte secret", Registration{URL: "http://example.com:8080/h?x=1", Events: []string{"job.*", "score.changed"}, Secret: ok24}, ""},
		{"missing url", Registration{Events: []string{"*"}}, "url"},
		{"relative url", Registration{URL: "/hook", Events: []string{"*"}}, "url"},
		{"ftp url", Registration{URL: "ftp://example.com/x", Events: []string{"*"}}, "url"},
		{"no host", Registration{URL: "https:///path", Events: []string{"*"}}, "url"},
		{"user info", Registration{URL: "https://user:pass@example.com/", Events: []string{"*"}}, "url"},
		{"too long", Registration{URL: long, Events: []string{"*"}}, "url"},
		{"bad port", Registration{URL: "https://example.com:99999/", Events: []string{"*"}}, "url"},
		{"whitespace", Registration{URL: "https://exa mple.com/", Events: []string{"*"}}, "url"},
		{"loopback literal", Registration{URL: "http://127.0.0.1:8080/", Events: []string{"*"}}, "url"},
		{"metadata literal", Registration{URL: "http://169.254.169.254/latest", Events: []string{"*"}}, "url"},
		{"no events", Registration{URL: "https://example.com/"}, "events"},
		{"unknown event", Registration{URL: "https://example.com/", Events: []string{"job.done"}}, "events[0]"},
		{"bad pattern", Registration{URL: "https://example.com/", Events: []string{"*", "job.**"}}, "events[1]"},
		{"duplicate event", Registration{URL: "https://example.com/", Events: []string{"*", "*"}}, "events[1]"},
		{"short secret", Registration{URL: "https://example.com/", Events: []string{"*"}, Secret: short}, "secret"},
		{"long secret", Registration{URL: "https://example.com/", Events: []string{"*"}, Secret: tooLong}, "secret"},
		{"secret without prefix", Registration{URL: "https://example.com/", Events: []string{"*"}, Secret: strings.TrimPrefix(ok24, "whsec_")}, "secret"},
		{"long description", Registration{URL: "https://example.com/", Events: []string{"*"}, Description: strings.Repeat("d", 1025)}, "description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := d.Register(t.Context(), tt.r)
			if tt.field == "" {
				require.NoError(t, err)
				require.NotEmpty(t, w.ID)
				return
			}
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tt.field, ve.Field)
			require.ErrorIs(t, err, ErrInvalid)
			if tt.r.Secret != "" {
				require.NotContains(t, err.Error(), strings.TrimPrefix(tt.r.Secret, "whsec_"), "a secret leaked into an error")
			}
		})
	}
}

func TestRegistryCRUD(t *testing.T) {
	d := openTest(t, testConfig())
	ctx := t.Context()
	w, err := d.Register(ctx, Registration{URL: "https://example.com/a", Events: []string{EventJobComplete}, Description: "team A"})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(w.Secret), SecretPrefix))
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(string(w.Secret), SecretPrefix))
	require.NoError(t, err)
	require.Len(t, key, 32, "a generated secret holds 32 random bytes")

	got, err := d.Get(ctx, w.ID)
	require.NoError(t, err)
	require.Empty(t, got.Secret, "Get never returns the secret")
	require.Equal(t, w.URL, got.URL)
	require.Equal(t, []string{EventJobComplete}, got.Events)
	require.Equal(t, "team A", got.Description)
	require.True(t, got.Enabled)
	require.Equal(t, w.CreatedAt, got.CreatedAt)

	off := false
	w2, err := d.Register(ctx, Registration{URL: "https://example.com/b", Events: []string{"*"}, Enabled: &off})
	require.NoError(t, err)
	require.False(t, w2.Enabled)
	require.Equal(t, "disabled by request", w2.DisabledReason)

	list, err := d.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, w.ID, list[0].ID)
	for _, l := range list {
		require.Empty(t, l.Secret)
	}

	newURL, desc := "https://example.com/a2", "renamed"
	up, err := d.Update(ctx, w.ID, WebhookUpdate{URL: &newURL, Events: []string{"job.*"}, Description: &desc})
	require.NoError(t, err)
	require.Equal(t, newURL, up.URL)
	require.Equal(t, []string{"job.*"}, up.Events)
	require.Equal(t, "renamed", up.Description)
	require.Empty(t, up.Secret)
	require.False(t, up.UpdatedAt.Before(up.CreatedAt))

	on := true
	up, err = d.Update(ctx, w2.ID, WebhookUpdate{Enabled: &on})
	require.NoError(t, err)
	require.True(t, up.Enabled)
	require.Empty(t, up.DisabledReason)
	require.True(t, up.DisabledAt.IsZero())

	_, err = d.Update(ctx, w.ID, WebhookUpdate{Events: []string{}})
	require.ErrorIs(t, err, ErrInvalid)
	bad := "notaurl"
	_, err = d.Update(ctx, w.ID, WebhookUpdate{URL: &bad})
	require.ErrorIs(t, err, ErrInvalid)

	require.NoError(t, d.Delete(ctx, w.ID))
	_, err = d.Get(ctx, w.ID)
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorIs(t, d.Delete(ctx, w.ID), ErrNotFound)
	_, err = d.Update(ctx, w.ID, WebhookUpdate{Enabled: &on})
	require.ErrorIs(t, err, ErrNotFound)

	for _, id := range []string{"", "nope", "00000000-0000-0000-0000-00000000000g", strings.Repeat("a", 1000)} {
		_, err = d.Get(ctx, id)
		require.ErrorIs(t, err, ErrNotFound, "id %q", id)
	}
}

func TestSecretNeverShows(t *testing.T) {
	logs := &logBuffer{}
	cfg := testConfig()
	cfg.Logger = logs.logger()
	d := openTest(t, cfg)
	rc := newReceiver(t, func(_ int, w2 http.ResponseWriter, _ *http.Request) { w2.WriteHeader(500) })
	w := register(t, d, rc.url())
	secret := string(w.Secret)
	body := strings.TrimPrefix(secret, SecretPrefix)

	_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	rc.waitFor(2)
	_, _ = d.SendTest(t.Context(), w.ID)

	for _, s := range []string{
		fmt.Sprintf("%v", w), fmt.Sprintf("%+v", w), fmt.Sprintf("%#v", w), fmt.Sprint(w.Secret),
		mustJSON(t, w), logs.String(),
	} {
		require.NotContains(t, s, body)
	}
	require.Contains(t, logs.String(), "webhook delivery attempt failed", "the failures were logged")
	list, err := d.List(t.Context())
	require.NoError(t, err)
	require.NotContains(t, mustJSON(t, list), body)
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestDisabledAndDeletedReceiveNothing(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, nil)
	disabled := register(t, d, rc.url()+"?who=disabled")
	deleted := register(t, d, rc.url()+"?who=deleted")
	live := register(t, d, rc.url()+"?who=live")
	off := false
	_, err := d.Update(t.Context(), disabled.ID, WebhookUpdate{Enabled: &off})
	require.NoError(t, err)
	require.NoError(t, d.Delete(t.Context(), deleted.ID))

	pub, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	require.Equal(t, 1, pub.Deliveries)
	got := rc.waitFor(1)
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "deliveries still pending")
	require.Len(t, rc.requests(), 1)
	require.Equal(t, live.ID, hookOf(t, d, got[0]))
}

// hookOf finds which webhook a request was for, from its delivery ID.
func hookOf(t testing.TB, d *Dispatcher, r received) string {
	t.Helper()
	var id int64
	_, err := fmt.Sscan(r.Header.Get("X-SPARC-Delivery"), &id)
	require.NoError(t, err)
	dl, err := d.Delivery(context.Background(), id)
	require.NoError(t, err)
	return dl.WebhookID
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"workers", Config{Workers: -1}, "Workers"},
		{"timeout", Config{AttemptTimeout: -1}, "AttemptTimeout"},
		{"lease", Config{AttemptTimeout: 10 * 1e9, LeaseDuration: 5 * 1e9}, "LeaseDuration"},
		{"jitter", Config{RetryPolicy: &ScheduleRetryPolicy{Jitter: 2}}, "RetryPolicy.Jitter"},
		{"schedule", Config{RetryPolicy: &ScheduleRetryPolicy{Schedule: []time.Duration{-1}}}, "RetryPolicy.Schedule[0]"},
		{"sync", Config{Synchronous: 7}, "Synchronous"},
		{"allow", Config{AllowNetworks: []string{"nonsense"}}, "AllowNetworks[0]"},
		{"event type", Config{EventTypes: []EventType{{Name: "Bad Name"}}}, "EventTypes[0]"},
		{"builtin twice", Config{EventTypes: []EventType{{Name: EventJobComplete}}}, "EventTypes[0]"},
		{"score", Config{ScoreThreshold: -1}, "ScoreThreshold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(t.Context(), filepath.Join(t.TempDir(), "x.db"), tt.cfg)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tt.field, ve.Field)
		})
	}
}
