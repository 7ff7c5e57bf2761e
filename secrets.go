package webhook

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors about the key that encrypts secrets at rest.
var (
	// ErrWrongSecretKey is returned by Open and New when Config.SecretKey
	// is not the key the database's secrets were encrypted with.
	ErrWrongSecretKey = errors.New("webhook: Config.SecretKey is not the key the stored secrets were encrypted with")
	// ErrSecretKeyRequired is returned by Open and New when the database's
	// secrets are encrypted and Config.SecretKey is not set.
	ErrSecretKeyRequired = errors.New("webhook: the stored secrets are encrypted: Config.SecretKey is required")
)

// Rotation limits.
const (
	// DefaultRotationGrace is how long the previous secret keeps signing
	// after RotateSecret, unless the call says otherwise.
	DefaultRotationGrace = 24 * time.Hour
	// MaxRotationGrace is the longest grace period RotateSecret accepts.
	MaxRotationGrace = 7 * 24 * time.Hour
)

const sealedPrefix = "enc:v1:"

// sealer encrypts secrets at rest with AES-256-GCM. Each sealed secret is
// bound to its webhook's ID (the additional data), so a sealed value
// copied to another row does not open. A nil sealer stores secrets as they
// are.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(key []byte) (*sealer, error) {
	if key == nil {
		return nil, nil
	}
	if len(key) != 32 {
		return nil, invalid("SecretKey", "must be 32 bytes (AES-256), not %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, invalid("SecretKey", "is not a usable AES key")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, invalid("SecretKey", "is not a usable AES key")
	}
	return &sealer{aead: aead}, nil
}

// seal returns what is stored for a webhook's secret.
func (s *sealer) seal(webhookID string, secret Secret) string {
	if s == nil || secret == "" {
		return string(secret)
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(secret)+s.aead.Overhead())
	rand.Read(nonce) // crypto/rand.Read never fails
	out := s.aead.Seal(nonce, nonce, []byte(secret), []byte(webhookID))
	return sealedPrefix + base64.StdEncoding.EncodeToString(out)
}

// open returns the secret stored for a webhook.
func (s *sealer) open(webhookID, stored string) (Secret, error) {
	rest, sealed := strings.CutPrefix(stored, sealedPrefix)
	switch {
	case !sealed:
		return Secret(stored), nil
	case s == nil:
		return "", ErrSecretKeyRequired
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", fmt.Errorf("webhook: the stored secret of webhook %s is damaged", webhookID)
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(webhookID))
	if err != nil {
		return "", ErrWrongSecretKey
	}
	return Secret(plain), nil
}

// keyCheckID is the additional data of the stored value that proves the
// key at open.
const keyCheckID = "webhook-secret-key-check"

// setupSealing runs at open, before the writer starts: it checks the key
// against the database and, when a key is given for the first time,
// encrypts the secrets stored in clear. A wrong key fails here, never as a
// wrong signature later.
func (st *store) setupSealing(ctx context.Context, key []byte) error {
	s, err := newSealer(key)
	if err != nil {
		return err
	}
	st.sealer = s
	c := st.conn
	if _, err := c.ExecContext(ctx, st.q("BEGIN IMMEDIATE")); err != nil {
		return fmt.Errorf("webhook: check secret key: %w", err)
	}
	err = func() error {
		var check string
		err := c.QueryRowContext(ctx, `SELECT value FROM webhook_settings WHERE key = 'secret_key_check'`).Scan(&check)
		switch {
		case errors.Is(err, sql.ErrNoRows) && s == nil:
			return nil // never encrypted
		case errors.Is(err, sql.ErrNoRows):
			return st.sealAll(ctx, s)
		case err != nil:
			return err
		case s == nil:
			return ErrSecretKeyRequired
		}
		_, err = s.open(keyCheckID, check)
		return err
	}()
	if err != nil {
		c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		if errors.Is(err, ErrWrongSecretKey) || errors.Is(err, ErrSecretKeyRequired) {
			return err
		}
		return fmt.Errorf("webhook: check secret key: %w", err)
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return fmt.Errorf("webhook: check secret key: %w", err)
	}
	return nil
}

// sealAll encrypts every secret stored in clear and records the key check.
func (st *store) sealAll(ctx context.Context, s *sealer) error {
	c := st.conn
	rows, err := c.QueryContext(ctx, `SELECT seq, id, secret, COALESCE(prev_secret, '') FROM webhooks`)
	if err != nil {
		return err
	}
	type row struct {
		seq              int64
		id, secret, prev string
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.seq, &r.id, &r.secret, &r.prev); err != nil {
			rows.Close()
			return err
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range all {
		if strings.HasPrefix(r.secret, sealedPrefix) {
			return ErrWrongSecretKey // sealed without a key check: not by us
		}
		var prev any
		if r.prev != "" {
			prev = s.seal(r.id, Secret(r.prev))
		}
		if _, err := c.ExecContext(ctx, st.q(`UPDATE webhooks SET secret = ?, prev_secret = ? WHERE seq = ?`), s.seal(r.id, Secret(r.secret)), prev, r.seq); err != nil {
			return err
		}
	}
	_, err = c.ExecContext(ctx, st.q(`INSERT INTO webhook_settings (key, value) VALUES ('secret_key_check', ?)`), s.seal(keyCheckID, "ok"))
	return err
}

// RotateOptions tunes RotateSecret.
type RotateOptions struct {
	// Secret is the new secret. Optional: a new 32-byte one is made when
	// empty.
	Secret string
	// Grace is how long the previous secret keeps signing beside the new
	// one, so that receivers can switch without dropping a delivery.
	// Default: DefaultRotationGrace (24 hours); at most MaxRotationGrace.
	// Negative means none: the previous secret stops signing at once.
	Grace time.Duration
}

// RotateSecret gives a webhook a new secret and returns the webhook with
// it: this, like Register, is a call that returns the secret. Until the
// grace period ends, every request carries two signatures in each
// signature header, one from each secret, so a receiver verifies with
// either. Rotating again during a grace period drops the oldest secret.
// It returns ErrNotFound for an unknown webhook.
func (d *Dispatcher) RotateSecret(ctx context.Context, id string, opts RotateOptions) (Webhook, error) {
	if err := d.enter(); err != nil {
		return Webhook{}, err
	}
	defer d.calls.Done()
	if err := checkWebhookID(id); err != nil {
		return Webhook{}, err
	}
	grace := opts.Grace
	switch {
	case grace == 0:
		grace = DefaultRotationGrace
	case grace > MaxRotationGrace:
		return Webhook{}, invalid("grace", "must be at most %s", MaxRotationGrace)
	}
	var secret Secret
	var err error
	if opts.Secret == "" {
		if secret, err = GenerateSecret(); err != nil {
			return Webhook{}, fmt.Errorf("webhook: generate secret: %w", err)
		}
	} else if secret, err = ParseSecret(opts.Secret); err != nil {
		return Webhook{}, &ValidationError{Field: "secret", Message: "must be \"whsec_\" followed by the base64 of 24 to 64 bytes", Err: ErrInvalidSecret}
	}
	var out Webhook
	err = d.st.do(ctx, func(t *wtx) error {
		var seq int64
		var stored string
		err := t.queryRow(`SELECT seq, secret FROM webhooks WHERE id = ?`, id).Scan(&seq, &stored)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("webhook: rotate secret: %w", err)
		}
		now := t.now
		var prev, until any
		if grace > 0 {
			prev, until = stored, ms(now.Add(grace)) // stays sealed as it was
		}
		if _, err := t.exec(`UPDATE webhooks SET secret = ?, prev_secret = ?, prev_secret_until = ?, updated_at = ? WHERE seq = ?`,
			t.s.sealer.seal(id, secret), prev, until, ms(now), seq); err != nil {
			return fmt.Errorf("webhook: rotate secret: %w", err)
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
	out.Secret = secret
	return out, nil
}

// RevokePreviousSecret ends a rotation's grace period at once: from now on
// only the current secret signs. It returns ErrNotFound for an unknown
// webhook.
func (d *Dispatcher) RevokePreviousSecret(ctx context.Context, id string) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.calls.Done()
	if err := checkWebhookID(id); err != nil {
		return err
	}
	return d.st.do(ctx, func(t *wtx) error {
		res, err := t.exec(`UPDATE webhooks SET prev_secret = NULL, prev_secret_until = NULL, updated_at = ? WHERE id = ?`, ms(t.now), id)
		if err != nil {
			return fmt.Errorf("webhook: revoke previous secret: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return t.registryChanged()
	})
}

// hookColumns are what a delivery needs of its webhook, for scanHook.
const hookColumns = `w.seq, w.id, w.url, w.events, w.secret, COALESCE(w.prev_secret, ''), COALESCE(w.prev_secret_until, 0), w.enabled, w.format`

// scanHook reads hookColumns, opening the secrets.
func (st *store) scanHook(sc interface{ Scan(...any) error }, extra ...any) (*hookEntry, error) {
	h := &hookEntry{}
	var events, secret, prev string
	var until int64
	dest := append([]any{&h.seq, &h.id, &h.url, &events, &secret, &prev, &until, &h.enabled, &h.format}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	if h.format == FormatEmail {
		addr, err := parseMailto(h.url)
		if err != nil {
			st.log.Error("webhook: stored mailto URL is unreadable; the webhook receives nothing", "webhook_id", h.id)
			h.enabled = false
		}
		h.mailTo = addr
	}
	if err := jsonUnmarshalStrings(events, &h.events); err != nil {
		st.log.Error("webhook: stored events are unreadable; the webhook receives nothing", "webhook_id", h.id)
		h.enabled = false
	}
	s, err := st.sealer.open(h.id, secret)
	if err != nil {
		return nil, err
	}
	h.current = newSigner([]Secret{s})
	if prev != "" && until > 0 {
		p, err := st.sealer.open(h.id, prev)
		if err != nil {
			return nil, err
		}
		h.both = newSigner([]Secret{s, p})
		h.prevUntil = fromMS(until)
	}
	return h, nil
}

// signer returns what signs an attempt at now: the current secret, and
// the previous one during a rotation's grace period.
func (h *hookEntry) signer(now time.Time) *signer {
	if h.both != nil && now.Before(h.prevUntil) {
		return h.both
	}
	return h.current
}
