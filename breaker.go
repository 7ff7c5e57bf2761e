package webhook

import (
	"log/slog"
	"time"
)

// breaker is the circuit breaker of one webhook. After
// Config.BreakerThreshold consecutive attempts that ended in a timeout, a
// connection error, a 429 or a 503, it opens: the webhook's deliveries are
// held for a cool-down, which doubles each time a probe fails, up to
// Config.BreakerMaxCooldown. When the cool-down ends, one delivery is
// attempted as a probe; its success closes the breaker, its failure opens
// it again. Breakers live in the delivery loop's memory: a restart closes
// them all.
type breaker struct {
	fails     int           // consecutive failures that count
	openUntil time.Time     // zero while closed
	cooldown  time.Duration // the current cool-down, once opened
	probing   bool          // a probe is in flight
}

// breakers holds the breakers of the webhooks that have any state; it is
// owned by the delivery loop.
type breakers struct {
	threshold   int
	base, limit time.Duration
	m           map[int64]*breaker
}

func newBreakers(cfg Config) *breakers {
	return &breakers{threshold: cfg.BreakerThreshold, base: cfg.BreakerCooldown, limit: cfg.BreakerMaxCooldown, m: make(map[int64]*breaker)}
}

// allow reports whether a delivery of the webhook may be attempted now,
// given how many of its attempts are in flight; it marks a probe.
func (bs *breakers) allow(seq int64, inFlight int, now time.Time) bool {
	b := bs.m[seq]
	if b == nil || b.openUntil.IsZero() {
		return true
	}
	if now.Before(b.openUntil) || b.probing || inFlight > 0 {
		return false
	}
	b.probing = true
	return true
}

// untried tells the webhook's breaker that a delivery it let through was
// given back unattempted: if it was the probe, another may go.
func (bs *breakers) untried(seq int64) {
	if b := bs.m[seq]; b != nil {
		b.probing = false
	}
}

// record feeds an attempt's outcome to the webhook's breaker. It returns
// the time until which the webhook's deliveries are held when this outcome
// opened (or reopened) the breaker, and zero otherwise.
func (bs *breakers) record(seq int64, counts bool, now time.Time) time.Time {
	if bs.threshold < 0 {
		return time.Time{}
	}
	if !counts {
		// A success, or a failure of another kind (the endpoint answers),
		// ends the run and closes the breaker.
		delete(bs.m, seq)
		return time.Time{}
	}
	b := bs.m[seq]
	if b == nil {
		b = &breaker{}
		bs.m[seq] = b
	}
	probe := b.probing
	b.probing = false
	if !bs.fail(b, 1, probe, now) {
		return time.Time{}
	}
	return b.openUntil
}

// fail applies n failures that count to b; probe reports that one of them
// was the probe's. It reports whether b opened, or opened again for twice
// as long. The rule is the same for the in-memory breakers (SQLite) and
// for the breakers that PostgreSQL processes share (wtx.sharedBreaker).
func (bs *breakers) fail(b *breaker, n int, probe bool, now time.Time) bool {
	b.fails += n
	switch {
	case probe:
		b.cooldown = min(2*b.cooldown, bs.limit)
	case b.openUntil.IsZero() && b.fails >= bs.threshold:
		b.cooldown = bs.base
	default:
		return false
	}
	b.openUntil = now.Add(b.cooldown)
	return true
}

// holdStatement postpones a webhook's pending deliveries until its
// breaker's cool-down ends, so that they do not crowd the head of the
// queue: arguments until (ms), webhook seq, until (ms).
const holdStatement = `UPDATE webhook_deliveries SET next_at = ? WHERE webhook_seq = ? AND status = 0 AND next_at < ?`

// logBreakerOpen says that a webhook's breaker opened.
func logBreakerOpen(log *slog.Logger, webhookID string, until time.Time) {
	log.Warn("webhook circuit breaker open: holding the webhook's deliveries", "webhook_id", webhookID, "until", until.UTC().Format(time.RFC3339Nano))
}
