package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Tx is the writer's transaction in progress. The ops of a batch run in it
// one after another, each in a savepoint taken before its first statement.
// What an op accumulates in memory (counters, webhook outcomes, callbacks
// after the commit) is kept apart until the op succeeds, so that an op that
// fails leaves nothing behind, in the database or here.
type Tx struct {
	s     *Store
	ctx   context.Context
	now   time.Time
	after []func()

	regChecked bool
	hooks      map[int64]*hookDelta
	counts     map[string]int64 // counter deltas, written by flush
	settled    map[string]int64 // what flush wrote, for Config.OnSettled
	outcomes   []Outcome        // scheduled outcomes, written by flush
	notify     bool             // deliveries became due: tell every process (PostgreSQL)

	// The op in progress.
	inOp      bool
	savepoint bool // the op's savepoint is taken
	opCounts  map[string]int64
	opHooks   []hookEvent
	opNotify  bool
}

// hookEvent is an outcome for a webhook's row, kept apart until its op
// succeeds.
type hookEvent struct {
	seq         int64
	ok, breaker bool
	at          time.Time
}

// Now is the transaction's clock.
func (t *Tx) Now() time.Time { return t.now }

// runOp runs one op in a savepoint. It returns an error only when the
// transaction itself can no longer be used; the op's own error goes to
// o.err.
func (t *Tx) runOp(o *op) error {
	outcomes, after := len(t.outcomes), len(t.after)
	t.inOp, t.savepoint, t.opNotify = true, false, false
	t.opCounts, t.opHooks = nil, t.opHooks[:0]
	err := o.fn(t)
	t.inOp = false
	if err == nil {
		if t.savepoint {
			if _, err := t.s.conn.ExecContext(t.ctx, "RELEASE SAVEPOINT op"); err != nil {
				return fmt.Errorf("webhook: release savepoint: %w", err)
			}
		}
		for name, n := range t.opCounts {
			t.count(name, n)
		}
		for _, e := range t.opHooks {
			t.applyHook(e)
		}
		t.notify = t.notify || t.opNotify
		return nil
	}
	o.err = err
	t.outcomes, t.after = t.outcomes[:outcomes], t.after[:after]
	if t.savepoint {
		if _, rerr := t.s.conn.ExecContext(t.ctx, "ROLLBACK TO SAVEPOINT op"); rerr != nil {
			return fmt.Errorf("webhook: roll back to savepoint: %w (after: %w)", rerr, err)
		}
		if _, rerr := t.s.conn.ExecContext(t.ctx, "RELEASE SAVEPOINT op"); rerr != nil {
			return fmt.Errorf("webhook: release savepoint: %w", rerr)
		}
		// What the caches read in the op may be gone with it.
		t.s.reg, t.regChecked = nil, false
		t.s.payloads.reset()
	}
	return nil
}

// begin takes the op's savepoint before its first statement.
func (t *Tx) begin() error {
	if !t.inOp || t.savepoint {
		return nil
	}
	if _, err := t.s.conn.ExecContext(t.ctx, "SAVEPOINT op"); err != nil {
		return fmt.Errorf("webhook: savepoint: %w", err)
	}
	t.savepoint = true
	return nil
}

// count adds n to a counter of Stats, in this transaction.
func (t *Tx) count(name string, n int64) {
	if n == 0 {
		return
	}
	m := &t.counts
	if t.inOp {
		m = &t.opCounts
	}
	if *m == nil {
		*m = make(map[string]int64, 4)
	}
	(*m)[name] += n
}

// later runs fn once the transaction has committed.
func (t *Tx) later(fn func()) { t.after = append(t.after, fn) }

// due notes that deliveries became due, so that every process's workers
// look (PostgreSQL).
func (t *Tx) due() {
	if t.inOp {
		t.opNotify = true
	} else {
		t.notify = true
	}
}

func (t *Tx) stmt(query string) (*sql.Stmt, error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	if st, ok := t.s.stmts[query]; ok {
		return st, nil
	}
	st, err := t.s.conn.PrepareContext(t.ctx, t.s.d.q(query))
	if err != nil {
		return nil, err
	}
	t.s.stmts[query] = st
	return st, nil
}

// Exec runs a statement in the transaction ("?" placeholders).
func (t *Tx) Exec(query string, args ...any) (sql.Result, error) {
	st, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(t.ctx, args...)
}

func (t *Tx) query(query string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(t.ctx, args...)
}

func (t *Tx) queryRow(query string, args ...any) *sql.Row {
	st, err := t.stmt(query)
	if err != nil {
		// Surface the error through a Row that fails on Scan.
		return t.s.conn.QueryRowContext(t.ctx, t.s.d.q(query), args...)
	}
	return st.QueryRowContext(t.ctx, args...)
}

// runner is where a statement runs: the writer's transaction, or a
// transaction of the host's (PublishTx). The fan-out is written once
// against it.
type runner interface {
	Exec(query string, args ...any) (sql.Result, error)
	queryRow(query string, args ...any) *sql.Row
	query(query string, args ...any) (*sql.Rows, error)
	count(name string, n int64)
	due()
	dialect() *dialect
	time() time.Time
}

func (t *Tx) dialect() *dialect { return &t.s.d }
func (t *Tx) time() time.Time   { return t.now }

// hostTx runs statements in a transaction of the host's.
type hostTx struct {
	ctx    context.Context
	tx     *sql.Tx
	d      *dialect
	now    time.Time
	counts map[string]int64
	notify bool
}

func (h *hostTx) Exec(query string, args ...any) (sql.Result, error) {
	return h.tx.ExecContext(h.ctx, h.d.q(query), args...)
}
func (h *hostTx) queryRow(query string, args ...any) *sql.Row {
	return h.tx.QueryRowContext(h.ctx, h.d.q(query), args...)
}
func (h *hostTx) query(query string, args ...any) (*sql.Rows, error) {
	return h.tx.QueryContext(h.ctx, h.d.q(query), args...)
}
func (h *hostTx) count(name string, n int64) {
	if h.counts == nil {
		h.counts = map[string]int64{}
	}
	h.counts[name] += n
}
func (h *hostTx) due()              { h.notify = true }
func (h *hostTx) dialect() *dialect { return h.d }
func (h *hostTx) time() time.Time   { return h.now }

// ms converts a time to the stored unix milliseconds.
func ms(t time.Time) int64 { return t.UnixMilli() }

// fromMS converts stored unix milliseconds to a UTC time.
func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

// nullMS converts a nullable stored time; NULL is the zero time.
func nullMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMS(v.Int64)
}

// boolInt stores a bool as the INTEGER both dialects use.
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// unmarshalStrings decodes a stored JSON array of strings.
func unmarshalStrings(s string, out *[]string) error {
	return json.Unmarshal([]byte(s), out)
}
