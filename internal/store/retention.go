package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"
)

// retentionBatch is how many rows a retention step looks at.
const retentionBatch = 500

// Prune deletes, in small steps, the settled deliveries (delivered, failed,
// cancelled or superseded) last changed before cutoff with their attempts,
// and the events published before cutoff that no delivery needs any
// longer. It returns how many deliveries it deleted. Pending deliveries
// and their events are kept, however old. With PostgreSQL, one process at
// a time prunes; the others return 0 at once.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	if s.d.pg {
		// The lock is the session's: it goes with the connection if the
		// process dies.
		conn, err := s.rdb.Conn(ctx)
		if err != nil {
			return 0, fmt.Errorf("webhook: retention: %w", err)
		}
		defer conn.Close()
		var mine bool
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1, 0)`, s.d.locks.retention).Scan(&mine); err != nil {
			return 0, fmt.Errorf("webhook: retention: %w", err)
		}
		if !mine {
			return 0, nil
		}
		defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1, 0)`, s.d.locks.retention)
	}
	deleted := 0
	// Deliveries, oldest first. IDs grow with time, so the walk stops at
	// the first delivery created after the cutoff.
	var cursor int64
	kept := map[int64]bool{} // events that a kept delivery still needs
	// The newest delivery always stays, so that its ID, the table's
	// largest, is never given to a new delivery: a delivery ID that a
	// receiver logged keeps meaning one delivery.
	var newest int64
	if err := s.rdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM webhook_deliveries`).Scan(&newest); err != nil {
		return 0, fmt.Errorf("webhook: retention: %w", err)
	}
	boundary := int64(-1) // events from this seq on were published after the cutoff
	for boundary < 0 {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		// The step may run twice (see op): what it learns is applied to
		// the walk only once it has committed.
		err := s.do(ctx, func(t *Tx) error {
			rows, err := t.query(`SELECT id, event_seq, status, created_at, updated_at FROM webhook_deliveries WHERE id > ? ORDER BY id LIMIT ?`, cursor, retentionBatch)
			if err != nil {
				return err
			}
			var ids []byte
			n, last, stop := 0, cursor, int64(-1)
			keep := map[int64]bool{}
			for rows.Next() {
				var id, ev, created, updated int64
				var status Status
				if err := rows.Scan(&id, &ev, &status, &created, &updated); err != nil {
					rows.Close()
					return err
				}
				n++
				if created >= ms(cutoff) {
					stop = ev
					break
				}
				last = id
				if status != Pending && updated < ms(cutoff) && id != newest {
					ids = appendIDs(ids, id)
				} else {
					keep[ev] = true
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if n < retentionBatch && stop < 0 {
				stop = 1<<63 - 1 // the walk reached the end
			}
			var c int64
			if ids != nil {
				list := closeIDs(ids)
				if _, err := t.Exec(t.s.d.pick(`DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT value FROM json_each(?))`,
					`DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT value::bigint FROM json_array_elements_text(?::json))`), list); err != nil {
					return err
				}
				res, err := t.Exec(t.s.d.pick(`DELETE FROM webhook_deliveries WHERE id IN (SELECT value FROM json_each(?))`,
					`DELETE FROM webhook_deliveries WHERE id IN (SELECT value::bigint FROM json_array_elements_text(?::json))`), list)
				if err != nil {
					return err
				}
				c, _ = res.RowsAffected()
			}
			t.later(func() {
				deleted += int(c)
				cursor, boundary = last, stop
				maps.Copy(kept, keep)
			})
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("webhook: retention: %w", err)
		}
	}
	// Events published before the cutoff that no kept delivery needs.
	var evCursor int64
	for done := false; !done; {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		err := s.do(ctx, func(t *Tx) error {
			rows, err := t.query(`SELECT seq, created_at FROM webhook_events WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?`, evCursor, boundary, retentionBatch)
			if err != nil {
				return err
			}
			var seqs []byte
			n, last, end := 0, evCursor, false
			for rows.Next() {
				var seq, created int64
				if err := rows.Scan(&seq, &created); err != nil {
					rows.Close()
					return err
				}
				n++
				last = seq
				if created >= ms(cutoff) {
					end = true
					break
				}
				if !kept[seq] {
					seqs = appendIDs(seqs, seq)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if n < retentionBatch {
				end = true
			}
			if seqs != nil {
				if _, err := t.Exec(t.s.d.pick(`DELETE FROM webhook_events WHERE seq IN (SELECT value FROM json_each(?))`,
					`DELETE FROM webhook_events WHERE seq IN (SELECT value::bigint FROM json_array_elements_text(?::json))`), closeIDs(seqs)); err != nil {
					return err
				}
				t.s.payloads.reset()
			}
			t.later(func() { evCursor, done = last, end })
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("webhook: retention: %w", err)
		}
	}
	return deleted, nil
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
