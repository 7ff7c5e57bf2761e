package webhook

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// deps lists the packages pkg links, from go list.
func deps(t *testing.T, pkg string, std bool) []string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH")
	}
	format := `{{if not .Standard}}{{.ImportPath}}{{end}}`
	if std {
		format = `{{.ImportPath}}`
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", format, pkg).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return strings.Fields(string(out))
}

// The house's arrows: a receiver verifies with the signature package,
// which links nothing but the standard library; a program that uses only
// SQLite does not link pgx; the leaves in internal/ import nothing of the
// root package.
func TestLayout(t *testing.T) {
	require.Equal(t, []string{"github.com/sparc-webhooks/webhook/signature"}, deps(t, "./signature", false),
		"the signature package links only the standard library")
	for _, d := range deps(t, "./examples/receiver", false) {
		for _, heavy := range []string{"go-sqlite3", "jackc/pgx", "opentelemetry"} {
			require.NotContains(t, d, heavy, "the receiver example links %s", d)
		}
	}
	for _, d := range deps(t, "./examples/demo", false) {
		require.NotContains(t, d, "jackc/pgx", "a SQLite-only program links pgx")
	}
	for _, d := range deps(t, "./internal/...", false) {
		require.NotEqual(t, "github.com/sparc-webhooks/webhook", d, "an internal package imports the root")
	}
}
