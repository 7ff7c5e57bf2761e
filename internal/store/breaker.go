package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The circuit breaker of a webhook. After Config.BreakerThreshold
// consecutive attempts that ended in a timeout, a connection error, a 429
// or a 503, it opens: the webhook's pending deliveries are held for a
// cool-down, which doubles each time a probe fails, up to
// Config.BreakerMaxCooldown. When the cool-down ends, one delivery is
// attempted as a probe, when none of the webhook's is in flight; its
// success closes the breaker, its failure opens it again.
//
// The breaker lives on the webhook's row (breaker_fails,
// breaker_open_until, breaker_cooldown_ms), on both backends, so that it
// survives a restart and every process sharing the database obeys one
// breaker. Claims read when it opens from the registry (SQLite, whose
// registry version is bumped when a breaker opens or closes) or, with
// PostgreSQL, under the webhook's claim lock (lockWebhooks).

// Breaker is a breaker's state, as stored.
type Breaker struct {
	Fails     int           // consecutive failures that count
	OpenUntil time.Time     // zero while closed
	Cooldown  time.Duration // the current cool-down, once opened
}

// BreakerRule is the breaker's configuration.
type BreakerRule struct {
	Threshold   int // failures that open it; negative: never
	Base, Limit time.Duration
}

// Fail applies n failures that count to b; probe reports that one of them
// was the probe's (the cool-down had ended). It reports whether b opened,
// or opened again for twice as long.
func (r BreakerRule) Fail(b *Breaker, n int, probe bool, now time.Time) bool {
	b.Fails += n
	switch {
	case probe:
		b.Cooldown = min(2*b.Cooldown, r.Limit)
	case b.OpenUntil.IsZero() && b.Fails >= r.Threshold:
		b.Cooldown = r.Base
	default:
		return false
	}
	b.OpenUntil = now.Add(b.Cooldown)
	return true
}

// breakerAllows reports whether a webhook's breaker, open until until
// (zero: closed), lets a delivery through now, given how many of the
// webhook's attempts are in flight: once the cool-down has ended, one goes,
// as the probe, when none is in flight.
func breakerAllows(until time.Time, inFlight int, now time.Time) bool {
	return until.IsZero() || (!now.Before(until) && inFlight == 0)
}

func (t *Tx) rule() BreakerRule {
	c := t.s.cfg
	return BreakerRule{Threshold: c.BreakerThreshold, Base: c.BreakerCooldown, Limit: c.BreakerMaxCooldown}
}

// breaker applies a batch's outcomes to a webhook's circuit breaker. When
// the breaker opens, the webhook's pending deliveries are held until its
// cool-down ends, so that they do not crowd the head of the queue.
func (t *Tx) breaker(seq int64, d *hookDelta) error {
	rule := t.rule()
	if rule.Threshold < 0 {
		return nil
	}
	if d.breakerFails == 0 {
		if !d.breakerReset {
			return nil
		}
		_, err := t.Exec(`UPDATE webhooks SET breaker_fails = 0, breaker_open_until = 0, breaker_cooldown_ms = 0
			WHERE seq = ? AND (breaker_fails != 0 OR breaker_open_until != 0)`, seq)
		if err != nil {
			return fmt.Errorf("webhook: record circuit breaker: %w", err)
		}
		return t.breakerClosed(seq)
	}
	var id string
	var fails int
	var openUntil, cooldown int64
	err := t.queryRow(t.s.d.pick(`SELECT id, breaker_fails, breaker_open_until, breaker_cooldown_ms FROM webhooks WHERE seq = ?`,
		`SELECT id, breaker_fails, breaker_open_until, breaker_cooldown_ms FROM webhooks WHERE seq = ? FOR UPDATE`), seq).Scan(&id, &fails, &openUntil, &cooldown)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("webhook: record circuit breaker: %w", err)
	}
	b := Breaker{Fails: fails, Cooldown: time.Duration(cooldown) * time.Millisecond}
	if openUntil != 0 {
		b.OpenUntil = fromMS(openUntil)
	}
	if d.breakerReset {
		b = Breaker{}
	}
	// The probe's failure: the cool-down is over and a failure came back.
	probe := !b.OpenUntil.IsZero() && !t.now.Before(b.OpenUntil)
	opened := rule.Fail(&b, d.breakerFails, probe, t.now)
	var until int64
	if !b.OpenUntil.IsZero() {
		until = ms(b.OpenUntil)
	}
	if _, err := t.Exec(`UPDATE webhooks SET breaker_fails = ?, breaker_open_until = ?, breaker_cooldown_ms = ? WHERE seq = ?`,
		b.Fails, until, b.Cooldown.Milliseconds(), seq); err != nil {
		return fmt.Errorf("webhook: record circuit breaker: %w", err)
	}
	if !opened {
		return nil
	}
	if _, err := t.Exec(`UPDATE webhook_deliveries SET next_at = ? WHERE webhook_seq = ? AND status = `+pending+` AND next_at < ?`, until, seq, until); err != nil {
		return fmt.Errorf("webhook: record circuit breaker: %w", err)
	}
	log := t.s.log
	t.later(func() {
		log.Warn("webhook circuit breaker open: holding the webhook's deliveries", "webhook_id", id, "until", b.OpenUntil.UTC().Format(time.RFC3339Nano))
	})
	return t.registryChanged() // claims read the breaker from the registry
}

// breakerClosed bumps the registry version when the registry this writer
// read had the webhook's breaker open, so that claims stop holding its
// deliveries.
func (t *Tx) breakerClosed(seq int64) error {
	reg := t.s.reg
	if reg == nil {
		return nil // the next claim reads the registry afresh anyway
	}
	if h := reg.bySeq[seq]; h == nil || h.breakerUntil.IsZero() {
		return nil
	}
	return t.registryChanged()
}
