package sparc

import (
	"context"
	"errors"
	"net/http"

	"github.com/sparc-webhooks/webhook"
)

// scoreAnswer is the answer to POST /scores.
type scoreAnswer struct {
	// Published is true when the change was significant and score.changed
	// was published.
	Published bool `json:"published"`
	// EventID is the ID of that event.
	EventID string `json:"event_id,omitempty"`
}

// observeScore serves POST /scores: it hands the score to ObserveScore and
// answers once the library has committed it.
func (s *Server) observeScore(w http.ResponseWriter, r *http.Request) {
	obj, err := readObject(w, r, "subject", "score")
	if err != nil {
		writeError(w, err)
		return
	}
	var subject string
	var value float64
	if ok, err := obj.str("subject", &subject); err != nil {
		writeError(w, err)
		return
	} else if !ok {
		writeError(w, badField("subject", "is required"))
		return
	}
	if ok, err := obj.number("score", &value); err != nil {
		writeError(w, err)
		return
	} else if !ok {
		writeError(w, badField("score", "is required"))
		return
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		writeError(w, errShuttingDown)
		return
	}

	obs, perr := s.pub.ObserveScore(r.Context(), subject, value)
	if perr != nil {
		writeError(w, s.publishError(r, perr, "subject", subject))
		return
	}
	if obs.Published {
		s.log.Info("score change published", "subject", subject, "previous", obs.Previous, "score", value, "event_id", obs.EventID)
	}
	writeJSON(w, http.StatusOK, scoreAnswer{Published: obs.Published, EventID: obs.EventID})
}

// publishError turns an error of the Publisher into an answer, logging a
// failure that is not the caller's with the given attributes.
func (s *Server) publishError(r *http.Request, err error, attrs ...any) *apiError {
	if ve, ok := errors.AsType[*webhook.ValidationError](err); ok {
		return badField(ve.Field, ve.Message)
	}
	switch {
	case errors.Is(err, webhook.ErrClosed):
		return errShuttingDown
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		return &apiError{status: http.StatusServiceUnavailable, code: codeUnavailable, message: "the request was cancelled before it completed"}
	}
	s.log.Error("publish failed", append(attrs, "error", err)...)
	return errInternal
}
