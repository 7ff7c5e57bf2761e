package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"
)

// Job is a claimed delivery, ready to attempt.
type Job struct {
	DeliveryID int64
	ClaimedAt  time.Time // when its lease began (scheduled attempts)
	Attempt    int
	Trigger    Trigger
	Hook       *Hook
	EventID    string
	EventType  string
	Payload    []byte
	// Interrupted reports that the previous attempt died with its process.
	Interrupted bool
}

// ClaimRequest is what a claim may take: a snapshot of the delivery loop's
// state, so that the claim decides alone, inside the writer's transaction,
// without calling back into the loop.
type ClaimRequest struct {
	// Room is how many deliveries the claim may take.
	Room int
	// Window is how many due deliveries it looks at in one pass.
	Window int
	// Lease is how long a claimed delivery stays leased.
	Lease time.Duration
	// Cap is the most attempts in flight per webhook.
	Cap int
	// InFlight counts this process's attempts in flight (or queued) by
	// webhook seq; Limits holds the webhooks whose adaptive limit is below
	// Cap. The claim only reads them.
	InFlight, Limits map[int64]int
	// Suspects counts this process's attempts in flight of deliveries
	// whose previous attempt died with its process. One runs at a time, so
	// that a delivery that kills the process cannot take the deliveries
	// claimed with it along every time and exhaust their schedules too.
	Suspects int
}

func (r *ClaimRequest) limit(seq int64) int {
	if n, ok := r.Limits[seq]; ok {
		return min(n, r.Cap)
	}
	return r.Cap
}

// Claimed is what a claim found.
type Claimed struct {
	Jobs []Job
	// Busy reports, with PostgreSQL, due deliveries left because another
	// process was claiming for their webhook at the same moment: worth
	// another look soon.
	Busy bool
	// Held reports due deliveries left for later because their webhook
	// was at its cap or its breaker was open.
	Held bool
	// Full reports that the last look at the queue was cut short, so more
	// deliveries may be due.
	Full bool
	// Next is when the next pending delivery is due (zero when none is).
	Next time.Time
}

// verdict is what a claim decides about a due delivery.
type verdict int

const (
	take verdict = iota // attempt it now
	hold                // its webhook cannot take more now: leave it due
	full                // the room is spoken for: stop
	wait                // not now, for a reason other than its webhook: leave it due
)

// Claim leases due deliveries, as many as req allows. Deliveries whose
// webhook is gone or disabled are cancelled, and those whose last attempt
// died with its process and has no retry left are failed. When some
// webhooks are held (at their cap, or their breaker open) and their
// deliveries crowd the head of the queue, it looks again past them, so
// that one slow endpoint cannot starve the others.
func (s *Store) Claim(ctx context.Context, req ClaimRequest) (Claimed, error) {
	var out Claimed
	err := s.do(ctx, func(t *Tx) error {
		var err error
		out, err = t.claim(req)
		return err
	})
	return out, err
}

func (t *Tx) claim(req ClaimRequest) (Claimed, error) {
	var out Claimed
	reg, err := t.registry()
	if err != nil {
		return out, err
	}
	now := ms(t.now)
	leaseUntil := ms(t.now.Add(req.Lease))
	taken := map[int64]int{}
	takenN, suspectsN := 0, 0
	var held []byte // JSON array of the held webhooks' seqs
	heldSet := map[int64]bool{}
	// With PostgreSQL, other processes attempt deliveries too: leased
	// counts every process's live leases of the webhooks this claim may
	// take from, and only one transaction at a time claims for a webhook.
	var leased map[int64]int
	var breakerUntil map[int64]time.Time
	if t.s.d.pg {
		leased = map[int64]int{}
		breakerUntil = map[int64]time.Time{}
	}
	decide := func(h *Hook, interrupted bool) verdict {
		if takenN >= req.Room {
			return full
		}
		if interrupted && req.Suspects+suspectsN > 0 {
			return wait
		}
		inFlight := max(req.InFlight[h.Seq], leased[h.Seq]) + taken[h.Seq]
		until := h.breakerUntil
		if leased != nil {
			until = breakerUntil[h.Seq] // read under the webhook's claim lock
		}
		if inFlight >= req.limit(h.Seq) || !breakerAllows(until, inFlight, t.now) {
			return hold
		}
		taken[h.Seq]++
		takenN++
		if interrupted {
			suspectsN++
		}
		return take
	}
	for pass := 0; pass < 2; pass++ {
		var rows *sql.Rows
		// With PostgreSQL, the rows another process is claiming are
		// skipped, and the rows looked at stay locked until the commit.
		if pass == 0 {
			rows, err = t.query(t.s.d.pick(`SELECT id, event_seq, webhook_seq, attempts, payload, leased FROM webhook_deliveries
				WHERE status = `+pending+` AND next_at <= ? ORDER BY next_at LIMIT ?`, `SELECT id, event_seq, webhook_seq, attempts, payload, leased = 1 FROM webhook_deliveries
				WHERE status = `+pending+` AND next_at <= ? ORDER BY next_at LIMIT ? FOR UPDATE SKIP LOCKED`), now, req.Window)
		} else {
			rows, err = t.query(t.s.d.pick(`SELECT id, event_seq, webhook_seq, attempts, payload, leased FROM webhook_deliveries
				WHERE status = `+pending+` AND next_at <= ? AND webhook_seq NOT IN (SELECT value FROM json_each(?))
				ORDER BY next_at LIMIT ?`, `SELECT id, event_seq, webhook_seq, attempts, payload, leased = 1 FROM webhook_deliveries
				WHERE status = `+pending+` AND next_at <= ? AND webhook_seq NOT IN (SELECT value::bigint FROM json_array_elements_text(?::json))
				ORDER BY next_at LIMIT ? FOR UPDATE SKIP LOCKED`), now, closeIDs(held), req.Window)
		}
		if err != nil {
			return out, fmt.Errorf("webhook: claim: %w", err)
		}
		type cand struct {
			id, ev, hs int64
			attempts   int
			payload    []byte // the delivery's own, if any
			// interrupted: claimed before, and its lease ran out without
			// an outcome (a due delivery is leased only then).
			interrupted bool
		}
		var cands []cand
		for rows.Next() {
			var c cand
			if err := rows.Scan(&c.id, &c.ev, &c.hs, &c.attempts, &c.payload, &c.interrupted); err != nil {
				rows.Close()
				return out, fmt.Errorf("webhook: claim: %w", err)
			}
			cands = append(cands, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return out, fmt.Errorf("webhook: claim: %w", err)
		}
		out.Full = len(cands) == req.Window
		if leased != nil {
			seqs := make([]int64, 0, len(cands))
			for _, c := range cands {
				seqs = append(seqs, c.hs)
			}
			busy, err := t.lockWebhooks(seqs, now, leased, breakerUntil)
			if err != nil {
				return out, err
			}
			out.Busy = out.Busy || busy
		}
		var ids []byte // the taken ones, as a JSON array
		stopped := false
	scan:
		for _, c := range cands {
			h := reg.bySeq[c.hs]
			switch {
			case h == nil || !h.Enabled:
				if _, err := t.Exec(`UPDATE webhook_deliveries SET status = `+cancelled+`, updated_at = ?, last_error = 'webhook disabled or deleted' WHERE id = ?`, now, c.id); err != nil {
					return out, fmt.Errorf("webhook: claim: %w", err)
				}
				t.count(CounterCancelled, 1)
				continue
			case c.attempts > 0 && !canRetry(t.s.cfg.RetryPolicy, c.attempts):
				// The last attempt's worker died with its lease.
				if _, err := t.Exec(`UPDATE webhook_deliveries SET status = `+failed+`, updated_at = ?, last_error = 'the last attempt was interrupted' WHERE id = ?`, now, c.id); err != nil {
					return out, fmt.Errorf("webhook: claim: %w", err)
				}
				t.count(CounterFailed, 1)
				continue
			}
			switch decide(h, c.interrupted) {
			case full:
				stopped = true
				break scan
			case wait:
				out.Held = true
				continue // it stays due, without a write
			case hold:
				out.Held = true
				if !heldSet[c.hs] {
					heldSet[c.hs] = true
					held = appendIDs(held, c.hs)
				}
				continue // it stays due, without a write
			}
			ids = appendIDs(ids, c.id)
			ev, err := t.event(c.ev)
			if err != nil {
				return out, err
			}
			j := Job{DeliveryID: c.id, ClaimedAt: t.now, Attempt: c.attempts + 1, Trigger: Scheduled, Hook: h,
				EventID: ev.id, EventType: ev.typ, Payload: ev.payload, Interrupted: c.interrupted}
			if c.payload != nil {
				j.Payload = c.payload
			}
			out.Jobs = append(out.Jobs, j)
		}
		if len(ids) > 0 {
			if _, err := t.Exec(t.s.d.pick(`UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?, leased = 1 WHERE id IN (SELECT value FROM json_each(?))`,
				`UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?, leased = 1 WHERE id IN (SELECT value::bigint FROM json_array_elements_text(?::json))`),
				leaseUntil, closeIDs(ids)); err != nil {
				return out, fmt.Errorf("webhook: claim: %w", err)
			}
		}
		if stopped {
			out.Full = true
			break
		}
		// Look past the held webhooks only when they filled the window.
		if !out.Full || len(held) == 0 {
			break
		}
	}
	var nextAt sql.NullInt64
	if err := t.queryRow(`SELECT MIN(next_at) FROM webhook_deliveries WHERE status = ` + pending).Scan(&nextAt); err != nil {
		return out, fmt.Errorf("webhook: claim: %w", err)
	}
	out.Next = nullMS(nextAt)
	return out, nil
}

// lockWebhooks prepares a PostgreSQL claim to take deliveries of the
// webhooks seqs not yet in leased: it takes each webhook's claim lock, a
// transaction-scoped advisory lock, without waiting, and records how many
// live leases the webhook has, in every process, and until when its
// circuit breaker is open. A webhook another transaction is claiming for
// is recorded as full, so its deliveries are held, and busy is true. Since
// the count is read under the lock and after the previous holder
// committed, a webhook's cap, and its breaker's single probe, hold across
// processes.
func (t *Tx) lockWebhooks(seqs []int64, now int64, leased map[int64]int, breakerUntil map[int64]time.Time) (busy bool, err error) {
	var want []byte
	seen := map[int64]bool{}
	for _, seq := range seqs {
		if _, done := leased[seq]; done || seen[seq] {
			continue
		}
		seen[seq] = true
		want = appendIDs(want, seq)
	}
	if want == nil {
		return false, nil
	}
	fail := func(err error) (bool, error) { return false, fmt.Errorf("webhook: claim: lock webhooks: %w", err) }
	rows, err := t.query(`SELECT v::bigint FROM json_array_elements_text(?::json) AS v
		WHERE pg_try_advisory_xact_lock(?, (v::bigint % 2147483647)::int)`, closeIDs(want), t.s.d.locks.claim)
	if err != nil {
		return fail(err)
	}
	var locked []byte
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return fail(err)
		}
		delete(seen, seq)
		leased[seq] = 0
		locked = appendIDs(locked, seq)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	for seq := range seen {
		leased[seq] = math.MaxInt32 // another process is claiming for it
		busy = true
	}
	if locked == nil {
		return busy, nil
	}
	rows, err = t.query(`SELECT w.seq, w.breaker_open_until, COALESCE(l.n, 0) FROM webhooks w
		LEFT JOIN (SELECT webhook_seq, COUNT(*) AS n FROM webhook_deliveries WHERE status = `+pending+` AND leased = 1 AND next_at > ? GROUP BY webhook_seq) l
		ON l.webhook_seq = w.seq
		WHERE w.seq IN (SELECT v::bigint FROM json_array_elements_text(?::json) AS v)`, now, closeIDs(locked))
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq, until int64
		var n int
		if err := rows.Scan(&seq, &until, &n); err != nil {
			return fail(err)
		}
		leased[seq] = n
		if until != 0 {
			breakerUntil[seq] = fromMS(until)
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return busy, nil
}

func canRetry(p RetryPolicy, attempts int) bool {
	_, ok := p.NextRetry(attempts)
	return ok
}

// event returns a stored event, from the payload cache when it can.
func (t *Tx) event(seq int64) (*cachedEvent, error) {
	if ev := t.s.payloads.get(seq); ev != nil {
		return ev, nil
	}
	ev := &cachedEvent{seq: seq}
	if err := t.queryRow(`SELECT id, type, payload FROM webhook_events WHERE seq = ?`, seq).Scan(&ev.id, &ev.typ, &ev.payload); err != nil {
		return nil, fmt.Errorf("webhook: read event: %w", err)
	}
	t.s.payloads.put(ev)
	return ev, nil
}
