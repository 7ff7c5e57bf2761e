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
	// URL is where deliveries are POSTed.
	URL string `json:"url"`
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
	// and failed attempts; zero when there was none.
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
	// with a host and no user info, at most 2048 bytes.
	URL string
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
	if err := d.checkURL(r.URL); err != nil {
		return Webhook{}, err
	}
	if err := d.checkEvents(r.Events); err != nil {
		return Webhook{}, err
	}
	if err := checkDescription(r.Description); err != nil {
		return Webhook{}, err
	}
	var secret Secret
	var err error
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
		if _, err := t.exec(`INSERT INTO webhooks (id, url, events, secret, enabled, description, created_at, updated_at, disabled_reason, disabled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			w.ID, w.URL, string(events), t.s.sealer.seal(w.ID, secret), w.Enabled, w.Description, ms(now), ms(now), w.DisabledReason, disabledAt); err != nil {
			return fmt.Errorf("webhook: register: %w", err)
		}
		return t.registryChanged()
	})
	if err != nil {
		return Webhook{}, err
	}
	return w, nil
}

const webhookColumns = `id, url, events, enabled, description, created_at, updated_at, failure_streak, last_success_at, last_failure_at, disabled_reason, disabled_at, prev_secret_until`

func scanWebhook(sc interface{ Scan(...any) error }) (Webhook, error) {
	var w Webhook
	var events string
	var created, updated int64
	var lastOK, lastFail, disabledAt, prevUntil sql.NullInt64
	if err := sc.Scan(&w.ID, &w.URL, &events, &w.Enabled, &w.Description, &created, &updated, &w.FailureStreak, &lastOK, &lastFail, &w.DisabledReason, &disabledAt, &prevUntil); err != nil {
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
	w, err := scanWebhook(d.st.rdb.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = ?`, id))
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
	if u.URL != nil {
		if err := d.checkURL(*u.URL); err != nil {
			return Webhook{}, err
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
		err := t.queryRow(`SELECT seq, enabled FROM webhooks WHERE id = ?`, id).Scan(&seq, &enabled)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: update: %w", err)
		}
		if u.URL != nil {
			if _, err := t.exec(`UPDATE webhooks SET url = ? WHERE seq = ?`, *u.URL, seq); err != nil {
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
			} else {
				_, err = t.exec(`UPDATE webhooks SET enabled = 0, disabled_reason = 'disabled by request', disabled_at = ? WHERE seq = ?`, now, seq)
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
