package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Stats is a snapshot of the dispatcher's work.
type Stats struct {
	// Pending is the queue depth: deliveries waiting for an attempt or in
	// flight.
	Pending int64 `json:"pending"`
	// OldestPendingAge is how long the oldest pending delivery has waited
	// since it was published; zero when none is pending.
	OldestPendingAge time.Duration `json:"-"`
	// Delivered, Failed and Cancelled count deliveries by outcome since the
	// database was created.
	Delivered int64 `json:"delivered"`
	Failed    int64 `json:"failed"`
	Cancelled int64 `json:"cancelled"`
	// Superseded counts score changes replaced by a newer one before they
	// were sent.
	Superseded int64 `json:"superseded"`
	// AttemptsSucceeded and AttemptsFailed count attempts by outcome.
	AttemptsSucceeded int64 `json:"attempts_succeeded"`
	AttemptsFailed    int64 `json:"attempts_failed"`
	// Webhooks counts registered webhooks; DisabledWebhooks those of them
	// that are disabled.
	Webhooks         int `json:"webhooks"`
	DisabledWebhooks int `json:"disabled_webhooks"`
}

// Stats reads a snapshot of the queue and of the outcome counters. Its
// cost grows with the number of pending deliveries (it counts them), not
// with the history.
func (d *Dispatcher) Stats(ctx context.Context) (Stats, error) {
	if err := d.enter(); err != nil {
		return Stats{}, err
	}
	defer d.calls.Done()
	var s Stats
	db := d.st.rdb
	var oldest sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = 0`).Scan(&s.Pending, &oldest); err != nil {
		return Stats{}, fmt.Errorf("webhook: stats: %w", err)
	}
	if oldest.Valid {
		s.OldestPendingAge = max(d.now().Sub(fromMS(oldest.Int64)), 0)
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN enabled = 0 THEN 1 ELSE 0 END), 0) FROM webhooks`).Scan(&s.Webhooks, &s.DisabledWebhooks); err != nil {
		return Stats{}, fmt.Errorf("webhook: stats: %w", err)
	}
	rows, err := db.QueryContext(ctx, d.st.pick(`SELECT name, value FROM webhook_counters`,
		`SELECT name, SUM(value)::bigint FROM webhook_counters GROUP BY name`)) // sharded with PostgreSQL
	if err != nil {
		return Stats{}, fmt.Errorf("webhook: stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return Stats{}, fmt.Errorf("webhook: stats: %w", err)
		}
		switch name {
		case cDelivered:
			s.Delivered = v
		case cFailed:
			s.Failed = v
		case cCancelled:
			s.Cancelled = v
		case cSuperseded:
			s.Superseded = v
		case cAttemptsOK:
			s.AttemptsSucceeded = v
		case cAttemptsFailed:
			s.AttemptsFailed = v
		}
	}
	if err := rows.Err(); err != nil {
		return Stats{}, fmt.Errorf("webhook: stats: %w", err)
	}
	return s, nil
}
