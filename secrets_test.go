package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRotateSecret(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, nil)
	w := register(t, d, rc.url())
	old := string(w.Secret)

	rotated, err := d.RotateSecret(t.Context(), w.ID, RotateOptions{})
	require.NoError(t, err)
	newSecret := string(rotated.Secret)
	require.NotEqual(t, old, newSecret)
	require.WithinDuration(t, time.Now().Add(DefaultRotationGrace), rotated.PreviousSecretUntil, time.Minute)
	got, err := d.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.Empty(t, got.Secret, "Get never shows a secret")
	require.False(t, got.PreviousSecretUntil.IsZero())

	// During the grace period both secrets sign, in both headers.
	_, err = d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	r := rc.waitFor(1)[0]
	require.Len(t, strings.Fields(r.Header.Get("webhook-signature")), 2)
	require.Len(t, strings.Split(r.Header.Get("X-SPARC-Signature"), ","), 3)
	for _, s := range []string{old, newSecret} {
		verifyStandard(t, s, r.Header, r.Body)
		verifySPARC(t, s, r.Header, r.Body)
		require.NoError(t, Verify(s, r.Header, r.Body))
		require.NoError(t, VerifySPARC(s, r.Header, r.Body))
	}

	// Revoked early: only the new secret signs.
	require.NoError(t, d.RevokePreviousSecret(t.Context(), w.ID))
	_, err = d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	r = rc.waitFor(2)[1]
	require.Len(t, strings.Fields(r.Header.Get("webhook-signature")), 1)
	require.NoError(t, Verify(newSecret, r.Header, r.Body))
	require.ErrorIs(t, Verify(old, r.Header, r.Body), ErrNoMatchingSignature)
	require.ErrorIs(t, VerifySPARC(old, r.Header, r.Body), ErrNoMatchingSignature)
	got, err = d.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.True(t, got.PreviousSecretUntil.IsZero())

	// A given secret, and no grace at all.
	given := "whsec_" + strings.Repeat("QUFB", 11) + "QQ=="
	rotated, err = d.RotateSecret(t.Context(), w.ID, RotateOptions{Secret: given, Grace: -1})
	require.NoError(t, err)
	require.Equal(t, given, string(rotated.Secret))
	res, err := d.SendTest(t.Context(), w.ID)
	require.NoError(t, err)
	require.True(t, res.Delivered)
	r = rc.waitFor(3)[2]
	require.NoError(t, Verify(given, r.Header, r.Body))
	require.ErrorIs(t, Verify(newSecret, r.Header, r.Body), ErrNoMatchingSignature)

	_, err = d.RotateSecret(t.Context(), w.ID, RotateOptions{Grace: 8 * 24 * time.Hour})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = d.RotateSecret(t.Context(), w.ID, RotateOptions{Secret: "whsec_short"})
	require.ErrorIs(t, err, ErrInvalidSecret)
	_, err = d.RotateSecret(t.Context(), "00000000-0000-0000-0000-000000000000", RotateOptions{})
	require.ErrorIs(t, err, ErrNotFound)
}

func TestRotationGraceEnds(t *testing.T) {
	d := openTest(t, testConfig())
	rc := newReceiver(t, nil)
	w := register(t, d, rc.url())
	rotated, err := d.RotateSecret(t.Context(), w.ID, RotateOptions{Grace: 200 * time.Millisecond})
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond) // the grace period ends
	_, err = d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	r := rc.waitFor(1)[0]
	require.Len(t, strings.Fields(r.Header.Get("webhook-signature")), 1)
	require.NoError(t, Verify(string(rotated.Secret), r.Header, r.Body))
	require.ErrorIs(t, Verify(string(w.Secret), r.Header, r.Body), ErrNoMatchingSignature)
}

func TestSecretsEncryptedAtRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sealed.db")
	key := make([]byte, 32)
	rand.Read(key)
	cfg := testConfig()

	// Registered in clear first, then sealed when a key is configured.
	d, err := Open(t.Context(), path, cfg)
	require.NoError(t, err)
	rc := newReceiver(t, nil)
	w1 := register(t, d, rc.url())
	require.NoError(t, d.Close(t.Context()))

	cfg.SecretKey = key
	d, err = Open(t.Context(), path, cfg)
	require.NoError(t, err)
	w2 := register(t, d, rc.url()+"?2")
	rot, err := d.RotateSecret(t.Context(), w2.ID, RotateOptions{})
	require.NoError(t, err)
	_, err = d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	got := rc.waitFor(2)
	for _, r := range got {
		if hookOf(t, d, r) == w1.ID {
			require.NoError(t, Verify(string(w1.Secret), r.Header, r.Body))
		} else {
			require.NoError(t, Verify(string(rot.Secret), r.Header, r.Body))
			require.NoError(t, Verify(string(w2.Secret), r.Header, r.Body), "the previous secret, sealed, still signs")
		}
	}
	require.NoError(t, d.Close(t.Context()))

	// The file holds no secret in clear.
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	wal, _ := os.ReadFile(path + "-wal")
	for _, s := range []Secret{w1.Secret, w2.Secret, rot.Secret} {
		body := []byte(strings.TrimPrefix(string(s), SecretPrefix))
		require.False(t, bytes.Contains(raw, body), "a secret is stored in clear")
		require.False(t, bytes.Contains(wal, body), "a secret is in the WAL in clear")
	}

	// A wrong key, or none, fails at open.
	wrong := make([]byte, 32)
	rand.Read(wrong)
	cfg.SecretKey = wrong
	_, err = Open(t.Context(), path, cfg)
	require.ErrorIs(t, err, ErrWrongSecretKey)
	cfg.SecretKey = nil
	_, err = Open(t.Context(), path, cfg)
	require.ErrorIs(t, err, ErrSecretKeyRequired)
	cfg.SecretKey = key[:16]
	_, err = Open(t.Context(), path, cfg)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "SecretKey", ve.Field)

	// The right key opens it, and the sealed secrets still sign.
	cfg.SecretKey = key
	d, err = Open(context.Background(), path, cfg)
	require.NoError(t, err)
	defer d.Close(context.Background())
	res, err := d.SendTest(t.Context(), w1.ID)
	require.NoError(t, err)
	require.True(t, res.Delivered)
	last := rc.requests()[len(rc.requests())-1]
	require.NoError(t, Verify(string(w1.Secret), last.Header, last.Body))
}
