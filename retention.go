package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// retentionBatch is how many rows one retention step looks at; each step
// is one short write transaction, so that delivery never waits long.
const retentionBatch = 500

// retention deletes settled history older than Config.Retention.
type retention struct {
	d      *Dispatcher
	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	done   chan struct{}
}

func newRetention(d *Dispatcher) *retention {
	ctx, cancel := context.WithCancel(d.base)
	return &retention{d: d, ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// every is how often retention runs.
func (r *retention) every() time.Duration {
	return min(max(r.d.cfg.Retention/4, 10*time.Millisecond), time.Minute)
}

func (r *retention) start() { go r.run() }

// stop ends retention, abandoning a run in progress between two steps.
func (r *retention) stop() {
	r.cancel()
	<-r.done
}

func (r *retention) run() {
	defer close(r.done)
	t := time.NewTimer(r.every())
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.d.prune(r.ctx, r.d.now().Add(-r.d.cfg.Retention)); err != nil && r.ctx.Err() == nil {
			r.d.log.Error("webhook: retention failed; it will run again", "error", err)
		}
		t.Reset(r.every())
	}
}

// prune deletes, in small steps, the settled deliveries (delivered, failed
// or cancelled) last changed before cutoff with their attempts, and the
// events published before cutoff that no delivery needs any longer. It
// returns how many deliveries it deleted. Pending deliveries and their
// events are kept, however old.
func (d *Dispatcher) prune(ctx context.Context, cutoff time.Time) (int, error) {
	if d.st.pg {
		// With PostgreSQL, one process at a time prunes; the others skip
		// their turn. The lock is the session's: it goes with the
		// connection if the process dies.
		conn, err := d.st.rdb.Conn(ctx)
		if err != nil {
			return 0, fmt.Errorf("webhook: retention: %w", err)
		}
		defer conn.Close()
		var mine bool
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1, 0)`, d.st.locks.retention).Scan(&mine); err != nil {
			return 0, fmt.Errorf("webhook: retention: %w", err)
		}
		if !mine {
			return 0, nil
		}
		defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1, 0)`, d.st.locks.retention)
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
	if err := d.st.rdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM webhook_deliveries`).Scan(&newest); err != nil {
		return 0, fmt.Errorf("webhook: retention: %w", err)
	}
	boundary := int64(-1) // events from this seq on were published after the cutoff
	for boundary < 0 {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		err := d.st.do(ctx, func(t *wtx) error {
			rows, err := t.query(`SELECT id, event_seq, status, created_at, updated_at FROM webhook_deliveries WHERE id > ? ORDER BY id LIMIT ?`, cursor, retentionBatch)
			if err != nil {
				return err
			}
			var ids []byte
			n, last := 0, cursor
			for rows.Next() {
				var id, ev, created, updated int64
				var status int
				if err := rows.Scan(&id, &ev, &status, &created, &updated); err != nil {
					rows.Close()
					return err
				}
				n++
				if created >= ms(cutoff) {
					boundary = ev
					break
				}
				last = id
				if status != stPending && updated < ms(cutoff) && id != newest {
					ids = appendIDs(ids, id)
				} else {
					kept[ev] = true
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if n < retentionBatch && boundary < 0 {
				boundary = 1<<63 - 1 // the walk reached the end
			}
			cursor = last
			if ids == nil {
				return nil
			}
			list := string(append(ids, ']'))
			if _, err := t.exec(t.s.pick(`DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT value FROM json_each(?))`,
				`DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT value::bigint FROM json_array_elements_text(?::json))`), list); err != nil {
				return err
			}
			res, err := t.exec(t.s.pick(`DELETE FROM webhook_deliveries WHERE id IN (SELECT value FROM json_each(?))`,
				`DELETE FROM webhook_deliveries WHERE id IN (SELECT value::bigint FROM json_array_elements_text(?::json))`), list)
			if err != nil {
				return err
			}
			c, _ := res.RowsAffected()
			deleted += int(c)
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
		err := d.st.do(ctx, func(t *wtx) error {
			rows, err := t.query(`SELECT seq, created_at FROM webhook_events WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?`, evCursor, boundary, retentionBatch)
			if err != nil {
				return err
			}
			var seqs []byte
			n := 0
			for rows.Next() {
				var seq, created int64
				if err := rows.Scan(&seq, &created); err != nil {
					rows.Close()
					return err
				}
				n++
				evCursor = seq
				if created >= ms(cutoff) {
					done = true
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
				done = true
			}
			if seqs == nil {
				return nil
			}
			_, err = t.exec(t.s.pick(`DELETE FROM webhook_events WHERE seq IN (SELECT value FROM json_each(?))`,
				`DELETE FROM webhook_events WHERE seq IN (SELECT value::bigint FROM json_array_elements_text(?::json))`), string(append(seqs, ']')))
			if err == nil {
				t.s.payloads.reset()
			}
			return err
		})
		if err != nil && err != sql.ErrNoRows {
			return deleted, fmt.Errorf("webhook: retention: %w", err)
		}
	}
	return deleted, nil
}
