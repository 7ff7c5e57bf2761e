package webhook

import (
	"context"
	"fmt"
	"time"

	"github.com/sparc-webhooks/webhook/internal/store"
)

// Errors about the key that encrypts secrets at rest.
var (
	// ErrWrongSecretKey is returned by Open and New when Config.SecretKey
	// is not the key the database's secrets were encrypted with.
	ErrWrongSecretKey = store.ErrWrongSecretKey
	// ErrSecretKeyRequired is returned by Open and New when the database's
	// secrets are encrypted and Config.SecretKey is not set.
	ErrSecretKeyRequired = store.ErrSecretKeyRequired
)

// Rotation limits.
const (
	// DefaultRotationGrace is how long the previous secret keeps signing
	// after RotateSecret, unless the call says otherwise.
	DefaultRotationGrace = 24 * time.Hour
	// MaxRotationGrace is the longest grace period RotateSecret accepts.
	MaxRotationGrace = 7 * 24 * time.Hour
)

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
	w, err := d.st.RotateSecret(ctx, id, secret, grace)
	if err != nil {
		return Webhook{}, err
	}
	out := toWebhook(w)
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
	return d.st.RevokePreviousSecret(ctx, id)
}
