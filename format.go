package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	htmltemplate "html/template"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"
)

// Format says how a webhook's deliveries are rendered.
type Format string

// Formats of deliveries. Slack and Discord refuse the signed envelope, so a
// webhook that posts to one of them renders each event as a message for
// people instead. The signature headers are still sent, computed over the
// message that is sent.
const (
	// FormatJSON sends the signed Standard Webhooks envelope, exactly as
	// published. It is the default.
	FormatJSON Format = "json"
	// FormatSlack sends a Slack incoming-webhook message: a fallback text and
	// Block Kit blocks.
	FormatSlack Format = "slack"
	// FormatDiscord sends a Discord webhook message: a line of content and
	// one embed, with every mention disabled.
	FormatDiscord Format = "discord"
	// FormatEmail is the format of a webhook whose URL is
	// "mailto:<address>": each event is sent as an email through
	// Config.SMTP. It is set from the URL; it cannot be chosen for an http
	// URL.
	FormatEmail Format = "email"
)

// valid reports whether f is one of the formats above. The empty Format is
// not valid: a registration that leaves it out is given FormatJSON.
func (f Format) valid() bool {
	switch f {
	case FormatJSON, FormatSlack, FormatDiscord:
		return true
	}
	return false
}

// MessageOptions configures the messages that people read: Slack, Discord
// and email deliveries. The zero value gives the built-in messages without
// links.
type MessageOptions struct {
	// JobURL, when set, is a text/template that makes the link of a job,
	// such as "https://sparc.example.com/jobs/{{.JobID}}". SubjectURL makes
	// the link of a score's subject, such as
	// "https://sparc.example.com/subjects/{{.Subject}}". The values are
	// URL-path-escaped before they are substituted, and the result must be
	// an absolute http or https URL. A message has no link when its event
	// has no job_id (subject), or when the link would not be a valid URL of
	// at most 2,000 bytes.
	JobURL, SubjectURL string
	// Templates replaces the built-in message of an event type, the key
	// (such as "job.failed"), with the host's own text/template. The
	// template is executed with a TemplateData and the option
	// missingkey=error; use index for keys that an event may lack, as in
	// {{with index .Data "result"}}. Its output is the message: in Slack the
	// fallback text and a single section block (&, < and > are escaped, so
	// mrkdwn such as *bold* works but no mention or <url|link> can be made);
	// in Discord the content, whose mentions are disabled; in email the
	// plain-text body, and HTML-escaped in the HTML body. When it fails to
	// execute on an event, or renders only white space, that event gets the
	// built-in message.
	//
	// Each template is parsed and, for the built-in event types, executed
	// once on a sample event when the renderer is made, so mistakes are
	// reported then.
	Templates map[string]string
}

// TemplateData is what a message template of MessageOptions.Templates
// sees. Besides its fields, templates can call these functions:
//
//	duration MS      a number of milliseconds for people: "850ms", "4.2s", "1m30s", "2h5m"
//	score X          a number with 2 decimals: "71.50", "−3.00"
//	change X         a signed number with 2 decimals: "+2.75", "−1.20"
//	jobURL ID        the link of a job from MessageOptions.JobURL, or ""
//	subjectURL S     the link of a subject from MessageOptions.SubjectURL, or ""
//	json V           V encoded as compact JSON
//	truncate N S     S cut to at most N characters, ending with "…" when cut
type TemplateData struct {
	// ID is the event's ID.
	ID string
	// Type is the event's type, such as "job.failed".
	Type string
	// Timestamp is when the event happened, in UTC; zero when the envelope
	// holds no readable time.
	Timestamp time.Time
	// Data is the event's data, decoded; numbers are json.Number, so they
	// print as they were published. It is nil when the data is not a JSON
	// object.
	Data map[string]any
	// DataJSON is the event's data as compact JSON.
	DataJSON string
	// Link is the event's link: a job's from MessageOptions.JobURL or a
	// score subject's from MessageOptions.SubjectURL; "" when there is none.
	Link string
}

// renderer turns event payloads into the bodies of each format. It is safe
// for simultaneous use by multiple goroutines.
type renderer struct {
	jobURL     *template.Template // nil when MessageOptions.JobURL is empty
	subjectURL *template.Template // nil when MessageOptions.SubjectURL is empty
	templates  map[string]*template.Template
}

// newRenderer validates opts and returns a renderer for them. A template
// that does not parse, or that fails on a sample event of its type, is
// reported as a *ValidationError for the field "JobURL", "SubjectURL" or
// "Templates[<event type>]".
func newRenderer(opts MessageOptions) (*renderer, error) {
	r := &renderer{templates: make(map[string]*template.Template, len(opts.Templates))}
	var err error
	if r.jobURL, err = parseLinkTemplate("JobURL", opts.JobURL, linkData{JobID: "job-42"}); err != nil {
		return nil, err
	}
	if r.subjectURL, err = parseLinkTemplate("SubjectURL", opts.SubjectURL, linkData{Subject: "subject-1"}); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(opts.Templates))
	for k := range opts.Templates {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first mistake reported is always the same one
	for _, typ := range keys {
		field := "Templates[" + typ + "]"
		if msg := checkEventName(typ, false); msg != "" {
			return nil, invalid(field, "the key must be an event type: it %s", msg)
		}
		t, err := template.New(typ).Option("missingkey=error").Funcs(r.funcs()).Parse(opts.Templates[typ])
		if err != nil {
			return nil, invalid(field, "does not parse: %v", err)
		}
		if err := r.tryTemplate(t, typ); err != nil {
			return nil, invalid(field, "%v", err)
		}
		r.templates[typ] = t
	}
	return r, nil
}

// tryTemplate executes t once on a sample event of type typ. A host's own
// event type has no known data, so its template is tried on empty data
// with missing keys allowed: that finds calls of functions with wrong
// arguments, not keys that its events may lack.
func (r *renderer) tryTemplate(t *template.Template, typ string) error {
	payload, builtin := samplePayload(typ)
	td := r.templateData(decodeEnvelope(payload))
	if !builtin {
		lenient, err := t.Clone()
		if err != nil {
			return err
		}
		t = lenient.Option("missingkey=default")
	}
	w := &limitedBuffer{max: customMax}
	if err := t.Execute(w, td); err != nil {
		return fmt.Errorf("fails on a sample %s event: %v", typ, err)
	}
	if builtin && strings.TrimSpace(clip(w.String(), customMax, plainEsc, true)) == "" {
		return fmt.Errorf("renders nothing for a sample %s event", typ)
	}
	return nil
}

// sampleTime is the time of the sample events that templates are tried on.
var sampleTime = time.Date(2026, 11, 29, 10, 1, 30, 0, time.UTC)

// samplePayload returns the envelope of a sample event of type typ, and
// whether typ is a built-in type whose data is known.
func samplePayload(typ string) ([]byte, bool) {
	start := sampleTime.Add(-90 * time.Second)
	var ev Event
	builtin := true
	switch typ {
	case EventJobComplete:
		ev = NewJobComplete(JobComplete{JobID: "job-42", Name: "nightly-scores", StartedAt: start, FinishedAt: sampleTime,
			Result: map[string]any{"items": 20, "mean_score": 71.5}})
	case EventJobFailed:
		ev = NewJobFailed(JobFailed{JobID: "job-42", Name: "nightly-scores", StartedAt: start, FinishedAt: sampleTime,
			Result: map[string]any{"items": 3}, Error: "exit status 1"})
	case EventScoreChanged:
		ev = NewScoreChanged(ScoreChanged{Subject: "subject-1", Previous: 71.5, Current: 74.25})
	case EventTest:
		ev = Event{Type: EventTest, Data: map[string]any{"webhook_id": "wh_sample", "message": "This is a test delivery from the SPARC webhook dispatcher."}}
	default:
		ev = Event{Type: typ, Data: map[string]any{}}
		builtin = false
	}
	ev.ID, ev.Timestamp = "evt_sample", sampleTime
	p, err := encodeEvent(ev, 1<<20)
	if err != nil { // cannot happen: the samples are small and valid
		return []byte(`{"id":"evt_sample","type":"` + typ + `","timestamp":"2026-11-29T10:01:30Z","data":{}}`), builtin
	}
	return p.payload, builtin
}

// linkData is what the JobURL and SubjectURL templates see; the values are
// URL-path-escaped.
type linkData struct {
	JobID   string
	Subject string
}

// linkMax bounds the length of a link, below Slack's 3,000 for a button's
// url (docs.slack.dev/reference/block-kit/block-elements/button-element)
// and what browsers and mail clients take.
const linkMax = 2000

// parseLinkTemplate parses the link template text of field and checks that
// it makes a valid link from sample. It returns nil when text is empty.
func parseLinkTemplate(field, text string, sample linkData) (*template.Template, error) {
	if text == "" {
		return nil, nil
	}
	t, err := template.New(field).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, invalid(field, "does not parse: %v", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, sample); err != nil {
		return nil, invalid(field, "fails on a sample: %v", err)
	}
	if !validLink(b.String()) {
		return nil, invalid(field, "must make an absolute http or https URL of at most %d bytes; a sample made %q", linkMax, b.String())
	}
	return t, nil
}

// validLink reports whether s is an absolute http or https URL with a host,
// of at most linkMax bytes and without white space or control characters.
func validLink(s string) bool {
	if s == "" || len(s) > linkMax || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// link executes t with d, its values path-escaped, and returns the link, or
// "" when t is nil or the result is not a valid link.
func link(t *template.Template, d linkData) string {
	if t == nil {
		return ""
	}
	d.JobID, d.Subject = url.PathEscape(d.JobID), url.PathEscape(d.Subject)
	b := &limitedBuffer{max: linkMax + 1}
	if err := t.Execute(b, d); err != nil || !validLink(b.String()) {
		return ""
	}
	return b.String()
}

// jobLink returns the link of a job, or "" without JobURL or a job ID.
func (r *renderer) jobLink(jobID string) string {
	if jobID == "" {
		return ""
	}
	return link(r.jobURL, linkData{JobID: jobID})
}

// subjectLink returns the link of a score's subject, or "" without
// SubjectURL or a subject.
func (r *renderer) subjectLink(subject string) string {
	if subject == "" {
		return ""
	}
	return link(r.subjectURL, linkData{Subject: subject})
}

// funcs returns the functions that message templates can call.
func (r *renderer) funcs() template.FuncMap {
	return template.FuncMap{
		"duration": func(ms any) string {
			if d, ok := durationText(ms); ok {
				return d
			}
			return absent
		},
		"score": func(x any) string {
			if f, ok := toFloat(x); ok {
				return scoreText(f)
			}
			return absent
		},
		"change": func(x any) string {
			if f, ok := toFloat(x); ok {
				return changeText(f)
			}
			return absent
		},
		"jobURL":     func(id any) string { return r.jobLink(valueText(id)) },
		"subjectURL": func(s any) string { return r.subjectLink(valueText(s)) },
		"json": func(v any) string {
			b, err := marshalJSON(v)
			if err != nil {
				return absent
			}
			return string(b)
		},
		"truncate": func(n int, s any) string { return clip(valueText(s), n, plainEsc, true) },
	}
}

// customMax bounds what a host's template may write; the rest is dropped.
const customMax = 64 << 10

// limitedBuffer keeps the first max bytes written to it and drops the rest.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string { return strings.ToValidUTF8(b.buf.String(), "\uFFFD") }

// render returns the body of a delivery in format f of the envelope payload,
// as stored when the event was published. FormatJSON (and the empty
// Format, as stored before formats existed) returns payload itself.
// FormatSlack and FormatDiscord return a JSON message that stays within
// every limit of the receiving service, whatever payload holds: odd data
// gives a plainer message, never an error. The only error is an unknown
// format.
func (r *renderer) render(f Format, payload []byte) ([]byte, error) {
	switch f {
	case FormatJSON, "":
		return payload, nil
	case FormatSlack:
		m := r.message(payload)
		return marshalJSON(m.slack())
	case FormatDiscord:
		m := r.message(payload)
		return marshalJSON(m.discord())
	}
	return nil, fmt.Errorf("webhook: unknown format %q", string(f))
}

// marshalJSON encodes v without escaping <, > and &, which Slack's text
// already escapes as entities.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// envelope is an event payload decoded for people. A part that is missing
// or of the wrong JSON type is left empty.
type envelope struct {
	readable bool // the payload is a JSON object
	id, typ  string
	at       time.Time // zero when the timestamp is missing or unreadable
	data     map[string]any
	members  map[string]json.RawMessage // data's members, undecoded
	dataRaw  json.RawMessage
}

// decodeEnvelope reads what it can of payload; it never fails.
func decodeEnvelope(payload []byte) envelope {
	var top map[string]json.RawMessage
	if json.Unmarshal(payload, &top) != nil || top == nil {
		return envelope{}
	}
	e := envelope{readable: true, dataRaw: top["data"]}
	// Errors leave the part empty: a member of the wrong type is absent.
	_ = json.Unmarshal(top["id"], &e.id)
	_ = json.Unmarshal(top["type"], &e.typ)
	var ts string
	if json.Unmarshal(top["timestamp"], &ts) == nil {
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			e.at = at.UTC()
		}
	}
	if len(e.dataRaw) > 0 && e.dataRaw[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(e.dataRaw))
		dec.UseNumber()
		if dec.Decode(&e.data) != nil {
			e.data = nil
		}
		_ = json.Unmarshal(e.dataRaw, &e.members)
	}
	return e
}

// templateData returns what a message template sees of e.
func (r *renderer) templateData(e envelope) TemplateData {
	td := TemplateData{ID: e.id, Type: e.typ, Timestamp: e.at, Data: e.data}
	var b bytes.Buffer
	if json.Compact(&b, e.dataRaw) == nil {
		td.DataJSON = b.String()
	}
	switch e.typ {
	case EventJobComplete, EventJobFailed:
		td.Link = r.jobLink(valueText(e.data["job_id"]))
	case EventScoreChanged:
		td.Link = r.subjectLink(valueText(e.data["subject"]))
	}
	return td
}

// message is an event described for people, before it is put in the
// shape of a format. Its texts are plain: each format escapes and cuts
// them.
type message struct {
	emoji   string
	title   string // headline, such as "Job failed: nightly-scores"
	summary string // one line, such as "Job nightly-scores failed after 1m30s"
	snippet string // what a notification adds to summary: the first line of an error
	fields  []field
	result  []field // a job result's entries other than items

	detailLabel string // "Error", "Message", "Data"
	detail      string // multi-line text
	detailCode  bool   // detail is shown preformatted

	link, linkLabel string
	color           int

	id, typ string
	at      time.Time

	custom string // output of the host's template; when set it is the message
}

type field struct{ name, value string }

// absent stands for a value that the event does not hold.
const absent = "—"

// Colours of Discord embeds and email accents.
const (
	colorGreen = 0x2EB67D
	colorRed   = 0xE01E5A
	colorBlue  = 0x1D9BD1
	colorAmber = 0xECB22E
	colorGrey  = 0x9AA0A6
)

// message describes payload for people.
func (r *renderer) message(payload []byte) message {
	e := decodeEnvelope(payload)
	m := message{id: e.id, typ: e.typ, at: e.at, color: colorGrey}
	switch {
	case !e.readable:
		m.emoji, m.title = "⚠️", "Unreadable event"
		m.summary = "SPARC sent an event that could not be read"
		m.detailLabel, m.detail, m.detailCode = "Payload", string(payload[:min(len(payload), 4096)]), true
		return m
	case e.typ == EventJobComplete || e.typ == EventJobFailed:
		r.jobMessage(&m, e)
	case e.typ == EventScoreChanged:
		r.scoreMessage(&m, e)
	case e.typ == EventTest:
		testMessage(&m, e)
	default:
		genericMessage(&m, e)
	}
	if t := r.templates[e.typ]; t != nil {
		w := &limitedBuffer{max: customMax}
		if t.Execute(w, r.templateData(e)) == nil {
			// Cleaned, so that a text of control characters counts as empty.
			if out := clip(w.String(), customMax, plainEsc, true); strings.TrimSpace(out) != "" {
				m.custom = out
			}
		}
	}
	return m
}

func (r *renderer) jobMessage(m *message, e envelope) {
	name := valueText(e.data["name"])
	jobID := valueText(e.data["job_id"])
	who := name
	if who == "" {
		who = jobID
	}
	dur, hasDur := durationText(e.data["duration_ms"])
	outcome := "Completed"
	m.emoji, m.color, m.title = "✅", colorGreen, "Job completed"
	m.summary = "A job completed"
	if who != "" {
		m.summary = "Job " + who + " completed"
	}
	if hasDur {
		m.summary += " in " + dur
	}
	if e.typ == EventJobFailed {
		outcome = "Failed"
		m.emoji, m.color, m.title = "❌", colorRed, "Job failed"
		m.summary = "A job failed"
		if who != "" {
			m.summary = "Job " + who + " failed"
		}
		if hasDur {
			m.summary += " after " + dur
		}
		m.detailLabel, m.detail, m.detailCode = "Error", valueText(e.data["error"]), true
		if strings.TrimSpace(m.detail) == "" {
			m.detail, m.detailCode = "No error message was given.", false
		} else {
			m.snippet, _, _ = strings.Cut(strings.TrimSpace(m.detail), "\n")
		}
	}
	if who != "" {
		m.title += ": " + who
	}
	if !hasDur {
		dur = absent
	}
	m.fields = []field{{"Job", orAbsent(name)}, {"Outcome", outcome}, {"Duration", dur}}
	items, entries := jobResult(e.members["result"])
	if items != "" {
		m.fields = append(m.fields, field{"Items", items})
	}
	if jobID != "" {
		m.fields = append(m.fields, field{"Job ID", jobID})
	}
	m.result = entries
	if m.link = r.jobLink(jobID); m.link != "" {
		m.linkLabel = "View job"
	}
}

// jobResult reads a job's result: its item count, when it has "items", and
// its other entries in the order published. A result that is not an object
// is one entry, "result".
func jobResult(raw json.RawMessage) (items string, entries []field) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	members, ok := orderedMembers(raw)
	if !ok {
		return "", []field{{"result", rawText(raw)}}
	}
	for _, mb := range members {
		if mb.key == "items" && items == "" {
			var list []json.RawMessage
			if json.Unmarshal(mb.raw, &list) == nil && list != nil {
				items = strconv.Itoa(len(list))
			} else {
				items = rawText(mb.raw)
			}
			continue
		}
		entries = append(entries, field{mb.key, rawText(mb.raw)})
	}
	return items, entries
}

type member struct {
	key string
	raw json.RawMessage
}

// orderedMembers returns the members of the JSON object raw in their
// order, a repeated key once, with its last value. It reports false when
// raw is not an object.
func orderedMembers(raw json.RawMessage) ([]member, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []member
	index := map[string]int{}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if i, dup := index[key]; dup {
			out[i].raw = v
			continue
		}
		index[key] = len(out)
		out = append(out, member{key, v})
	}
	return out, true
}

func (r *renderer) scoreMessage(m *message, e envelope) {
	subject := valueText(e.data["subject"])
	prev, hasPrev := toFloat(e.data["previous"])
	cur, hasCur := toFloat(e.data["current"])
	delta, hasDelta := toFloat(e.data["delta"])
	if !hasDelta && hasPrev && hasCur {
		delta, hasDelta = cur-prev, true
	}
	m.emoji, m.title, m.summary = "📊", "Score changed", "A score changed"
	verb := "changed"
	switch {
	case hasDelta && delta > 0:
		m.emoji, m.color, m.title, verb = "📈", colorBlue, "Score up", "rose"
	case hasDelta && delta < 0:
		m.emoji, m.color, m.title, verb = "📉", colorAmber, "Score down", "fell"
	}
	if subject != "" {
		m.title += ": " + subject
		m.summary = "Score of " + subject + " " + verb
	} else {
		m.summary = "A score " + verb
	}
	if hasPrev && hasCur {
		m.summary += " from " + scoreText(prev) + " to " + scoreText(cur)
	}
	if hasDelta {
		m.summary += " (" + changeText(delta) + ")"
	}
	show := func(x float64, ok bool, f func(float64) string) string {
		if !ok {
			return absent
		}
		return f(x)
	}
	m.fields = []field{
		{"Subject", orAbsent(subject)},
		{"Previous", show(prev, hasPrev, scoreText)},
		{"Current", show(cur, hasCur, scoreText)},
		{"Change", show(delta, hasDelta, changeText)},
	}
	if m.link = r.subjectLink(subject); m.link != "" {
		m.linkLabel = "View subject"
	}
}

func testMessage(m *message, e envelope) {
	m.emoji, m.title = "👋", "Test from SPARC"
	m.summary = "Test from SPARC: this webhook works"
	msg := valueText(e.data["message"])
	if strings.TrimSpace(msg) == "" {
		msg = "This is a test delivery from the SPARC webhook dispatcher."
	}
	m.detailLabel, m.detail = "Message", msg+"\nIf you can read this, SPARC can deliver here."
	if id := valueText(e.data["webhook_id"]); id != "" {
		m.fields = []field{{"Webhook", id}}
	}
}

func genericMessage(m *message, e envelope) {
	m.emoji, m.title, m.summary = "🔔", "Event", "SPARC event"
	if e.typ != "" {
		m.title += ": " + e.typ
		m.summary += " " + e.typ
	}
	if text := compactPretty(e.dataRaw); text != "" {
		m.detailLabel, m.detail, m.detailCode = "Data", text, true
	}
}

// compactPretty shows JSON data for people: an object as a "key: value"
// line for each member, in order, with strings unquoted and other values
// as compact JSON; anything else as compact JSON. Empty data shows as "".
func compactPretty(raw json.RawMessage) string {
	members, ok := orderedMembers(raw)
	if !ok {
		return rawText(raw)
	}
	var b strings.Builder
	for i, mb := range members {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(mb.key)
		b.WriteString(": ")
		b.WriteString(rawText(mb.raw))
	}
	return b.String()
}

// contextLine is the small print: the type, the event ID and, when
// withTime is true, the time.
func (m *message) contextLine(withTime bool) string {
	var parts []string
	at := ""
	if withTime {
		at = timeText(m.at)
	}
	for _, s := range []string{m.typ, m.id, at} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, " · ")
}

// notice is the one line of a notification.
func (m *message) notice() string {
	if m.snippet == "" {
		return m.summary
	}
	return m.summary + ": " + m.snippet
}

// timeText shows an event time for people, or "" for the zero time.
func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func orAbsent(s string) string {
	if strings.TrimSpace(s) == "" {
		return absent
	}
	return s
}

// valueText shows a decoded JSON value as text: a string as it is, a
// number as published, other values as compact JSON, and nothing for null
// or a missing value.
func valueText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	}
	b, err := marshalJSON(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// rawText shows an undecoded JSON value as valueText does.
func rawText(raw json.RawMessage) string {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	if string(raw) == "null" {
		return ""
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) == nil {
		return b.String()
	}
	return string(raw)
}

// toFloat reads a finite number from a decoded JSON value: a number or a
// string that holds one.
func toFloat(v any) (float64, bool) {
	var f float64
	var err error
	switch v := v.(type) {
	case json.Number:
		f, err = strconv.ParseFloat(string(v), 64)
	case string:
		f, err = strconv.ParseFloat(strings.TrimSpace(v), 64)
	case float64:
		f = v
	case int:
		f = float64(v)
	case int64:
		f = float64(v)
	default:
		return 0, false
	}
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// durationText shows a number of milliseconds for people: "850ms", "4.2s",
// "1m30s", "2h5m", "3d4h". It reports false when ms is not a number of
// milliseconds that fits in about 30,000 years.
func durationText(ms any) (string, bool) {
	f, ok := toFloat(ms)
	if !ok || math.Abs(f) >= 1e15 {
		return "", false
	}
	n := int64(math.Round(f))
	sign := ""
	if n < 0 {
		sign, n = "−", -n
	}
	switch {
	case n < 1000:
		return sign + strconv.FormatInt(n, 10) + "ms", true
	case n < 9950:
		return sign + strings.TrimSuffix(strconv.FormatFloat(float64(n)/1000, 'f', 1, 64), ".0") + "s", true
	}
	secs := (n + 500) / 1000
	var b strings.Builder
	b.WriteString(sign)
	for _, u := range []struct {
		n    int64
		unit string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}} {
		if q := secs / u.n; q > 0 {
			b.WriteString(strconv.FormatInt(q, 10))
			b.WriteString(u.unit)
			secs -= q * u.n
		}
	}
	return b.String(), true
}

// scoreText shows a score with 2 decimals and a true minus sign.
func scoreText(x float64) string {
	s := strconv.FormatFloat(math.Abs(x), 'f', 2, 64)
	if x < 0 && s != "0.00" {
		return "−" + s
	}
	return s
}

// changeText shows a change of score with its sign: "+2.75", "−1.20",
// "0.00".
func changeText(x float64) string {
	s := scoreText(x)
	if x > 0 && s != "0.00" {
		return "+" + s
	}
	return s
}

// Text is measured in UTF-16 code units, which are never fewer than
// Unicode code points, so a text that fits by this count fits however a
// service counts "characters". Each cut text ends with an ellipsis.

// escaper appends r to dst, escaped for where the text goes; lineStart
// reports whether r begins a line (after any indentation).
type escaper func(dst []byte, r rune, lineStart bool) []byte

func plainEsc(dst []byte, r rune, _ bool) []byte { return utf8.AppendRune(dst, r) }

// slackEsc escapes the three characters that Slack reads as control
// characters in text: "&", "<" and ">" become "&amp;", "&lt;" and "&gt;"
// (docs.slack.dev/messaging/formatting-message-text, "Escaping text").
// With them escaped, no text of an event can make a mention (<!channel>,
// <@U123>) or a link.
func slackEsc(dst []byte, r rune, _ bool) []byte {
	switch r {
	case '&':
		return append(dst, "&amp;"...)
	case '<':
		return append(dst, "&lt;"...)
	case '>':
		return append(dst, "&gt;"...)
	}
	return utf8.AppendRune(dst, r)
}

// discordEsc escapes Discord markdown with backslashes: the characters of
// emphasis, code, spoilers, masked links and mentions everywhere, and
// those of headings and lists at the start of a line. Mentions are also
// disabled by allowed_mentions.
func discordEsc(dst []byte, r rune, lineStart bool) []byte {
	switch r {
	case '\\', '*', '_', '~', '`', '|', '<', '>', '[', ']':
		return append(dst, '\\', byte(r))
	case '#', '-', '+':
		if lineStart {
			return append(dst, '\\', byte(r))
		}
	}
	return utf8.AppendRune(dst, r)
}

// cleanRune returns what r becomes in a text: line breaks and tabs stay in
// a multi-line text and become spaces in a single line; carriage returns,
// other control characters and bidirectional overrides are dropped.
func cleanRune(r rune, multiline bool) (rune, bool) {
	switch {
	case r == '\n' || r == '\u2028' || r == '\u2029':
		if multiline {
			return '\n', true
		}
		return ' ', true
	case r == '\t':
		if multiline {
			return '\t', true
		}
		return ' ', true
	case r < 0x20 || r >= 0x7f && r < 0xa0, unicode.Is(unicode.Bidi_Control, r):
		return 0, false
	}
	return r, true
}

// units returns the length of s in UTF-16 code units.
func units(s string) int {
	n := 0
	for _, r := range s {
		n++
		if r >= 0x10000 {
			n++
		}
	}
	return n
}

// clip returns s cleaned, escaped with esc and, when longer than max UTF-16
// code units, cut at a character boundary (never inside an escape) and
// ended with "…", so that the result is at most max units long.
func clip(s string, max int, esc escaper, multiline bool) string {
	if max <= 0 {
		return ""
	}
	out := make([]byte, 0, min(len(s), 4*max)+8)
	n, keep := 0, 0
	lineStart := true
	for _, r := range s {
		r, ok := cleanRune(r, multiline)
		if !ok {
			continue
		}
		before := len(out)
		out = esc(out, r, lineStart)
		n += units(string(out[before:]))
		if n > max {
			return strings.TrimRight(string(out[:keep]), " \t\n") + "…"
		}
		if n < max {
			keep = len(out)
		}
		lineStart = r == '\n' || lineStart && (r == ' ' || r == '\t')
	}
	return string(out)
}

// clipOr is clip, but returns absent for a text that is blank once
// cleaned, where a service requires some text.
func clipOr(s string, max int, esc escaper, multiline bool) string {
	c := clip(s, max, esc, multiline)
	if strings.TrimSpace(c) == "" {
		return clip(absent, max, esc, multiline)
	}
	return c
}

// unfence keeps a text from closing the code block that it is shown in.
func unfence(s string) string { return strings.ReplaceAll(s, "```", "`\u200b`\u200b`") }

// slackCode returns s as a Slack code block of at most max units. A zero
// width space keeps a backtick at either end of s from running into the
// fences.
func slackCode(s string, max int) string {
	code := clip(unfence(s), max-8, slackEsc, true)
	if strings.HasPrefix(code, "`") {
		code = "\u200b" + code
	}
	if strings.HasSuffix(code, "`") {
		code += "\u200b"
	}
	return "```" + code + "```"
}

// Slack's limits, from the Block Kit reference (docs.slack.dev/reference/
// block-kit/blocks): a header block's text is at most 150 characters; a
// section's text at most 3,000, its fields at most 10 of at most 2,000
// characters each; a context block has at most 10 elements; a button's
// text is at most 75 characters and its url at most 3,000; a message has
// at most 50 blocks. chat.postMessage and incoming webhooks truncate a
// text longer than 40,000 characters. Messages whose blocks add up to some
// 13,000 characters are refused with msg_blocks_too_long although no
// single limit is passed (slackapi/bolt-js#2509), so these messages are
// kept below 10,000 in all.
const (
	slackHeaderMax     = 150
	slackSectionMax    = 3000
	slackFieldsMax     = 10
	slackFieldMax      = 2000
	slackButtonTextMax = 75
	slackBlocksMax     = 50
	slackTextMax       = 40000

	slackFallbackMax = 1000 // the message's text, shown in notifications
	slackValueMax    = 300  // a field: label and value
	slackContextMax  = 300
)

type slackMessage struct {
	Text        string       `json:"text"`
	Blocks      []slackBlock `json:"blocks"`
	UnfurlLinks bool         `json:"unfurl_links"`
	UnfurlMedia bool         `json:"unfurl_media"`
}

type slackText struct {
	Type  string `json:"type"` // "plain_text" or "mrkdwn"
	Text  string `json:"text"`
	Emoji bool   `json:"emoji,omitempty"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Fields   []slackText `json:"fields,omitempty"`
	Elements []any       `json:"elements,omitempty"`
}

type slackButton struct {
	Type string    `json:"type"`
	Text slackText `json:"text"`
	URL  string    `json:"url"`
}

func mrkdwn(s string) slackText { return slackText{Type: "mrkdwn", Text: s} }

// slackField is a section field: the label in bold over the value.
func slackField(f field) slackText {
	label := "*" + clipOr(f.name, 60, slackEsc, false) + "*\n"
	return mrkdwn(label + clipOr(f.value, slackValueMax-units(label), slackEsc, false))
}

// slack returns the Slack incoming-webhook message of m. Link previews are
// turned off, so that a URL in an event's text does not unfurl.
func (m *message) slack() slackMessage {
	if m.custom != "" {
		text := clip(m.custom, slackSectionMax, slackEsc, true)
		return slackMessage{Text: text, Blocks: []slackBlock{{Type: "section", Text: &slackText{Type: "mrkdwn", Text: text}}}}
	}
	msg := slackMessage{Text: clip(m.emoji+" "+m.notice(), slackFallbackMax, slackEsc, false)}
	msg.Blocks = append(msg.Blocks, slackBlock{Type: "header",
		Text: &slackText{Type: "plain_text", Text: clip(m.emoji+" "+m.title, slackHeaderMax, plainEsc, false), Emoji: true}})
	if len(m.fields) > 0 {
		b := slackBlock{Type: "section"}
		for _, f := range m.fields[:min(len(m.fields), slackFieldsMax)] {
			b.Fields = append(b.Fields, slackField(f))
		}
		msg.Blocks = append(msg.Blocks, b)
	}
	if m.detail != "" {
		label := "*" + m.detailLabel + "*\n"
		var text string
		if m.detailCode {
			text = label + slackCode(m.detail, slackSectionMax-units(label))
		} else {
			text = label + clip(m.detail, slackSectionMax-units(label), slackEsc, true)
		}
		msg.Blocks = append(msg.Blocks, slackBlock{Type: "section", Text: &slackText{Type: "mrkdwn", Text: text}})
	}
	if len(m.result) > 0 {
		b := slackBlock{Type: "section", Text: &slackText{Type: "mrkdwn", Text: "*Result*"}}
		shown := m.result
		if len(shown) > slackFieldsMax {
			shown = shown[:slackFieldsMax-1]
		}
		for _, f := range shown {
			b.Fields = append(b.Fields, slackField(f))
		}
		if more := len(m.result) - len(shown); more > 0 {
			b.Fields = append(b.Fields, slackField(field{"More", fmt.Sprintf("%d more entries", more)}))
		}
		msg.Blocks = append(msg.Blocks, b)
	}
	if m.link != "" {
		msg.Blocks = append(msg.Blocks, slackBlock{Type: "actions", Elements: []any{slackButton{
			Type: "button",
			Text: slackText{Type: "plain_text", Text: clip(m.linkLabel, slackButtonTextMax, plainEsc, false)},
			URL:  m.link,
		}}})
	}
	if line := clip(m.contextLine(true), slackContextMax, slackEsc, false); strings.TrimSpace(line) != "" {
		msg.Blocks = append(msg.Blocks, slackBlock{Type: "context", Elements: []any{mrkdwn(line)}})
	}
	return msg
}

// Discord's limits, from its API reference: Execute Webhook takes content
// of at most 2,000 characters and up to 10 embeds
// (discord.com/developers/docs/resources/webhook#execute-webhook); an
// embed's title is at most 256 characters, its description 4,096, its
// fields at most 25 with names of 256 and values of 1,024, its footer
// text 2,048, and all of these together at most 6,000
// (discord.com/developers/docs/resources/message#embed-object-embed-limits).
// Field names and values must not be empty.
const (
	discordContentMax     = 2000
	discordTitleMax       = 256
	discordDescriptionMax = 4096
	discordFieldsMax      = 25
	discordFieldNameMax   = 256
	discordFieldValueMax  = 1024
	discordFooterMax      = 2048
	discordEmbedMax       = 6000

	discordNoticeMax = 500 // the content above the embed
	discordValueMax  = 256 // a field's value
	discordFooterUse = 300
)

type discordMessage struct {
	Content         string          `json:"content,omitempty"`
	Embeds          []discordEmbed  `json:"embeds,omitempty"`
	AllowedMentions discordMentions `json:"allowed_mentions"`
}

// discordMentions with an empty Parse lets no text of the message ping
// anyone: not @everyone, @here, a role or a user
// (discord.com/developers/docs/resources/message#allowed-mentions-object).
type discordMentions struct {
	Parse []string `json:"parse"`
}

type discordEmbed struct {
	Title       string         `json:"title,omitempty"`
	Description string         `json:"description,omitempty"`
	URL         string         `json:"url,omitempty"`
	Color       int            `json:"color"`
	Timestamp   string         `json:"timestamp,omitempty"`
	Fields      []discordField `json:"fields,omitempty"`
	Footer      *discordFooter `json:"footer,omitempty"`
}

type discordField struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Inline bool   `json:"inline"`
}

type discordFooter struct {
	Text string `json:"text"`
}

// discord returns the Discord webhook message of m. The embed's texts are
// added by importance (title, footer, fields, the detail, the result)
// while they fit in Discord's total.
func (m *message) discord() discordMessage {
	noMentions := discordMentions{Parse: []string{}}
	if m.custom != "" {
		return discordMessage{Content: clip(m.custom, discordContentMax, plainEsc, true), AllowedMentions: noMentions}
	}
	e := discordEmbed{
		Title: clip(m.emoji+" "+m.title, discordTitleMax, discordEsc, false),
		URL:   m.link,
		Color: m.color,
	}
	if !m.at.IsZero() {
		e.Timestamp = m.at.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	total := units(e.Title)
	// The footer shows the embed's timestamp already.
	// Footers show text as it is, without markdown.
	if line := clip(m.contextLine(e.Timestamp == ""), discordFooterUse, plainEsc, false); strings.TrimSpace(line) != "" {
		e.Footer = &discordFooter{Text: line}
		total += units(line)
	}
	add := func(f field) bool {
		df := discordField{
			Name:   clipOr(f.name, 60, discordEsc, false),
			Value:  clipOr(f.value, discordValueMax, discordEsc, false),
			Inline: true,
		}
		n := units(df.Name) + units(df.Value)
		if len(e.Fields) >= discordFieldsMax || total+n > discordEmbedMax {
			return false
		}
		e.Fields = append(e.Fields, df)
		total += n
		return true
	}
	for _, f := range m.fields {
		add(f)
	}
	if m.detail != "" {
		room := min(discordDescriptionMax, discordEmbedMax-total)
		if m.detailCode {
			if room > 20 {
				e.Description = "```\n" + clip(unfence(m.detail), room-8, plainEsc, true) + "\n```"
			}
		} else {
			e.Description = clip(m.detail, room, discordEsc, true)
		}
		total += units(e.Description)
	}
	for i, f := range m.result {
		// Keep a place for the field that counts what is left out.
		last := i == len(m.result)-1
		if !last && len(e.Fields) == discordFieldsMax-1 || !add(f) {
			more := field{"More", fmt.Sprintf("%d more entries", len(m.result)-i)}
			add(more)
			break
		}
	}
	return discordMessage{
		Content:         clip(m.emoji+" "+m.notice(), discordNoticeMax, discordEsc, false),
		Embeds:          []discordEmbed{e},
		AllowedMentions: noMentions,
	}
}

// Email texts are cut too, to keep a runaway error message from making a
// message of megabytes.
const (
	emailSubjectMax = 200
	emailDetailMax  = 20000
	emailValueMax   = 1000
	emailResultMax  = 100 // entries of a job's result
)

// renderEmail returns the subject, plain-text body and HTML body of the
// email of the envelope payload. Like render, it does not fail on odd data.
func (r *renderer) renderEmail(payload []byte) (subject, text, html string, err error) {
	m := r.message(payload)
	subject = clip("[SPARC] "+m.summary, emailSubjectMax, plainEsc, false)
	if m.custom != "" {
		text = clip(m.custom, customMax, plainEsc, true)
		var b strings.Builder
		if err := emailCustomHTML.Execute(&b, struct{ Subject, Text string }{subject, text}); err != nil {
			return "", "", "", fmt.Errorf("webhook: render email: %w", err)
		}
		return subject, text, b.String(), nil
	}
	v := m.emailView()
	text = v.text()
	var b strings.Builder
	if err := emailHTML.Execute(&b, v); err != nil {
		return "", "", "", fmt.Errorf("webhook: render email: %w", err)
	}
	return subject, text, b.String(), nil
}

// emailView is m with its texts cut for email; it is what the HTML
// template sees.
type emailView struct {
	Title       string
	Fields      []emailField
	DetailLabel string
	Detail      string
	DetailCode  bool
	Result      []emailField
	More        int
	Link        string
	LinkLabel   string
	Context     string
	Color       htmltemplate.CSS
}

type emailField struct{ Name, Value string }

func (m *message) emailView() emailView {
	v := emailView{
		Title:       clip(m.title, emailSubjectMax, plainEsc, false),
		DetailLabel: m.detailLabel,
		Detail:      clip(m.detail, emailDetailMax, plainEsc, true),
		DetailCode:  m.detailCode,
		Link:        m.link,
		LinkLabel:   m.linkLabel,
		Context:     clip(m.contextLine(true), emailValueMax, plainEsc, false),
		Color:       htmltemplate.CSS(fmt.Sprintf("#%06x", m.color)),
	}
	cut := func(fs []field) []emailField {
		out := make([]emailField, 0, len(fs))
		for _, f := range fs {
			out = append(out, emailField{clipOr(f.name, 100, plainEsc, false), clipOr(f.value, emailValueMax, plainEsc, false)})
		}
		return out
	}
	v.Fields = cut(m.fields)
	v.Result = cut(m.result[:min(len(m.result), emailResultMax)])
	v.More = len(m.result) - len(v.Result)
	return v
}

// text returns the plain-text body.
func (v emailView) text() string {
	var b strings.Builder
	b.WriteString(v.Title)
	b.WriteString("\n\n")
	table := func(fs []emailField, indent string) {
		width := 0
		for _, f := range fs {
			width = max(width, utf8.RuneCountInString(f.Name))
		}
		for _, f := range fs {
			b.WriteString(indent + f.Name + ":" + strings.Repeat(" ", width-utf8.RuneCountInString(f.Name)+1) + f.Value + "\n")
		}
	}
	table(v.Fields, "")
	if len(v.Result) > 0 {
		b.WriteString("\nResult\n")
		table(v.Result, "  ")
		if v.More > 0 {
			fmt.Fprintf(&b, "  and %d more entries\n", v.More)
		}
	}
	if v.Detail != "" {
		b.WriteString("\n" + v.DetailLabel + "\n")
		for line := range strings.SplitSeq(v.Detail, "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	if v.Link != "" {
		b.WriteString("\n" + v.LinkLabel + ": " + v.Link + "\n")
	}
	if v.Context != "" {
		b.WriteString("\n-- \n" + v.Context + "\n")
	}
	return b.String()
}

var emailHTML = htmltemplate.Must(htmltemplate.New("email").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body style="margin:0;padding:16px;font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;color:#1d1c1d">
<div style="max-width:640px;border-left:4px solid {{.Color}};padding:4px 16px">
<h2 style="margin:0 0 12px;font-size:18px">{{.Title}}</h2>
{{- if .Fields}}
<table style="border-collapse:collapse">
{{- range .Fields}}
<tr><th align="left" style="padding:2px 16px 2px 0;color:#616061;vertical-align:top">{{.Name}}</th><td style="padding:2px 0">{{.Value}}</td></tr>
{{- end}}
</table>
{{- end}}
{{- if .Result}}
<h3 style="margin:16px 0 4px;font-size:14px">Result</h3>
<table style="border-collapse:collapse">
{{- range .Result}}
<tr><th align="left" style="padding:2px 16px 2px 0;color:#616061;font-weight:normal;vertical-align:top">{{.Name}}</th><td style="padding:2px 0">{{.Value}}</td></tr>
{{- end}}
{{- if .More}}
<tr><td colspan="2" style="padding:2px 0;color:#616061">and {{.More}} more entries</td></tr>
{{- end}}
</table>
{{- end}}
{{- if .Detail}}
<h3 style="margin:16px 0 4px;font-size:14px">{{.DetailLabel}}</h3>
{{- if .DetailCode}}
<pre style="margin:0;padding:8px;background:#f6f8fa;white-space:pre-wrap;word-break:break-word;font-size:13px">{{.Detail}}</pre>
{{- else}}
<p style="margin:0;white-space:pre-wrap">{{.Detail}}</p>
{{- end}}
{{- end}}
{{- if .Link}}
<p style="margin:16px 0 0"><a href="{{.Link}}">{{.LinkLabel}}</a></p>
{{- end}}
{{- if .Context}}
<p style="margin:16px 0 0;font-size:12px;color:#616061">{{.Context}}</p>
{{- end}}
</div>
</body></html>
`))

var emailCustomHTML = htmltemplate.Must(htmltemplate.New("custom").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Subject}}</title></head>
<body style="margin:0;padding:16px;font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;color:#1d1c1d">
<div style="max-width:640px;white-space:pre-wrap">{{.Text}}</div>
</body></html>
`))
