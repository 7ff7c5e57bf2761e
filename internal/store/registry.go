package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sparc-webhooks/webhook/signature"
)

// Webhook is a webhook's row as the API shows it (never its secret).
type Webhook struct {
	ID                  string
	URL                 string
	Format              string
	Events              []string
	Enabled             bool
	Description         string
	CreatedAt           time.Time
	UpdatedAt           time.Time
	FailureStreak       int
	LastSuccessAt       time.Time
	LastFailureAt       time.Time
	DisabledReason      string
	DisabledAt          time.Time
	PreviousSecretUntil time.Time
}

const webhookColumns = `id, url, format, events, enabled, description, created_at, updated_at, failure_streak, last_success_at, last_failure_at, disabled_reason, disabled_at, prev_secret_until`

func scanWebhook(sc interface{ Scan(...any) error }) (Webhook, error) {
	var w Webhook
	var events string
	var created, updated int64
	var lastOK, lastFail, disabledAt, prevUntil sql.NullInt64
	if err := sc.Scan(&w.ID, &w.URL, &w.Format, &events, &w.Enabled, &w.Description, &created, &updated, &w.FailureStreak, &lastOK, &lastFail, &w.DisabledReason, &disabledAt, &prevUntil); err != nil {
		return Webhook{}, err
	}
	if err := json.Unmarshal([]byte(events), &w.Events); err != nil {
		return Webhook{}, fmt.Errorf("webhook: stored events of %s are unreadable", w.ID)
	}
	w.CreatedAt, w.UpdatedAt = fromMS(created), fromMS(updated)
	w.LastSuccessAt, w.LastFailureAt, w.DisabledAt = nullMS(lastOK), nullMS(lastFail), nullMS(disabledAt)
	if until := nullMS(prevUntil); until.After(time.Now()) {
		w.PreviousSecretUntil = until
	}
	return w, nil
}

// Hook is what a delivery needs of its webhook: where it goes, how it is
// rendered and what signs it.
type Hook struct {
	Seq     int64
	ID      string
	URL     string
	Events  []string
	Format  string
	MailTo  string // the address, for the email format
	Enabled bool

	current   *signature.Signer // the secret
	both      *signature.Signer // the secret and the previous one, during a rotation
	prevUntil time.Time         // when the previous one stops signing
	// breakerUntil is when the webhook's circuit breaker ends its
	// cool-down, as the registry was read (zero while it is closed).
	breakerUntil time.Time
}

// Signer returns what signs an attempt at now: the current secret, and the
// previous one during a rotation's grace period.
func (h *Hook) Signer(now time.Time) *signature.Signer {
	if h.both != nil && now.Before(h.prevUntil) {
		return h.both
	}
	return h.current
}

// hookColumns are what a delivery needs of its webhook, for scanHook.
const hookColumns = `w.seq, w.id, w.url, w.events, w.secret, COALESCE(w.prev_secret, ''), COALESCE(w.prev_secret_until, 0), w.enabled, w.format, w.breaker_open_until`

// scanHook reads hookColumns (and extra), opening the secrets.
func (s *Store) scanHook(sc interface{ Scan(...any) error }, extra ...any) (*Hook, error) {
	h := &Hook{}
	var events, secret, prev string
	var until, breaker int64
	dest := append([]any{&h.Seq, &h.ID, &h.URL, &events, &secret, &prev, &until, &h.Enabled, &h.Format, &breaker}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	if h.Format == "email" && s.cfg.ParseMailto != nil {
		addr, err := s.cfg.ParseMailto(h.URL)
		if err != nil {
			s.log.Error("webhook: stored mailto URL is unreadable; the webhook receives nothing", "webhook_id", h.ID)
			h.Enabled = false
		}
		h.MailTo = addr
	}
	if err := unmarshalStrings(events, &h.Events); err != nil {
		s.log.Error("webhook: stored events are unreadable; the webhook receives nothing", "webhook_id", h.ID)
		h.Enabled = false
	}
	if breaker != 0 {
		h.breakerUntil = fromMS(breaker)
	}
	cur, err := s.sealer.open(h.ID, secret)
	if err != nil {
		return nil, err
	}
	h.current = signature.NewSigner(cur)
	if prev != "" && until > 0 {
		p, err := s.sealer.open(h.ID, prev)
		if err != nil {
			return nil, err
		}
		h.both = signature.NewSigner(cur, p)
		h.prevUntil = fromMS(until)
	}
	return h, nil
}

// registry is the writer's view of the webhooks, reloaded whenever the
// registry version stored in webhook_meta changes.
type registry struct {
	version int64
	bySeq   map[int64]*Hook
	enabled []*Hook
}

// registry returns the current registry, checking its version once per
// transaction.
func (t *Tx) registry() (*registry, error) {
	if t.regChecked && t.s.reg != nil {
		return t.s.reg, nil
	}
	var v int64
	if err := t.queryRow("SELECT value FROM webhook_meta WHERE key = 'registry_version'").Scan(&v); err != nil {
		return nil, fmt.Errorf("webhook: read registry version: %w", err)
	}
	if t.s.reg == nil || t.s.reg.version != v {
		reg, err := t.loadRegistry(v)
		if err != nil {
			return nil, err
		}
		t.s.reg = reg
	}
	t.regChecked = true
	return t.s.reg, nil
}

func (t *Tx) loadRegistry(version int64) (*registry, error) {
	rows, err := t.query("SELECT " + hookColumns + " FROM webhooks w")
	if err != nil {
		return nil, fmt.Errorf("webhook: load registry: %w", err)
	}
	defer rows.Close()
	reg := &registry{version: version, bySeq: make(map[int64]*Hook)}
	for rows.Next() {
		h, err := t.s.scanHook(rows)
		if err != nil {
			return nil, fmt.Errorf("webhook: load registry: %w", err)
		}
		reg.bySeq[h.Seq] = h
		if h.Enabled {
			reg.enabled = append(reg.enabled, h)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhook: load registry: %w", err)
	}
	return reg, nil
}

// registryChanged bumps the registry version, so that every writer (in
// this process or another) reloads it.
func (t *Tx) registryChanged() error {
	if _, err := t.Exec("UPDATE webhook_meta SET value = value + 1 WHERE key = 'registry_version'"); err != nil {
		return fmt.Errorf("webhook: bump registry version: %w", err)
	}
	t.regChecked = false
	return nil
}

// NewWebhook is a webhook to insert.
type NewWebhook struct {
	Webhook
	Secret signature.Secret
}

// InsertWebhook stores a new webhook.
func (s *Store) InsertWebhook(ctx context.Context, w NewWebhook) error {
	events, _ := json.Marshal(w.Events)
	return s.do(ctx, func(t *Tx) error {
		var disabledAt any
		if !w.Enabled {
			disabledAt = ms(w.DisabledAt)
		}
		if _, err := t.Exec(`INSERT INTO webhooks (id, url, format, events, secret, enabled, description, created_at, updated_at, disabled_reason, disabled_at, disabled_event_seq)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) FROM webhook_events))`,
			w.ID, w.URL, w.Format, string(events), t.s.sealer.seal(w.ID, w.Secret), boolInt(w.Enabled), w.Description, ms(w.CreatedAt), ms(w.UpdatedAt), w.DisabledReason, disabledAt); err != nil {
			return fmt.Errorf("webhook: register: %w", err)
		}
		return t.registryChanged()
	})
}

// Webhook reads a webhook by ID.
func (s *Store) Webhook(ctx context.Context, id string) (Webhook, error) {
	w, err := scanWebhook(s.rdb.QueryRowContext(ctx, s.d.q(`SELECT `+webhookColumns+` FROM webhooks WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Webhook{}, ErrNotFound
	}
	if err != nil {
		return Webhook{}, fmt.Errorf("webhook: get: %w", err)
	}
	return w, nil
}

// Webhooks lists every webhook, oldest first.
func (s *Store) Webhooks(ctx context.Context) ([]Webhook, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+webhookColumns+` FROM webhooks ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("webhook: list: %w", err)
	}
	defer rows.Close()
	out := []Webhook{}
	for rows.Next() {
		w, err := scanWebhook(rows)
		if err != nil {
			return nil, fmt.Errorf("webhook: list: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhook: list: %w", err)
	}
	return out, nil
}

// Change is what UpdateWebhook changes: the fields that are set.
type Change struct {
	URL         *string
	Format      *string
	Events      []string // nil: unchanged
	Description *string
	Enabled     *bool
}

// Destination checks a URL and a format ("" picks the URL's default) and
// returns the format to store. UpdateWebhook calls it with what is stored
// for what the change leaves alone.
type Destination func(url, format string) (string, error)

// UpdateWebhook changes a webhook and returns it. Disabling it cancels its
// pending deliveries; enabling it clears its failure streak and the reason
// it was disabled.
func (s *Store) UpdateWebhook(ctx context.Context, id string, c Change, check Destination) (Webhook, error) {
	var out Webhook
	err := s.do(ctx, func(t *Tx) error {
		now := ms(t.now)
		var seq int64
		var enabled bool
		var curURL, curFormat string
		err := t.queryRow(`SELECT seq, enabled, url, format FROM webhooks WHERE id = ?`, id).Scan(&seq, &enabled, &curURL, &curFormat)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: update: %w", err)
		}
		if c.URL != nil || c.Format != nil {
			newURL, newFormat := curURL, ""
			if c.URL != nil {
				newURL = *c.URL
			}
			if c.Format != nil {
				newFormat = *c.Format
			} else if !isMailto(newURL) && curFormat != "email" {
				newFormat = curFormat
			}
			f, err := check(newURL, newFormat)
			if err != nil {
				return err
			}
			if _, err := t.Exec(`UPDATE webhooks SET url = ?, format = ? WHERE seq = ?`, newURL, f, seq); err != nil {
				return fmt.Errorf("webhook: update: %w", err)
			}
		}
		if c.Events != nil {
			events, _ := json.Marshal(c.Events)
			if _, err := t.Exec(`UPDATE webhooks SET events = ? WHERE seq = ?`, string(events), seq); err != nil {
				return fmt.Errorf("webhook: update: %w", err)
			}
		}
		if c.Description != nil {
			if _, err := t.Exec(`UPDATE webhooks SET description = ? WHERE seq = ?`, *c.Description, seq); err != nil {
				return fmt.Errorf("webhook: update: %w", err)
			}
		}
		if c.Enabled != nil && *c.Enabled != enabled {
			if *c.Enabled {
				err = t.enable(seq)
			} else {
				err = t.disable(seq, "disabled by request", false)
			}
			if err != nil {
				return err
			}
		}
		if _, err := t.Exec(`UPDATE webhooks SET updated_at = ? WHERE seq = ?`, now, seq); err != nil {
			return fmt.Errorf("webhook: update: %w", err)
		}
		if err := t.registryChanged(); err != nil {
			return err
		}
		out, err = scanWebhook(t.queryRow(`SELECT `+webhookColumns+` FROM webhooks WHERE seq = ?`, seq))
		return err
	})
	return out, err
}

func isMailto(u string) bool { return strings.HasPrefix(strings.ToLower(u), "mailto:") }

// DeleteWebhook removes a webhook and cancels its pending deliveries.
func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	return s.do(ctx, func(t *Tx) error {
		var seq int64
		err := t.queryRow(`DELETE FROM webhooks WHERE id = ? RETURNING seq`, id).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: delete: %w", err)
		}
		if err := t.cancelPending(seq, "webhook deleted"); err != nil {
			return err
		}
		return t.registryChanged()
	})
}

// enable enables a webhook that is disabled: the one statement that does,
// for Update and Enable alike.
func (t *Tx) enable(seq int64) error {
	if _, err := t.Exec(`UPDATE webhooks SET enabled = 1, disabled_reason = '', disabled_at = NULL, disabled_event_seq = NULL,
		failure_streak = 0, streak_started_at = NULL, updated_at = ? WHERE seq = ?`, ms(t.now), seq); err != nil {
		return fmt.Errorf("webhook: enable: %w", err)
	}
	t.later(func() { t.s.off.Delete(seq) })
	return t.registryChanged()
}

// disable disables a webhook that is enabled and cancels its pending
// deliveries: the one statement that does, whether a caller asked
// (Update) or the store decided (automatic, when auto: then the host is
// told after the commit). It reports nothing when the webhook is already
// disabled.
func (t *Tx) disable(seq int64, reason string, auto bool) error {
	now := ms(t.now)
	var id, u string
	err := t.queryRow(`UPDATE webhooks SET enabled = 0, disabled_reason = ?, disabled_at = ?, updated_at = ?,
		disabled_event_seq = (SELECT COALESCE(MAX(seq), 0) FROM webhook_events) WHERE seq = ? AND enabled = 1 RETURNING id, url`,
		reason, now, now, seq).Scan(&id, &u)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("webhook: disable webhook: %w", err)
	}
	if err := t.cancelPending(seq, "webhook disabled"); err != nil {
		return err
	}
	if err := t.registryChanged(); err != nil {
		return err
	}
	if cb := t.s.cfg.OnDisable; auto && cb != nil {
		ev := Disabled{WebhookID: id, URL: u, Reason: reason, At: fromMS(now)}
		t.later(func() {
			t.s.callbacks.Add(1)
			go func() {
				defer t.s.callbacks.Done()
				cb(ev)
			}()
		})
	}
	return nil
}

func (t *Tx) cancelPending(seq int64, why string) error {
	res, err := t.Exec(`UPDATE webhook_deliveries SET status = `+cancelled+`, updated_at = ?, last_error = ? WHERE webhook_seq = ? AND status = `+pending, ms(t.now), why, seq)
	if err != nil {
		return fmt.Errorf("webhook: cancel pending deliveries: %w", err)
	}
	n, _ := res.RowsAffected()
	t.count(CounterCancelled, n)
	t.later(func() { t.s.off.Store(seq, struct{}{}) })
	return nil
}

// IsOff reports whether this process disabled or deleted the webhook since
// it started: a worker holding one of its deliveries, claimed just before,
// then drops it instead of sending it.
func (s *Store) IsOff(seq int64) bool {
	_, off := s.off.Load(seq)
	return off
}

// Missed is the range of events a webhook missed while it was disabled,
// for RecoverMissed.
type Missed struct {
	HookSeq  int64
	Events   []string
	From, To int64
}

// EnableWebhook enables a webhook and returns it. With recover, the
// deliveries that disabling cancelled are pending again (their number is
// returned) and the events published while it was disabled are returned
// as a range for RecoverMissed.
func (s *Store) EnableWebhook(ctx context.Context, id string, recover bool) (Webhook, int, Missed, error) {
	var out Webhook
	var missed Missed
	recovered := 0
	err := s.do(ctx, func(t *Tx) error {
		recovered, missed = 0, Missed{}
		var seq int64
		var enabled bool
		var disabledAt, disabledSeq sql.NullInt64
		var evJSON string
		err := t.queryRow(`SELECT seq, enabled, disabled_at, disabled_event_seq, events FROM webhooks WHERE id = ?`, id).Scan(&seq, &enabled, &disabledAt, &disabledSeq, &evJSON)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: enable: %w", err)
		}
		if !enabled {
			if err := t.enable(seq); err != nil {
				return err
			}
			if recover && disabledAt.Valid {
				now := ms(t.now)
				res, err := t.Exec(`UPDATE webhook_deliveries SET status = `+pending+`, attempts = 0, leased = 0, next_at = ?, updated_at = ?, last_error = ''
					WHERE webhook_seq = ? AND status = `+cancelled+` AND updated_at >= ?`, now, now, seq, disabledAt.Int64)
				if err != nil {
					return fmt.Errorf("webhook: enable: %w", err)
				}
				n, _ := res.RowsAffected()
				t.count(CounterCancelled, -n)
				recovered += int(n)
				if n > 0 {
					t.due()
				}
			}
			if recover && disabledSeq.Valid {
				missed = Missed{HookSeq: seq, From: disabledSeq.Int64}
				if err := t.queryRow(`SELECT COALESCE(MAX(seq), 0) FROM webhook_events`).Scan(&missed.To); err != nil {
					return fmt.Errorf("webhook: enable: %w", err)
				}
				if err := unmarshalStrings(evJSON, &missed.Events); err != nil {
					return fmt.Errorf("webhook: enable: stored events are unreadable")
				}
			}
		}
		out, err = scanWebhook(t.queryRow(`SELECT `+webhookColumns+` FROM webhooks WHERE seq = ?`, seq))
		return err
	})
	if err != nil {
		return Webhook{}, 0, Missed{}, err
	}
	return out, recovered, missed, nil
}

// RecoverMissed makes a delivery to m's webhook of every event in m's
// range that it subscribes to (test events aside), in steps of a
// thousand events, and returns how many it made. Events published from
// now on reach the webhook through the usual fan-out.
func (s *Store) RecoverMissed(ctx context.Context, m Missed, skipType string) (int, error) {
	recovered := 0
	for from := m.From; from < m.To; {
		var next int64
		var added int
		err := s.do(ctx, func(t *Tx) error {
			rows, err := t.query(`SELECT seq, type FROM webhook_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 1000`, from, m.To)
			if err != nil {
				return err
			}
			var seqs []int64
			last := from
			for rows.Next() {
				var seq int64
				var typ string
				if err := rows.Scan(&seq, &typ); err != nil {
					rows.Close()
					return err
				}
				last = seq
				if typ != skipType && matchAny(m.Events, typ) {
					seqs = append(seqs, seq)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if last == from {
				last = m.To // nothing left in the range
			}
			if len(seqs) > 0 {
				now := ms(t.now)
				if _, err := t.Exec(t.s.d.pick(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at)
					SELECT value, ?, `+pending+`, ?, ?, ? FROM json_each(?)`, `INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at)
					SELECT value::bigint, ?::bigint, `+pending+`, ?::bigint, ?::bigint, ?::bigint FROM json_array_elements_text(?::json)`), m.HookSeq, now, now, now, idList(seqs)); err != nil {
					return err
				}
				t.due()
			}
			next, added = last, len(seqs)
			return nil
		})
		if err != nil {
			return recovered, fmt.Errorf("webhook: enable: recover missed events: %w", err)
		}
		from = next
		recovered += added
	}
	return recovered, nil
}

// RotateSecret gives a webhook a new secret; during grace (when positive)
// the previous one keeps signing beside it.
func (s *Store) RotateSecret(ctx context.Context, id string, secret signature.Secret, grace time.Duration) (Webhook, error) {
	var out Webhook
	err := s.do(ctx, func(t *Tx) error {
		var seq int64
		var stored string
		err := t.queryRow(`SELECT seq, secret FROM webhooks WHERE id = ?`, id).Scan(&seq, &stored)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: rotate secret: %w", err)
		}
		var prev, until any
		if grace > 0 {
			prev, until = stored, ms(t.now.Add(grace)) // stays sealed as it was
		}
		if _, err := t.Exec(`UPDATE webhooks SET secret = ?, prev_secret = ?, prev_secret_until = ?, updated_at = ? WHERE seq = ?`,
			t.s.sealer.seal(id, secret), prev, until, ms(t.now), seq); err != nil {
			return fmt.Errorf("webhook: rotate secret: %w", err)
		}
		if err := t.registryChanged(); err != nil {
			return err
		}
		out, err = scanWebhook(t.queryRow(`SELECT `+webhookColumns+` FROM webhooks WHERE seq = ?`, seq))
		return err
	})
	return out, err
}

// RevokePreviousSecret ends a rotation's grace period at once.
func (s *Store) RevokePreviousSecret(ctx context.Context, id string) error {
	return s.do(ctx, func(t *Tx) error {
		res, err := t.Exec(`UPDATE webhooks SET prev_secret = NULL, prev_secret_until = NULL, updated_at = ? WHERE id = ?`, ms(t.now), id)
		if err != nil {
			return fmt.Errorf("webhook: revoke previous secret: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return t.registryChanged()
	})
}

// HookByID reads what an attempt needs of a webhook, for a test send.
func (s *Store) HookByID(ctx context.Context, id string) (*Hook, error) {
	h, err := s.scanHook(s.rdb.QueryRowContext(ctx, s.d.q(`SELECT `+hookColumns+` FROM webhooks w WHERE w.id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("webhook: read webhook: %w", err)
	}
	return h, nil
}
