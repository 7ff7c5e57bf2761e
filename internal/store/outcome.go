package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Result is what an attempt came to, for its delivery.
type Result int

// The results.
const (
	ResultDelivered  Result = iota
	ResultRetry             // failed; next attempt at NextAt
	ResultFailed            // failed; no attempt remains
	ResultGone              // 410: failed, and the webhook is disabled
	ResultReleased          // given back unattempted (Close, or a lease too short): not an attempt at all
	ResultManualFail        // a manual or test attempt that failed: the schedule stays
)

// Outcome is an attempt to record.
type Outcome struct {
	DeliveryID int64
	HookSeq    int64
	// Breaker reports a failure that counts for the circuit breaker (a
	// timeout, a connection error, a 429 or a 503).
	Breaker  bool
	Attempt  int
	Trigger  Trigger
	Started  time.Time
	Duration time.Duration
	Status   int
	Class    string
	Err      string
	Body     []byte
	Result   Result
	NextAt   time.Time // for ResultRetry
}

// Record records an outcome in the writer's next transaction without
// waiting; a failure is logged (the delivery is attempted again when its
// lease ends).
func (s *Store) Record(o Outcome) { s.submit(func(t *Tx) error { return t.complete(o) }) }

// RecordWait is Record, waiting for the commit whatever becomes of the
// caller.
func (s *Store) RecordWait(o Outcome) error {
	return s.submitWait(func(t *Tx) error { return t.complete(o) })
}

// RecordNow records the outcome of an attempt made on a caller's request.
func (s *Store) RecordNow(ctx context.Context, o Outcome) error {
	return s.do(ctx, func(t *Tx) error { return t.complete(o) })
}

// Release gives a claimed delivery back unattempted: due again at once,
// its claim not counted.
func (s *Store) Release(deliveryID int64) {
	s.Record(Outcome{DeliveryID: deliveryID, Result: ResultReleased})
}

// Dropped records that a claimed delivery of a webhook disabled meanwhile
// was not attempted: its claim is not counted.
func (s *Store) Dropped(deliveryID int64) {
	s.submit(func(t *Tx) error {
		_, err := t.Exec(t.s.d.pick(`UPDATE webhook_deliveries SET attempts = MAX(attempts - 1, 0), leased = 0 WHERE id = ? AND status = `+cancelled,
			`UPDATE webhook_deliveries SET attempts = GREATEST(attempts - 1, 0), leased = 0 WHERE id = ? AND status = `+cancelled), deliveryID)
		return err
	})
}

// complete records an outcome.
func (t *Tx) complete(o Outcome) error {
	now := ms(t.now)
	if o.Result == ResultReleased {
		t.due() // due again, for whichever process
		_, err := t.Exec(t.s.d.pick(`UPDATE webhook_deliveries SET attempts = MAX(attempts - 1, 0), next_at = ?, leased = 0 WHERE id = ? AND status = `+pending,
			`UPDATE webhook_deliveries SET attempts = GREATEST(attempts - 1, 0), next_at = ?, leased = 0 WHERE id = ? AND status = `+pending), now, o.DeliveryID)
		return err
	}
	if o.Result == ResultDelivered {
		t.count(CounterAttemptsOK, 1)
	} else {
		t.count(CounterAttemptsFailed, 1)
	}
	if o.Trigger == Scheduled && (o.Result == ResultDelivered || o.Result == ResultRetry || o.Result == ResultFailed) {
		// The common case: written with the batch's others in flush.
		t.outcomes = append(t.outcomes, o)
		t.hookOutcome(o.HookSeq, o.Result == ResultDelivered, o.Breaker)
		return nil
	}
	if err := t.insertAttempt(o); err != nil {
		return err
	}
	var err error
	switch o.Result {
	case ResultDelivered:
		// A manual or test attempt may deliver a failed delivery.
		from := Pending
		if o.Trigger != Scheduled {
			err = t.queryRow(`SELECT status FROM webhook_deliveries WHERE id = ?`, o.DeliveryID).Scan(&from)
		}
		if err == nil && (from == Pending || from == Failed) {
			var res sql.Result
			res, err = t.Exec(`UPDATE webhook_deliveries SET status = `+delivered+`, updated_at = ?, last_status = ?, last_error = '' WHERE id = ? AND status = ?`, now, o.Status, o.DeliveryID, from)
			if err == nil {
				n, _ := res.RowsAffected()
				t.count(CounterDelivered, n)
				if from == Failed {
					t.count(CounterFailed, -n)
				}
			}
		}
	case ResultRetry:
		_, err = t.Exec(`UPDATE webhook_deliveries SET next_at = ?, updated_at = ?, last_status = ?, last_error = ? WHERE id = ? AND status = `+pending, ms(o.NextAt), now, o.Status, o.Err, o.DeliveryID)
	case ResultFailed, ResultGone:
		var res sql.Result
		res, err = t.Exec(`UPDATE webhook_deliveries SET status = `+failed+`, updated_at = ?, last_status = ?, last_error = ? WHERE id = ? AND status = `+pending, now, o.Status, o.Err, o.DeliveryID)
		if err == nil {
			n, _ := res.RowsAffected()
			t.count(CounterFailed, n)
		}
	case ResultManualFail:
		_, err = t.Exec(`UPDATE webhook_deliveries SET updated_at = ?, last_status = ?, last_error = ? WHERE id = ?`, now, o.Status, o.Err, o.DeliveryID)
	}
	if errors.Is(err, sql.ErrNoRows) {
		err = nil // settled meanwhile (cancelled, or delivered by another attempt)
	}
	if err != nil {
		return fmt.Errorf("webhook: record outcome: %w", err)
	}
	if o.Trigger == Test {
		return nil
	}
	t.hookOutcome(o.HookSeq, o.Result == ResultDelivered, o.Breaker)
	if o.Result == ResultGone {
		return t.disable(o.HookSeq, "the endpoint answered 410 Gone", true)
	}
	return nil
}

func (t *Tx) insertAttempt(o Outcome) error {
	var body any
	if len(o.Body) > 0 {
		body = o.Body
	}
	_, err := t.Exec(`INSERT INTO webhook_attempts (delivery_id, number, trigger, started_at, duration_us, status_code, error_class, error, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		o.DeliveryID, o.Attempt, int(o.Trigger), ms(o.Started), o.Duration.Microseconds(), o.Status, o.Class, o.Err, body)
	if err != nil {
		return fmt.Errorf("webhook: record attempt: %w", err)
	}
	return nil
}

// flushOutcomes records the batch's scheduled outcomes with one statement
// for the attempts and one per kind of outcome for the deliveries: the rows
// travel as JSON arrays, which SQLite reads with json_each, so a batch of a
// hundred outcomes costs a handful of statements instead of hundreds.
func (t *Tx) flushOutcomes() error {
	if len(t.outcomes) == 0 {
		return nil
	}
	now := ms(t.now)
	var att, ok, retry, fail []byte
	for i := range t.outcomes {
		o := &t.outcomes[i]
		att = appendRowStart(att)
		att = strconv.AppendInt(att, o.DeliveryID, 10)
		att = append(att, ',')
		att = strconv.AppendInt(att, int64(o.Attempt), 10)
		att = append(att, ',')
		att = strconv.AppendInt(att, ms(o.Started), 10)
		att = append(att, ',')
		att = strconv.AppendInt(att, o.Duration.Microseconds(), 10)
		att = append(att, ',')
		att = strconv.AppendInt(att, int64(o.Status), 10)
		att = append(att, ',')
		att = appendJSONString(att, o.Class)
		att = append(att, ',')
		att = appendJSONString(att, o.Err)
		att = append(att, ',', '"')
		att = hex.AppendEncode(att, o.Body)
		att = append(att, '"', ']')
		switch o.Result {
		case ResultDelivered:
			ok = appendRowStart(ok)
			ok = strconv.AppendInt(ok, o.DeliveryID, 10)
			ok = append(ok, ',')
			ok = strconv.AppendInt(ok, int64(o.Status), 10)
			ok = append(ok, ']')
		case ResultRetry, ResultFailed:
			row := &fail
			if o.Result == ResultRetry {
				row = &retry
			}
			*row = appendRowStart(*row)
			*row = strconv.AppendInt(*row, o.DeliveryID, 10)
			*row = append(*row, ',')
			*row = strconv.AppendInt(*row, int64(o.Status), 10)
			*row = append(*row, ',')
			*row = appendJSONString(*row, o.Err)
			*row = append(*row, ',')
			*row = strconv.AppendInt(*row, ms(o.NextAt), 10)
			*row = append(*row, ']')
		}
	}
	t.outcomes = t.outcomes[:0]
	d := &t.s.d
	if _, err := t.Exec(d.pick(`INSERT INTO webhook_attempts (delivery_id, number, trigger, started_at, duration_us, status_code, error_class, error, response)
		SELECT value->>0, value->>1, 0, value->>2, value->>3, value->>4, value->>5, value->>6, NULLIF(unhex(value->>7), x'')
		FROM json_each(?)`, `INSERT INTO webhook_attempts (delivery_id, number, trigger, started_at, duration_us, status_code, error_class, error, response)
		SELECT (value->>0)::bigint, (value->>1)::int, 0, (value->>2)::bigint, (value->>3)::bigint, (value->>4)::int, value->>5, value->>6, NULLIF(decode(value->>7, 'hex'), ''::bytea)
		FROM json_array_elements(?::json)`), closeRows(att)); err != nil {
		return fmt.Errorf("webhook: record attempts: %w", err)
	}
	if len(ok) > 0 {
		res, err := t.Exec(d.pick(`UPDATE webhook_deliveries SET status = `+delivered+`, updated_at = ?, last_status = j.value->>1, last_error = ''
			FROM json_each(?) AS j WHERE webhook_deliveries.id = j.value->>0 AND status = `+pending, `UPDATE webhook_deliveries SET status = `+delivered+`, updated_at = ?, last_status = (j.value->>1)::int, last_error = ''
			FROM json_array_elements(?::json) AS j WHERE webhook_deliveries.id = (j.value->>0)::bigint AND status = `+pending), now, closeRows(ok))
		if err != nil {
			return fmt.Errorf("webhook: record outcomes: %w", err)
		}
		n, _ := res.RowsAffected()
		t.count(CounterDelivered, n)
	}
	if len(retry) > 0 {
		if _, err := t.Exec(d.pick(`UPDATE webhook_deliveries SET next_at = j.value->>3, leased = 0, updated_at = ?, last_status = j.value->>1, last_error = j.value->>2
			FROM json_each(?) AS j WHERE webhook_deliveries.id = j.value->>0 AND status = `+pending, `UPDATE webhook_deliveries SET next_at = (j.value->>3)::bigint, leased = 0, updated_at = ?, last_status = (j.value->>1)::int, last_error = j.value->>2
			FROM json_array_elements(?::json) AS j WHERE webhook_deliveries.id = (j.value->>0)::bigint AND status = `+pending), now, closeRows(retry)); err != nil {
			return fmt.Errorf("webhook: record outcomes: %w", err)
		}
	}
	if len(fail) > 0 {
		res, err := t.Exec(d.pick(`UPDATE webhook_deliveries SET status = `+failed+`, updated_at = ?, last_status = j.value->>1, last_error = j.value->>2
			FROM json_each(?) AS j WHERE webhook_deliveries.id = j.value->>0 AND status = `+pending, `UPDATE webhook_deliveries SET status = `+failed+`, updated_at = ?, last_status = (j.value->>1)::int, last_error = j.value->>2
			FROM json_array_elements(?::json) AS j WHERE webhook_deliveries.id = (j.value->>0)::bigint AND status = `+pending), now, closeRows(fail))
		if err != nil {
			return fmt.Errorf("webhook: record outcomes: %w", err)
		}
		n, _ := res.RowsAffected()
		t.count(CounterFailed, n)
	}
	return nil
}

// hookDelta accumulates a batch's outcomes for one webhook, so that the
// webhooks row is written once per batch.
type hookDelta struct {
	success      bool  // a success reset the streak in this batch
	lastSuccess  int64 // time of the latest success
	failures     int   // failures since the latest success (or since the batch began)
	firstFailure int64 // time of the first of those failures
	lastFailure  int64
	// For the circuit breaker:
	breakerReset bool // an outcome that does not count closed it
	breakerFails int  // failures that count since then (or since the batch began)
}

// hookOutcome notes an attempt's outcome for its webhook's row; it is
// applied when its op succeeds.
func (t *Tx) hookOutcome(seq int64, ok, breaker bool) {
	e := hookEvent{seq: seq, ok: ok, breaker: breaker, at: t.now}
	if t.inOp {
		t.opHooks = append(t.opHooks, e)
		return
	}
	t.applyHook(e)
}

func (t *Tx) applyHook(e hookEvent) {
	if t.hooks == nil {
		t.hooks = make(map[int64]*hookDelta)
	}
	d := t.hooks[e.seq]
	if d == nil {
		d = &hookDelta{}
		t.hooks[e.seq] = d
	}
	if e.breaker {
		d.breakerFails++
	} else {
		d.breakerReset, d.breakerFails = true, 0
	}
	if e.ok {
		d.success, d.lastSuccess, d.failures, d.firstFailure = true, ms(e.at), 0, 0
		return
	}
	if d.failures == 0 {
		d.firstFailure = ms(e.at)
	}
	d.failures++
	d.lastFailure = ms(e.at)
}

// flush writes what the batch accumulated: the outcomes of scheduled
// attempts, the webhooks' streaks and circuit breakers (applying the
// disable rule) and the counters.
func (t *Tx) flush() error {
	if err := t.flushOutcomes(); err != nil {
		return err
	}
	// Rows are written in one order (webhooks by seq, counters by name),
	// so that with PostgreSQL two processes' commits never deadlock.
	seqs := make([]int64, 0, len(t.hooks))
	for seq := range t.hooks {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		if err := t.flushHook(seq, t.hooks[seq]); err != nil {
			return err
		}
	}
	t.hooks = nil
	if err := writeCounters(t, t.counts); err != nil {
		return err
	}
	t.settled, t.counts = t.counts, nil
	return nil
}

func (t *Tx) flushHook(seq int64, d *hookDelta) error {
	if d.success && d.failures == 0 {
		// All went well: the row is written only if its streak or breaker
		// needs clearing or its last success is more than a second old, so
		// that a busy webhook does not rewrite its page every commit.
		if _, err := t.Exec(`UPDATE webhooks SET failure_streak = 0, streak_started_at = NULL, last_success_at = ?, breaker_fails = 0, breaker_open_until = 0, breaker_cooldown_ms = 0
			WHERE seq = ? AND (failure_streak != 0 OR last_success_at IS NULL OR last_success_at < ? OR breaker_fails != 0 OR breaker_open_until != 0)`,
			d.lastSuccess, seq, d.lastSuccess-1000); err != nil {
			return fmt.Errorf("webhook: record webhook outcome: %w", err)
		}
		return t.breakerClosed(seq)
	}
	var streak int
	var started sql.NullInt64
	var enabled bool
	var err error
	if d.success {
		var st, lf any
		if d.failures > 0 {
			st, lf = d.firstFailure, d.lastFailure
		}
		err = t.queryRow(`UPDATE webhooks SET failure_streak = ?, streak_started_at = ?, last_success_at = ?, last_failure_at = COALESCE(?, last_failure_at) WHERE seq = ? RETURNING failure_streak, streak_started_at, enabled`,
			d.failures, st, d.lastSuccess, lf, seq).Scan(&streak, &started, &enabled)
	} else {
		err = t.queryRow(`UPDATE webhooks SET failure_streak = failure_streak + ?, streak_started_at = COALESCE(streak_started_at, ?), last_failure_at = ? WHERE seq = ? RETURNING failure_streak, streak_started_at, enabled`,
			d.failures, d.firstFailure, d.lastFailure, seq).Scan(&streak, &started, &enabled)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("webhook: record webhook outcome: %w", err)
	}
	if err := t.breaker(seq, d); err != nil {
		return err
	}
	cfg := t.s.cfg
	if enabled && streak >= cfg.DisableAfterFailures && started.Valid &&
		t.now.Sub(fromMS(started.Int64)) >= cfg.DisableAfterPeriod {
		reason := fmt.Sprintf("%d consecutive failed attempts and no success for %s", streak, t.now.Sub(fromMS(started.Int64)).Round(time.Second))
		return t.disable(seq, reason, true)
	}
	return nil
}
