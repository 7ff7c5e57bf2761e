package signature

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The published Standard Webhooks test vector.
const (
	vecSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecTimestamp = 1614265330
	vecPayload   = `{"test": 2432232314}`
	vecSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// secretOf returns a Secret encoding n bytes of value b.
func secretOf(n int, b byte) string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, n))
}

// refStandard and refSPARC sign independently of the code under test.
func refStandard(t *testing.T, secret, id string, ts int64, body []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	require.NoError(t, err)
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func refSPARC(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", ts, body)
	return hex.EncodeToString(m.Sum(nil))
}

func fixedNow(ts int64) func() time.Time {
	return func() time.Time { return time.Unix(ts, 0) }
}

func TestSignVector(t *testing.T) {
	ts := time.Unix(vecTimestamp, 0)
	for _, secret := range []string{vecSecret, strings.TrimPrefix(vecSecret, SecretPrefix)} {
		got, err := Sign(secret, vecID, ts, []byte(vecPayload))
		require.NoError(t, err)
		require.Equal(t, vecSignature, got)
	}

	h := http.Header{}
	setSignatureHeaders(h, []Secret{vecSecret}, vecID, vecTimestamp, []byte(vecPayload))
	require.Equal(t, vecSignature, h.Get(HeaderWebhookSignature))
	require.NoError(t, Verifier{Now: fixedNow(vecTimestamp)}.Verify(vecSecret, h, []byte(vecPayload)))
}

func TestSetSignatureHeaders(t *testing.T) {
	s1, s2 := secretOf(32, 1), secretOf(24, 2)
	body := []byte(`{"hello":"world"}`)
	const id, ts = "msg_1", int64(1700000000)

	tests := []struct {
		name    string
		secrets []string
	}{
		{"one secret", []string{s1}},
		{"two secrets", []string{s1, s2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secrets := make([]Secret, len(tt.secrets))
			var std, sparc []string
			for i, s := range tt.secrets {
				secrets[i] = Secret(s)
				std = append(std, refStandard(t, s, id, ts, body))
				sparc = append(sparc, "v1="+refSPARC(s, ts, body))
			}
			h := http.Header{}
			setSignatureHeaders(h, secrets, id, ts, body)

			require.Equal(t, http.Header{
				"Webhook-Id":        {id},
				"Webhook-Timestamp": {"1700000000"},
				"Webhook-Signature": {strings.Join(std, " ")},
				"X-Sparc-Signature": {"t=1700000000," + strings.Join(sparc, ",")},
			}, h)

			v := Verifier{Now: fixedNow(ts)}
			for _, s := range tt.secrets {
				require.NoError(t, v.Verify(s, h, body))
				require.NoError(t, v.VerifySPARC(s, h, body))
			}

			// Appending to one header must not disturb another.
			h.Add(HeaderWebhookID, "x")
			require.Equal(t, "1700000000", h.Get(HeaderWebhookTimestamp))
		})
	}

	t.Run("no secrets", func(t *testing.T) {
		h := http.Header{}
		h.Set(HeaderWebhookSignature, "stale")
		h.Set(HeaderSPARCSignature, "stale")
		setSignatureHeaders(h, nil, id, ts, body)
		require.Equal(t, http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {"1700000000"}}, h)
	})
}

func TestCanonicalKeys(t *testing.T) {
	require.Equal(t, http.CanonicalHeaderKey(HeaderWebhookID), keyWebhookID)
	require.Equal(t, http.CanonicalHeaderKey(HeaderWebhookTimestamp), keyWebhookTimestamp)
	require.Equal(t, http.CanonicalHeaderKey(HeaderWebhookSignature), keyWebhookSignature)
	require.Equal(t, http.CanonicalHeaderKey(HeaderSPARCSignature), keySPARCSignature)
}

func TestSignSPARC(t *testing.T) {
	ts := time.Unix(vecTimestamp, 0)
	want := "t=1614265330,v1=" + refSPARC(vecSecret, vecTimestamp, []byte(vecPayload))
	for _, secret := range []string{vecSecret, strings.TrimPrefix(vecSecret, SecretPrefix)} {
		got, err := SignSPARC(secret, ts, []byte(vecPayload))
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
}

func TestSignInvalidSecret(t *testing.T) {
	for _, secret := range []string{"", "whsec_", "whsec_!!!!", secretOf(15, 1), secretOf(32, 1) + "\n"} {
		_, err := Sign(secret, "id", time.Now(), nil)
		require.ErrorIs(t, err, ErrInvalidSecret)
		_, err = SignSPARC(secret, time.Now(), nil)
		require.ErrorIs(t, err, ErrInvalidSecret)
	}
}

// signed returns headers carrying both schemes' signatures of body.
func signed(t *testing.T, secret, id string, ts int64, body []byte) http.Header {
	t.Helper()
	h := http.Header{}
	h.Set(HeaderWebhookID, id)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderWebhookSignature, refStandard(t, secret, id, ts, body))
	h.Set(HeaderSPARCSignature, fmt.Sprintf("t=%d,v1=%s", ts, refSPARC(secret, ts, body)))
	return h
}

func TestVerify(t *testing.T) {
	secret, other := secretOf(32, 7), secretOf(32, 8)
	body := []byte(`{"a":1}`)
	const id, now = "msg_42", int64(1700000000)
	good := refStandard(t, secret, id, now, body)

	tests := []struct {
		name   string
		secret string
		edit   func(h http.Header)
		body   string
		v      Verifier
		want   error
	}{
		{name: "valid"},
		{name: "valid without prefix", secret: strings.TrimPrefix(secret, SecretPrefix)},
		{name: "second signature matches", edit: func(h http.Header) {
			h.Set(HeaderWebhookSignature, refStandard(t, other, id, now, body)+" "+good)
		}},
		{name: "extra whitespace", edit: func(h http.Header) {
			h.Set(HeaderWebhookSignature, "  v1,AAAA \t  "+good+"  ")
		}},
		{name: "unknown versions ignored", edit: func(h http.Header) {
			h.Set(HeaderWebhookSignature, "v1a,"+good[3:]+" v2,"+good[3:]+" "+good)
		}},
		{name: "only unknown version", want: ErrNoMatchingSignature, edit: func(h http.Header) {
			h.Set(HeaderWebhookSignature, "v2,"+good[3:])
		}},
		{name: "garbage entries", want: ErrNoMatchingSignature, edit: func(h http.Header) {
			h.Set(HeaderWebhookSignature, "garbage ,,, v1, v1,, v1 =v1,"+good[3:]+" v1,"+good[3:]+"x")
		}},
		{name: "garbage entries then valid", edit: func(h http.Header) {
			h.Set(HeaderWebhookSignature, "garbage ,,, v1, v1,, "+good)
		}},
		{name: "signature case altered", want: ErrNoMatchingSignature, edit: func(h http.Header) {
			h.Set(HeaderWebhookSignature, "V1,"+good[3:])
		}},
		{name: "wrong secret", secret: other, want: ErrNoMatchingSignature},
		{name: "tampered body", body: `{"a":2}`, want: ErrNoMatchingSignature},
		{name: "tampered id", want: ErrNoMatchingSignature, edit: func(h http.Header) {
			h.Set(HeaderWebhookID, "msg_43")
		}},
		{name: "missing id", want: ErrMissingHeader, edit: func(h http.Header) { h.Del(HeaderWebhookID) }},
		{name: "missing timestamp", want: ErrMissingHeader, edit: func(h http.Header) { h.Del(HeaderWebhookTimestamp) }},
		{name: "missing signature", want: ErrMissingHeader, edit: func(h http.Header) { h.Del(HeaderWebhookSignature) }},
		{name: "empty id", want: ErrMissingHeader, edit: func(h http.Header) { h.Set(HeaderWebhookID, "") }},
		{name: "blank signature", want: ErrMissingHeader, edit: func(h http.Header) { h.Set(HeaderWebhookSignature, "   ") }},
		{name: "timestamp not a number", want: ErrInvalidHeader, edit: func(h http.Header) { h.Set(HeaderWebhookTimestamp, "soon") }},
		{name: "timestamp with sign", want: ErrInvalidHeader, edit: func(h http.Header) { h.Set(HeaderWebhookTimestamp, "+1700000000") }},
		{name: "timestamp negative", want: ErrInvalidHeader, edit: func(h http.Header) { h.Set(HeaderWebhookTimestamp, "-1") }},
		{name: "timestamp fractional", want: ErrInvalidHeader, edit: func(h http.Header) { h.Set(HeaderWebhookTimestamp, "1700000000.5") }},
		{name: "timestamp overflows", want: ErrInvalidHeader, edit: func(h http.Header) { h.Set(HeaderWebhookTimestamp, "99999999999999999999") }},
		{name: "timestamp too old", want: ErrTimestampTooOld, v: Verifier{Now: fixedNow(now + 301)}},
		{name: "timestamp too old and bad signature", want: ErrTimestampTooOld, v: Verifier{Now: fixedNow(now + 301)},
			edit: func(h http.Header) { h.Set(HeaderWebhookSignature, "v1,AAAA") }},
		{name: "timestamp zero is too old", want: ErrTimestampTooOld, edit: func(h http.Header) { h.Set(HeaderWebhookTimestamp, "0") }},
		{name: "timestamp at old edge", v: Verifier{Now: fixedNow(now + 300)}},
		{name: "timestamp too new", want: ErrTimestampTooNew, v: Verifier{Now: fixedNow(now - 301)}},
		{name: "timestamp max int64 is too new", want: ErrTimestampTooNew,
			edit: func(h http.Header) { h.Set(HeaderWebhookTimestamp, "9223372036854775807") }},
		{name: "timestamp at new edge", v: Verifier{Now: fixedNow(now - 300)}},
		{name: "custom tolerance accepts", v: Verifier{Tolerance: time.Hour, Now: fixedNow(now + 3600)}},
		{name: "custom tolerance rejects", want: ErrTimestampTooOld, v: Verifier{Tolerance: time.Minute, Now: fixedNow(now + 61)}},
		{name: "negative tolerance means default", want: ErrTimestampTooNew, v: Verifier{Tolerance: -time.Hour, Now: fixedNow(now - 301)}},
		{name: "malformed secret", secret: "whsec_not*base64", want: ErrInvalidSecret},
		{name: "empty secret", secret: "whsec_", want: ErrInvalidSecret},
		{name: "short secret", secret: secretOf(15, 7), want: ErrInvalidSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := signed(t, secret, id, now, body)
			if tt.edit != nil {
				tt.edit(h)
			}
			s := cmp.Or(tt.secret, secret)
			b := []byte(cmp.Or(tt.body, string(body)))
			v := tt.v
			if v.Now == nil {
				v.Now = fixedNow(now)
			}
			err := v.Verify(s, h, b)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			requireNoLeak(t, err.Error(), s, good)
		})
	}
}

func TestVerifySPARC(t *testing.T) {
	secret, other := secretOf(32, 7), secretOf(32, 8)
	body := []byte(`{"a":1}`)
	const now = int64(1700000000)
	good := refSPARC(secret, now, body)
	bad := refSPARC(other, now, body)

	tests := []struct {
		name   string
		secret string
		header string // "" keeps the correctly signed header
		del    bool
		body   string
		v      Verifier
		want   error
	}{
		{name: "valid"},
		{name: "valid without prefix", secret: strings.TrimPrefix(secret, SecretPrefix)},
		{name: "second signature matches", header: "t=1700000000,v1=" + bad + ",v1=" + good},
		{name: "t last", header: "v1=" + good + ",t=1700000000"},
		{name: "spaces around items", header: " t=1700000000 ,  v1=" + good + " "},
		{name: "unknown keys ignored", header: "t=1700000000,v0=" + good + ",x=y,v1=" + good},
		{name: "only unknown keys", header: "t=1700000000,v0=" + good, want: ErrNoMatchingSignature},
		{name: "uppercase hex", header: "t=1700000000,v1=" + strings.ToUpper(good), want: ErrNoMatchingSignature},
		{name: "no signatures", header: "t=1700000000", want: ErrNoMatchingSignature},
		{name: "garbage signature values", header: "t=1700000000,v1=,v1=zz,v1=" + good + "00", want: ErrNoMatchingSignature},
		{name: "wrong secret", secret: other, want: ErrNoMatchingSignature},
		{name: "tampered body", body: `{"a":2}`, want: ErrNoMatchingSignature},
		{name: "tampered timestamp", header: "t=1700000001,v1=" + good, want: ErrNoMatchingSignature},
		{name: "missing header", del: true, want: ErrMissingHeader},
		{name: "blank header", header: "  ", want: ErrMissingHeader},
		{name: "missing t", header: "v1=" + good, want: ErrInvalidHeader},
		{name: "repeated t", header: "t=1700000000,t=1700000000,v1=" + good, want: ErrInvalidHeader},
		{name: "item without equals", header: "t=1700000000,v1" + good, want: ErrInvalidHeader},
		{name: "empty item", header: "t=1700000000,,v1=" + good, want: ErrInvalidHeader},
		{name: "malformed timestamp", header: "t=soon,v1=" + good, want: ErrInvalidHeader},
		{name: "empty timestamp", header: "t=,v1=" + good, want: ErrInvalidHeader},
		{name: "too old", v: Verifier{Now: fixedNow(now + 301)}, want: ErrTimestampTooOld},
		{name: "too old and bad signature", header: "t=1700000000,v1=00", v: Verifier{Now: fixedNow(now + 301)}, want: ErrTimestampTooOld},
		{name: "too new", v: Verifier{Now: fixedNow(now - 301)}, want: ErrTimestampTooNew},
		{name: "custom tolerance accepts", v: Verifier{Tolerance: 10 * time.Minute, Now: fixedNow(now - 600)}},
		{name: "custom tolerance rejects", v: Verifier{Tolerance: 10 * time.Second, Now: fixedNow(now - 11)}, want: ErrTimestampTooNew},
		{name: "malformed secret", secret: "whsec_not*base64", want: ErrInvalidSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := signed(t, secret, "id", now, body)
			if tt.header != "" {
				h.Set(HeaderSPARCSignature, tt.header)
			}
			if tt.del {
				h.Del(HeaderSPARCSignature)
			}
			s := cmp.Or(tt.secret, secret)
			b := []byte(cmp.Or(tt.body, string(body)))
			v := tt.v
			if v.Now == nil {
				v.Now = fixedNow(now)
			}
			err := v.VerifySPARC(s, h, b)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			requireNoLeak(t, err.Error(), s, good)
		})
	}
}

func TestVerifyDefaultClock(t *testing.T) {
	secret := secretOf(32, 3)
	body := []byte("x")
	now := time.Now()

	sig, err := Sign(secret, "id", now, body)
	require.NoError(t, err)
	h := http.Header{}
	h.Set(HeaderWebhookID, "id")
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(HeaderWebhookSignature, sig)
	sparc, err := SignSPARC(secret, now, body)
	require.NoError(t, err)
	h.Set(HeaderSPARCSignature, sparc)

	require.NoError(t, Verify(secret, h, body))
	require.NoError(t, VerifySPARC(secret, h, body))

	old := now.Add(-10 * time.Minute)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(old.Unix(), 10))
	require.ErrorIs(t, Verify(secret, h, body), ErrTimestampTooOld)
	sparc, err = SignSPARC(secret, old, body)
	require.NoError(t, err)
	h.Set(HeaderSPARCSignature, sparc)
	require.ErrorIs(t, VerifySPARC(secret, h, body), ErrTimestampTooOld)
}

func TestSecretRedaction(t *testing.T) {
	s, err := GenerateSecret()
	require.NoError(t, err)
	real := string(s)
	raw := strings.TrimPrefix(real, SecretPrefix)

	type config struct {
		Name   string
		Secret Secret
		Ptr    *Secret
		List   []Secret
	}
	c := config{Name: "hook", Secret: s, Ptr: &s, List: []Secret{s, s}}

	check := func(t *testing.T, out string) {
		t.Helper()
		require.Contains(t, out, "[REDACTED]")
		require.NotContains(t, out, raw)
		require.NotContains(t, out, hex.EncodeToString([]byte(real))[12:])
	}

	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%20s", "%-8v", "%.3s"} {
		t.Run(verb, func(t *testing.T) {
			out := fmt.Sprintf(verb, s)
			if verb != "%.3s" {
				check(t, out)
			}
			require.NotContains(t, out, raw)
		})
	}
	require.Equal(t, "whsec_[REDACTED]", fmt.Sprint(s))
	require.Equal(t, "whsec_[REDACTED]", fmt.Sprintf("%x", s))
	require.Equal(t, "    whsec_[REDACTED]", fmt.Sprintf("%20d", s))
	require.Equal(t, "whsec_[REDACTED]", s.String())
	require.Equal(t, `"whsec_[REDACTED]"`, fmt.Sprintf("%q", s))
	require.Equal(t, s.GoString(), fmt.Sprintf("%#v", s))

	for _, verb := range []string{"%v", "%+v", "%#v"} {
		t.Run("struct "+verb, func(t *testing.T) {
			out := fmt.Sprintf(verb, c)
			check(t, out)
			require.Equal(t, 4, strings.Count(out, "[REDACTED]"), out)
		})
	}
	t.Run("pointer", func(t *testing.T) { check(t, fmt.Sprintf("%v %s", &s, &c)) })

	t.Run("json", func(t *testing.T) {
		out, err := json.Marshal(c)
		require.NoError(t, err)
		check(t, string(out))
		require.Contains(t, string(out), `"Secret":"whsec_[REDACTED]"`)
	})

	t.Run("text", func(t *testing.T) {
		out, err := s.MarshalText()
		require.NoError(t, err)
		require.Equal(t, "whsec_[REDACTED]", string(out))
	})

	t.Run("slog", func(t *testing.T) {
		for name, newHandler := range map[string]func(*bytes.Buffer) slog.Handler{
			"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
			"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		} {
			t.Run(name, func(t *testing.T) {
				var buf bytes.Buffer
				logger := slog.New(newHandler(&buf))
				logger.Info("registered", "secret", s, slog.Any("config", c), slog.Group("g", "s", s))
				logger.With("secret", s).Info("again")
				check(t, buf.String())
			})
		}
	})
}

func TestGenerateSecret(t *testing.T) {
	s1, err := GenerateSecret()
	require.NoError(t, err)
	s2, err := GenerateSecret()
	require.NoError(t, err)

	require.True(t, strings.HasPrefix(string(s1), SecretPrefix))
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(string(s1), SecretPrefix))
	require.NoError(t, err)
	require.Len(t, key, 32)
	require.Equal(t, key, s1.key())
	require.NotEqual(t, string(s1), string(s2))

	parsed, err := ParseSecret(string(s1))
	require.NoError(t, err)
	require.Equal(t, string(s1), string(parsed))
}

func TestParseSecret(t *testing.T) {
	raw24 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 24))
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"23 bytes", secretOf(23, 5), false},
		{"24 bytes", secretOf(24, 5), true},
		{"25 bytes padded", secretOf(25, 5), true},
		{"64 bytes", secretOf(64, 5), true},
		{"65 bytes", secretOf(65, 5), false},
		{"test vector", vecSecret, true},
		{"missing prefix", raw24, false},
		{"wrong prefix", "whsk_" + raw24, false},
		{"bad base64", SecretPrefix + strings.Repeat("*", 32), false},
		{"url base64", SecretPrefix + strings.Repeat("-_", 16), false},
		{"unpadded", strings.TrimRight(secretOf(25, 5), "="), false},
		{"non-zero trailing bits", SecretPrefix + strings.Repeat("A", 34) + "B=", false},
		{"embedded newline", secretOf(24, 5)[:20] + "\n" + secretOf(24, 5)[20:], false},
		{"trailing newline", secretOf(24, 5) + "\n", false},
		{"surrounding space", " " + secretOf(24, 5), false},
		{"prefix only", SecretPrefix, false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSecret(tt.in)
			if tt.ok {
				require.NoError(t, err)
				require.Equal(t, tt.in, string(s))
				require.NotNil(t, s.key())
				return
			}
			require.ErrorIs(t, err, ErrInvalidSecret)
			require.ErrorIs(t, err, ErrInvalid)
			require.Empty(t, string(s))
			if in := strings.TrimSpace(tt.in); len(in) >= 8 {
				require.NotContains(t, err.Error(), in[len(in)-8:])
			}
		})
	}
}

// requireNoLeak fails if msg contains the secret (with or without prefix)
// or the expected signature.
func requireNoLeak(t *testing.T, msg, secret, sig string) {
	t.Helper()
	if raw := strings.TrimPrefix(secret, SecretPrefix); len(raw) >= 8 {
		require.NotContains(t, msg, raw)
	}
	require.NotContains(t, msg, sig)
	if strings.HasPrefix(sig, "v1,") {
		require.NotContains(t, msg, sig[3:])
	}
}

// requireKnownError fails unless err is nil or has one of the fixed
// messages that Verify and VerifySPARC can return, which therefore cannot
// contain any part of their input.
func requireKnownError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	known := []string{
		ErrInvalidSecret.Error(),
		ErrNoMatchingSignature.Error(),
		ErrTimestampTooOld.Error(),
		ErrTimestampTooNew.Error(),
	}
	for _, name := range []string{HeaderWebhookID, HeaderWebhookTimestamp, HeaderWebhookSignature, HeaderSPARCSignature} {
		known = append(known, ErrMissingHeader.Error()+": "+name, ErrInvalidHeader.Error()+": "+name)
	}
	require.Contains(t, known, err.Error())
}

const fuzzNow = int64(1700000000)

func FuzzVerify(f *testing.F) {
	f.Add(vecSecret, vecID, "1614265330", vecSignature, []byte(vecPayload))
	f.Add(secretOf(32, 1), "msg", "1700000000", "v1,AAAA v2,BBBB  v1,", []byte(""))
	f.Add("whsec_", "", "", "", []byte(nil))
	f.Add("whsec_====", "a.b", "-5", ",,,", []byte("\x00"))
	f.Add(secretOf(16, 0), "id", "99999999999999999999", "v1,"+strings.Repeat("A", 44), []byte("body"))

	v := Verifier{Now: fixedNow(fuzzNow)}
	f.Fuzz(func(t *testing.T, secret, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderWebhookID, id)
		h.Set(HeaderWebhookTimestamp, ts)
		h.Set(HeaderWebhookSignature, sig)
		requireKnownError(t, v.Verify(secret, h, body))

		good, err := Sign(secret, id, time.Unix(fuzzNow, 0), body)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidSecret)
			require.ErrorIs(t, v.Verify(secret, h, body), ErrInvalidSecret)
			return
		}
		if id == "" {
			return
		}
		h.Set(HeaderWebhookTimestamp, strconv.FormatInt(fuzzNow, 10))
		h.Set(HeaderWebhookSignature, sig+" "+good)
		require.NoError(t, v.Verify(secret, h, body))
	})
}

func FuzzVerifySPARC(f *testing.F) {
	f.Add(vecSecret, "t=1614265330,v1=abcd", []byte(vecPayload))
	f.Add(secretOf(32, 1), "t=1700000000,t=1,v1=", []byte(""))
	f.Add("whsec_", "", []byte(nil))
	f.Add(secretOf(16, 0), " , =,t=,v1==", []byte("\x00"))
	f.Add(secretOf(64, 9), "v1="+strings.Repeat("0", 64)+",t=1700000000", []byte("body"))

	v := Verifier{Now: fixedNow(fuzzNow)}
	f.Fuzz(func(t *testing.T, secret, header string, body []byte) {
		h := http.Header{}
		h.Set(HeaderSPARCSignature, header)
		requireKnownError(t, v.VerifySPARC(secret, h, body))

		good, err := SignSPARC(secret, time.Unix(fuzzNow, 0), body)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidSecret)
			require.ErrorIs(t, v.VerifySPARC(secret, h, body), ErrInvalidSecret)
			return
		}
		h.Set(HeaderSPARCSignature, good)
		require.NoError(t, v.VerifySPARC(secret, h, body))

	})
}

func BenchmarkSetSignatureHeaders(b *testing.B) {
	s, err := GenerateSecret()
	require.NoError(b, err)
	secrets := []Secret{s}
	body := bytes.Repeat([]byte("a"), 1024)
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		setSignatureHeaders(h, secrets, "msg_2LEa4GNZ6JQw7cw0JxA3p7mCX0c", fuzzNow, body)
	}
}

// BenchmarkSigner is the dispatcher's path: the secret's keyed HMACs are
// reused from one attempt to the next.
func BenchmarkSigner(b *testing.B) {
	s, err := GenerateSecret()
	require.NoError(b, err)
	sg := NewSigner(s)
	body := bytes.Repeat([]byte("a"), 1024)
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		sg.SetHeaders(h, "msg_2LEa4GNZ6JQw7cw0JxA3p7mCX0c", fuzzNow, body)
	}
}

func BenchmarkVerify(b *testing.B) {
	s, err := GenerateSecret()
	require.NoError(b, err)
	body := bytes.Repeat([]byte("a"), 1024)
	h := http.Header{}
	setSignatureHeaders(h, []Secret{s}, "msg_2LEa4GNZ6JQw7cw0JxA3p7mCX0c", fuzzNow, body)
	v := Verifier{Now: fixedNow(fuzzNow)}
	secret := string(s)
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(secret, h, body); err != nil {
			b.Fatal(err)
		}
	}
}

// setSignatureHeaders signs with a signer made for the call.
func setSignatureHeaders(h http.Header, secrets []Secret, id string, ts int64, body []byte) {
	NewSigner(secrets...).SetHeaders(h, id, ts, body)
}
