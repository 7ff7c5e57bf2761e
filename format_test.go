package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

// formatTime is the time of the events of these tests.
var formatTime = time.Date(2026, 11, 29, 10, 1, 30, 0, time.UTC)

// formatPayload returns the envelope of ev as Publish stores it, with a
// fixed ID and time unless ev has its own.
func formatPayload(t testing.TB, ev Event) []byte {
	t.Helper()
	if ev.ID == "" {
		ev.ID = "evt_0001"
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = formatTime
	}
	p, err := encodeEvent(ev, 1<<20)
	require.NoError(t, err)
	return p.payload
}

// formatLinks are message options with both links.
var formatLinks = MessageOptions{
	JobURL:     "https://sparc.example.com/jobs/{{.JobID}}",
	SubjectURL: "https://sparc.example.com/subjects/{{.Subject}}",
}

func newTestRenderer(t testing.TB, opts MessageOptions) *renderer {
	t.Helper()
	r, err := newRenderer(opts)
	require.NoError(t, err)
	return r
}

// goldenEvents are the events whose Slack and Discord messages are kept
// under testdata/format.
func goldenEvents(t testing.TB) map[string][]byte {
	start := formatTime.Add(-90 * time.Second)
	return map[string][]byte{
		"job.complete": formatPayload(t, NewJobComplete(JobComplete{
			JobID: "job-42", Name: "nightly-scores", StartedAt: start, FinishedAt: formatTime,
			Result: map[string]any{"items": 20, "mean_score": 71.5},
		})),
		"job.failed": formatPayload(t, NewJobFailed(JobFailed{
			JobID: "job-43", Name: "nightly-scores", StartedAt: formatTime.Add(-754 * time.Millisecond), FinishedAt: formatTime,
			Error: "exit status 1: no space left on device\nwhile writing /data/scores.parquet",
		})),
		"score.up":     formatPayload(t, NewScoreChanged(ScoreChanged{Subject: "acme-corp", Previous: 71.5, Current: 74.25})),
		"score.down":   formatPayload(t, NewScoreChanged(ScoreChanged{Subject: "acme-corp", Previous: 74.25, Current: 70})),
		"webhook.test": formatPayload(t, Event{Type: EventTest, Data: map[string]any{"webhook_id": "wh_123", "message": "This is a test delivery from the SPARC webhook dispatcher."}}),
		"report.ready": formatPayload(t, Event{Type: "report.ready", Data: map[string]any{"report": "weekly", "pages": 12, "tags": []string{"q4", "board"}}}),
	}
}

// TestRenderGolden pins the exact messages that Slack and Discord receive
// for each kind of event. Run with -update to rewrite them after a
// deliberate change, and read the diff.
func TestRenderGolden(t *testing.T) {
	r := newTestRenderer(t, formatLinks)
	for name, payload := range goldenEvents(t) {
		for _, f := range []Format{FormatSlack, FormatDiscord} {
			t.Run(name+"/"+string(f), func(t *testing.T) {
				got, err := r.render(f, payload)
				require.NoError(t, err)
				checkFormatLimits(t, f, got)
				path := filepath.Join("testdata", "format", name+"."+string(f)+".json")
				if *updateGolden {
					var pretty bytes.Buffer
					require.NoError(t, json.Indent(&pretty, got, "", "  "))
					pretty.WriteByte('\n')
					require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
					require.NoError(t, os.WriteFile(path, pretty.Bytes(), 0o644))
				}
				want, err := os.ReadFile(path)
				require.NoError(t, err, "run go test -run TestRenderGolden -update to create it")
				require.JSONEq(t, string(want), string(got))
			})
		}
	}
}

func TestRenderJSONIsThePayload(t *testing.T) {
	r := newTestRenderer(t, formatLinks)
	payload := goldenEvents(t)["job.complete"]
	for _, f := range []Format{FormatJSON, ""} {
		got, err := r.render(f, payload)
		require.NoError(t, err)
		require.Equal(t, payload, got)
	}
	_, err := r.render("teams", payload)
	require.ErrorContains(t, err, `unknown format "teams"`)
}

func TestFormatValid(t *testing.T) {
	for _, tc := range []struct {
		f    Format
		want bool
	}{{FormatJSON, true}, {FormatSlack, true}, {FormatDiscord, true}, {"", false}, {"Slack", false}, {"teams", false}} {
		require.Equal(t, tc.want, tc.f.valid(), "%q", tc.f)
	}
}

func TestRenderWithoutLinks(t *testing.T) {
	r := newTestRenderer(t, MessageOptions{})
	for name, payload := range goldenEvents(t) {
		b, err := r.render(FormatSlack, payload)
		require.NoError(t, err)
		require.NotContains(t, string(b), `"actions"`, name)
		b, err = r.render(FormatDiscord, payload)
		require.NoError(t, err)
		require.NotContains(t, string(b), `"url"`, name)
	}
}

func TestRenderLinks(t *testing.T) {
	r := newTestRenderer(t, formatLinks)
	for _, tc := range []struct {
		name string
		ev   Event
		want string // "" when there is no link
	}{
		{"path escaped", NewJobComplete(JobComplete{JobID: "nightly/42 #1?x", Name: "n"}), "https://sparc.example.com/jobs/nightly%2F42%20%231%3Fx"},
		{"failed job", NewJobFailed(JobFailed{JobID: "job-7", Error: "x"}), "https://sparc.example.com/jobs/job-7"},
		{"subject", NewScoreChanged(ScoreChanged{Subject: "acme & co", Previous: 1, Current: 2}), "https://sparc.example.com/subjects/acme%20&%20co"},
		{"no job id", NewJobComplete(JobComplete{Name: "n"}), ""},
		{"too long", NewJobComplete(JobComplete{JobID: strings.Repeat("x", 3000)}), ""},
		{"other type", Event{Type: "report.ready", Data: map[string]any{"job_id": "j"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := formatPayload(t, tc.ev)
			var slack struct {
				Blocks []struct {
					Type     string
					Elements []struct{ URL string }
				}
			}
			b, err := r.render(FormatSlack, payload)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(b, &slack))
			var button string
			for _, bl := range slack.Blocks {
				if bl.Type == "actions" {
					button = bl.Elements[0].URL
				}
			}
			require.Equal(t, tc.want, button)

			var discord struct{ Embeds []struct{ URL string } }
			b, err = r.render(FormatDiscord, payload)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(b, &discord))
			require.Equal(t, tc.want, discord.Embeds[0].URL)

			_, text, html, err := r.renderEmail(payload)
			require.NoError(t, err)
			if tc.want != "" {
				require.Contains(t, text, tc.want)
				require.Contains(t, html, `href="`+strings.ReplaceAll(tc.want, "&", "&amp;")+`"`)
			} else {
				require.NotContains(t, html, "href=")
			}
		})
	}
}

// TestRenderMentionSafety checks that text from an event cannot ping
// anyone or make a link: Slack's control characters are escaped, Discord's
// mentions are all disabled and its markdown escaped.
func TestRenderMentionSafety(t *testing.T) {
	evil := "@everyone @here <!channel> <!here> <@U123> <@&456> [click](https://evil.example) <https://evil.example|click>"
	r := newTestRenderer(t, MessageOptions{Templates: map[string]string{"job.complete": "{{.Data.name}}"}})
	for _, ev := range []Event{
		NewJobFailed(JobFailed{JobID: evil, Name: evil, Error: evil, Result: map[string]any{evil: evil}}),
		NewScoreChanged(ScoreChanged{Subject: evil}),
		{Type: EventTest, Data: map[string]any{"message": evil, "webhook_id": evil}},
		{Type: "host.thing", Data: map[string]any{"text": evil}},
		NewJobComplete(JobComplete{Name: evil}), // through the template
	} {
		payload := formatPayload(t, ev)
		b, err := r.render(FormatSlack, payload)
		require.NoError(t, err)
		checkFormatLimits(t, FormatSlack, b) // no < or > in any mrkdwn text
		require.Contains(t, string(b), "&lt;!channel&gt;")

		b, err = r.render(FormatDiscord, payload)
		require.NoError(t, err)
		checkFormatLimits(t, FormatDiscord, b) // allowed_mentions.parse is []
		var msg discordMessage
		require.NoError(t, json.Unmarshal(b, &msg))
		if ev.Type != EventJobComplete && ev.Type != "host.thing" { // the template's output, the data in a code block
			require.Contains(t, msg.Content+msg.Embeds[0].Description+msg.Embeds[0].Title, `\<@U123\>`)
			require.NotContains(t, msg.Embeds[0].Title, "[click]")
		}
	}
}

func TestRenderTemplates(t *testing.T) {
	r := newTestRenderer(t, MessageOptions{
		JobURL: "https://sparc.example.com/jobs/{{.JobID}}",
		Templates: map[string]string{
			EventJobFailed: `{{.Data.name}} broke after {{duration .Data.duration_ms}}: {{.Data.error}}` +
				`{{with index .Data "result"}} ({{.items}} items){{end}} {{.Link}}`,
			EventJobComplete: `{{.Data.name}}: {{.Data.result.items}} items`,
			"report.ready":   `Report {{.Data.report}} <is> ready: {{truncate 5 .Data.title}} {{json .Data.tags}}`,
		},
	})
	failed := formatPayload(t, NewJobFailed(JobFailed{JobID: "job-43", Name: "nightly", DurationMS: 90000, Error: "disk <full>"}))

	t.Run("slack", func(t *testing.T) {
		b, err := r.render(FormatSlack, failed)
		require.NoError(t, err)
		want := "nightly broke after 1m30s: disk &lt;full&gt; https://sparc.example.com/jobs/job-43"
		require.JSONEq(t, `{"text":"`+want+`","blocks":[{"type":"section","text":{"type":"mrkdwn","text":"`+want+`"}}],
			"unfurl_links":false,"unfurl_media":false}`, string(b))
	})
	t.Run("discord", func(t *testing.T) {
		b, err := r.render(FormatDiscord, failed)
		require.NoError(t, err)
		require.JSONEq(t, `{"content":"nightly broke after 1m30s: disk <full> https://sparc.example.com/jobs/job-43",
			"allowed_mentions":{"parse":[]}}`, string(b))
	})
	t.Run("email", func(t *testing.T) {
		subject, text, html, err := r.renderEmail(failed)
		require.NoError(t, err)
		require.Equal(t, "[SPARC] Job nightly failed after 1m30s", subject)
		require.Equal(t, "nightly broke after 1m30s: disk <full> https://sparc.example.com/jobs/job-43", text)
		require.Contains(t, html, "nightly broke after 1m30s: disk &lt;full&gt; https://sparc.example.com/jobs/job-43")
	})
	t.Run("optional key present", func(t *testing.T) {
		b, err := r.render(FormatDiscord, formatPayload(t, NewJobFailed(JobFailed{Name: "n", Error: "e", Result: map[string]any{"items": 3}})))
		require.NoError(t, err)
		require.Contains(t, string(b), `"content":"n broke after 0ms: e (3 items) "`)
	})
	t.Run("host type", func(t *testing.T) {
		b, err := r.render(FormatDiscord, formatPayload(t, Event{Type: "report.ready", Data: map[string]any{"report": "weekly", "title": "Quarterly numbers", "tags": []string{"a"}}}))
		require.NoError(t, err)
		require.Contains(t, string(b), `"content":"Report weekly <is> ready: Quar… [\"a\"]"`)
	})
	// A template that fails on an event, here for want of a result, gives
	// that event the built-in message.
	t.Run("falls back", func(t *testing.T) {
		for _, payload := range [][]byte{
			formatPayload(t, NewJobComplete(JobComplete{Name: "nightly"})),
			formatPayload(t, Event{Type: "report.ready", Data: map[string]any{"title": "no report key"}}),
		} {
			b, err := r.render(FormatSlack, payload)
			require.NoError(t, err)
			require.Contains(t, string(b), `"type":"header"`)
		}
	})
}

func TestNewRendererRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  MessageOptions
		field string
		msg   string
	}{
		{"syntax error", MessageOptions{Templates: map[string]string{"job.failed": "{{.Data.name"}}, "Templates[job.failed]", "does not parse"},
		{"unknown function", MessageOptions{Templates: map[string]string{"job.failed": "{{nope .Data}}"}}, "Templates[job.failed]", `function "nope" not defined`},
		{"missing key", MessageOptions{Templates: map[string]string{"job.failed": "{{.Data.nope}}"}}, "Templates[job.failed]", `map has no entry for key "nope"`},
		{"missing nested key", MessageOptions{Templates: map[string]string{"job.complete": "{{.Data.result.count}}"}}, "Templates[job.complete]", `map has no entry for key "count"`},
		{"missing field", MessageOptions{Templates: map[string]string{"score.changed": "{{.Subject}}"}}, "Templates[score.changed]", "can't evaluate field Subject"},
		{"wrong arguments", MessageOptions{Templates: map[string]string{"job.failed": "{{duration}}"}}, "Templates[job.failed]", "wrong number of args"},
		{"wrong argument type", MessageOptions{Templates: map[string]string{"webhook.test": `{{truncate "x" .Data.message}}`}}, "Templates[webhook.test]", "fails on a sample"},
		{"host type, wrong arguments", MessageOptions{Templates: map[string]string{"report.ready": `{{truncate "x" .Data.title}}`}}, "Templates[report.ready]", "fails on a sample"},
		{"renders nothing", MessageOptions{Templates: map[string]string{"job.failed": "{{/* nothing */}}  "}}, "Templates[job.failed]", "renders nothing"},
		{"renders control characters", MessageOptions{Templates: map[string]string{"job.failed": "\x7f\x00\u202e"}}, "Templates[job.failed]", "renders nothing"},
		{"bad key", MessageOptions{Templates: map[string]string{"Job Failed": "x"}}, "Templates[Job Failed]", "must be an event type"},
		{"job URL syntax", MessageOptions{JobURL: "https://x.example/{{.JobID"}, "JobURL", "does not parse"},
		{"job URL field", MessageOptions{JobURL: "https://x.example/{{.ID}}"}, "JobURL", "can't evaluate field ID"},
		{"job URL relative", MessageOptions{JobURL: "/jobs/{{.JobID}}"}, "JobURL", "absolute http or https URL"},
		{"subject URL scheme", MessageOptions{SubjectURL: "javascript:alert({{.Subject}})"}, "SubjectURL", "absolute http or https URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newRenderer(tc.opts)
			require.ErrorIs(t, err, ErrInvalid)
			var ve *ValidationError
			require.True(t, errors.As(err, &ve))
			require.Equal(t, tc.field, ve.Field)
			require.Contains(t, ve.Message, tc.msg)
		})
	}
}

func TestNewRendererAccepts(t *testing.T) {
	_, err := newRenderer(MessageOptions{
		JobURL:     "https://sparc.example.com/jobs/{{.JobID}}?tab=log",
		SubjectURL: "http://localhost:8080/s/{{.Subject}}",
		Templates: map[string]string{
			EventJobComplete:  `{{.Data.name}} {{duration .Data.duration_ms}} {{.Data.result.items}} {{.Link}} {{jobURL .Data.job_id}}`,
			EventJobFailed:    `{{.Data.error}} {{.Timestamp.Format "15:04"}} {{.ID}} {{.Type}}`,
			EventScoreChanged: `{{.Data.subject}} {{score .Data.previous}} → {{score .Data.current}} ({{change .Data.delta}}) {{subjectURL .Data.subject}}`,
			EventTest:         `{{.Data.message}}`,
			"report.ready":    `{{.Data.report.title}} {{.DataJSON}}`, // host data is not known beforehand
		},
	})
	require.NoError(t, err)
}

// TestRenderLimits renders events far over every limit: nothing goes over
// a limit, every text stays valid UTF-8 and the cuts end with "…".
func TestRenderLimits(t *testing.T) {
	unit := "错误 ✗ 💥 <&> ```\n"
	hugeError := strings.Repeat(unit, 100<<10/len(unit)+1) // over 100 KB
	longName := strings.Repeat("nightly-😀-", 1000)
	result := map[string]any{"items": 12}
	for i := range 30 {
		result[strings.Repeat("k", 300)+string(rune('A'+i))] = strings.Repeat("v💥", 1500)
	}
	r := newTestRenderer(t, formatLinks)
	for _, tc := range []struct {
		name string
		ev   Event
	}{
		{"100 KB error", NewJobFailed(JobFailed{JobID: "j", Name: "n", Error: hugeError})},
		{"10,000-character name", NewJobComplete(JobComplete{JobID: "j", Name: longName})},
		{"30 result fields", NewJobComplete(JobComplete{JobID: "j", Name: "n", Result: result})},
		{"all at once", NewJobFailed(JobFailed{JobID: longName, Name: longName, Error: hugeError, Result: result})},
		{"long subject", NewScoreChanged(ScoreChanged{Subject: longName, Previous: -1e300, Current: 1e300})},
		{"long test message", Event{Type: EventTest, Data: map[string]any{"message": hugeError, "webhook_id": longName}}},
		{"huge host data", Event{Type: "host.thing", Data: result}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := formatPayload(t, tc.ev)
			for _, f := range []Format{FormatSlack, FormatDiscord} {
				b, err := r.render(f, payload)
				require.NoError(t, err)
				checkFormatLimits(t, f, b)
				require.Contains(t, string(b), "…", "%s: a cut is marked", f)
			}
			subject, text, html, err := r.renderEmail(payload)
			require.NoError(t, err)
			require.LessOrEqual(t, utf8.RuneCountInString(subject), emailSubjectMax)
			require.NotContains(t, subject, "\n")
			require.True(t, utf8.ValidString(text) && utf8.ValidString(html))
			require.Less(t, len(text), 256<<10)
		})
	}
	t.Run("30 result fields shown", func(t *testing.T) {
		b, err := r.render(FormatDiscord, formatPayload(t, NewJobComplete(JobComplete{Name: "n", Result: result})))
		require.NoError(t, err)
		var msg discordMessage
		require.NoError(t, json.Unmarshal(b, &msg))
		fields := msg.Embeds[0].Fields
		require.Equal(t, "More", fields[len(fields)-1].Name)
		require.Regexp(t, `^\d+ more entries$`, fields[len(fields)-1].Value)
	})
}

func TestRenderOddPayloads(t *testing.T) {
	r := newTestRenderer(t, formatLinks)
	for _, payload := range []string{
		``, `null`, `[]`, `"x"`, "\xff\xfe{", `{}`, `{"type":7}`,
		`{"id":"e","type":"job.failed","timestamp":"yesterday","data":"nope"}`,
		`{"type":"job.complete","data":{"name":{"a":1},"duration_ms":"soon","result":[1,2]}}`,
		`{"type":"job.complete","data":{"duration_ms":1e300,"result":{"items":"many","items":[1]}}}`,
		`{"type":"score.changed","data":{"subject":null,"previous":"1.5","current":true}}`,
		`{"type":"webhook.test","data":{"message":""}}`,
		`{"type":"x.y","data":null}`,
		"{\"id\":\"\\u007f\",\"type\":\"\\u0000\",\"data\":{\"\\u007f\":\"\\u202e\"}}",
	} {
		for _, f := range []Format{FormatSlack, FormatDiscord} {
			b, err := r.render(f, []byte(payload))
			require.NoError(t, err, payload)
			checkFormatLimits(t, f, b)
		}
		_, _, _, err := r.renderEmail([]byte(payload))
		require.NoError(t, err)
	}
	// Missing values are shown as absent.
	b, err := r.render(FormatDiscord, []byte(`{"type":"job.complete","data":{"name":"n"}}`))
	require.NoError(t, err)
	require.Contains(t, string(b), `{"name":"Duration","value":"—","inline":true}`)
}

func TestRenderConcurrently(t *testing.T) {
	r := newTestRenderer(t, MessageOptions{JobURL: formatLinks.JobURL, Templates: map[string]string{EventJobFailed: "{{.Data.error}}"}})
	events := goldenEvents(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, payload := range events {
				for _, f := range []Format{FormatSlack, FormatDiscord} {
					if _, err := r.render(f, payload); err != nil {
						t.Error(err)
					}
				}
				if _, _, _, err := r.renderEmail(payload); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func TestRenderEmail(t *testing.T) {
	r := newTestRenderer(t, formatLinks)
	payload := formatPayload(t, NewJobFailed(JobFailed{
		JobID: "job-43", Name: "<script>nightly</script>", DurationMS: 90000,
		Error: "exit status 1\nwhile writing", Result: map[string]any{"items": 3, "written": "2 GB"},
	}))
	subject, text, html, err := r.renderEmail(payload)
	require.NoError(t, err)
	require.Equal(t, "[SPARC] Job <script>nightly</script> failed after 1m30s", subject)
	require.Equal(t, `Job failed: <script>nightly</script>

Job:      <script>nightly</script>
Outcome:  Failed
Duration: 1m30s
Items:    3
Job ID:   job-43

Result
  written: 2 GB

Error
  exit status 1
  while writing

View job: https://sparc.example.com/jobs/job-43

-- 
job.failed · evt_0001 · 2026-11-29 10:01:30 UTC
`, text)
	require.NotContains(t, html, "<script>")
	require.Contains(t, html, "&lt;script&gt;nightly&lt;/script&gt;")
	require.Contains(t, html, `<pre style="margin:0;padding:8px;background:#f6f8fa;white-space:pre-wrap;word-break:break-word;font-size:13px">exit status 1
while writing</pre>`)
	require.Contains(t, html, "border-left:4px solid #e01e5a")
	require.Contains(t, html, `<a href="https://sparc.example.com/jobs/job-43">View job</a>`)

	for name, payload := range goldenEvents(t) {
		subject, text, html, err := r.renderEmail(payload)
		require.NoError(t, err, name)
		require.True(t, strings.HasPrefix(subject, "[SPARC] "), subject)
		require.NotEmpty(t, text)
		require.True(t, strings.HasPrefix(html, "<!DOCTYPE html>"))
	}
}

func TestDurationText(t *testing.T) {
	for _, tc := range []struct {
		ms   any
		want string
	}{
		{json.Number("0"), "0ms"},
		{json.Number("850"), "850ms"},
		{json.Number("1000"), "1s"},
		{json.Number("4210"), "4.2s"},
		{json.Number("9949"), "9.9s"},
		{json.Number("9950"), "10s"},
		{json.Number("90000"), "1m30s"},
		{json.Number("3600000"), "1h"},
		{json.Number("7530000"), "2h5m30s"},
		{json.Number("277200000"), "3d5h"},
		{json.Number("-1500"), "−1.5s"},
		{"1500", "1.5s"},
		{90000.0, "1m30s"},
	} {
		got, ok := durationText(tc.ms)
		require.True(t, ok, "%v", tc.ms)
		require.Equal(t, tc.want, got, "%v", tc.ms)
	}
	for _, bad := range []any{nil, "soon", true, json.Number("1e300"), map[string]any{}} {
		_, ok := durationText(bad)
		require.False(t, ok, "%v", bad)
	}
}

func TestScoreText(t *testing.T) {
	for _, tc := range []struct {
		x             float64
		score, change string
	}{
		{71.5, "71.50", "+71.50"},
		{-1.204, "−1.20", "−1.20"},
		{0, "0.00", "0.00"},
		{-0.001, "0.00", "0.00"},
		{0.004, "0.00", "0.00"},
		{2.755, "2.75", "+2.75"}, // 2.755 is 2.75499... in binary
	} {
		require.Equal(t, tc.score, scoreText(tc.x), "%v", tc.x)
		require.Equal(t, tc.change, changeText(tc.x), "%v", tc.x)
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		s         string
		max       int
		esc       escaper
		multiline bool
		want      string
	}{
		{"fits", "hello", 5, plainEsc, false, "hello"},
		{"cut", "hello world", 8, plainEsc, false, "hello w…"},
		{"trailing space dropped", "hello world", 7, plainEsc, false, "hello…"},
		{"zero", "hello", 0, plainEsc, false, ""},
		{"one", "hello", 1, plainEsc, false, "…"},
		{"surrogate pairs count twice", "😀😀😀", 5, plainEsc, false, "😀😀…"},
		{"surrogate pair not split", "😀😀😀", 4, plainEsc, false, "😀…"},
		{"escape not split", "a<b", 5, slackEsc, false, "a…"},
		{"escaped fits", "a<b", 6, slackEsc, false, "a&lt;b"},
		{"discord", "*hi* _x_ `c` [l](u) <@1>", 100, discordEsc, false, `\*hi\* \_x\_ \` + "`c\\`" + ` \[l\](u) \<@1\>`},
		{"discord line starts", "# h\n - l\na-b", 100, discordEsc, true, "\\# h\n \\- l\na-b"},
		{"single line", "a\nb\tc\r\n", 10, plainEsc, false, "a b c "},
		{"multi-line", "a\r\nb\tc\u2028d", 10, plainEsc, true, "a\nb\tc\nd"},
		{"controls dropped", "a\x00\x1b[31mb\u202ec\u0085", 20, plainEsc, false, "a[31mbc"},
		{"invalid UTF-8", "a\xffb", 10, plainEsc, false, "a\uFFFDb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clip(tc.s, tc.max, tc.esc, tc.multiline)
			require.Equal(t, tc.want, got)
			require.LessOrEqual(t, utf16Len(got), max(tc.max, 0))
		})
	}
}

// FuzzRender checks that no payload makes the renderer panic, and that
// every Slack and Discord message is valid JSON within every limit. The
// payload is rendered as it is; text is also put in every field of a
// valid event of each kind.
func FuzzRender(f *testing.F) {
	for _, p := range goldenEvents(f) {
		f.Add(p, "")
	}
	for _, s := range []string{``, `{}`, `[]`, `null`, "\xff", `{"type":"job.failed","data":{"error":123,"result":{"items":{}}}}`,
		`{"type":"score.changed","data":{"previous":1e309,"current":"NaN"}}`, `{"type":"job.complete","timestamp":"0000-01-01T00:00:00Z","data":{"name":"<!here>"}}`} {
		f.Add([]byte(s), "<@U1> *x* ```\n# h\xff\u202e😀")
	}
	r := newTestRenderer(f, MessageOptions{
		JobURL: formatLinks.JobURL, SubjectURL: formatLinks.SubjectURL,
		Templates: map[string]string{EventTest: `{{.Data.message}} {{duration (index .Data "ms")}} {{.Link}}`},
	})
	check := func(t *testing.T, payload []byte) {
		for _, format := range []Format{FormatSlack, FormatDiscord} {
			b, err := r.render(format, payload)
			require.NoError(t, err)
			checkFormatLimits(t, format, b)
		}
		subject, text, html, err := r.renderEmail(payload)
		require.NoError(t, err)
		require.True(t, utf8.ValidString(subject) && utf8.ValidString(text) && utf8.ValidString(html))
		require.NotContains(t, subject, "\n")
	}
	f.Fuzz(func(t *testing.T, payload []byte, text string) {
		check(t, payload)
		if text == "" {
			return
		}
		data := map[string]any{
			"name": text, "job_id": text, "error": text, "subject": text, "message": text, "webhook_id": text,
			"duration_ms": text, "previous": text, "current": 2, "result": map[string]any{text: text, "items": text},
		}
		for _, typ := range []string{EventJobComplete, EventJobFailed, EventScoreChanged, EventTest, "host.thing"} {
			check(t, formatPayload(t, Event{Type: typ, Data: data}))
		}
	})
}

// bareAmpersand matches an & that does not begin &amp;, &lt; or &gt;.
var bareAmpersand = regexp.MustCompile(`&($|[^agl]|a($|[^m])|g($|[^t])|l($|[^t]))`)

func utf16Len(s string) int { return len(utf16.Encode([]rune(s))) }

// checkFormatLimits fails t unless body is a valid message of format f
// within every documented limit of its service and these stricter ones:
// Slack text never holds a raw <, > or an & that is not an entity, and
// Discord mentions are disabled.
func checkFormatLimits(t testing.TB, f Format, body []byte) {
	t.Helper()
	require.True(t, utf8.Valid(body), "valid UTF-8")
	require.True(t, json.Valid(body), "valid JSON: %s", body)
	switch f {
	case FormatSlack:
		checkSlackLimits(t, body)
	case FormatDiscord:
		checkDiscordLimits(t, body)
	default:
		t.Fatalf("no limits for %q", f)
	}
}

func checkSlackLimits(t testing.TB, body []byte) {
	t.Helper()
	type text struct{ Type, Text string }
	var m struct {
		Text   string
		Blocks []struct {
			Type     string
			Text     *text
			Fields   []text
			Elements []struct {
				Type string
				Text json.RawMessage
				URL  string
			}
		}
	}
	require.NoError(t, json.Unmarshal(body, &m))
	safe := func(s string) {
		t.Helper()
		if strings.ContainsAny(s, "<>") || bareAmpersand.MatchString(s) {
			t.Fatalf("Slack text with an unescaped <, > or &: %q", s)
		}
	}
	require.NotEmpty(t, m.Text)
	require.LessOrEqual(t, utf16Len(m.Text), slackSectionMax)
	safe(m.Text)
	require.NotEmpty(t, m.Blocks)
	require.LessOrEqual(t, len(m.Blocks), slackBlocksMax)
	total := 0
	for _, b := range m.Blocks {
		switch b.Type {
		case "header":
			require.Equal(t, "plain_text", b.Text.Type)
			require.NotEmpty(t, strings.TrimSpace(b.Text.Text))
			require.LessOrEqual(t, utf16Len(b.Text.Text), slackHeaderMax)
			require.NotContains(t, b.Text.Text, "\n")
			total += utf16Len(b.Text.Text)
		case "section":
			require.True(t, b.Text != nil || len(b.Fields) > 0)
			if b.Text != nil {
				require.Equal(t, "mrkdwn", b.Text.Type)
				require.NotEmpty(t, b.Text.Text)
				require.LessOrEqual(t, utf16Len(b.Text.Text), slackSectionMax)
				safe(b.Text.Text)
				total += utf16Len(b.Text.Text)
			}
			require.LessOrEqual(t, len(b.Fields), slackFieldsMax)
			for _, fd := range b.Fields {
				require.Equal(t, "mrkdwn", fd.Type)
				require.NotEmpty(t, fd.Text)
				require.LessOrEqual(t, utf16Len(fd.Text), slackFieldMax)
				safe(fd.Text)
				total += utf16Len(fd.Text)
			}
		case "actions":
			require.Len(t, b.Elements, 1)
			el := b.Elements[0]
			require.Equal(t, "button", el.Type)
			var label text
			require.NoError(t, json.Unmarshal(el.Text, &label))
			require.Equal(t, "plain_text", label.Type)
			require.NotEmpty(t, label.Text)
			require.LessOrEqual(t, utf16Len(label.Text), slackButtonTextMax)
			require.LessOrEqual(t, len(el.URL), 3000)
			require.True(t, validLink(el.URL), el.URL)
		case "context":
			require.NotEmpty(t, b.Elements)
			require.LessOrEqual(t, len(b.Elements), 10)
			for _, el := range b.Elements {
				require.Equal(t, "mrkdwn", el.Type)
				var s string
				require.NoError(t, json.Unmarshal(el.Text, &s))
				require.NotEmpty(t, s)
				require.LessOrEqual(t, utf16Len(s), slackSectionMax)
				safe(s)
				total += utf16Len(s)
			}
		default:
			t.Fatalf("unexpected block type %q", b.Type)
		}
	}
	require.LessOrEqual(t, total, 10000, "well below msg_blocks_too_long")
}

func checkDiscordLimits(t testing.TB, body []byte) {
	t.Helper()
	var m struct {
		Content string
		Embeds  []struct {
			Title       string
			Description string
			URL         string
			Color       int
			Timestamp   string
			Fields      []struct{ Name, Value string }
			Footer      *struct{ Text string }
		}
		AllowedMentions *struct{ Parse []string } `json:"allowed_mentions"`
	}
	require.NoError(t, json.Unmarshal(body, &m))
	require.Contains(t, string(body), `"allowed_mentions":{"parse":[]}`)
	require.True(t, strings.TrimSpace(m.Content) != "" || len(m.Embeds) > 0, "not empty")
	require.LessOrEqual(t, utf16Len(m.Content), discordContentMax)
	require.LessOrEqual(t, len(m.Embeds), 1)
	for _, e := range m.Embeds {
		total := utf16Len(e.Title) + utf16Len(e.Description)
		require.LessOrEqual(t, utf16Len(e.Title), discordTitleMax)
		require.LessOrEqual(t, utf16Len(e.Description), discordDescriptionMax)
		require.LessOrEqual(t, len(e.Fields), discordFieldsMax)
		for _, fd := range e.Fields {
			require.NotEmpty(t, strings.TrimSpace(fd.Name))
			require.NotEmpty(t, strings.TrimSpace(fd.Value))
			require.LessOrEqual(t, utf16Len(fd.Name), discordFieldNameMax)
			require.LessOrEqual(t, utf16Len(fd.Value), discordFieldValueMax)
			total += utf16Len(fd.Name) + utf16Len(fd.Value)
		}
		if e.Footer != nil {
			require.LessOrEqual(t, utf16Len(e.Footer.Text), discordFooterMax)
			total += utf16Len(e.Footer.Text)
		}
		require.LessOrEqual(t, total, discordEmbedMax)
		require.GreaterOrEqual(t, e.Color, 0)
		require.LessOrEqual(t, e.Color, 0xFFFFFF)
		if e.URL != "" {
			require.True(t, validLink(e.URL), e.URL)
		}
		if e.Timestamp != "" {
			_, err := time.Parse(time.RFC3339, e.Timestamp)
			require.NoError(t, err)
		}
	}
}
