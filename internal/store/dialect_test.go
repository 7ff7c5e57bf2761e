package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPGTranslate(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no placeholders", "SELECT 1", "SELECT 1"},
		{"numbered in order", "UPDATE t SET a = ?, b = ? WHERE id = ?", "UPDATE t SET a = $1, b = $2 WHERE id = $3"},
		{"not inside literals", "SELECT '?', x FROM t WHERE y = ? AND z = 'a?b'", "SELECT '?', x FROM t WHERE y = $1 AND z = 'a?b'"},
		{"escaped quote in a literal", "SELECT 'it''s ?' WHERE a = ?", "SELECT 'it''s ?' WHERE a = $1"},
		{"casts stay", "SELECT v FROM json_array_elements_text(?::json)", "SELECT v FROM json_array_elements_text($1::json)"},
		{"begin", "BEGIN IMMEDIATE", "BEGIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, pgTranslate(tt.in))
		})
	}
}

func TestIsPostgresURL(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"postgres://u@h/db", true},
		{"postgresql://u@h:5432/db?sslmode=disable", true},
		{"webhooks.db", false},
		{"file:webhooks.db?_txlock=immediate", false},
		{"./postgres://not-a-url.db", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			require.Equal(t, tt.want, IsPostgresURL(tt.in))
		})
	}
}
