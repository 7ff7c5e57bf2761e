package webhook

import (
	"net/http"
	"time"

	"github.com/sparc-webhooks/webhook/signature"
)

// Signing and verification live in the standard-library-only package
// github.com/sparc-webhooks/webhook/signature, which a receiver imports
// alone; these names re-export it for hosts.

// SecretPrefix begins every [Secret].
const SecretPrefix = signature.SecretPrefix

// Names of the headers a delivery carries (see the signature package).
const (
	HeaderWebhookID        = signature.HeaderWebhookID
	HeaderWebhookTimestamp = signature.HeaderWebhookTimestamp
	HeaderWebhookSignature = signature.HeaderWebhookSignature
	HeaderSPARCSignature   = signature.HeaderSPARCSignature
	HeaderSPARCEvent       = signature.HeaderSPARCEvent
	HeaderSPARCDelivery    = signature.HeaderSPARCDelivery
)

// Errors returned by [Verify] and [VerifySPARC]; match them with
// [errors.Is].
var (
	ErrMissingHeader       = signature.ErrMissingHeader
	ErrInvalidHeader       = signature.ErrInvalidHeader
	ErrNoMatchingSignature = signature.ErrNoMatchingSignature
	ErrTimestampTooOld     = signature.ErrTimestampTooOld
	ErrTimestampTooNew     = signature.ErrTimestampTooNew
)

// A Secret is a webhook signing secret; it prints as "whsec_[REDACTED]".
// See [signature.Secret].
type Secret = signature.Secret

// Verifier verifies signatures with a chosen tolerance; see
// [signature.Verifier].
type Verifier = signature.Verifier

// GenerateSecret returns a new Secret holding 32 random bytes.
func GenerateSecret() (Secret, error) { return signature.GenerateSecret() }

// ParseSecret checks a secret: "whsec_" and the base64 of 24 to 64 bytes.
func ParseSecret(s string) (Secret, error) { return signature.ParseSecret(s) }

// Sign returns the Standard Webhooks webhook-signature value for body; see
// [signature.Sign].
func Sign(secret string, id string, timestamp time.Time, body []byte) (string, error) {
	return signature.Sign(secret, id, timestamp, body)
}

// SignSPARC returns the X-SPARC-Signature value for body; see
// [signature.SignSPARC].
func SignSPARC(secret string, timestamp time.Time, body []byte) (string, error) {
	return signature.SignSPARC(secret, timestamp, body)
}

// Verify checks the Standard Webhooks signature of a delivery; see
// [signature.Verify].
func Verify(secret string, header http.Header, body []byte) error {
	return signature.Verify(secret, header, body)
}

// VerifySPARC checks the X-SPARC-Signature of a delivery; see
// [signature.VerifySPARC].
func VerifySPARC(secret string, header http.Header, body []byte) error {
	return signature.VerifySPARC(secret, header, body)
}
