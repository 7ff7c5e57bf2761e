package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sparc-webhooks/webhook"
)

func TestCheckSlack(t *testing.T) {
	for _, c := range []struct {
		name, body string
		err        string // a part of the error; "" when the message is valid
	}{
		{"valid", `{"text":"❌ Job nightly failed","blocks":[{"type":"header"},{"type":"section"}]}`, ""},
		{"no text", `{"blocks":[{"type":"section"}]}`, `no "text"`},
		{"blank text", `{"text":"  ","blocks":[{"type":"section"}]}`, `no "text"`},
		{"no blocks", `{"text":"hi"}`, `no "blocks"`},
		{"untyped block", `{"text":"hi","blocks":[{}]}`, "block 0 has no type"},
		{"envelope", `{"id":"evt_1","type":"job.failed","data":{}}`, `no "text"`},
		{"not an object", `[1]`, "not a JSON object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			parts, err := checkSlack([]byte(c.body))
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, []part{{"text", "❌ Job nightly failed"}}, parts)
		})
	}
}

func TestCheckDiscord(t *testing.T) {
	const mentionsOff = `"allowed_mentions":{"parse":[]}`
	for _, c := range []struct {
		name, body string
		err        string
	}{
		{"valid", `{"content":"x","embeds":[{"title":"❌ Job failed: nightly","description":"disk full"}],` + mentionsOff + `}`, ""},
		{"no embed", `{"content":"x",` + mentionsOff + `}`, "0 embeds"},
		{"two embeds", `{"embeds":[{"title":"a"},{"title":"b"}],` + mentionsOff + `}`, "2 embeds"},
		{"mentions left on", `{"embeds":[{"title":"a"}]}`, "mentions"},
		{"parse left out", `{"embeds":[{"title":"a"}],"allowed_mentions":{}}`, "mentions"},
		{"everyone allowed", `{"embeds":[{"title":"a"}],"allowed_mentions":{"parse":["everyone"]}}`, "mentions"},
		{"untitled", `{"embeds":[{"description":"a"}],` + mentionsOff + `}`, "no title"},
		{"title too long", `{"embeds":[{"title":"` + strings.Repeat("a", 257) + `"}],` + mentionsOff + `}`, "256"},
		{"not JSON", `ok`, "not a JSON object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			parts, err := checkDiscord([]byte(c.body))
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, []part{{"title", "❌ Job failed: nightly"}, {"description", "disk full"}}, parts)
		})
	}
}

// The stand-ins answer as the services do: Slack 200 "ok", Discord 204
// with no body; and 400 to a body that is not their message, or 401 when
// a signature is wrong.
func TestStandInAnswers(t *testing.T) {
	secret, err := webhook.GenerateSecret()
	require.NoError(t, err)
	slackMsg := `{"text":"hi","blocks":[{"type":"section"}]}`
	discordMsg := `{"embeds":[{"title":"hi"}],"allowed_mentions":{"parse":[]}}`
	for _, c := range []struct {
		name       string
		svc        *service
		body       string
		badSig     bool
		status     int
		answerBody string
	}{
		{"slack", slackService, slackMsg, false, http.StatusOK, "ok"},
		{"slack envelope", slackService, `{"id":"evt_1","type":"job.failed","data":{}}`, false, http.StatusBadRequest, "invalid_payload"},
		{"slack bad signature", slackService, slackMsg, true, http.StatusUnauthorized, "signature check failed"},
		{"discord", discordService, discordMsg, false, http.StatusNoContent, ""},
		{"discord text", discordService, slackMsg, false, http.StatusBadRequest, `"code":50035`},
	} {
		t.Run(c.name, func(t *testing.T) {
			ep := &endpoint{name: c.name, svc: c.svc, answer: always(c.svc.ok, ""), con: newConsole(io.Discard)}
			ep.registered("wh_1", string(secret))
			now := time.Now()
			std, err := webhook.Sign(string(secret), "evt_1", now, []byte(c.body))
			require.NoError(t, err)
			sparc, err := webhook.SignSPARC(string(secret), now, []byte(c.body))
			require.NoError(t, err)
			if c.badSig {
				std, sparc = "v1,AAAA", "t=1,v1=00"
			}
			r := httptest.NewRequest(http.MethodPost, "/hooks/x", strings.NewReader(c.body))
			r.Header.Set(webhook.HeaderWebhookID, "evt_1")
			r.Header.Set(webhook.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
			r.Header.Set(webhook.HeaderWebhookSignature, std)
			r.Header.Set(webhook.HeaderSPARCSignature, sparc)
			r.Header.Set(webhook.HeaderSPARCEvent, "job.failed")
			w := httptest.NewRecorder()
			ep.ServeHTTP(w, r)
			require.Equal(t, c.status, w.Code)
			require.Contains(t, w.Body.String(), c.answerBody)
			got := ep.got()
			require.Len(t, got, 1)
			require.Equal(t, "job.failed", got[0].eventType, "from the X-SPARC-Event header")
		})
	}
}

func TestReadable(t *testing.T) {
	require.Equal(t, "disk full", readable("```\ndisk full\n```", 100))
	require.Equal(t, "line one / line two", readable("line one\nline two", 100))
	require.Equal(t, "abcd…", readable("abcdefgh", 5))
}
