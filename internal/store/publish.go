package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sparc-webhooks/webhook/internal/match"
)

func matchAny(patterns []string, typ string) bool { return match.Any(patterns, typ) }

// Event is an event to store, encoded.
type Event struct {
	ID      string
	Type    string
	Payload []byte
	// Score is set for score.changed: its deliveries supersede the older
	// ones of the same subject that still wait.
	Score *Score
}

// Score is what the fan-out of a score.changed needs.
type Score struct {
	Subject           string
	Previous, Current float64
	// Rescore encodes the event again with the change counted from since,
	// for a webhook that has not seen the change that ended at Previous.
	Rescore func(since float64) ([]byte, error)
}

// Published is what a publish stored.
type Published struct {
	Deliveries int
	Duplicate  bool // the event ID was already stored: nothing was written
}

// target is a webhook the fan-out may deliver to.
type target struct {
	seq    int64
	events []string
}

// Publish stores an event and a pending delivery for every enabled webhook
// subscribed to its type, in the writer's next transaction.
func (s *Store) Publish(ctx context.Context, ev Event) (Published, error) {
	var res Published
	err := s.do(ctx, func(t *Tx) error {
		var err error
		res, err = t.publish(ev)
		return err
	})
	return res, err
}

func (t *Tx) publish(ev Event) (Published, error) {
	reg, err := t.registry()
	if err != nil {
		return Published{}, err
	}
	targets := make([]target, 0, len(reg.enabled))
	for _, h := range reg.enabled {
		targets = append(targets, target{seq: h.Seq, events: h.Events})
	}
	return fanOut(t, ev, targets)
}

// PublishTx is Publish inside tx, a transaction of the host's: the same
// fan-out, with the webhooks read in tx.
func (s *Store) PublishTx(ctx context.Context, tx *sql.Tx, ev Event) (Published, error) {
	h := &hostTx{ctx: ctx, tx: tx, d: &s.d, now: s.now()}
	rows, err := h.query("SELECT seq, events FROM webhooks WHERE enabled = 1")
	if err != nil {
		return Published{}, fmt.Errorf("webhook: read registry: %w", err)
	}
	var targets []target
	for rows.Next() {
		var tg target
		var events string
		if err := rows.Scan(&tg.seq, &events); err != nil {
			rows.Close()
			return Published{}, fmt.Errorf("webhook: read registry: %w", err)
		}
		if unmarshalStrings(events, &tg.events) == nil {
			targets = append(targets, tg)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Published{}, fmt.Errorf("webhook: read registry: %w", err)
	}
	res, err := fanOut(h, ev, targets)
	if err != nil {
		return Published{}, err
	}
	if err := writeCounters(h, h.counts); err != nil {
		return Published{}, err
	}
	if s.d.pg && h.notify {
		// Delivered to the listeners when tx commits, and dropped if it
		// rolls back: the workers of every process wake for the commit.
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, s.d.locks.channel); err != nil {
			return Published{}, fmt.Errorf("webhook: notify: %w", err)
		}
	}
	return res, nil
}

// fanOut stores an event and its deliveries to the targets that subscribe
// to its type: the one fan-out of Publish, PublishTx and ObserveScore.
func fanOut(r runner, ev Event, targets []target) (Published, error) {
	var seq int64
	err := r.queryRow(`INSERT INTO webhook_events (id, type, payload, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING seq`,
		ev.ID, ev.Type, ev.Payload, ms(r.time())).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return Published{Duplicate: true}, nil // already stored
	}
	if err != nil {
		return Published{}, fmt.Errorf("webhook: store event: %w", err)
	}
	var seqs []byte
	n := 0
	for _, tg := range targets {
		if matchAny(tg.events, ev.Type) {
			seqs = appendIDs(seqs, tg.seq)
			n++
		}
	}
	if n == 0 {
		return Published{}, nil
	}
	r.due()
	if ev.Score != nil {
		for _, tg := range targets {
			if matchAny(tg.events, ev.Type) {
				if err := scoreDelivery(r, ev, seq, tg.seq); err != nil {
					return Published{}, err
				}
			}
		}
		return Published{Deliveries: n}, nil
	}
	// One statement inserts the whole fan-out: the webhooks' seqs travel
	// as a JSON array.
	now := ms(r.time())
	if _, err := r.Exec(r.dialect().pick(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at)
		SELECT ?, value, `+pending+`, ?, ?, ? FROM json_each(?)`, `INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at)
		SELECT ?::bigint, value::bigint, `+pending+`, ?::bigint, ?::bigint, ?::bigint FROM json_array_elements_text(?::json)`), seq, now, now, now, closeIDs(seqs)); err != nil {
		return Published{}, fmt.Errorf("webhook: store deliveries: %w", err)
	}
	return Published{Deliveries: n}, nil
}

// scoreDelivery stores the delivery of a score.changed event to one
// webhook: a delivery of an older score.changed for the same subject that
// is still waiting is marked superseded, and the new delivery carries the
// change since the last score that webhook was sent (its own payload, made
// here once and never encoded again).
func scoreDelivery(r runner, ev Event, eventSeq, hookSeq int64) error {
	key := ev.Type + ":" + ev.Score.Subject
	now := ms(r.time())
	since := ev.Score.Previous
	var oldID int64
	var oldSince float64
	err := r.queryRow(`SELECT delivery_id, since FROM webhook_collapse WHERE webhook_seq = ? AND key = ?`, hookSeq, key).Scan(&oldID, &oldSince)
	switch {
	case err == nil:
		var status Status
		var inFlight bool
		err := r.queryRow(`SELECT status, leased = 1 AND next_at > ? FROM webhook_deliveries WHERE id = ?`, now, oldID).Scan(&status, &inFlight)
		if errors.Is(err, sql.ErrNoRows) {
			break // gone with retention: it settled long ago
		}
		if err != nil {
			return fmt.Errorf("webhook: supersede delivery: %w", err)
		}
		if status == Delivered || status == Pending && inFlight {
			break // the receiver has seen (or is seeing) up to this event's Previous
		}
		since = oldSince // the receiver has not seen the older change
		if status == Pending {
			if _, err := r.Exec(`UPDATE webhook_deliveries SET status = `+superseded+`, updated_at = ?, last_error = 'superseded by a newer score.changed' WHERE id = ?`, now, oldID); err != nil {
				return fmt.Errorf("webhook: supersede delivery: %w", err)
			}
			r.count(CounterSuperseded, 1)
		}
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("webhook: supersede delivery: %w", err)
	}
	var own any // the event's payload unless the change starts earlier
	if since != ev.Score.Previous {
		p, err := ev.Score.Rescore(since)
		if err != nil {
			return err
		}
		own = p
	}
	var id int64
	if err := r.queryRow(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at, payload) VALUES (?, ?, `+pending+`, ?, ?, ?, ?) RETURNING id`,
		eventSeq, hookSeq, now, now, now, own).Scan(&id); err != nil {
		return fmt.Errorf("webhook: store delivery: %w", err)
	}
	if _, err := r.Exec(`INSERT INTO webhook_collapse (webhook_seq, key, delivery_id, since) VALUES (?, ?, ?, ?)
		ON CONFLICT (webhook_seq, key) DO UPDATE SET delivery_id = excluded.delivery_id, since = excluded.since`, hookSeq, key, id, since); err != nil {
		return fmt.Errorf("webhook: store delivery: %w", err)
	}
	return nil
}

// Observation is what ObserveScore did.
type Observation struct {
	Baseline  bool // the subject's first score: stored, nothing published
	Published bool
	Previous  float64
}

// ObserveScore records a subject's score. The first score of a subject is
// its baseline. Later, when significant(previous, score), event(previous)
// is published and the score becomes the baseline, in one transaction.
func (s *Store) ObserveScore(ctx context.Context, subject string, score float64, significant func(prev, cur float64) bool, event func(prev float64) (Event, error)) (Observation, error) {
	var res Observation
	err := s.do(ctx, func(t *Tx) error {
		res = Observation{}
		var prev float64
		err := t.queryRow(`SELECT score FROM webhook_scores WHERE subject = ?`, subject).Scan(&prev)
		if errors.Is(err, sql.ErrNoRows) {
			res.Baseline = true
			_, err = t.Exec(`INSERT INTO webhook_scores (subject, score, updated_at) VALUES (?, ?, ?)`, subject, score, ms(t.now))
			return err
		}
		if err != nil {
			return fmt.Errorf("webhook: read score: %w", err)
		}
		res.Previous = prev
		if !significant(prev, score) {
			return nil
		}
		ev, err := event(prev)
		if err != nil {
			return err
		}
		if _, err := t.publish(ev); err != nil {
			return err
		}
		if _, err := t.Exec(`UPDATE webhook_scores SET score = ?, updated_at = ? WHERE subject = ?`, score, ms(t.now), subject); err != nil {
			return fmt.Errorf("webhook: store score: %w", err)
		}
		res.Published = true
		return nil
	})
	return res, err
}

// writeCounters adds counter deltas, in the order of their names so that
// two PostgreSQL processes' commits never deadlock. With PostgreSQL each
// process adds to its own shard of the counters, so that processes do not
// queue for one row.
func writeCounters(r runner, counts map[string]int64) error {
	d := r.dialect()
	for _, name := range sortedKeys(counts) {
		n := counts[name]
		if n == 0 {
			continue
		}
		var err error
		if d.pg {
			_, err = r.Exec(`INSERT INTO webhook_counters (name, shard, value) VALUES (?, ?, ?) ON CONFLICT (name, shard) DO UPDATE SET value = webhook_counters.value + excluded.value`, name, d.shard, n)
		} else {
			_, err = r.Exec(`INSERT INTO webhook_counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = webhook_counters.value + excluded.value`, name, n)
		}
		if err != nil {
			return fmt.Errorf("webhook: update counters: %w", err)
		}
	}
	return nil
}
