package webhook

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Webhook is a registered endpoint and what it subscribes to.
type Webhook struct {
	// ID identifies the webhook: a UUID.
	ID string `json:"id"`
	// URL is where deliveries are POSTed, or "mailto:<address>" for email.
	URL string `json:"url"`
	// Format is how deliveries are rendered: json (the signed envelope),
	// slack, discord, or email for a mailto: URL.
	Format Format `json:"format"`
	// Events lists the event types and patterns the webhook subscribes to.
	Events []string `json:"events"`
	// Secret signs the webhook's deliveries. It is set only in the values
	// that Register and RotateSecret return; Get and List leave it empty.
	// It prints as "whsec_[REDACTED]": use string(w.Secret) for its value.
	Secret Secret `json:"-"`
	// Enabled reports whether the webhook receives deliveries.
	Enabled bool `json:"enabled"`
	// Description is free text for people.
	Description string `json:"description"`
	// CreatedAt and UpdatedAt are when the webhook was registered and last
	// changed.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// FailureStreak counts the failed attempts since the last success.
	FailureStreak int `json:"failure_streak"`
	// LastSuccessAt and LastFailureAt are the times of the last successful
	// and failed attempts; zero when there was none. Under a steady flow
	// of successes, LastSuccessAt is kept to within a second.
	LastSuccessAt time.Time `json:"last_success_at,omitzero"`
	LastFailureAt time.Time `json:"last_failure_at,omitzero"`
	// DisabledReason says why the webhook was disabled automatically, or
	// "disabled by request"; empty while it is enabled.
	DisabledReason string `json:"disabled_reason,omitempty"`
	// DisabledAt is when the webhook was disabled; zero while it is
	// enabled.
	DisabledAt time.Time `json:"disabled_at,omitzero"`
	// PreviousSecretUntil is when the secret replaced by RotateSecret stops
	// signing; zero when no rotation is in its grace period.
	PreviousSecretUntil time.Time `json:"previous_secret_until,omitzero"`
}

// Registration describes a webhook to register.
type Registration struct {
	// URL is where deliveries are POSTed: an absolute http or https URL
	// with a host and no user info, at most 2048 bytes. Or, when
	// Config.SMTP is set, "mailto:<address>": each event is then sent as an
	// email.
	URL string
	// Format is how deliveries are rendered for an http URL: FormatJSON
	// (the default), FormatSlack or FormatDiscord. A mailto: URL implies
	// FormatEmail.
	Format Format
	// Events lists event types (built in or from Config.EventTypes) and
	// patterns: "*" for every type, or dot-separated segments where "*"
	// matches one segment, such as "job.*". At least one.
	Events []string
	// Secret is the signing secret: "whsec_" followed by the standard
	// base64 of 24 to 64 bytes. Optional: a new 32-byte secret is made
	// when it is empty.
	Secret string
	// Description is free text for people, at most 1024 bytes.
	Description string
	// Enabled sets whether the webhook starts enabled. Optional: nil
	// means enabled.
	Enabled *bool
}

// WebhookUpdate changes some fields of a webhook; nil fields are left as
// they are.
type WebhookUpdate struct {
	URL         *string
	Format      *Format
	Events      []string // nil leaves the events; an empty, non-nil slice is invalid
	Enabled     *bool
	Description *string
}

// WebhookDisabled tells Config.OnDisable that a webhook was disabled
// automatically.
type WebhookDisabled struct {
	WebhookID string
	URL       string
	Reason    string
	At        time.Time
}

const (
	maxURLLength         = 2048
	maxDescriptionLength = 1024
	maxEvents            = 64
)

// checkURL validates a webhook URL.
func (d *Dispatcher) checkURL(raw string) error {
	if raw == "" {
		return invalid("url", "is required")
	}
	if len(raw) > maxURLLength {
		return invalid("url", "must be at most %d bytes", maxURLLength)
	}
	if !utf8.ValidString(raw) || strings.ContainsAny(raw, " \t\r\n") {
		return invalid("url", "must not contain whitespace or invalid UTF-8")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid("url", "is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return invalid("url", "must be an absolute http or https URL")
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return invalid("url", "must name a host")
	}
	if u.User != nil {
		return invalid("url", "must not contain user info")
	}
	if u.Fragment != "" {
		return invalid("url", "must not contain a fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := parsePort(p); err != nil || n == 0 {
			return invalid("url", "has an invalid port")
		}
	}
	if err := d.guard.checkHost(u.Hostname()); err != nil {
		return &ValidationError{Field: "url", Message: "points to an address that deliveries may not reach", Err: err}
	}
	return nil
}

func parsePort(p string) (int, error) {
	n := 0
	if len(p) > 5 {
		return 0, errors.New("port out of range")
	}
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, errors.New("port is not a number")
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, errors.New("port out of range")
	}
	return n, nil
}

// checkDestination validates a URL with its format and returns the
// format, filling in the default.
func (d *Dispatcher) checkDestination(raw string, f Format) (Format, error) {
	if scheme, _, ok := strings.Cut(raw, ":"); ok && strings.EqualFold(scheme, "mailto") {
		if d.cfg.SMTP == nil {
			return "", invalid("url", "mailto: URLs need Config.SMTP, which is not set")
		}
		if len(raw) > maxURLLength {
			return "", invalid("url", "must be at most %d bytes", maxURLLength)
		}
		if _, err := parseMailto(raw); err != nil {
			return "", err
		}
		if f != "" && f != FormatEmail {
			return "", invalid("format", "must be email (or left out) for a mailto: URL")
		}
		return FormatEmail, nil
	}
	if err := d.checkURL(raw); err != nil {
		return "", err
	}
	switch {
	case f == "":
		return FormatJSON, nil
	case f == FormatEmail:
		return "", invalid("format", "email is the format of mailto: URLs")
	case !f.valid():
		return "", invalid("format", "must be json, slack or discord")
	}
	return f, nil
}

// checkEvents validates a subscription list.
func (d *Dispatcher) checkEvents(events []string) error {
	if len(events) == 0 {
		return invalid("events", "must list at least one event type or pattern")
	}
	if len(events) > maxEvents {
		return invalid("events", "must list at most %d entries", maxEvents)
	}
	seen := make(map[string]bool, len(events))
	for i, e := range events {
		field := fmt.Sprintf("events[%d]", i)
		if seen[e] {
			return invalid(field, "%q is listed twice", e)
		}
		seen[e] = true
		if strings.Contains(e, "*") {
			if msg := checkEventName(e, true); msg != "" {
				return invalid(field, "%s", msg)
			}
			continue
		}
		if msg := checkEventName(e, false); msg != "" {
			return invalid(field, "%s", msg)
		}
		if _, ok := d.types[e]; !ok {
			return &ValidationError{Field: field, Message: fmt.Sprintf("%q is not a known event type", e), Err: ErrUnknownEventType}
		}
	}
	return nil
}

func checkDescription(s string) error {
	if len(s) > maxDescriptionLength {
		return invalid("description", "must be at most %d bytes", maxDescriptionLength)
	}
	if !utf8.ValidString(s) {
		return invalid("description", "must be valid UTF-8")
	}
	return nil
}

// checkWebhookID validates the form of a webhook ID before any query.
func checkWebhookID(id string) error {
	if len(id) != 36 {
		return ErrNotFound
	}
	if _, err := uuid.Parse(id); err != nil {
		return ErrNotFound
	}
	return nil
}

// Register validates r, stores the webhook and returns it with its secret.
// This and RotateSecret are the only calls that return the secret.
func (d *Dispatcher) Register(ctx context.Context, r Registration) (Webhook, error) {
	if err := d.enter(); err != nil {
		return Webhook{}, err
	}
	defer d.calls.Done()
	format, err := d.checkDestination(r.URL, r.Format)
	if err != nil {
		return Webhook{}, err
	}
	if err := d.checkEvents(r.Events); err != nil {
		return Webhook{}, err
	}
	if err := checkDescription(r.Description); err != nil {
		return Webhook{}, err
	}
	var secret Secret
	if r.Secret == "" {
		secret, err = GenerateSecret()
		if err != nil {
			return Webhook{}, fmt.Errorf("webhook: generate secret: %w", err)
		}
	} else if secret, err = ParseSecret(r.Secret); err != nil {
		return Webhook{}, &ValidationError{Field: "secret", Message: "must be \"whsec_\" followed by the base64 of 24 to 64 bytes", Err: ErrInvalidSecret}
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Webhook{}, fmt.Errorf("webhook: make id: %w", err)
	}
	now := d.now().UTC().Truncate(time.Millisecond)
	w := Webhook{
		ID:          id.String(),
		URL:         r.URL,
		Format:      format,
		Events:      append([]string(nil), r.Events...),
		Secret:      secret,
		Enabled:     r.Enabled == nil || *r.Enabled,
		Description: r.Description,
		CreatedAt:   now,
		UpdatedAt:   now,
	}
	if !w.Enabled {
		w.DisabledReason = "disabled by request"
		w.DisabledAt = now
	}
	events, _ := json.Marshal(w.Events)
	err = d.st.do(ctx, func(t *wtx) error {
		var disabledAt any
		if !w.Enabled {
			disabledAt = ms(now)
		}
		if _, err := t.exec(`INSERT INTO webhooks (id, url, format, events, secret, enabled, description, created_at, updated_at, disabled_reason, disabled_at, disabled_event_seq)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) FROM webhook_events))`,
			w.ID, w.URL, string(w.Format), string(events), t.s.sealer.seal(w.ID, secret), boolInt(w.Enabled), w.Description, ms(now), ms(now), w.DisabledReason, disabledAt); err != nil {
			return fmt.Errorf("webhook: register: %w", err)
		}
		return t.registryChanged()
	})
	if err != nil {
		return Webhook{}, err
	}
	return w, nil
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

// Get returns a webhook, without its secret. It returns ErrNotFound for an
// unknown ID.
func (d *Dispatcher) Get(ctx context.Context, id string) (Webhook, error) {
	if err := d.enter(); err != nil {
		return Webhook{}, err
	}
	defer d.calls.Done()
	if err := checkWebhookID(id); err != nil {
		return Webhook{}, err
	}
	w, err := scanWebhook(d.st.rdb.QueryRowContext(ctx, d.st.q(`SELECT `+webhookColumns+` FROM webhooks WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Webhook{}, ErrNotFound
	}
	if err != nil {
		return Webhook{}, fmt.Errorf("webhook: get: %w", err)
	}
	return w, nil
}

// List returns every webhook, oldest first, without secrets.
func (d *Dispatcher) List(ctx context.Context) ([]Webhook, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.calls.Done()
	rows, err := d.st.rdb.QueryContext(ctx, `SELECT `+webhookColumns+` FROM webhooks ORDER BY seq`)
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

// Update changes the fields of u that are set and returns the webhook.
// Disabling a webhook cancels its pending deliveries; enabling one clears
// its failure streak and the reason it was disabled. It returns ErrNotFound
// for an unknown ID.
func (d *Dispatcher) Update(ctx context.Context, id string, u WebhookUpdate) (Webhook, error) {
	if err := d.enter(); err != nil {
		return Webhook{}, err
	}
	defer d.calls.Done()
	if err := checkWebhookID(id); err != nil {
		return Webhook{}, err
	}
	if u.URL != nil || u.Format != nil {
		// The URL and the format are checked together, against what is
		// stored when only one of them changes (below, in the transaction).
		if u.URL != nil && u.Format != nil {
			if _, err := d.checkDestination(*u.URL, *u.Format); err != nil {
				return Webhook{}, err
			}
		}
	}
	if u.Events != nil {
		if err := d.checkEvents(u.Events); err != nil {
			return Webhook{}, err
		}
	}
	if u.Description != nil {
		if err := checkDescription(*u.Description); err != nil {
			return Webhook{}, err
		}
	}
	var out Webhook
	err := d.st.do(ctx, func(t *wtx) error {
		now := ms(t.now)
		var seq int64
		var enabled bool
		var curURL string
		var curFormat Format
		err := t.queryRow(`SELECT seq, enabled, url, format FROM webhooks WHERE id = ?`, id).Scan(&seq, &enabled, &curURL, &curFormat)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: update: %w", err)
		}
		if u.URL != nil || u.Format != nil {
			newURL, newFormat := curURL, Format("")
			if u.URL != nil {
				newURL = *u.URL
			}
			if u.Format != nil {
				newFormat = *u.Format
			} else if !strings.HasPrefix(strings.ToLower(newURL), "mailto:") && curFormat != FormatEmail {
				newFormat = curFormat
			}
			f, err := d.checkDestination(newURL, newFormat)
			if err != nil {
				return err
			}
			if _, err := t.exec(`UPDATE webhooks SET url = ?, format = ? WHERE seq = ?`, newURL, string(f), seq); err != nil {
				return fmt.Errorf("webhook: update: %w", err)
			}
		}
		if u.Events != nil {
			events, _ := json.Marshal(u.Events)
			if _, err := t.exec(`UPDATE webhooks SET events = ? WHERE seq = ?`, string(events), seq); err != nil {
				return fmt.Errorf("webhook: update: %w", err)
			}
		}
		if u.Description != nil {
			if _, err := t.exec(`UPDATE webhooks SET description = ? WHERE seq = ?`, *u.Description, seq); err != nil {
				return fmt.Errorf("webhook: update: %w", err)
			}
		}
		if u.Enabled != nil && *u.Enabled != enabled {
			if *u.Enabled {
				_, err = t.exec(`UPDATE webhooks SET enabled = 1, disabled_reason = '', disabled_at = NULL, failure_streak = 0, streak_started_at = NULL WHERE seq = ?`, seq)
				t.afterCommit(func() { t.s.off.Delete(seq) })
			} else {
				_, err = t.exec(`UPDATE webhooks SET enabled = 0, disabled_reason = 'disabled by request', disabled_at = ?,
					disabled_event_seq = (SELECT COALESCE(MAX(seq), 0) FROM webhook_events) WHERE seq = ?`, now, seq)
				if err == nil {
					err = t.cancelPending(seq, "webhook disabled")
				}
			}
			if err != nil {
				return fmt.Errorf("webhook: update: %w", err)
			}
		}
		if _, err := t.exec(`UPDATE webhooks SET updated_at = ? WHERE seq = ?`, now, seq); err != nil {
			return fmt.Errorf("webhook: update: %w", err)
		}
		if err := t.registryChanged(); err != nil {
			return err
		}
		out, err = scanWebhook(t.queryRow(`SELECT `+webhookColumns+` FROM webhooks WHERE seq = ?`, seq))
		return err
	})
	if err != nil {
		return Webhook{}, err
	}
	return out, nil
}

// Delete removes a webhook and cancels its pending deliveries; nothing
// further is sent to it. Its delivery history stays until Retention
// removes it. It returns ErrNotFound for an unknown ID.
func (d *Dispatcher) Delete(ctx context.Context, id string) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.calls.Done()
	if err := checkWebhookID(id); err != nil {
		return err
	}
	return d.st.do(ctx, func(t *wtx) error {
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

// EnableOptions tunes Enable.
type EnableOptions struct {
	// Recover also sends what the webhook missed while it was disabled:
	// every event published since, that it subscribes to, and again every
	// delivery that disabling cancelled.
	Recover bool
}

// Enable enables a webhook, clearing its failure streak and the reason it
// was disabled, and returns it with the number of deliveries it scheduled
// to recover what the webhook missed (always 0 without opts.Recover).
// Enabling an enabled webhook changes nothing and recovers nothing. It
// returns ErrNotFound for an unknown webhook.
func (d *Dispatcher) Enable(ctx context.Context, id string, opts EnableOptions) (Webhook, int, error) {
	if err := d.enter(); err != nil {
		return Webhook{}, 0, err
	}
	defer d.calls.Done()
	if err := checkWebhookID(id); err != nil {
		return Webhook{}, 0, err
	}
	var out Webhook
	var from, to, hookSeq int64
	var events []string
	recovered := 0
	err := d.st.do(ctx, func(t *wtx) error {
		recovered, from, to = 0, 0, 0
		var enabled bool
		var disabledAt, disabledSeq sql.NullInt64
		var evJSON string
		err := t.queryRow(`SELECT seq, enabled, disabled_at, disabled_event_seq, events FROM webhooks WHERE id = ?`, id).Scan(&hookSeq, &enabled, &disabledAt, &disabledSeq, &evJSON)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: enable: %w", err)
		}
		if !enabled {
			now := ms(t.now)
			if _, err := t.exec(`UPDATE webhooks SET enabled = 1, disabled_reason = '', disabled_at = NULL, disabled_event_seq = NULL,
				failure_streak = 0, streak_started_at = NULL, updated_at = ? WHERE seq = ?`, now, hookSeq); err != nil {
				return fmt.Errorf("webhook: enable: %w", err)
			}
			seq := hookSeq
			t.afterCommit(func() { t.s.off.Delete(seq) })
			if err := t.registryChanged(); err != nil {
				return err
			}
			if opts.Recover {
				if disabledAt.Valid {
					res, err := t.exec(`UPDATE webhook_deliveries SET status = 0, attempts = 0, leased = 0, next_at = ?, updated_at = ?, last_error = ''
						WHERE webhook_seq = ? AND status = 3 AND updated_at >= ?`, now, now, hookSeq, disabledAt.Int64)
					if err != nil {
						return fmt.Errorf("webhook: enable: %w", err)
					}
					n, _ := res.RowsAffected()
					t.count(cCancelled, -n)
					recovered += int(n)
				}
				if disabledSeq.Valid {
					from = disabledSeq.Int64
					if err := t.queryRow(`SELECT COALESCE(MAX(seq), 0) FROM webhook_events`).Scan(&to); err != nil {
						return fmt.Errorf("webhook: enable: %w", err)
					}
					if err := jsonUnmarshalStrings(evJSON, &events); err != nil {
						return fmt.Errorf("webhook: enable: stored events are unreadable")
					}
				}
			}
		}
		out, err = scanWebhook(t.queryRow(`SELECT `+webhookColumns+` FROM webhooks WHERE seq = ?`, hookSeq))
		return err
	})
	if err != nil {
		return Webhook{}, 0, err
	}
	// The events published while it was disabled, in steps: events
	// published from now on reach it through the usual fan-out.
	for from < to {
		var next int64
		var added int
		err := d.st.do(ctx, func(t *wtx) error {
			rows, err := t.query(`SELECT seq, type FROM webhook_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 1000`, from, to)
			if err != nil {
				return err
			}
			var ids []byte
			last, n := from, 0
			for rows.Next() {
				var seq int64
				var typ string
				if err := rows.Scan(&seq, &typ); err != nil {
					rows.Close()
					return err
				}
				last = seq
				if typ != EventTest && matchAny(events, typ) {
					ids = appendIDs(ids, seq)
					n++
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if last == from {
				last = to // nothing left in the range
			}
			if ids != nil {
				now := ms(t.now)
				if _, err := t.exec(t.s.pick(`INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at)
					SELECT value, ?, 0, ?, ?, ? FROM json_each(?)`, `INSERT INTO webhook_deliveries (event_seq, webhook_seq, status, next_at, created_at, updated_at)
					SELECT value::bigint, ?::bigint, 0, ?::bigint, ?::bigint, ?::bigint FROM json_array_elements_text(?::json)`), hookSeq, now, now, now, string(append(ids, ']'))); err != nil {
					return err
				}
			}
			next, added = last, n
			t.notify = n > 0
			return nil
		})
		if err != nil {
			return out, recovered, fmt.Errorf("webhook: enable: recover missed events: %w", err)
		}
		from = next
		recovered += added
	}
	if recovered > 0 {
		d.Notify()
	}
	return out, recovered, nil
}
