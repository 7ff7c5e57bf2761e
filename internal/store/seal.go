package store

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

	"github.com/sparc-webhooks/webhook/signature"
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
	block, err := aes.NewCipher(key) // the root package checked its length
	if err != nil {
		return nil, fmt.Errorf("webhook: SecretKey: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("webhook: SecretKey: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal returns what is stored for a webhook's secret.
func (s *sealer) seal(webhookID string, secret signature.Secret) string {
	if s == nil || secret == "" {
		return string(secret)
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(secret)+s.aead.Overhead())
	rand.Read(nonce) // crypto/rand.Read never fails
	out := s.aead.Seal(nonce, nonce, []byte(secret), []byte(webhookID))
	return sealedPrefix + base64.StdEncoding.EncodeToString(out)
}

// open returns the secret stored for a webhook.
func (s *sealer) open(webhookID, stored string) (signature.Secret, error) {
	rest, sealed := strings.CutPrefix(stored, sealedPrefix)
	switch {
	case !sealed:
		return signature.Secret(stored), nil
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
	return signature.Secret(plain), nil
}

// keyCheckID is the additional data of the stored value that proves the
// key at open.
const keyCheckID = "webhook-secret-key-check"

// setupSealing runs at open, before the writer starts: it checks the key
// against the database and, when a key is given for the first time,
// encrypts the secrets stored in clear. A wrong key fails here, never as a
// wrong signature later.
func (st *Store) setupSealing(ctx context.Context, key []byte) error {
	s, err := newSealer(key)
	if err != nil {
		return err
	}
	st.sealer = s
	c := st.conn
	if _, err := c.ExecContext(ctx, st.d.q("BEGIN IMMEDIATE")); err != nil {
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
func (st *Store) sealAll(ctx context.Context, s *sealer) error {
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
			prev = s.seal(r.id, signature.Secret(r.prev))
		}
		if _, err := c.ExecContext(ctx, st.d.q(`UPDATE webhooks SET secret = ?, prev_secret = ? WHERE seq = ?`), s.seal(r.id, signature.Secret(r.secret)), prev, r.seq); err != nil {
			return err
		}
	}
	_, err = c.ExecContext(ctx, st.d.q(`INSERT INTO webhook_settings (key, value) VALUES ('secret_key_check', ?)`), s.seal(keyCheckID, "ok"))
	return err
}
