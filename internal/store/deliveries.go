package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Delivery is a delivery's row as the API shows it.
type Delivery struct {
	ID             int64
	WebhookID      string
	EventID        string
	EventType      string
	Status         Status
	Attempts       int
	NextAttemptAt  time.Time // while pending
	LastStatusCode int
	LastError      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Attempt is an attempt's row.
type Attempt struct {
	ID           int64
	DeliveryID   int64
	Number       int
	Trigger      Trigger
	StartedAt    time.Time
	Duration     time.Duration
	StatusCode   int
	ErrorClass   string
	Error        string
	ResponseBody []byte
}

const deliveryColumns = `d.id, COALESCE(w.id, ''), e.id, e.type, d.status, d.attempts, d.next_at, d.last_status, d.last_error, d.created_at, d.updated_at`
const deliveryFrom = ` FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq LEFT JOIN webhooks w ON w.seq = d.webhook_seq`

func scanDelivery(sc interface{ Scan(...any) error }) (Delivery, error) {
	var dl Delivery
	var next, created, updated int64
	if err := sc.Scan(&dl.ID, &dl.WebhookID, &dl.EventID, &dl.EventType, &dl.Status, &dl.Attempts, &next, &dl.LastStatusCode, &dl.LastError, &created, &updated); err != nil {
		return Delivery{}, err
	}
	if dl.Status == Pending {
		dl.NextAttemptAt = fromMS(next)
	}
	dl.CreatedAt, dl.UpdatedAt = fromMS(created), fromMS(updated)
	return dl, nil
}

// DeliveryFilter selects a page of a webhook's deliveries, newest first.
type DeliveryFilter struct {
	Status *Status // nil: every status
	Before int64   // IDs below this; 0: from the newest
	Limit  int
}

// Deliveries lists a page of a webhook's deliveries, newest first, and
// reports whether more follow.
func (s *Store) Deliveries(ctx context.Context, webhookID string, f DeliveryFilter) ([]Delivery, bool, error) {
	var seq int64
	err := s.rdb.QueryRowContext(ctx, s.d.q(`SELECT seq FROM webhooks WHERE id = ?`), webhookID).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, ErrNotFound
	}
	if err != nil {
		return nil, false, fmt.Errorf("webhook: list deliveries: %w", err)
	}
	before := f.Before
	if before <= 0 {
		before = 1<<63 - 1
	}
	status := -1
	if f.Status != nil {
		status = int(*f.Status)
	}
	rows, err := s.rdb.QueryContext(ctx, s.d.q(`SELECT `+deliveryColumns+deliveryFrom+`
		WHERE d.webhook_seq = ? AND d.id < ? AND (? < 0 OR d.status = ?)
		ORDER BY d.id DESC LIMIT ?`), seq, before, status, status, f.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("webhook: list deliveries: %w", err)
	}
	defer rows.Close()
	out := []Delivery{}
	for rows.Next() {
		dl, err := scanDelivery(rows)
		if err != nil {
			return nil, false, fmt.Errorf("webhook: list deliveries: %w", err)
		}
		out = append(out, dl)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("webhook: list deliveries: %w", err)
	}
	if len(out) > f.Limit {
		return out[:f.Limit], true, nil
	}
	return out, false, nil
}

// Delivery reads one delivery.
func (s *Store) Delivery(ctx context.Context, id int64) (Delivery, error) {
	dl, err := scanDelivery(s.rdb.QueryRowContext(ctx, s.d.q(`SELECT `+deliveryColumns+deliveryFrom+` WHERE d.id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Delivery{}, ErrNotFound
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("webhook: get delivery: %w", err)
	}
	return dl, nil
}

// Attempts lists a delivery's attempts, oldest first.
func (s *Store) Attempts(ctx context.Context, deliveryID int64) ([]Attempt, error) {
	var one int
	err := s.rdb.QueryRowContext(ctx, s.d.q(`SELECT 1 FROM webhook_deliveries WHERE id = ?`), deliveryID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("webhook: list attempts: %w", err)
	}
	rows, err := s.rdb.QueryContext(ctx, s.d.q(`SELECT id, delivery_id, number, trigger, started_at, duration_us, status_code, error_class, error, response
		FROM webhook_attempts WHERE delivery_id = ? ORDER BY id`), deliveryID)
	if err != nil {
		return nil, fmt.Errorf("webhook: list attempts: %w", err)
	}
	defer rows.Close()
	out := []Attempt{}
	for rows.Next() {
		var a Attempt
		var started, durUS int64
		if err := rows.Scan(&a.ID, &a.DeliveryID, &a.Number, &a.Trigger, &started, &durUS, &a.StatusCode, &a.ErrorClass, &a.Error, &a.ResponseBody); err != nil {
			return nil, fmt.Errorf("webhook: list attempts: %w", err)
		}
		a.StartedAt = fromMS(started)
		a.Duration = time.Duration(durUS) * time.Microsecond
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhook: list attempts: %w", err)
	}
	return out, nil
}

// LoadJob reads what an attempt of a delivery needs, for a manual retry,
// and the delivery's status.
func (s *Store) LoadJob(ctx context.Context, deliveryID int64) (Job, Status, error) {
	var j Job
	var status Status
	h, err := s.scanHook(s.rdb.QueryRowContext(ctx, s.d.q(`SELECT `+hookColumns+`, d.id, d.status, e.id, e.type, COALESCE(d.payload, e.payload)
		FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq JOIN webhooks w ON w.seq = d.webhook_seq
		WHERE d.id = ?`), deliveryID), &j.DeliveryID, &status, &j.EventID, &j.EventType, &j.Payload)
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, 0, ErrNotFound
	}
	if err != nil {
		return Job{}, 0, fmt.Errorf("webhook: load delivery: %w", err)
	}
	j.Hook = h
	return j, status, nil
}

// InsertTestDelivery records a test event and its delivery to a webhook,
// failed until its attempt succeeds, and returns the delivery's ID.
func (s *Store) InsertTestDelivery(ctx context.Context, hookSeq int64, ev Event) (int64, error) {
	var id int64
	err := s.do(ctx, func(t *Tx) error {
		now := ms(t.now)
		var evSeq int64
		if err := t.queryRow(`INSERT INTO webhook_events (id, type, payload, created_at) VALUES (?, ?, ?, ?) RETURNING seq`, ev.ID, ev.Type, ev.Payload, now).Scan(&evSeq); err != nil {
			return fmt.Errorf("webhook: record test event: %w", err)
		}
		if err := t.queryRow(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, attempts, next_at, created_at, updated_at) VALUES (?, ?, `+failed+`, 1, ?, ?, ?) RETURNING id`,
			evSeq, hookSeq, now, now, now).Scan(&id); err != nil {
			return fmt.Errorf("webhook: record test delivery: %w", err)
		}
		t.count(CounterFailed, 1) // until its attempt succeeds
		return nil
	})
	return id, err
}

// RecoverFailed schedules again, for an attempt now, every failed delivery
// of a webhook created in [since, until), except those of skipType (test
// sends), and returns how many.
func (s *Store) RecoverFailed(ctx context.Context, webhookID string, since, until time.Time, skipType string) (int, error) {
	var n int64
	err := s.do(ctx, func(t *Tx) error {
		var seq int64
		var enabled bool
		err := t.queryRow(`SELECT seq, enabled FROM webhooks WHERE id = ?`, webhookID).Scan(&seq, &enabled)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: recover: %w", err)
		}
		if !enabled {
			return ErrWebhookDisabled
		}
		now := ms(t.now)
		res, err := t.Exec(`UPDATE webhook_deliveries SET status = `+pending+`, attempts = 0, leased = 0, next_at = ?, updated_at = ?, last_error = ''
			WHERE webhook_seq = ? AND status = `+failed+` AND created_at >= ? AND created_at < ?
			AND NOT EXISTS (SELECT 1 FROM webhook_events e WHERE e.seq = event_seq AND e.type = ?)`,
			now, now, seq, ms(since), ms(until), skipType)
		if err != nil {
			return fmt.Errorf("webhook: recover: %w", err)
		}
		n, err = res.RowsAffected()
		t.count(CounterFailed, -n)
		if n > 0 {
			t.due()
		}
		return err
	})
	return int(n), err
}
