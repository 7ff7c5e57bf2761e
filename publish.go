package webhook

import (
	"context"
	"database/sql"
	"math"

	"github.com/sparc-webhooks/webhook/internal/store"
)

// Published reports what Publish stored.
type Published struct {
	// EventID is the event's ID, the one given or the one made.
	EventID string
	// Deliveries is the number of webhooks the event will be sent to.
	Deliveries int
	// Duplicate is true when an event with this ID was already stored:
	// then nothing was written and nothing will be sent again.
	Duplicate bool
}

// Publish stores ev and one pending delivery for each enabled webhook
// subscribed to its type, and wakes the workers. When it returns a nil
// error, the event and its deliveries are committed to disk (with
// Config.Synchronous at its default) and every delivery will be attempted
// until it succeeds, its retries run out, or its webhook is disabled.
//
// Concurrent calls are committed together in one transaction, each
// returning after its own commit. An error from ev's content is a
// *ValidationError. If ctx ends while Publish waits, it returns ctx.Err()
// and the event may or may not have been stored; publishing it again with
// the same ID is safe.
func (d *Dispatcher) Publish(ctx context.Context, ev Event) (Published, error) {
	if err := d.enter(); err != nil {
		return Published{}, err
	}
	defer d.calls.Done()
	p, err := d.prepare(ev)
	if err != nil {
		return Published{}, err
	}
	r, err := d.st.Publish(ctx, p.stored())
	if err != nil {
		return Published{}, err
	}
	if r.Deliveries > 0 {
		d.Notify()
	}
	return Published{EventID: p.id, Deliveries: r.Deliveries, Duplicate: r.Duplicate}, nil
}

// PublishTx is like Publish, but within tx, a transaction of the host's
// on the database given to New: the event and its deliveries commit or
// roll back with the host's own writes. Nothing is sent before tx commits.
// With SQLite, the workers notice the new deliveries within
// Config.PollInterval; call Notify after the commit to start them at once.
// With PostgreSQL, the commit itself wakes the workers of every process
// (LISTEN/NOTIFY), and Notify is not needed.
func (d *Dispatcher) PublishTx(ctx context.Context, tx *sql.Tx, ev Event) (Published, error) {
	if err := d.enter(); err != nil {
		return Published{}, err
	}
	defer d.calls.Done()
	if tx == nil {
		return Published{}, invalid("tx", "must not be nil")
	}
	p, err := d.prepare(ev)
	if err != nil {
		return Published{}, err
	}
	r, err := d.st.PublishTx(ctx, tx, p.stored())
	if err != nil {
		return Published{}, err
	}
	return Published{EventID: p.id, Deliveries: r.Deliveries, Duplicate: r.Duplicate}, nil
}

// Notify tells the workers that deliveries may be due, such as after the
// host committed a transaction in which it called PublishTx. It never
// blocks.
func (d *Dispatcher) Notify() {
	if d.disp != nil {
		d.disp.wake()
	}
}

// ScoreObservation reports what ObserveScore did with a score.
type ScoreObservation struct {
	// Published is true when the change was significant and a
	// score.changed event was stored.
	Published bool
	// EventID is the ID of that event, when Published.
	EventID string
	// Baseline is true when this was the subject's first score: it became
	// the baseline and nothing was published.
	Baseline bool
	// Previous is the last announced score (the baseline), and Delta the
	// change from it; both zero when Baseline is true.
	Previous float64
	Delta    float64
}

// ObserveScore reports a subject's newly computed score. The dispatcher
// keeps, for each subject, the last score it announced. The first
// observation of a subject sets that baseline and publishes nothing. Later
// observations publish score.changed, and move the baseline, only when the
// change since the last announcement is significant: at least
// Config.ScoreThreshold, or, when Config.ScoreRelativeThreshold is set, at
// least that fraction of the last announced score. Slow drift is therefore
// announced once it adds up, and noise around a score is not.
//
// When it returns a nil error, the baseline and any event are committed
// together.
func (d *Dispatcher) ObserveScore(ctx context.Context, subject string, score float64) (ScoreObservation, error) {
	if err := d.enter(); err != nil {
		return ScoreObservation{}, err
	}
	defer d.calls.Done()
	if subject == "" || len(subject) > 256 {
		return ScoreObservation{}, invalid("subject", "must be 1 to 256 bytes")
	}
	if err := checkScore(score); err != nil {
		return ScoreObservation{}, err
	}
	id := newEventID()
	at := d.now()
	event := func(prev float64) (store.Event, error) {
		p, err := encodeEvent(Event{ID: id, Type: EventScoreChanged, Timestamp: at,
			Data: ScoreChanged{Subject: subject, Previous: prev, Current: score, Delta: score - prev}}, d.cfg.MaxPayloadBytes)
		return p.stored(), err
	}
	o, err := d.st.ObserveScore(ctx, subject, score, d.significant, event)
	if err != nil {
		return ScoreObservation{}, err
	}
	res := ScoreObservation{Baseline: o.Baseline, Published: o.Published}
	if !o.Baseline {
		res.Previous, res.Delta = o.Previous, score-o.Previous
	}
	if o.Published {
		res.EventID = id
		d.Notify()
	}
	return res, nil
}

// significant reports whether the change from prev to cur is worth
// announcing.
func (d *Dispatcher) significant(prev, cur float64) bool {
	delta := math.Abs(cur - prev)
	if delta == 0 {
		return false
	}
	if delta >= d.cfg.ScoreThreshold {
		return true
	}
	return d.cfg.ScoreRelativeThreshold > 0 && delta >= d.cfg.ScoreRelativeThreshold*math.Abs(prev)
}
