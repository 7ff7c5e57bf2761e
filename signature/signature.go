// Package signature signs and verifies webhook deliveries, with the
// standard library alone, so that a receiver can check what the webhook
// dispatcher sends without linking its database drivers.
//
// Each delivery carries two signatures: the Standard Webhooks scheme
// (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256
// of "<id>.<timestamp>.<body>" keyed with the base64-decoded secret>) and
// X-SPARC-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 of
// "<timestamp>.<body>" keyed with the secret string>. Verify and
// VerifySPARC check them in constant time and reject timestamps more than
// five minutes away.
package signature

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SecretPrefix begins every [Secret].
const SecretPrefix = "whsec_"

// Names of the headers a delivery carries. They are written here as the
// specifications spell them; [http.Header] stores them in canonical form
// (for example "Webhook-Id"), and [http.Header.Get] finds them either way.
const (
	// HeaderWebhookID carries the message id, which is the same on every
	// attempt to deliver one event to one endpoint.
	HeaderWebhookID = "webhook-id"
	// HeaderWebhookTimestamp carries the time of signing in decimal Unix
	// seconds.
	HeaderWebhookTimestamp = "webhook-timestamp"
	// HeaderWebhookSignature carries the Standard Webhooks signatures: one or
	// more "v1,<base64>" entries separated by spaces.
	HeaderWebhookSignature = "webhook-signature"
	// HeaderSPARCSignature carries the SPARC signature
	// "t=<timestamp>,v1=<hex>", with one v1 entry per secret.
	HeaderSPARCSignature = "X-SPARC-Signature"
	// HeaderSPARCEvent carries the event type.
	HeaderSPARCEvent = "X-SPARC-Event"
	// HeaderSPARCDelivery carries the id of the delivery attempt.
	HeaderSPARCDelivery = "X-SPARC-Delivery"
)

// Canonical forms of the header names that the signer writes, so that the
// hot path does not canonicalize them on every call.
const (
	keyWebhookID        = "Webhook-Id"
	keyWebhookTimestamp = "Webhook-Timestamp"
	keyWebhookSignature = "Webhook-Signature"
	keySPARCSignature   = "X-Sparc-Signature"
)

// Errors returned by [Verify] and [VerifySPARC]. They may be wrapped with
// context, such as the name of the header at fault; match them with
// [errors.Is]. No error ever contains a secret or a signature.
var (
	// ErrInvalid is matched by every error about bad input.
	ErrInvalid = errors.New("webhook: invalid input")
	// ErrInvalidSecret reports a secret that is not "whsec_" followed by the
	// standard base64 encoding of 24 to 64 bytes. It wraps ErrInvalid. The
	// secret itself never appears in the message.
	ErrInvalidSecret = fmt.Errorf("%w: secret must be %q followed by the base64 of 24 to 64 bytes", ErrInvalid, SecretPrefix)
	// ErrMissingHeader reports that a required header is absent or empty.
	ErrMissingHeader = errors.New("webhook: missing header")
	// ErrInvalidHeader reports a header that is present but malformed, such
	// as a timestamp that is not a decimal number.
	ErrInvalidHeader = errors.New("webhook: invalid header")
	// ErrNoMatchingSignature reports that no v1 signature in the header
	// matches the message.
	ErrNoMatchingSignature = errors.New("webhook: no matching signature")
	// ErrTimestampTooOld reports a timestamp further in the past than the
	// tolerance allows.
	ErrTimestampTooOld = errors.New("webhook: timestamp too old")
	// ErrTimestampTooNew reports a timestamp further in the future than the
	// tolerance allows.
	ErrTimestampTooNew = errors.New("webhook: timestamp too new")
)

const (
	// redacted is what a Secret prints as.
	redacted = SecretPrefix + "[REDACTED]"

	// minSecretBytes and maxSecretBytes bound the decoded length of a
	// secret accepted by ParseSecret.
	minSecretBytes = 24
	maxSecretBytes = 64

	// minKeyBytes is the shortest decoded key that Sign and Verify accept.
	// Below it a secret is too weak to be worth checking, and crypto/hmac
	// panics in FIPS 140-only mode for keys under 112 bits.
	minKeyBytes = 16

	defaultTolerance = 5 * time.Minute

	// Encoded lengths of an HMAC-SHA256.
	base64MACLen = (sha256.Size + 2) / 3 * 4
	hexMACLen    = 2 * sha256.Size
)

// A Secret is a webhook signing secret: [SecretPrefix] followed by the
// padded standard base64 encoding of 24 to 64 random bytes.
//
// A Secret never reveals itself when printed or encoded: String, GoString,
// Format (for every verb and flag), MarshalText, MarshalJSON and LogValue
// all produce the redacted form "whsec_[REDACTED]" instead. The conversion
// string(s) yields the real value. Because MarshalJSON redacts, a Secret
// does not survive a JSON round trip; store string(s) instead.
//
// Code that inspects the string kind directly bypasses these methods and
// sees the real value: fmt's %p verb, encoding/json when a Secret is a map
// key, and reflection in general.
type Secret string

// GenerateSecret returns a new Secret holding 32 bytes from [crypto/rand].
func GenerateSecret() (Secret, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("webhook: generate secret: %w", err)
	}
	return Secret(SecretPrefix + base64.StdEncoding.EncodeToString(b[:])), nil
}

// ParseSecret returns s as a Secret if it has the form that GenerateSecret
// produces: [SecretPrefix] followed by the canonical, padded standard base64
// encoding of 24 to 64 bytes. Unpadded base64, line breaks and any other
// spelling are rejected, because the SPARC scheme keys its HMAC on the
// secret's exact text, so each secret must have exactly one spelling.
//
// Any error wraps [ErrInvalidSecret] and never contains s.
func ParseSecret(s string) (Secret, error) {
	b64, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return "", fmt.Errorf("%w: missing prefix", ErrInvalidSecret)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(b64) != base64.StdEncoding.EncodedLen(len(key)) {
		return "", fmt.Errorf("%w: not canonical padded base64", ErrInvalidSecret)
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return "", fmt.Errorf("%w: decodes to %d bytes", ErrInvalidSecret, len(key))
	}
	return Secret(s), nil
}

// String returns the redacted form "whsec_[REDACTED]".
func (s Secret) String() string { return redacted }

// GoString returns the redacted form as a quoted Go string literal, which is
// what %#v prints.
func (s Secret) GoString() string { return strconv.Quote(redacted) }

// Format implements [fmt.Formatter]. Whatever the verb, it prints the
// redacted form "whsec_[REDACTED]" as %s would, honoring width and flags;
// %q and %#v print it quoted.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb != 'q' && (verb != 'v' || !f.Flag('#')) {
		verb = 's'
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), redacted)
}

// MarshalText returns the redacted form "whsec_[REDACTED]".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalJSON returns the redacted form as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// LogValue implements [slog.LogValuer] by returning the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// key returns the HMAC key of the Standard Webhooks scheme: the bytes that
// the base64 after the prefix encodes. It returns nil if s is malformed.
func (s Secret) key() []byte {
	key, err := decodeKey(string(s))
	if err != nil {
		return nil
	}
	return key
}

// decodeKey returns the Standard Webhooks HMAC key of secret, which is
// standard padded base64 optionally preceded by SecretPrefix. It is more
// lenient than ParseSecret, so that receivers can verify with secrets issued
// by other senders, but it rejects line breaks (which the base64 decoder
// would otherwise skip) and keys shorter than minKeyBytes.
func decodeKey(secret string) ([]byte, error) {
	b64 := strings.TrimPrefix(secret, SecretPrefix)
	if strings.ContainsAny(b64, "\r\n") {
		return nil, ErrInvalidSecret
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < minKeyBytes {
		return nil, ErrInvalidSecret
	}
	return key, nil
}

// sparcKey returns the SPARC HMAC key of secret: its text, with
// SecretPrefix added if it was left out. It reports ErrInvalidSecret under
// the same conditions as decodeKey.
func sparcKey(secret string) ([]byte, error) {
	if _, err := decodeKey(secret); err != nil {
		return nil, err
	}
	return []byte(SecretPrefix + strings.TrimPrefix(secret, SecretPrefix)), nil
}

// mac appends to dst the HMAC-SHA256 under key of prefix followed by body.
func mac(dst, key, prefix, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(prefix)
	m.Write(body)
	return m.Sum(dst)
}

// Signer signs deliveries with a list of secrets, reusing each secret's
// keyed HMAC states: keying an HMAC hashes two blocks and allocates, which
// costs more than signing a small body. A Signer is safe for simultaneous
// use by multiple goroutines.
type Signer struct {
	n     int
	std   []sync.Pool // per secret: HMACs keyed with the decoded key
	sparc []sync.Pool // per secret: HMACs keyed with the secret's text
}

// NewSigner returns a Signer for secrets, each valid (see ParseSecret): a
// malformed one is signed with an empty Standard Webhooks key, which no
// receiver accepts.
func NewSigner(secrets ...Secret) *Signer {
	s := &Signer{n: len(secrets), std: make([]sync.Pool, len(secrets)), sparc: make([]sync.Pool, len(secrets))}
	for i, sec := range secrets {
		key, text := sec.key(), []byte(sec)
		s.std[i].New = func() any { return hmac.New(sha256.New, key) }
		s.sparc[i].New = func() any { return hmac.New(sha256.New, text) }
	}
	return s
}

// sum appends to dst the HMAC of prefix and body from pool.
func sum(pool *sync.Pool, dst, prefix, body []byte) []byte {
	m := pool.Get().(hash.Hash)
	m.Reset()
	m.Write(prefix)
	m.Write(body)
	dst = m.Sum(dst)
	pool.Put(m)
	return dst
}

// SetHeaders sets in h the headers webhook-id, webhook-timestamp and
// webhook-signature of the Standard Webhooks scheme and the
// X-SPARC-Signature header of the SPARC scheme, signing body, id and ts
// (Unix seconds) with each of the signer's secrets in turn. With no
// secrets, both signature headers are removed. It is called once per
// delivery attempt, so it builds all header values in one buffer.
func (sg *Signer) SetHeaders(h http.Header, id string, ts int64, body []byte) {
	var tsBuf [20]byte
	tsb := strconv.AppendInt(tsBuf[:0], ts, 10)

	// Standard Webhooks signs "<id>.<ts>.<body>"; SPARC signs "<ts>.<body>",
	// which ends the same way.
	stdPrefix := make([]byte, 0, len(id)+len(tsb)+2)
	stdPrefix = append(append(append(append(stdPrefix, id...), '.'), tsb...), '.')
	sparcPrefix := stdPrefix[len(id)+1:]

	// out holds the three computed values back to back:
	// "<ts>" "v1,<b64> v1,<b64>" "t=<ts>,v1=<hex>,v1=<hex>".
	n := sg.n
	out := make([]byte, 0, 2*len(tsb)+len("t=")+
		n*(len("v1, ")+base64MACLen)+n*(len(",v1=")+hexMACLen))
	out = append(out, tsb...)
	stdStart := len(out)
	var sumBuf [sha256.Size]byte
	for i := range n {
		if i > 0 {
			out = append(out, ' ')
		}
		out = append(out, "v1,"...)
		out = base64.StdEncoding.AppendEncode(out, sum(&sg.std[i], sumBuf[:0], stdPrefix, body))
	}
	sparcStart := len(out)
	out = append(append(out, "t="...), tsb...)
	for i := range n {
		out = append(out, ",v1="...)
		out = hex.AppendEncode(out, sum(&sg.sparc[i], sumBuf[:0], sparcPrefix, body))
	}

	str := string(out)
	vals := make([]string, 4)
	vals[0], vals[1], vals[2], vals[3] = id, str[:stdStart], str[stdStart:sparcStart], str[sparcStart:]
	h[keyWebhookID] = vals[0:1:1]
	h[keyWebhookTimestamp] = vals[1:2:2]
	if n == 0 {
		delete(h, keyWebhookSignature)
		delete(h, keySPARCSignature)
		return
	}
	h[keyWebhookSignature] = vals[2:3:3]
	h[keySPARCSignature] = vals[3:4:4]
}

// Sign returns the value of the webhook-signature header, "v1,<base64>",
// that the Standard Webhooks scheme gives body sent with message id id at
// timestamp (truncated to whole seconds).
//
// The secret is standard padded base64, optionally preceded by
// [SecretPrefix], of at least 16 bytes. Sign and the Verify functions accept
// any such secret, including ones that [ParseSecret] would reject for
// length, so that receivers can check secrets issued elsewhere. A secret
// that does not have that form yields an error wrapping [ErrInvalidSecret].
func Sign(secret string, id string, timestamp time.Time, body []byte) (string, error) {
	key, err := decodeKey(secret)
	if err != nil {
		return "", err
	}
	prefix := fmt.Appendf(nil, "%s.%d.", id, timestamp.Unix())
	return "v1," + base64.StdEncoding.EncodeToString(mac(nil, key, prefix, body)), nil
}

// SignSPARC returns the value of the X-SPARC-Signature header,
// "t=<timestamp>,v1=<hex>", that the SPARC scheme gives body sent at
// timestamp (truncated to whole seconds). The HMAC key is the text of the
// secret, with [SecretPrefix] added if it was left out. SignSPARC accepts
// the same secrets as [Sign].
func SignSPARC(secret string, timestamp time.Time, body []byte) (string, error) {
	key, err := sparcKey(secret)
	if err != nil {
		return "", err
	}
	ts := strconv.FormatInt(timestamp.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(nil, key, []byte(ts+"."), body)), nil
}

// A Verifier checks the signatures of webhooks received over HTTP. The zero
// value is ready to use and is what [Verify] and [VerifySPARC] use.
//
// A Verifier first validates the secret, then parses the headers, then
// checks the timestamp, and only then computes the HMAC: a stale message is
// reported as stale whatever its signature. Verification succeeds if any
// one of the v1 signatures in the header matches; entries of other versions
// are ignored. Signatures are compared in constant time.
type Verifier struct {
	// Tolerance is how far the signed timestamp may lie from Now, in
	// either direction. The check works in whole seconds: a timestamp ts is
	// accepted if now-tol <= ts <= now+tol, where now is Now truncated to a
	// Unix second and tol is Tolerance truncated to a whole second. Zero
	// or negative means 5 minutes; the check cannot be disabled.
	Tolerance time.Duration

	// Now returns the current time. Nil means [time.Now].
	Now func() time.Time
}

// Verify checks that header carries a valid Standard Webhooks signature of
// body under secret, which has the form described at [Sign].
//
// It reads the webhook-id, webhook-timestamp and webhook-signature headers.
// The timestamp must be decimal Unix seconds. The signature header holds
// entries of the form "version,signature" separated by whitespace; an entry
// that is not "v1,<base64>" never matches but is not an error.
//
// Verify returns nil on success, or an error that matches with [errors.Is]
// one of [ErrInvalidSecret], [ErrMissingHeader], [ErrInvalidHeader],
// [ErrTimestampTooOld], [ErrTimestampTooNew] or [ErrNoMatchingSignature].
func (v Verifier) Verify(secret string, header http.Header, body []byte) error {
	key, err := decodeKey(secret)
	if err != nil {
		return err
	}
	id := header.Get(keyWebhookID)
	tsStr := header.Get(keyWebhookTimestamp)
	sigs := header.Get(keyWebhookSignature)
	switch {
	case id == "":
		return missing(HeaderWebhookID)
	case tsStr == "":
		return missing(HeaderWebhookTimestamp)
	case strings.TrimSpace(sigs) == "":
		return missing(HeaderWebhookSignature)
	}
	ts, ok := parseTimestamp(tsStr)
	if !ok {
		return invalidHeader(HeaderWebhookTimestamp)
	}
	if err := v.checkTimestamp(ts); err != nil {
		return err
	}

	prefix := make([]byte, 0, len(id)+len(tsStr)+2)
	prefix = append(append(append(append(prefix, id...), '.'), tsStr...), '.')
	var want [base64MACLen]byte
	base64.StdEncoding.Encode(want[:], mac(nil, key, prefix, body))
	for entry := range strings.FieldsSeq(sigs) {
		version, sig, _ := strings.Cut(entry, ",")
		if version == "v1" && hmac.Equal([]byte(sig), want[:]) {
			return nil
		}
	}
	return ErrNoMatchingSignature
}

// VerifySPARC checks that header carries a valid SPARC signature of body
// under secret, which has the form described at [Sign].
//
// It reads the X-SPARC-Signature header: comma-separated "key=value" items,
// optionally surrounded by spaces, in any order, of which exactly one is
// "t=<decimal Unix seconds>". Each "v1=<lowercase hex>" item is a candidate
// signature; items with other keys are ignored. An item without "=" or a
// missing or repeated t makes the header invalid.
//
// VerifySPARC returns the same errors as [Verifier.Verify].
func (v Verifier) VerifySPARC(secret string, header http.Header, body []byte) error {
	key, err := sparcKey(secret)
	if err != nil {
		return err
	}
	val := header.Get(keySPARCSignature)
	if strings.TrimSpace(val) == "" {
		return missing(HeaderSPARCSignature)
	}
	var tsStr string
	seenT := false
	for item := range strings.SplitSeq(val, ",") {
		k, value, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || (k == "t" && seenT) {
			return invalidHeader(HeaderSPARCSignature)
		}
		if k == "t" {
			tsStr, seenT = value, true
		}
	}
	ts, ok := parseTimestamp(tsStr)
	if !ok {
		return invalidHeader(HeaderSPARCSignature)
	}
	if err := v.checkTimestamp(ts); err != nil {
		return err
	}

	prefix := append([]byte(tsStr), '.')
	var want [hexMACLen]byte
	hex.Encode(want[:], mac(nil, key, prefix, body))
	for item := range strings.SplitSeq(val, ",") {
		k, sig, _ := strings.Cut(strings.TrimSpace(item), "=")
		if k == "v1" && hmac.Equal([]byte(sig), want[:]) {
			return nil
		}
	}
	return ErrNoMatchingSignature
}

// Verify is shorthand for Verifier{}.Verify: it checks a Standard Webhooks
// signature with the default tolerance of 5 minutes.
func Verify(secret string, header http.Header, body []byte) error {
	return Verifier{}.Verify(secret, header, body)
}

// VerifySPARC is shorthand for Verifier{}.VerifySPARC: it checks a SPARC
// signature with the default tolerance of 5 minutes.
func VerifySPARC(secret string, header http.Header, body []byte) error {
	return Verifier{}.VerifySPARC(secret, header, body)
}

// checkTimestamp reports whether ts, in Unix seconds, is within v's
// tolerance of the current time. It does arithmetic only on trusted values,
// so no ts can overflow it.
func (v Verifier) checkTimestamp(ts int64) error {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = defaultTolerance
	}
	n, tolSec := now().Unix(), int64(tol/time.Second)
	switch {
	case ts < n-tolSec:
		return ErrTimestampTooOld
	case ts > n+tolSec:
		return ErrTimestampTooNew
	}
	return nil
}

// parseTimestamp parses s, which must be a non-empty string of ASCII digits
// that fits in an int64.
func parseTimestamp(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	return ts, err == nil
}

func missing(name string) error { return fmt.Errorf("%w: %s", ErrMissingHeader, name) }

func invalidHeader(name string) error { return fmt.Errorf("%w: %s", ErrInvalidHeader, name) }
