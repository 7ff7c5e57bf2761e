package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Stats is a snapshot of the queue and of the outcome counters.
type Stats struct {
	Pending          int
	OldestPending    time.Time // zero when nothing is pending
	Webhooks         int
	DisabledWebhooks int
	Counters         map[string]int64
}

// Stats reads the queue's size and the counters. Its cost grows with the
// number of pending deliveries (it counts them), not with the history.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	var oldest sql.NullInt64
	if err := s.rdb.QueryRowContext(ctx, `SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = `+pending).Scan(&st.Pending, &oldest); err != nil {
		return Stats{}, fmt.Errorf("webhook: stats: %w", err)
	}
	st.OldestPending = nullMS(oldest)
	if err := s.rdb.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN enabled = 0 THEN 1 ELSE 0 END), 0) FROM webhooks`).Scan(&st.Webhooks, &st.DisabledWebhooks); err != nil {
		return Stats{}, fmt.Errorf("webhook: stats: %w", err)
	}
	rows, err := s.rdb.QueryContext(ctx, s.d.pick(`SELECT name, value FROM webhook_counters`,
		`SELECT name, SUM(value)::bigint FROM webhook_counters GROUP BY name`)) // sharded with PostgreSQL
	if err != nil {
		return Stats{}, fmt.Errorf("webhook: stats: %w", err)
	}
	defer rows.Close()
	st.Counters = map[string]int64{}
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return Stats{}, fmt.Errorf("webhook: stats: %w", err)
		}
		st.Counters[name] = v
	}
	if err := rows.Err(); err != nil {
		return Stats{}, fmt.Errorf("webhook: stats: %w", err)
	}
	return st, nil
}
