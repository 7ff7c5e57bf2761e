package webhook

import (
	"fmt"

	"github.com/sparc-webhooks/webhook/internal/store"
	"github.com/sparc-webhooks/webhook/signature"
)

// Sentinel errors that callers branch on with [errors.Is].
var (
	// ErrClosed is returned by every method called after [Dispatcher.Close].
	ErrClosed = store.ErrClosed

	// ErrNotFound is returned when a webhook, event or delivery does not exist.
	ErrNotFound = store.ErrNotFound

	// ErrWebhookDisabled is returned by calls that need an enabled webhook,
	// such as Recover, when it is disabled.
	ErrWebhookDisabled = store.ErrWebhookDisabled

	// ErrInvalid is matched by every *ValidationError, so that
	// errors.Is(err, ErrInvalid) tells bad input apart from a failure.
	ErrInvalid = signature.ErrInvalid

	// ErrUnknownEventType is returned by Publish for an event type that is
	// neither built in nor listed in Config.EventTypes. It wraps ErrInvalid.
	ErrUnknownEventType = fmt.Errorf("%w: unknown event type", ErrInvalid)

	// ErrInvalidSecret reports a secret that is not "whsec_" followed by the
	// standard base64 encoding of 24 to 64 bytes. It wraps ErrInvalid. The
	// secret itself never appears in the message.
	ErrInvalidSecret = signature.ErrInvalidSecret
)

// ValidationError reports bad input and names the field that holds it.
// It matches [ErrInvalid] with [errors.Is].
type ValidationError struct {
	// Field is the name of the offending field as it appears in JSON, such
	// as "url" or "events[2]".
	Field string
	// Message says what is wrong, without echoing secrets.
	Message string
	// Err is an optional underlying sentinel, such as ErrInvalidSecret.
	Err error
}

// Error implements error.
func (e *ValidationError) Error() string {
	return "webhook: invalid " + e.Field + ": " + e.Message
}

// Is reports whether target is ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the underlying sentinel, if any.
func (e *ValidationError) Unwrap() error { return e.Err }

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}
