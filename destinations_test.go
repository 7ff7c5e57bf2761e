package webhook

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"
)

// Slack and Discord webhooks get a message for people, signed like every
// delivery, and the test send uses the webhook's own format.
func TestSlackAndDiscordDeliveries(t *testing.T) {
	cfg := testConfig()
	cfg.Messages = MessageOptions{JobURL: "https://sparc.example.com/jobs/{{.JobID}}"}
	d := openTest(t, cfg)
	slack := newReceiver(t, nil)
	discord := newReceiver(t, nil)
	ws, err := d.Register(t.Context(), Registration{URL: slack.url(), Events: []string{"*"}, Format: FormatSlack})
	require.NoError(t, err)
	require.Equal(t, FormatSlack, ws.Format)
	wd, err := d.Register(t.Context(), Registration{URL: discord.url(), Events: []string{"*"}, Format: FormatDiscord})
	require.NoError(t, err)
	got, err := d.Get(t.Context(), wd.ID)
	require.NoError(t, err)
	require.Equal(t, FormatDiscord, got.Format)

	start := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	pub, err := d.Publish(t.Context(), NewJobFailed(JobFailed{JobID: "job-7", Name: "nightly", StartedAt: start, FinishedAt: start.Add(90 * time.Second), Error: "disk full @everyone"}))
	require.NoError(t, err)

	// What each receiver gets is exactly what the renderer makes of the
	// stored envelope.
	r := newTestRenderer(t, cfg.Messages)
	var payload []byte
	require.NoError(t, d.st.Reader().QueryRow(d.st.Rebind(`SELECT payload FROM webhook_events WHERE id = ?`), pub.EventID).Scan(&payload))
	for _, c := range []struct {
		rc     *receiver
		w      Webhook
		format Format
	}{{slack, ws, FormatSlack}, {discord, wd, FormatDiscord}} {
		req := c.rc.waitFor(1)[0]
		want, err := r.render(c.format, payload)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(req.Body))
		require.Equal(t, "application/json", req.Header.Get("Content-Type"))
		require.Equal(t, pub.EventID, req.Header.Get("webhook-id"))
		require.NoError(t, Verify(string(c.w.Secret), req.Header, req.Body), "the message is signed")
		require.NoError(t, VerifySPARC(string(c.w.Secret), req.Header, req.Body))
		require.Contains(t, string(req.Body), "https://sparc.example.com/jobs/job-7")
	}
	var slackMsg struct {
		Text   string            `json:"text"`
		Blocks []json.RawMessage `json:"blocks"`
	}
	require.NoError(t, json.Unmarshal(slack.requests()[0].Body, &slackMsg))
	require.Contains(t, slackMsg.Text, "nightly")
	require.NotEmpty(t, slackMsg.Blocks)
	var discordMsg struct {
		Embeds          []map[string]any `json:"embeds"`
		AllowedMentions map[string]any   `json:"allowed_mentions"`
	}
	require.NoError(t, json.Unmarshal(discord.requests()[0].Body, &discordMsg))
	require.Len(t, discordMsg.Embeds, 1)
	require.Equal(t, []any{}, discordMsg.AllowedMentions["parse"], "event text cannot ping anyone")

	// The test send speaks the webhook's format.
	res, err := d.SendTest(t.Context(), ws.ID)
	require.NoError(t, err)
	require.True(t, res.Delivered)
	test := slack.waitFor(2)[1]
	require.Contains(t, string(test.Body), `"blocks"`)
	require.NotContains(t, string(test.Body), `"type":"webhook.test"`, "not the JSON envelope")

	// Formats are validated.
	_, err = d.Register(t.Context(), Registration{URL: slack.url(), Events: []string{"*"}, Format: "teams"})
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "format", ve.Field)
	_, err = d.Register(t.Context(), Registration{URL: slack.url(), Events: []string{"*"}, Format: FormatEmail})
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "format", ve.Field)
	f := FormatJSON
	up, err := d.Update(t.Context(), ws.ID, WebhookUpdate{Format: &f})
	require.NoError(t, err)
	require.Equal(t, FormatJSON, up.Format)
}

// A template that cannot render fails at Open, never at delivery.
func TestTemplatesCheckedAtOpen(t *testing.T) {
	for name, msgs := range map[string]MessageOptions{
		"syntax":        {Templates: map[string]string{EventJobFailed: "{{.Data.name"}},
		"missing field": {Templates: map[string]string{EventJobFailed: "{{.Data.nope}}"}},
		"unknown type":  {Templates: map[string]string{"report.ready": "{{.Type}}"}},
		"bad link":      {JobURL: "{{.Nope}}"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(t.Context(), t.TempDir()+"/x.db", Config{Messages: msgs})
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.True(t, strings.HasPrefix(ve.Field, "Templates[") || ve.Field == "JobURL", ve.Field)
		})
	}
	cfg := testConfig()
	cfg.Messages = MessageOptions{Templates: map[string]string{EventJobFailed: `:x: {{.Data.name}} failed: {{.Data.error}}`}}
	d := openTest(t, cfg)
	rc := newReceiver(t, nil)
	_, err := d.Register(t.Context(), Registration{URL: rc.url(), Events: []string{EventJobFailed}, Format: FormatDiscord})
	require.NoError(t, err)
	_, err = d.Publish(t.Context(), NewJobFailed(JobFailed{JobID: "j", Name: "ingest", Error: "timeout"}))
	require.NoError(t, err)
	var msg struct {
		Content string `json:"content"`
	}
	require.NoError(t, json.Unmarshal(rc.waitFor(1)[0].Body, &msg))
	require.Equal(t, ":x: ingest failed: timeout", msg.Content)
}

// A mailto: webhook gets an email through the configured SMTP server, with
// the retries and the attempt log of every delivery.
func TestEmailDeliveries(t *testing.T) {
	srv := startSMTPServer(t, smtpServerOptions{})
	smtpCfg := srv.config()
	cfg := testConfig()
	cfg.SMTP = &smtpCfg
	d := openTest(t, cfg)

	w, err := d.Register(t.Context(), Registration{URL: "mailto:team@example.com", Events: []string{"job.*"}})
	require.NoError(t, err)
	require.Equal(t, FormatEmail, w.Format)
	_, err = d.Publish(t.Context(), NewJobComplete(JobComplete{JobID: "job-9", Name: "export", DurationMS: 1500}))
	require.NoError(t, err)
	dl := waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, StatusDelivered)
	require.Equal(t, 250, dl.LastStatusCode, "the SMTP reply code stands in for the HTTP status")
	mails, _ := srv.received()
	require.Len(t, mails, 1)
	require.Equal(t, []string{"team@example.com"}, mails[0].to)
	require.Equal(t, "sparc@example.com", mails[0].from)
	h, text, html := readEmail(t, mails[0].data)
	require.Contains(t, h.Get("Subject"), "export")
	require.Equal(t, EventJobComplete, h.Get("X-SPARC-Event"))
	require.Contains(t, text, "export")
	require.Contains(t, html, "export")

	// The test send, too.
	res, err := d.SendTest(t.Context(), w.ID)
	require.NoError(t, err)
	require.True(t, res.Delivered)
	require.Equal(t, 250, res.StatusCode)
	mails, _ = srv.received()
	require.Len(t, mails, 2)

	// mailto: needs Config.SMTP.
	d2 := openTest(t, testConfig())
	_, err = d2.Register(t.Context(), Registration{URL: "mailto:team@example.com", Events: []string{"*"}})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = d.Register(t.Context(), Registration{URL: "mailto:a@example.com,b@example.com", Events: []string{"*"}})
	require.ErrorIs(t, err, ErrInvalid)
}

func TestEmailRejectedIsRetriedAndLogged(t *testing.T) {
	srv := startSMTPServer(t, smtpServerOptions{rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}})
	smtpCfg := srv.config()
	cfg := testConfig()
	cfg.SMTP = &smtpCfg
	d := openTest(t, cfg)
	w, err := d.Register(t.Context(), Registration{URL: "mailto:nobody@example.com", Events: []string{"*"}})
	require.NoError(t, err)
	_, err = d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	dl := waitStatus(t, d, onlyDelivery(t, d, w.ID).ID, StatusFailed)
	require.Equal(t, 4, dl.Attempts, "email shares the retry schedule")
	attempts, err := d.Attempts(t.Context(), dl.ID)
	require.NoError(t, err)
	for _, a := range attempts {
		require.Equal(t, 550, a.StatusCode)
		require.Equal(t, ClassSMTP, a.ErrorClass)
	}
	hook, err := d.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.Equal(t, 4, hook.FailureStreak, "and the disable rules")
}

// A newer score.changed for the same subject supersedes one still waiting
// for a webhook; the newer message carries the change since the last score
// that webhook was sent.
func TestScoreChangesCollapse(t *testing.T) {
	cfg := testConfig()
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{time.Hour}}
	d := openTest(t, cfg)
	var down = true
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		<-mu
		isDown := down
		mu <- struct{}{}
		if isDown {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	})
	w := register(t, d, rc.url(), EventScoreChanged)
	_, err := d.ObserveScore(t.Context(), "acme", 50)
	require.NoError(t, err)
	first, err := d.ObserveScore(t.Context(), "acme", 60) // 50 → 60: fails once, then waits an hour
	require.NoError(t, err)
	require.True(t, first.Published)
	rc.waitFor(1)
	id1 := onlyDelivery(t, d, w.ID).ID
	eventually(t, func() bool {
		dl, err := d.Delivery(t.Context(), id1)
		require.NoError(t, err)
		return dl.Attempts == 1 && dl.LastStatusCode == 503
	}, "first attempt not recorded")

	<-mu
	down = false
	mu <- struct{}{}
	second, err := d.ObserveScore(t.Context(), "acme", 70) // 60 → 70, but the receiver never saw 50 → 60
	require.NoError(t, err)
	require.True(t, second.Published)
	got := rc.waitFor(2)[1]
	var env struct {
		ID   string       `json:"id"`
		Data ScoreChanged `json:"data"`
	}
	require.NoError(t, json.Unmarshal(got.Body, &env))
	require.Equal(t, second.EventID, env.ID)
	require.Equal(t, ScoreChanged{Subject: "acme", Previous: 50, Current: 70, Delta: 20}, env.Data)
	require.NoError(t, Verify(string(w.Secret), got.Header, got.Body))

	old, err := d.Delivery(t.Context(), id1)
	require.NoError(t, err)
	require.Equal(t, StatusSuperseded, old.Status)
	s, err := d.Stats(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 1, s.Superseded)

	// Once delivered, the next change starts from what was delivered.
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "pending")
	_, err = d.ObserveScore(t.Context(), "acme", 80)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(rc.waitFor(3)[2].Body, &env))
	require.Equal(t, ScoreChanged{Subject: "acme", Previous: 70, Current: 80, Delta: 10}, env.Data)
	time.Sleep(50 * time.Millisecond)
	require.Len(t, rc.requests(), 3, "the superseded change is never sent")
}

// Enabling a webhook with Recover sends what it missed while disabled.
func TestEnableRecoversMissedEvents(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, nil)
	w := register(t, d, rc.url(), "job.*")
	off := false
	_, err := d.Update(t.Context(), w.ID, WebhookUpdate{Enabled: &off})
	require.NoError(t, err)
	var missed []string
	for range 3 {
		pub, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
		require.Zero(t, pub.Deliveries)
		missed = append(missed, pub.EventID)
	}
	_, err = d.Publish(t.Context(), Event{Type: EventScoreChanged}) // not subscribed
	require.NoError(t, err)

	got, n, err := d.Enable(t.Context(), w.ID, EnableOptions{Recover: true})
	require.NoError(t, err)
	require.True(t, got.Enabled)
	require.Equal(t, 3, n)
	var ids []string
	for _, r := range rc.waitFor(3) {
		ids = append(ids, r.Header.Get("webhook-id"))
	}
	require.ElementsMatch(t, missed, ids)
	eventually(t, func() bool { return pendingCount(t, d) == 0 }, "pending")
	require.Len(t, rc.requests(), 3)

	// Enabling again recovers nothing; without Recover nothing is sent.
	_, n, err = d.Enable(t.Context(), w.ID, EnableOptions{Recover: true})
	require.NoError(t, err)
	require.Zero(t, n)
	_, err = d.Update(t.Context(), w.ID, WebhookUpdate{Enabled: &off})
	require.NoError(t, err)
	_, err = d.Publish(t.Context(), Event{Type: EventJobFailed})
	require.NoError(t, err)
	_, n, err = d.Enable(t.Context(), w.ID, EnableOptions{})
	require.NoError(t, err)
	require.Zero(t, n)
	time.Sleep(50 * time.Millisecond)
	require.Len(t, rc.requests(), 3)
	_, _, err = d.Enable(t.Context(), "00000000-0000-0000-0000-000000000000", EnableOptions{})
	require.ErrorIs(t, err, ErrNotFound)
}
