package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/sparc-webhooks/webhook/internal/match"
	"github.com/sparc-webhooks/webhook/internal/store"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Built-in event types.
const (
	// EventJobComplete announces a batch job that finished. Its data is a
	// JobComplete.
	EventJobComplete = "job.complete"
	// EventJobFailed announces a batch job that failed. Its data is a
	// JobFailed.
	EventJobFailed = "job.failed"
	// EventScoreChanged announces a significant change of a score. Its
	// data is a ScoreChanged.
	EventScoreChanged = "score.changed"
	// EventTest is the type of the sample event that SendTest sends. It is
	// reserved: it cannot be published or subscribed to.
	EventTest = "webhook.test"
)

// EventType describes an event type that webhooks can subscribe to.
type EventType struct {
	// Name is the type, such as "job.complete": lowercase segments of
	// letters, digits, '_' and '-', separated by dots, at most 128 bytes.
	Name string `json:"name"`
	// Description says when the event is sent, for people.
	Description string `json:"description"`
}

// builtinEventTypes are the types every Dispatcher knows.
var builtinEventTypes = []EventType{
	{Name: EventJobComplete, Description: "A batch job finished successfully."},
	{Name: EventJobFailed, Description: "A batch job failed."},
	{Name: EventScoreChanged, Description: "A subject's score changed significantly since it was last announced."},
}

// EventTypes returns the event types that webhooks can subscribe to: the
// built-in ones and those of Config.EventTypes, sorted by name.
func (d *Dispatcher) EventTypes() []EventType {
	out := make([]EventType, 0, len(d.types))
	for _, t := range d.types {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func eventTypeSet(extra []EventType) (map[string]EventType, error) {
	m := make(map[string]EventType, len(builtinEventTypes)+len(extra))
	for _, t := range builtinEventTypes {
		m[t.Name] = t
	}
	for i, t := range extra {
		field := fmt.Sprintf("EventTypes[%d]", i)
		if err := checkEventName(t.Name, false); err != "" {
			return nil, invalid(field, "%s", err)
		}
		if t.Name == EventTest {
			return nil, invalid(field, "%q is reserved", EventTest)
		}
		if _, dup := m[t.Name]; dup {
			return nil, invalid(field, "%q is declared twice or is built in", t.Name)
		}
		m[t.Name] = t
	}
	return m, nil
}

// checkEventName returns what is wrong with an event name or, when pattern
// is true, a subscription pattern; "" when it is fine.
func checkEventName(name string, pattern bool) string {
	if name == "" {
		return "must not be empty"
	}
	if len(name) > 128 {
		return "must be at most 128 bytes"
	}
	if pattern && name == "*" {
		return ""
	}
	for seg := range strings.SplitSeq(name, ".") {
		if seg == "" {
			return "must not have an empty segment"
		}
		if pattern && seg == "*" {
			continue
		}
		for _, c := range []byte(seg) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				if pattern {
					return "segments hold lowercase letters, digits, '_' or '-', or are '*'"
				}
				return "segments hold lowercase letters, digits, '_' or '-'"
			}
		}
	}
	return ""
}

// matchAny reports whether any of patterns matches typ.
func matchAny(patterns []string, typ string) bool { return match.Any(patterns, typ) }

// Event is something that happened in the host, to be sent to every
// webhook subscribed to its type.
type Event struct {
	// ID identifies the event; receivers deduplicate by it. It is sent as
	// the envelope's "id" and the webhook-id header and stays the same
	// across retries. Publishing an ID that is already stored does nothing.
	// Optional: a new "evt_" ID is made when it is empty. A given ID holds
	// 1 to 128 ASCII letters, digits and "_-.:".
	ID string
	// Type is a built-in type or one of Config.EventTypes.
	Type string
	// Timestamp is when the event happened. Optional: the time of Publish
	// when zero. It is sent in UTC with millisecond precision.
	Timestamp time.Time
	// Data is the event's payload, encoded with encoding/json: JobComplete,
	// JobFailed, ScoreChanged or a value of the host's own. A
	// json.RawMessage is used as it is, once checked. nil sends {}.
	Data any
}

// JobComplete is the data of a job.complete event.
type JobComplete struct {
	JobID      string    `json:"job_id"`
	Name       string    `json:"name"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// DurationMS is FinishedAt-StartedAt in milliseconds; NewJobComplete
	// fills it when it is zero.
	DurationMS int64 `json:"duration_ms"`
	// Result is whatever the host reports as the job's outcome, encoded
	// with encoding/json.
	Result any `json:"result,omitempty"`
}

// JobFailed is the data of a job.failed event.
type JobFailed struct {
	JobID      string    `json:"job_id"`
	Name       string    `json:"name"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// DurationMS is FinishedAt-StartedAt in milliseconds; NewJobFailed
	// fills it when it is zero.
	DurationMS int64 `json:"duration_ms"`
	// Result is whatever partial outcome the host reports, if any.
	Result any `json:"result,omitempty"`
	// Error says why the job failed.
	Error string `json:"error"`
}

// ScoreChanged is the data of a score.changed event.
type ScoreChanged struct {
	Subject  string  `json:"subject"`
	Previous float64 `json:"previous"`
	Current  float64 `json:"current"`
	// Delta is Current-Previous.
	Delta float64 `json:"delta"`
}

// NewJobComplete returns a job.complete event carrying j, with the time it
// finished as the event's timestamp.
func NewJobComplete(j JobComplete) Event {
	if j.DurationMS == 0 && !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		j.DurationMS = j.FinishedAt.Sub(j.StartedAt).Milliseconds()
	}
	return Event{Type: EventJobComplete, Timestamp: j.FinishedAt, Data: j}
}

// NewJobFailed returns a job.failed event carrying j, with the time it
// finished as the event's timestamp.
func NewJobFailed(j JobFailed) Event {
	if j.DurationMS == 0 && !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		j.DurationMS = j.FinishedAt.Sub(j.StartedAt).Milliseconds()
	}
	return Event{Type: EventJobFailed, Timestamp: j.FinishedAt, Data: j}
}

// NewScoreChanged returns a score.changed event carrying s, computing its
// Delta. ObserveScore publishes these itself; use this to publish one
// directly.
func NewScoreChanged(s ScoreChanged) Event {
	s.Delta = s.Current - s.Previous
	return Event{Type: EventScoreChanged, Data: s}
}

// preparedEvent is a validated event with its payload encoded once.
type preparedEvent struct {
	id      string
	typ     string
	at      time.Time
	payload []byte
	// score is set for a score.changed event whose data is a
	// ScoreChanged: a newer one for the same subject supersedes it.
	score *ScoreChanged
}

// newEventID returns a fresh event ID: "evt_" and a time-ordered UUID.
func newEventID() string {
	u, err := uuid.NewV7()
	if err != nil {
		u = uuid.New()
	}
	var b [36]byte
	copy(b[:4], "evt_")
	const hexdigits = "0123456789abcdef"
	for i, c := range u {
		b[4+2*i] = hexdigits[c>>4]
		b[5+2*i] = hexdigits[c&0xf]
	}
	return string(b[:])
}

// checkEventID validates an event ID given by the host.
func checkEventID(id string) error {
	if len(id) > 128 {
		return invalid("id", "must be at most 128 bytes")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return invalid("id", "may hold only ASCII letters, digits and \"_-.:\"")
		}
	}
	return nil
}

// prepare validates ev and encodes its envelope.
func (d *Dispatcher) prepare(ev Event) (preparedEvent, error) {
	if ev.Type == EventTest {
		return preparedEvent{}, invalid("type", "%q is reserved for test sends", EventTest)
	}
	if msg := checkEventName(ev.Type, false); msg != "" {
		return preparedEvent{}, invalid("type", "%s", msg)
	}
	if _, ok := d.types[ev.Type]; !ok {
		return preparedEvent{}, &ValidationError{Field: "type", Message: fmt.Sprintf("%q is not a known event type (declare it in Config.EventTypes)", ev.Type), Err: ErrUnknownEventType}
	}
	if ev.ID == "" {
		ev.ID = newEventID()
	} else if err := checkEventID(ev.ID); err != nil {
		return preparedEvent{}, err
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = d.now()
	}
	return encodeEvent(ev, d.cfg.MaxPayloadBytes)
}

// encodeEvent encodes the envelope of an event whose id and type are valid.
func encodeEvent(ev Event, maxBytes int) (preparedEvent, error) {
	at := ev.Timestamp.UTC().Truncate(time.Millisecond)
	if at.Year() < 1 || at.Year() > 9999 {
		return preparedEvent{}, invalid("timestamp", "must be between years 1 and 9999")
	}
	var data json.RawMessage
	switch v := ev.Data.(type) {
	case nil:
		data = json.RawMessage("{}")
	case json.RawMessage:
		if !json.Valid(v) {
			return preparedEvent{}, invalid("data", "is not valid JSON")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, v); err != nil {
			return preparedEvent{}, invalid("data", "is not valid JSON")
		}
		data = buf.Bytes()
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return preparedEvent{}, invalid("data", "cannot be encoded as JSON: %v", err)
		}
		data = b
	}
	if string(data) == "null" {
		data = json.RawMessage("{}")
	}
	// The envelope is assembled by hand: id and type are plain ASCII
	// (checked), the time is RFC 3339, and data is JSON already, so
	// encoding/json would only copy and check it again.
	payload := make([]byte, 0, len(data)+len(ev.ID)+len(ev.Type)+80)
	payload = append(payload, `{"id":"`...)
	payload = append(payload, ev.ID...)
	payload = append(payload, `","type":"`...)
	payload = append(payload, ev.Type...)
	payload = append(payload, `","timestamp":"`...)
	payload = at.AppendFormat(payload, time.RFC3339Nano)
	payload = append(payload, `","data":`...)
	payload = append(payload, data...)
	payload = append(payload, '}')
	if len(payload) > maxBytes {
		return preparedEvent{}, invalid("data", "encodes to %d bytes, more than the limit of %d", len(payload), maxBytes)
	}
	p := preparedEvent{id: ev.ID, typ: ev.Type, at: at, payload: payload}
	if ev.Type == EventScoreChanged {
		switch v := ev.Data.(type) {
		case ScoreChanged:
			p.score = &v
		case *ScoreChanged:
			if v != nil {
				c := *v
				p.score = &c
			}
		}
	}
	return p, nil
}

// stored is the event as the store takes it. A score.changed carries what
// its fan-out needs to supersede older ones: its subject, and how to encode
// it again with the change counted from an earlier score.
func (p preparedEvent) stored() store.Event {
	ev := store.Event{ID: p.id, Type: p.typ, Payload: p.payload}
	if sc := p.score; sc != nil {
		ev.Score = &store.Score{Subject: sc.Subject, Previous: sc.Previous, Current: sc.Current,
			Rescore: func(since float64) ([]byte, error) {
				e, err := encodeEvent(Event{ID: p.id, Type: p.typ, Timestamp: p.at, Data: ScoreChanged{
					Subject: sc.Subject, Previous: since, Current: sc.Current, Delta: sc.Current - since,
				}}, 1<<30)
				return e.payload, err
			}}
	}
	return ev
}

// checkScore rejects scores that cannot be compared.
func checkScore(score float64) error {
	if math.IsNaN(score) || math.IsInf(score, 0) {
		return invalid("score", "must be a finite number")
	}
	return nil
}
