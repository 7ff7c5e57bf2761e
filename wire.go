package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// The exported types' JSON encoding is the HTTP API's wire format: the
// handler encodes them as they are, and a Go client decodes the API's
// answers into them. Durations travel as whole milliseconds (duration_ms,
// oldest_pending_age_ms) and a receiver's answer as a string, so these
// types encode themselves.

// attemptWire is Attempt on the wire. The response body is a string: the
// text when it is valid UTF-8 (response_body_encoding "utf-8"), its
// standard base64 otherwise ("base64").
type attemptWire struct {
	ID                   int64     `json:"id"`
	DeliveryID           int64     `json:"delivery_id"`
	Number               int       `json:"number"`
	Trigger              Trigger   `json:"trigger"`
	StartedAt            time.Time `json:"started_at"`
	DurationMS           int64     `json:"duration_ms"`
	StatusCode           int       `json:"status_code"`
	ErrorClass           string    `json:"error_class,omitempty"`
	Error                string    `json:"error,omitempty"`
	ResponseBody         string    `json:"response_body,omitempty"`
	ResponseBodyEncoding string    `json:"response_body_encoding,omitempty"`
}

// MarshalJSON encodes an attempt as the API sends it.
func (a Attempt) MarshalJSON() ([]byte, error) {
	w := attemptWire{ID: a.ID, DeliveryID: a.DeliveryID, Number: a.Number, Trigger: a.Trigger, StartedAt: a.StartedAt,
		DurationMS: a.Duration.Milliseconds(), StatusCode: a.StatusCode, ErrorClass: a.ErrorClass, Error: a.Error}
	if len(a.ResponseBody) > 0 {
		if utf8.Valid(a.ResponseBody) {
			w.ResponseBody, w.ResponseBodyEncoding = string(a.ResponseBody), "utf-8"
		} else {
			w.ResponseBody, w.ResponseBodyEncoding = base64.StdEncoding.EncodeToString(a.ResponseBody), "base64"
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes an attempt as the API sends it.
func (a *Attempt) UnmarshalJSON(b []byte) error {
	var w attemptWire
	if err := strictDecode(b, &w); err != nil {
		return err
	}
	*a = Attempt{ID: w.ID, DeliveryID: w.DeliveryID, Number: w.Number, Trigger: w.Trigger, StartedAt: w.StartedAt,
		Duration: time.Duration(w.DurationMS) * time.Millisecond, StatusCode: w.StatusCode, ErrorClass: w.ErrorClass, Error: w.Error}
	switch w.ResponseBodyEncoding {
	case "", "utf-8":
		if w.ResponseBody != "" {
			a.ResponseBody = []byte(w.ResponseBody)
		}
	case "base64":
		body, err := base64.StdEncoding.DecodeString(w.ResponseBody)
		if err != nil {
			return fmt.Errorf("webhook: attempt %d: response_body is not base64", w.ID)
		}
		a.ResponseBody = body
	default:
		return fmt.Errorf("webhook: attempt %d: unknown response_body_encoding %q", w.ID, w.ResponseBodyEncoding)
	}
	return nil
}

type resultWire struct {
	Delivered  bool   `json:"delivered"`
	StatusCode int    `json:"status_code"`
	DurationMS int64  `json:"duration_ms"`
	ErrorClass string `json:"error_class"`
	Error      string `json:"error,omitempty"`
	DeliveryID int64  `json:"delivery_id"`
}

// MarshalJSON encodes a result as the API sends it. It never holds the
// receiver's answer or the address reached.
func (r AttemptResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(resultWire{Delivered: r.Delivered, StatusCode: r.StatusCode, DurationMS: r.Duration.Milliseconds(),
		ErrorClass: r.ErrorClass, Error: r.Error, DeliveryID: r.DeliveryID})
}

// UnmarshalJSON decodes a result as the API sends it.
func (r *AttemptResult) UnmarshalJSON(b []byte) error {
	var w resultWire
	if err := strictDecode(b, &w); err != nil {
		return err
	}
	*r = AttemptResult{Delivered: w.Delivered, StatusCode: w.StatusCode, Duration: time.Duration(w.DurationMS) * time.Millisecond,
		ErrorClass: w.ErrorClass, Error: w.Error, DeliveryID: w.DeliveryID}
	return nil
}

// statsWire is Stats on the wire; its fields but one are Stats's own.
type statsWire struct {
	statsFields
	OldestPendingAgeMS int64 `json:"oldest_pending_age_ms"`
}

// statsFields is Stats without its methods, so that it encodes with its
// tags.
type statsFields Stats

// MarshalJSON encodes the stats as the API sends them.
func (s Stats) MarshalJSON() ([]byte, error) {
	return json.Marshal(statsWire{statsFields: statsFields(s), OldestPendingAgeMS: s.OldestPendingAge.Milliseconds()})
}

// UnmarshalJSON decodes the stats as the API sends them.
func (s *Stats) UnmarshalJSON(b []byte) error {
	var w statsWire
	if err := strictDecode(b, &w); err != nil {
		return err
	}
	*s = Stats(w.statsFields)
	s.OldestPendingAge = time.Duration(w.OldestPendingAgeMS) * time.Millisecond
	return nil
}

// webhookFields is Webhook without its methods.
type webhookFields Webhook

// MarshalJSON encodes a webhook as the API sends it: events as a list even
// when empty, and never its secret (see the handler's answers to register
// and rotate, the only ones that carry it).
func (w Webhook) MarshalJSON() ([]byte, error) {
	if w.Events == nil {
		w.Events = []string{}
	}
	return json.Marshal(webhookFields(w))
}

// UnmarshalJSON decodes a webhook as the API sends it, with its secret
// when the answer carries one (register, rotate-secret).
func (w *Webhook) UnmarshalJSON(b []byte) error {
	var v struct {
		webhookFields
		Secret string `json:"secret"`
	}
	if err := strictDecode(b, &v); err != nil {
		return err
	}
	*w = Webhook(v.webhookFields)
	w.Secret = Secret(v.Secret)
	return nil
}

// strictDecode decodes b into v, refusing fields v does not have, so that
// a renamed field on either side fails instead of vanishing.
func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
