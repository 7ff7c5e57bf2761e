package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/sparc-webhooks/webhook/internal/store"
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
	if err := d.st.InsertWebhook(ctx, store.NewWebhook{Webhook: fromWebhook(w), Secret: secret}); err != nil {
		return Webhook{}, err
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
	w, err := d.st.Webhook(ctx, id)
	if err != nil {
		return Webhook{}, err
	}
	return toWebhook(w), nil
}

// List returns every webhook, oldest first, without secrets.
func (d *Dispatcher) List(ctx context.Context) ([]Webhook, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.calls.Done()
	rows, err := d.st.Webhooks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Webhook, len(rows))
	for i, w := range rows {
		out[i] = toWebhook(w)
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
	// The URL and the format are checked together; when only one of them
	// changes, against what is stored for the other (in the store's
	// transaction, through check).
	if u.URL != nil && u.Format != nil {
		if _, err := d.checkDestination(*u.URL, *u.Format); err != nil {
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
	c := store.Change{URL: u.URL, Events: u.Events, Description: u.Description, Enabled: u.Enabled}
	if u.Format != nil {
		f := string(*u.Format)
		c.Format = &f
	}
	check := func(url, format string) (string, error) {
		f, err := d.checkDestination(url, Format(format))
		return string(f), err
	}
	w, err := d.st.UpdateWebhook(ctx, id, c, check)
	if err != nil {
		return Webhook{}, err
	}
	return toWebhook(w), nil
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
	return d.st.DeleteWebhook(ctx, id)
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
	w, recovered, missed, err := d.st.EnableWebhook(ctx, id, opts.Recover)
	if err != nil {
		return Webhook{}, 0, err
	}
	n, err := d.st.RecoverMissed(ctx, missed, EventTest)
	recovered += n
	if err != nil {
		return toWebhook(w), recovered, err
	}
	if recovered > 0 {
		d.Notify()
	}
	return toWebhook(w), recovered, nil
}
